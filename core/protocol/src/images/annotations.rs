//! A1111's labelled grids (`images.draw_grid_annotations`, `draw_prompt_matrix`): a grid of
//! equal cells gets a row of texts above its columns and a column of texts left of its rows,
//! each wrapped to its cell, shrunk until it fits, inactive texts grey and struck through.

use super::Raster;
use super::text::{Font, horizontal_line};

/// One line of a label (`images.GridAnnotation`).
#[derive(Debug, Clone, PartialEq)]
pub struct GridAnnotation {
    pub text: String,
    pub is_active: bool,
}

impl GridAnnotation {
    pub fn new(text: impl Into<String>, is_active: bool) -> Self {
        Self { text: text.into(), is_active }
    }
}

/// The options `grid_text_active_color`, `grid_text_inactive_color`, `grid_background_color`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GridColors {
    pub active: [u8; 3],
    pub inactive: [u8; 3],
    pub background: [u8; 3],
}

impl Default for GridColors {
    /// A1111's defaults: black, #999999, white.
    fn default() -> Self {
        Self { active: [0, 0, 0], inactive: [153, 153, 153], background: [255, 255, 255] }
    }
}

/// A wrapped line with its measured size and the width it must fit in.
struct Line {
    text: String,
    is_active: bool,
    size: (f32, f32),
    allowed_width: f32,
}

/// Pillow's integer `textbbox` size of a line at `size` (an empty line has none).
fn line_size(font: &Font, text: &str, size: f32) -> (f32, f32) {
    if text.is_empty() {
        return (0.0, 0.0);
    }
    let b = font.text_box(text, size);
    (b.right.ceil() - b.left.floor(), b.bottom.ceil() - b.top.floor())
}

/// `wrap`: words joined while the line's length fits `line_length`.
fn wrap(font: &Font, text: &str, size: f32, line_length: f32) -> Vec<String> {
    let mut lines = vec![String::new()];
    for word in text.split_whitespace() {
        let last = lines.last().map(String::as_str).unwrap_or_default();
        let joined = format!("{last} {word}").trim().to_string();
        if font.text_length(&joined, size) <= line_length {
            if let Some(l) = lines.last_mut() {
                *l = joined;
            }
        } else {
            lines.push(word.to_string());
        }
    }
    lines
}

/// Why a grid cannot be annotated (A1111's assertion errors).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AnnotationError {
    #[error("bad number of horizontal texts: {got}; must be {want}")]
    Columns { got: usize, want: usize },
    #[error("bad number of vertical texts: {got}; must be {want}")]
    Rows { got: usize, want: usize },
    #[error("grid cells of {0}x{1} pixels")]
    CellSize(usize, usize),
}

