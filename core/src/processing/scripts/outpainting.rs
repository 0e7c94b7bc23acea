//! "Poor man's outpainting" (`scripts/poor_mans_outpainting.py`): the init image placed on a
//! larger black canvas (rounded up to multiples of 64), cut into overlapping tiles of the request's
//! size, and every tile that reaches past the original inpainted with a mask of the new border.

use serde_json::Value;

use sdapi_protocol::api::errors::ApiError;
use sdapi_protocol::api::request::Img2ImgRequest;
use sdapi_protocol::images::grid::{combine_grid, split_grid};
use sdapi_protocol::images::pil_ops::paste;
use sdapi_protocol::images::{Raster, encode_png, to_base64};

use super::{TileRuns, fill_tiles, run_fields, script_result, with_fields};
use crate::processing::{GenerationRequest, Processed, ProcessingContext, WorkCost, fixed_seed};
use crate::runner::RgbImage;

/// The script's title as the API matches it (case-insensitively).
pub const POOR_MANS_OUTPAINTING: &str = "poor man's outpainting";

/// Whether an img2img request runs "Poor man's outpainting" (its init image keeps its own size).
pub fn is_poor_mans_outpainting(r: &Img2ImgRequest) -> bool {
    r.script_name.as_deref().is_some_and(|n| n.eq_ignore_ascii_case(POOR_MANS_OUTPAINTING))
}

fn bad_args(message: String) -> ApiError {
    ApiError::http(
        422,
        format!("script 'Poor man's outpainting' takes [pixels, mask_blur, inpainting_fill, direction]: {message}"),
    )
}

/// The border added on each side, in A1111's arithmetic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Borders {
    left: usize,
    right: usize,
    up: usize,
    down: usize,
    target_w: usize,
    target_h: usize,
}

impl Borders {
    /// `pixels` on each chosen side, then the canvas rounded up to multiples of 64 and the extra
    /// shared between opposite sides in proportion.
    fn new(image_w: usize, image_h: usize, pixels: usize, direction: &[String]) -> Self {
        let side = |name: &str| if direction.iter().any(|d| d == name) { pixels } else { 0 };
        let (mut left, mut right, mut up, mut down) = (side("left"), side("right"), side("up"), side("down"));
        let target_w = (image_w + left + right).div_ceil(64) * 64;
        let target_h = (image_h + up + down).div_ceil(64) * 64;
        if left > 0 {
            left = left * (target_w - image_w) / (left + right);
        }
        if right > 0 {
            right = target_w - image_w - left;
        }
        if up > 0 {
            up = up * (target_h - image_h) / (up + down);
        }
        if down > 0 {
            down = target_h - image_h - up;
        }
        Self { left, right, up, down, target_w, target_h }
    }

    /// White canvas with the kept area black, inset by `inset` on the sides that grow (Pillow's
    /// `rectangle` includes both corners).
    fn mask(&self, inset: usize) -> Raster {
        let mut mask = Raster {
            width: self.target_w,
            height: self.target_h,
            channels: 1,
            data: vec![255; self.target_w * self.target_h],
        };
        let grow = |border: usize| if border > 0 { inset } else { 0 };
        let x0 = (self.left + grow(self.left)) as i64;
        let y0 = (self.up + grow(self.up)) as i64;
        let x1 = self.target_w as i64 - (self.right + grow(self.right)) as i64;
        let y1 = self.target_h as i64 - (self.down + grow(self.down)) as i64;
        for y in y0.max(0)..=y1.min(self.target_h as i64 - 1) {
            for x in x0.max(0)..=x1.min(self.target_w as i64 - 1) {
                mask.data[y as usize * self.target_w + x as usize] = 0;
            }
        }
        mask
    }

    /// Whether a tile lies inside the original image (it is then kept as it is).
    fn inside(&self, x: i64, w: usize, y: i64, h: usize) -> bool {
        let (w, h) = (w as i64, h as i64);
        let (left, up) = (self.left as i64, self.up as i64);
        let (right_edge, bottom_edge) = ((self.target_w - self.right) as i64, (self.target_h - self.down) as i64);
        x >= left && x + w <= right_edge && y >= up && y + h <= bottom_edge
    }
}

/// A single-channel raster as a base64 PNG, as a request's mask field carries it.
fn mask_field(mask: &Raster) -> Result<Value, ApiError> {
    let rgb = RgbImage::from_raster(Raster {
        width: mask.width,
        height: mask.height,
        channels: 3,
        data: mask.data.iter().flat_map(|&v| [v, v, v]).collect(),
    });
    let img = rgb.to_image().ok_or_else(|| ApiError::runtime("mask tile of inconsistent size"))?;
    let png = encode_png(&img, None).map_err(|e| ApiError::runtime(e.to_string()))?;
    Ok(Value::String(to_base64(&png)))
}

