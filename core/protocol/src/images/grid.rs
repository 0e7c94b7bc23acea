//! A1111's `images.split_grid` / `combine_grid`: an image cut into overlapping tiles (model
//! upscalers, the "sd upscale" script) and put back together, each overlap blended with a linear
//! 8-bit mask through Pillow's masked paste.

use super::pil_resize::Raster;

/// One row of tiles: its top `y`, height, and the tiles `(x, width, pixels)` in it.
pub type GridRow = (i64, usize, Vec<(i64, usize, Raster)>);

/// `images.Grid`.
#[derive(Debug, Clone)]
pub struct Grid {
    pub tiles: Vec<GridRow>,
    pub tile_w: usize,
    pub tile_h: usize,
    pub image_w: usize,
    pub image_h: usize,
    pub overlap: usize,
}

/// `Image.crop(box)`: parts outside the image are black (zero).
pub fn crop(img: &Raster, x0: i64, y0: i64, w: usize, h: usize) -> Raster {
    let ch = img.channels;
    let mut out = Raster::blank(w, h, ch);
    for y in 0..h {
        let sy = y0 + y as i64;
        if sy < 0 || sy >= img.height as i64 {
            continue;
        }
        for x in 0..w {
            let sx = x0 + x as i64;
            if sx < 0 || sx >= img.width as i64 {
                continue;
            }
            let src = (sy as usize * img.width + sx as usize) * ch;
            let dst = (y * w + x) * ch;
            out.data[dst..dst + ch].copy_from_slice(&img.data[src..src + ch]);
        }
    }
    out
}

/// Pillow's `paste(src, (x, y), mask)`: clipped to `dst`; with an 8-bit mask each channel is
/// `(dst·(255 − m) + src·m) / 255` rounded as Pillow's `DIV255` does.
fn paste(dst: &mut Raster, src: &Raster, x0: i64, y0: i64, mask: Option<&[u8]>) {
    let ch = dst.channels;
    for y in 0..src.height {
        let dy = y0 + y as i64;
        if dy < 0 || dy >= dst.height as i64 {
            continue;
        }
        for x in 0..src.width {
            let dx = x0 + x as i64;
            if dx < 0 || dx >= dst.width as i64 {
                continue;
            }
            let s = (y * src.width + x) * src.channels;
            let d = (dy as usize * dst.width + dx as usize) * ch;
            for c in 0..ch.min(src.channels) {
                dst.data[d + c] = match mask {
                    None => src.data[s + c],
                    Some(m) => {
                        let m = u32::from(m[y * src.width + x]);
                        let v = u32::from(dst.data[d + c]) * (255 - m) + u32::from(src.data[s + c]) * m + 128;
                        ((v + (v >> 8)) >> 8) as u8
                    }
                };
            }
        }
    }
}

/// `split_grid(image, tile_w, tile_h, overlap)`.
pub fn split_grid(img: &Raster, tile_w: usize, tile_h: usize, overlap: usize) -> Grid {
    let (w, h) = (img.width as i64, img.height as i64);
    let (tw, th, ov) = (tile_w as i64, tile_h as i64, overlap as i64);
    let cols = ((w - ov) as f64 / (tw - ov).max(1) as f64).ceil().max(1.0) as i64;
    let rows = ((h - ov) as f64 / (th - ov).max(1) as f64).ceil().max(1.0) as i64;
    let dx = if cols > 1 { (w - tw) as f64 / (cols - 1) as f64 } else { 0.0 };
    let dy = if rows > 1 { (h - th) as f64 / (rows - 1) as f64 } else { 0.0 };
    let mut tiles = Vec::with_capacity(rows as usize);
    for row in 0..rows {
        let mut y = (row as f64 * dy) as i64;
        if y + th >= h {
            y = h - th;
        }
        let mut row_tiles = Vec::with_capacity(cols as usize);
        for col in 0..cols {
            let mut x = (col as f64 * dx) as i64;
            if x + tw >= w {
                x = w - tw;
            }
            row_tiles.push((x, tile_w, crop(img, x, y, tile_w, tile_h)));
        }
        tiles.push((y, tile_h, row_tiles));
    }
    Grid { tiles, tile_w, tile_h, image_w: img.width, image_h: img.height, overlap }
}

/// `combine_grid(grid)`: rows assembled left to right, then stacked, overlaps blended.
pub fn combine_grid(grid: &Grid) -> Raster {
    let ov = grid.overlap;
    // `r * 255 / overlap` in float32, truncated to uint8.
    let ramp: Vec<u8> = (0..ov).map(|i| (i as f32 * 255.0 / ov as f32) as u8).collect();
    let mut combined = Raster::blank(grid.image_w, grid.image_h, 3);
    for (y, h, row) in &grid.tiles {
        let mut combined_row = Raster::blank(grid.image_w, *h, 3);
        let mask_w: Vec<u8> = (0..*h).flat_map(|_| ramp.iter().copied()).collect();
        for (x, w, tile) in row {
            if *x == 0 {
                paste(&mut combined_row, tile, 0, 0, None);
                continue;
            }
            paste(&mut combined_row, &crop(tile, 0, 0, ov, *h), *x, 0, Some(&mask_w));
            paste(&mut combined_row, &crop(tile, ov as i64, 0, w.saturating_sub(ov), *h), *x + ov as i64, 0, None);
        }
        if *y == 0 {
            paste(&mut combined, &combined_row, 0, 0, None);
            continue;
        }
        let mask_h: Vec<u8> = ramp.iter().flat_map(|&m| std::iter::repeat_n(m, grid.image_w)).collect();
        paste(&mut combined, &crop(&combined_row, 0, 0, grid.image_w, ov), 0, *y, Some(&mask_h));
        paste(
            &mut combined,
            &crop(&combined_row, 0, ov as i64, grid.image_w, h.saturating_sub(ov)),
            0,
            *y + ov as i64,
            None,
        );
    }
    combined
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raster(w: usize, h: usize) -> Raster {
        Raster { width: w, height: h, channels: 3, data: (0..w * h * 3).map(|i| (i * 13 % 256) as u8).collect() }
    }

    #[test]
    fn split_and_combine_is_the_identity() {
        for (w, h, tile, overlap) in [(100, 70, 32, 8), (64, 64, 192, 8), (200, 200, 64, 0), (50, 90, 40, 10)] {
            let img = raster(w, h);
            let grid = split_grid(&img, tile, tile, overlap);
            assert_eq!(combine_grid(&grid), img, "{w}x{h} tile {tile} overlap {overlap}");
        }
    }

    #[test]
    fn tiles_cover_the_image_like_a1111() {
        // 100 wide, tiles of 32 overlapping by 8: ceil(92 / 24) = 4 columns, dx = 68 / 3.
        let grid = split_grid(&raster(100, 40), 32, 32, 8);
        let xs: Vec<i64> = grid.tiles[0].2.iter().map(|t| t.0).collect();
        assert_eq!(xs, vec![0, 22, 45, 68]);
        // Smaller than a tile: one tile, shifted so its bottom-right corner is the image's.
        let grid = split_grid(&raster(20, 10), 32, 32, 8);
        assert_eq!((grid.tiles.len(), grid.tiles[0].0, grid.tiles[0].2[0].0), (1, -22, -12));
    }
}