/// `draw_grid_annotations(im, width, height, hor_texts, ver_texts, margin)`: `im` is a grid of
/// `width` × `height` cells; `hor_texts[col]` go above column `col`, `ver_texts[row]` left of row
/// `row`; cells are spaced by `margin`.
pub fn draw_grid_annotations(
    im: &Raster,
    (width, height): (usize, usize),
    hor_texts: &[Vec<GridAnnotation>],
    ver_texts: &[Vec<GridAnnotation>],
    margin: usize,
    colors: GridColors,
) -> Result<Raster, AnnotationError> {
    if width == 0 || height == 0 {
        return Err(AnnotationError::CellSize(width, height));
    }
    let font = Font::roboto();
    let fontsize = ((width + height) / 25) as f32;
    let line_spacing = (fontsize as usize / 2) as f32;
    let has_ver_text = ver_texts.iter().flatten().any(|l| !l.text.is_empty());
    let pad_left = if has_ver_text { width * 3 / 4 } else { 0 };
    let (cols, rows) = (im.width / width, im.height / height);
    if cols != hor_texts.len() {
        return Err(AnnotationError::Columns { got: hor_texts.len(), want: cols });
    }
    if rows != ver_texts.len() {
        return Err(AnnotationError::Rows { got: ver_texts.len(), want: rows });
    }
    let layout = |texts: &[Vec<GridAnnotation>], allowed: f32| -> Vec<Vec<Line>> {
        texts
            .iter()
            .map(|items| {
                items
                    .iter()
                    .flat_map(|item| {
                        wrap(font, &item.text, fontsize, allowed).into_iter().map(|text| Line {
                            size: line_size(font, &text, fontsize),
                            text,
                            is_active: item.is_active,
                            allowed_width: allowed,
                        })
                    })
                    .collect()
            })
            .collect()
    };
    let hor = layout(hor_texts, width as f32);
    let ver = layout(ver_texts, pad_left as f32);
    let block_height = |lines: &[Line]| lines.iter().map(|l| l.size.1 + line_spacing).sum::<f32>();
    let hor_heights: Vec<f32> = hor.iter().map(|l| block_height(l) - line_spacing).collect();
    // A1111 takes one spacing per line off the row labels' height (not one in all).
    let ver_heights: Vec<f32> = ver.iter().map(|l| block_height(l) - line_spacing * l.len() as f32).collect();
    let pad_top = if hor_heights.iter().sum::<f32>() == 0.0 {
        0
    } else {
        (hor_heights.iter().copied().fold(f32::MIN, f32::max) + line_spacing * 2.0) as usize
    };

    let (out_w, out_h) =
        (im.width + pad_left + margin * cols.saturating_sub(1), im.height + pad_top + margin * rows.saturating_sub(1));
    let mut out = Raster {
        width: out_w,
        height: out_h,
        channels: 3,
        data: std::iter::repeat_n(colors.background, out_w * out_h).flatten().collect(),
    };
    let src = im.with_channels(3);
    for row in 0..rows {
        for col in 0..cols {
            let (x0, y0) = (pad_left + (width + margin) * col, pad_top + (height + margin) * row);
            for y in 0..height {
                let from = ((height * row + y) * src.width + width * col) * 3;
                let to = ((y0 + y) * out_w + x0) * 3;
                out.data[to..to + width * 3].copy_from_slice(&src.data[from..from + width * 3]);
            }
        }
    }
    let draw_texts = |out: &mut Raster, x: f32, mut y: f32, lines: &[Line]| {
        for line in lines {
            let mut size = fontsize;
            while font.text_length(&line.text, size).floor() > line.allowed_width && size > 0.0 {
                size -= 1.0;
            }
            let color = if line.is_active { colors.active } else { colors.inactive };
            font.draw_centered(out, &line.text, size, (x, y + line.size.1 / 2.0), color);
            if !line.is_active {
                let (half_w, mid) = ((line.size.0 as i64) / 2, (y + (line.size.1 as i64 / 2) as f32) as i64);
                horizontal_line(out, x as i64 - half_w, x as i64 + half_w, mid, colors.inactive);
            }
            y += line.size.1 + line_spacing;
        }
    };
    for (col, lines) in hor.iter().enumerate() {
        let x = (pad_left + (width + margin) * col) as f32 + width as f32 / 2.0;
        draw_texts(&mut out, x, pad_top as f32 / 2.0 - hor_heights[col] / 2.0, lines);
    }
    for (row, lines) in ver.iter().enumerate() {
        let y = (pad_top + (height + margin) * row) as f32 + height as f32 / 2.0 - ver_heights[row] / 2.0;
        draw_texts(&mut out, pad_left as f32 / 2.0, y, lines);
    }
    Ok(out)
}