/// Runs "Poor man's outpainting" for an img2img request whose init image is at its own size.
pub async fn poor_mans_outpainting(
    ctx: &ProcessingContext,
    request: Img2ImgRequest,
    init_images: Vec<RgbImage>,
) -> Result<Processed, ApiError> {
    let args = &request.script_args;
    if args.len() != 4 {
        return Err(bad_args(format!("got {} arguments", args.len())));
    }
    let int = |v: &Value, name: &str| {
        v.as_f64().filter(|x| x.is_finite() && *x >= 0.0).map(|x| x as usize).ok_or_else(|| bad_args(name.into()))
    };
    let pixels = int(&args[0], "pixels")?;
    let mask_blur = int(&args[1], "mask_blur")?;
    let fill = match &args[2] {
        Value::String(s) => ["fill", "original", "latent noise", "latent nothing"]
            .iter()
            .position(|c| c == s)
            .ok_or_else(|| bad_args(format!("inpainting_fill {s:?}")))?,
        v => int(v, "inpainting_fill")?,
    };
    let direction: Vec<String> = match &args[3] {
        Value::Array(list) => list.iter().filter_map(|d| d.as_str().map(str::to_string)).collect(),
        _ => return Err(bad_args("direction must be a list of left, right, up, down".into())),
    };
    let init = init_images.first().ok_or_else(ApiError::init_image_not_found)?;
    let (width, height) = (request.width.unwrap_or(512).max(8) as usize, request.height.unwrap_or(512).max(8) as usize);
    if pixels >= width.min(height) {
        return Err(bad_args(format!("pixels {pixels} must be smaller than the tile ({width}x{height})")));
    }
    let borders = Borders::new(init.width as usize, init.height as usize, pixels, &direction);
    let limits = ctx.limits;
    if borders.target_w as f64 * borders.target_h as f64 > limits.max_batch_megapixels as f64 * 1e6 {
        return Err(ApiError::http(
            422,
            format!(
                "outpainting to {}x{} is more than this server makes (SDAPI_MAX_BATCH_MEGAPIXELS)",
                borders.target_w, borders.target_h
            ),
        ));
    }

    let mut canvas = Raster::blank(borders.target_w, borders.target_h, 3);
    paste(&mut canvas, &init.to_raster(), borders.left as i64, borders.up as i64);
    let mut grid = split_grid(&canvas, width, height, pixels);
    let grid_mask = split_grid(&borders.mask(mask_blur * 2), width, height, pixels);
    let grid_latent = split_grid(&borders.mask(mask_blur / 2), width, height, pixels);
    let mut work = Vec::new();
    for (((y, h, row), (_, _, row_mask)), (_, _, row_latent)) in
        grid.tiles.iter().zip(&grid_mask.tiles).zip(&grid_latent.tiles)
    {
        for ((tile, mask), latent) in row.iter().zip(row_mask).zip(row_latent) {
            if !borders.inside(tile.0, tile.1, *y, *h) {
                work.push((RgbImage::from_raster(tile.2.clone()), mask_field(&mask.2)?, mask_field(&latent.2)?));
            }
        }
    }
    let cost = WorkCost::of(width as i64, height as i64, work.len() as i64, 1, request.steps.unwrap_or(50));
    if let Some(message) = cost.over(&limits) {
        return Err(ApiError::http(422, format!("outpainting with {} tiles: {message}", work.len())));
    }

    let mut seed = fixed_seed(request.seed.unwrap_or(-1));
    let subseed = fixed_seed(request.subseed.unwrap_or(-1));
    let mut runs = TileRuns::default();
    for (tile, mask, latent_mask) in work {
        let mut fields = run_fields(1, seed, subseed);
        fields.extend([
            ("mask", mask),
            ("latent_mask", latent_mask),
            ("mask_blur", Value::from(mask_blur * 2)),
            ("inpainting_fill", Value::from(fill)),
            ("inpaint_full_res", Value::Bool(false)),
        ]);
        let run =
            with_fields(GenerationRequest::Img2Img { request: request.clone(), init_images: vec![tile] }, &fields);
        let interrupted;
        (seed, interrupted) = runs.run(ctx, run, &Default::default(), seed).await?;
        if interrupted {
            break;
        }
    }
    fill_tiles(&mut grid, &runs.images, (width, height), |x, w, y, h| borders.inside(x, w, y, h));
    let combined = RgbImage::from_raster(combine_grid(&grid));
    let first = runs.first.ok_or_else(|| ApiError::runtime("outpainting found no tile to paint"))?;
    let initial_seed = first.all_seeds.first().copied().unwrap_or(seed);
    Ok(script_result(first, vec![combined], vec![initial_seed], initial_seed))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn borders_follow_a1111s_arithmetic() {
        // 64x64 image, 16 px on every side: 96 → 128 wide, the 32 extra split 16/16.
        let b = Borders::new(64, 64, 16, &["left".into(), "right".into(), "up".into(), "down".into()]);
        assert_eq!(b, Borders { left: 32, right: 32, up: 32, down: 32, target_w: 128, target_h: 128 });
        // Only to the right: everything added goes right; the rounded-up height stays unmasked.
        let b = Borders::new(64, 48, 8, &["right".into()]);
        assert_eq!((b.left, b.right, b.up, b.down, b.target_w, b.target_h), (0, 64, 0, 0, 128, 64));
    }

    #[test]
    fn the_mask_keeps_the_original_black_inclusive_of_both_corners() {
        let b = Borders::new(64, 64, 16, &["left".into()]);
        let m = b.mask(4);
        // left border 64 (the whole extra), inset 4: black from x = 68 to x = 128 (clipped), all rows.
        assert_eq!(m.data[68], 0);
        assert_eq!(m.data[67], 255);
        assert_eq!(m.data[127], 0);
        assert_eq!(m.data[63 * 128 + 100], 0);
    }
}