/// `draw_prompt_matrix(im, width, height, all_prompts, margin)`: the optional parts (all but
/// the first) split into the first half across the top and the rest down the side; each column
/// and row names every part of its half, active where that part is in the cell's prompt.
pub fn draw_prompt_matrix(
    im: &Raster,
    cell: (usize, usize),
    all_prompts: &[String],
    margin: usize,
    colors: GridColors,
) -> Result<Raster, AnnotationError> {
    let parts = all_prompts.get(1..).unwrap_or_default();
    let boundary = parts.len().div_ceil(2);
    let (horizontal, vertical) = parts.split_at(boundary);
    let texts = |half: &[String]| -> Vec<Vec<GridAnnotation>> {
        (0..1usize << half.len())
            .map(|pos| {
                half.iter().enumerate().map(|(i, t)| GridAnnotation::new(t.clone(), pos & (1 << i) != 0)).collect()
            })
            .collect()
    };
    draw_grid_annotations(im, cell, &texts(horizontal), &texts(vertical), margin, colors)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grid(cols: usize, rows: usize, cell: usize) -> Raster {
        Raster { width: cols * cell, height: rows * cell, channels: 3, data: vec![40; cols * rows * cell * cell * 3] }
    }

    #[test]
    fn a_prompt_matrix_grid_gets_a1111s_padding_and_labels() {
        // "a cat | red | big": two optional parts → 2 columns (red off/on) × 2 rows (big off/on)
        // of 200² cells. fontsize (200 + 200) // 25 = 16, spacing 8, pad_left 200·3/4 = 150.
        let parts: Vec<String> = ["a cat", "red", "big"].map(String::from).to_vec();
        let out = draw_prompt_matrix(&grid(2, 2, 200), (200, 200), &parts, 0, GridColors::default()).unwrap();
        let pad_top = out.height - 400;
        assert_eq!(out.width, 400 + 150);
        let line = line_size(Font::roboto(), "red", 16.0);
        assert_eq!(pad_top, (line.1 + 16.0) as usize, "one line of labels plus two spacings");
        // The cells moved right by pad_left and down by pad_top, unchanged.
        assert_eq!(out.data[((pad_top + 10) * out.width + 150 + 10) * 3], 40);
        // Column 0 has "red" inactive: grey and struck through by a 4-pixel line of full grey.
        let grey = GridColors::default().inactive;
        // Rows of `ys` where the pixels `xs` are all grey: a strike-through line.
        let struck = |xs: std::ops::Range<usize>, ys: std::ops::Range<usize>| {
            ys.filter(|&y| xs.clone().all(|x| out.data[(y * out.width + x) * 3..][..3] == grey)).count()
        };
        assert_eq!(struck(240..260, 0..pad_top), 4, "the strike-through");
        // Column 1 has it active: dark ink, no grey line.
        let dark = (0..pad_top)
            .flat_map(|y| (350..550).map(move |x| (x, y)))
            .filter(|&(x, y)| out.data[(y * out.width + x) * 3] < 100)
            .count();
        assert!(dark > 10, "active label in black: {dark} dark pixels");
        assert_eq!(struck(440..460, 0..pad_top), 0);
        // Row labels: "big" left of both rows, struck through in row 0 only.
        assert_eq!(struck(65..85, pad_top..pad_top + 200), 4);
        assert_eq!(struck(65..85, pad_top + 200..pad_top + 400), 0);
    }

    #[test]
    fn margins_space_the_cells_and_counts_must_match() {
        let texts = |n: usize| vec![vec![GridAnnotation::new("x", true)]; n];
        let out =
            draw_grid_annotations(&grid(3, 2, 50), (50, 50), &texts(3), &texts(2), 6, GridColors::default()).unwrap();
        assert_eq!(out.width, 150 + 50 * 3 / 4 + 12);
        let err = draw_grid_annotations(&grid(3, 2, 50), (50, 50), &texts(2), &texts(2), 0, GridColors::default());
        assert_eq!(err.unwrap_err(), AnnotationError::Columns { got: 2, want: 3 });
    }

    #[test]
    fn long_labels_wrap_to_their_cell() {
        let font = Font::roboto();
        let lines = wrap(font, "a very long label that cannot fit in one small cell", 20.0, 120.0);
        assert!(lines.len() > 2, "{lines:?}");
        assert!(lines.iter().all(|l| font.text_length(l, 20.0) <= 120.0 || !l.contains(' ')));
        assert_eq!(wrap(font, "", 20.0, 100.0), vec![String::new()]);
    }
}
