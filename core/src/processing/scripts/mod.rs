//! Selectable scripts (`script_name` / `script_args`) as A1111's API runs them, on top of
//! `process_images`. Built in (img2img): "SD upscale" — the init image upscaled, cut into
//! overlapping tiles of the request's size, each tile through img2img, the results blended back
//! (`scripts/sd_upscale.py`); "Loopback" — img2img fed its own output for a number of loops with
//! the denoising strength moving along a curve (`scripts/loopback.py`). Any other name keeps
//! A1111's 422 "Script 'X' not found".

use serde_json::{Map, Value};

use sdapi_protocol::api::errors::ApiError;
use sdapi_protocol::api::options::Options;
use sdapi_protocol::api::request::Img2ImgRequest;
use sdapi_protocol::images::annotations::{AnnotationError, GridColors};
use sdapi_protocol::images::grid::{combine_grid, split_grid};
use sdapi_protocol::images::{BuiltinUpscaler, Raster, parse_hex_color};

mod outpainting;
mod prompt_matrix;
mod xyz_plot;
mod xyz_values;

pub use outpainting::{is_poor_mans_outpainting, poor_mans_outpainting};
pub use prompt_matrix::{is_prompt_matrix, prompt_matrix};
pub use xyz_plot::{axis_labels as xyz_axis_labels, is_xyz_plot, xyz_plot};

use super::{GenerationRequest, Processed, ProcessingContext, WorkCost, fixed_seed, model_upscaler};
use crate::runner::{PixelUpscaler, RgbImage, UpscaleJob};

/// The script's title as the API matches it (case-insensitively).
pub const SD_UPSCALE: &str = "sd upscale";

/// The script's title as the API matches it (case-insensitively).
pub const LOOPBACK: &str = "loopback";

/// Whether an img2img request runs "SD upscale" (its init image then keeps its own size).
pub fn is_sd_upscale(r: &Img2ImgRequest) -> bool {
    r.script_name.as_deref().is_some_and(|n| n.eq_ignore_ascii_case(SD_UPSCALE))
}

/// Whether an img2img request runs "Loopback".
pub fn is_loopback(r: &Img2ImgRequest) -> bool {
    r.script_name.as_deref().is_some_and(|n| n.eq_ignore_ascii_case(LOOPBACK))
}

/// A run of the script: `request` with `fields` set (each run is a plain generation).
fn with_fields<K: AsRef<str>>(request: GenerationRequest, fields: &[(K, Value)]) -> GenerationRequest {
    let mut request = request;
    for (k, v) in fields {
        request.set_field(k.as_ref(), v.clone());
    }
    request
}

/// The fields a script's run overrides: no script again, one batch of `batch_size` at these seeds.
fn run_fields(batch_size: usize, seed: i64, subseed: i64) -> Vec<(&'static str, Value)> {
    vec![
        ("script_name", Value::Null),
        ("script_args", Value::Array(vec![])),
        ("n_iter", Value::from(1)),
        ("batch_size", Value::from(batch_size)),
        ("seed", Value::from(seed)),
        ("subseed", Value::from(subseed)),
    ]
}

/// Rewrites entries of a `Processed.info` JSON string (a script's result keeps its first run's).
fn patch_info(info: &mut String, entries: Vec<(&str, Value)>) {
    if let Ok(Value::Object(mut map)) = serde_json::from_str::<Value>(info) {
        for (k, v) in entries {
            map.insert(k.into(), v);
        }
        *info = sdapi_protocol::python_json::dumps(&Value::Object(map));
    }
}

/// `Processed(p, images, seed, initial_info)`: the first run's `info`, every image carrying the
/// first run's infotext.
fn script_result(mut first: Processed, images: Vec<RgbImage>, seeds: Vec<i64>, seed: i64) -> Processed {
    let infotext = first.infotexts.first().cloned().unwrap_or_default();
    first.infotexts = vec![infotext; images.len()];
    patch_info(&mut first.info, vec![("infotexts", Value::from(first.infotexts.clone())), ("seed", Value::from(seed))]);
    first.images = images;
    first.all_seeds = seeds;
    first
}

/// The runs of a tiling script (SD upscale, outpainting): every run's images in order, and the
/// first run's result, whose `info` becomes the script's.
#[derive(Default)]
struct TileRuns {
    first: Option<Processed>,
    images: Vec<RgbImage>,
}

impl TileRuns {
    /// One plain generation of the script; returns A1111's next seed (`processed.seed + 1`) and
    /// whether the run was interrupted (the script then stops).
    async fn run(
        &mut self,
        ctx: &ProcessingContext,
        generation: GenerationRequest,
        extra: &Map<String, Value>,
        seed: i64,
    ) -> Result<(i64, bool), ApiError> {
        let processed = Box::pin(super::process_images_with(ctx, generation, extra)).await?;
        let next_seed = processed.all_seeds.first().copied().unwrap_or(seed) + 1;
        let interrupted = processed.interrupted;
        self.images.extend(processed.images.iter().cloned());
        self.first.get_or_insert(processed);
        Ok((next_seed, interrupted))
    }
}

/// Puts generated images back into the grid's tiles in order, skipping the tiles `keep` names;
/// tiles without a result (an interrupted script) become black `width` × `height` tiles.
fn fill_tiles(
    grid: &mut sdapi_protocol::images::grid::Grid,
    images: &[RgbImage],
    (width, height): (usize, usize),
    keep: impl Fn(i64, usize, i64, usize) -> bool,
) {
    let mut results = images.iter();
    for (y, h, row) in grid.tiles.iter_mut() {
        for (x, w, tile) in row.iter_mut() {
            if keep(*x, *w, *y, *h) {
                continue;
            }
            *tile = results.next().map(RgbImage::to_raster).unwrap_or_else(|| Raster::blank(width, height, 3));
        }
    }
}

/// `images.image_grid(imgs, rows)`: cells of the largest size on the grid background colour,
/// each image centred in its cell.
fn image_grid(images: &[RgbImage], rows: usize, background: [u8; 3]) -> RgbImage {
    let rows = rows.clamp(1, images.len().max(1));
    let cols = images.len().div_ceil(rows);
    let w = images.iter().map(|i| i.width).max().unwrap_or(0) as usize;
    let h = images.iter().map(|i| i.height).max().unwrap_or(0) as usize;
    let (gw, gh) = (cols * w, rows * h);
    let mut pixels: Vec<u8> = std::iter::repeat_n(background, gw * gh).flatten().collect();
    for (i, img) in images.iter().enumerate() {
        let (iw, ih) = (img.width as usize, img.height as usize);
        let x0 = (i % cols) * w + if iw == w { 0 } else { (w - iw) / 2 };
        let y0 = (i / cols) * h + if ih == h { 0 } else { (h - ih) / 2 };
        for y in 0..ih {
            let dst = ((y0 + y) * gw + x0) * 3;
            pixels[dst..dst + iw * 3].copy_from_slice(&img.pixels[y * iw * 3..(y + 1) * iw * 3]);
        }
    }
    RgbImage { width: gw as u32, height: gh as u32, pixels }
}

/// The grid colour options in force (`grid_text_active_color`, `grid_text_inactive_color`,
/// `grid_background_color`), A1111's defaults where unset or unreadable.
fn grid_colors(opts: &Options) -> GridColors {
    let defaults = GridColors::default();
    let color =
        |key: &str, default: [u8; 3]| opts.get(key).and_then(Value::as_str).map(parse_hex_color).unwrap_or(default);
    GridColors {
        active: color("grid_text_active_color", defaults.active),
        inactive: color("grid_text_inactive_color", defaults.inactive),
        background: color("grid_background_color", defaults.background),
    }
}

/// A labelled grid that does not add up (A1111 asserts the label counts): its AssertionError.
fn annotation_error(e: AnnotationError) -> ApiError {
    ApiError::python("AssertionError", e.to_string())
}

/// Runs "Loopback" (`script_args` = [loops, final denoising strength, curve, interrogation]).
pub async fn loopback(
    ctx: &ProcessingContext,
    request: Img2ImgRequest,
    init_images: Vec<RgbImage>,
) -> Result<Processed, ApiError> {
    let args = &request.script_args;
    let bad = |m: &str| {
        ApiError::http(
            422,
            format!(
                "script 'Loopback' takes [loops, final_denoising_strength, denoising_curve, append_interrogation]: {m}"
            ),
        )
    };
    if args.len() != 4 {
        return Err(bad(&format!("got {} arguments", args.len())));
    }
    let loops = args[0].as_f64().filter(|v| v.is_finite() && *v >= 1.0).ok_or_else(|| bad("loops"))? as i64;
    let final_strength = args[1].as_f64().filter(|v| v.is_finite()).ok_or_else(|| bad("final_denoising_strength"))?;
    let curve = args[2].as_str().unwrap_or("Linear").to_string();
    if args[3].as_str().is_some_and(|s| s != "None") {
        return Err(ApiError::http(
            501,
            "Loopback's appended interrogation (CLIP, DeepBooru) is not supported by this server",
        ));
    }
    let n_iter = request.n_iter.unwrap_or(1).max(1);
    let cost = WorkCost::of(
        request.width.unwrap_or(512),
        request.height.unwrap_or(512),
        1,
        loops.saturating_mul(n_iter),
        request.steps.unwrap_or(50),
    );
    if let Some(message) = cost.over(&ctx.limits) {
        return Err(ApiError::http(422, format!("Loopback with {loops} loops: {message}")));
    }
    let initial_strength = request.denoising_strength;
    let strength_at = |step: i64| -> f64 {
        if loops == 1 {
            return initial_strength;
        }
        let progress = step as f64 / (loops - 1) as f64;
        let shape = match curve.as_str() {
            "Aggressive" => (progress * std::f64::consts::PI * 0.5).sin(),
            "Lazy" => 1.0 - (progress * std::f64::consts::PI * 0.5).cos(),
            _ => progress,
        };
        initial_strength + (final_strength - initial_strength) * shape
    };
    let mut extra = Map::new();
    extra.insert("Final denoising strength".into(), Value::from(final_strength));
    extra.insert("Denoising curve".into(), Value::String(curve.clone()));

    let mut seed = fixed_seed(request.seed.unwrap_or(-1));
    let subseed = fixed_seed(request.subseed.unwrap_or(-1));
    let initial_seed_request = seed;
    let (mut first, mut all_images) = (None::<Processed>, Vec::new());
    let mut stopped = false;
    for _ in 0..n_iter {
        let mut current = init_images.clone();
        let mut strength = initial_strength;
        let mut last: Option<RgbImage> = None;
        for i in 0..loops {
            let mut fields = run_fields(1, seed, subseed);
            fields.push(("denoising_strength", Value::from(strength)));
            let run = GenerationRequest::Img2Img { request: request.clone(), init_images: current.clone() };
            let generation = with_fields(run, &fields);
            let processed = Box::pin(super::process_images_with(ctx, generation, &extra)).await?;
            if processed.interrupted {
                stopped = true;
                break;
            }
            seed = processed.all_seeds.first().copied().unwrap_or(seed) + 1;
            strength = strength_at(i + 1);
            let image = processed.images.first().cloned();
            if first.is_none() {
                first = Some(processed);
            }
            let Some(image) = image else { break };
            current = vec![image.clone()];
            if n_iter == 1 {
                all_images.push(image.clone());
            }
            last = Some(image);
        }
        if stopped {
            break;
        }
        if n_iter > 1
            && let Some(image) = last
        {
            all_images.push(image);
        }
    }
    let first = first.ok_or_else(|| ApiError::runtime("Loopback produced no image"))?;
    // A1111's `history` holds exactly the images returned: every loop's with one batch, each
    // batch's last with several; when more than one, their grid comes first.
    if all_images.len() > 1 && first.options.get("return_grid").and_then(Value::as_bool).unwrap_or(true) {
        let grid = image_grid(&all_images, 1, grid_colors(&first.options).background);
        all_images.insert(0, grid);
    }
    let initial_seed = first.all_seeds.first().copied().unwrap_or(initial_seed_request);
    let image_seeds = vec![initial_seed; all_images.len()];
    Ok(script_result(first, all_images, image_seeds, initial_seed))
}

/// `run(p, _, overlap, upscaler_index, scale_factor)`: the upscaler by index into A1111's
/// `sd_upscalers` (built-ins, then the model files) or by case-insensitive name.
fn upscaler_arg(ctx: &ProcessingContext, arg: &Value) -> Result<PixelUpscaler, ApiError> {
    let models = ctx.models.read().unwrap_or_else(|e| e.into_inner());
    let opts = ctx.options.read().unwrap_or_else(|e| e.into_inner());
    let mut names: Vec<String> = BuiltinUpscaler::ALL.iter().map(|u| u.name().to_string()).collect();
    names.extend(models.upscalers.iter().map(|u| u.name.clone()));
    let index = match arg {
        Value::String(name) => names
            .iter()
            .position(|n| n.to_lowercase() == name.to_lowercase())
            .ok_or_else(|| ApiError::python("ValueError", format!("'{}' is not in list", name.to_lowercase())))?,
        other => other
            .as_i64()
            .and_then(|i| usize::try_from(i).ok())
            .filter(|&i| i < names.len())
            .ok_or_else(|| ApiError::python("IndexError", "list index out of range"))?,
    };
    match BuiltinUpscaler::ALL.get(index) {
        Some(b) => Ok(PixelUpscaler::Builtin(*b)),
        None => model_upscaler(&models, &opts, &names[index])
            .map(PixelUpscaler::Model)
            .ok_or_else(|| ApiError::python("IndexError", "list index out of range")),
    }
}

fn bad_args(message: String) -> ApiError {
    ApiError::http(422, format!("script 'SD upscale' takes [info, overlap, upscaler, scale_factor]: {message}"))
}

/// Runs "SD upscale" for an img2img request whose init images are decoded at their own size.
pub async fn sd_upscale(
    ctx: &ProcessingContext,
    request: Img2ImgRequest,
    init_images: Vec<RgbImage>,
) -> Result<Processed, ApiError> {
    let args = &request.script_args;
    if args.len() != 4 {
        return Err(bad_args(format!("got {} arguments", args.len())));
    }
    let overlap =
        args[1].as_f64().filter(|v| v.is_finite() && *v >= 0.0).ok_or_else(|| bad_args("overlap".into()))? as usize;
    let upscaler = upscaler_arg(ctx, &args[2])?;
    let scale =
        args[3].as_f64().filter(|v| v.is_finite() && *v > 0.0).ok_or_else(|| bad_args("scale_factor".into()))?;
    let init = init_images.first().ok_or_else(ApiError::init_image_not_found)?;
    let (width, height) = (request.width.unwrap_or(512).max(8) as usize, request.height.unwrap_or(512).max(8) as usize);
    if overlap >= width.min(height) {
        return Err(bad_args(format!("overlap {overlap} must be smaller than the tile ({width}x{height})")));
    }
    // The upscaled image and every tile's work are bounded before anything runs.
    let limits = ctx.limits;
    let (up_w, up_h) = ((init.width as f64 * scale) as usize, (init.height as f64 * scale) as usize);
    if up_w as f64 * up_h as f64 > limits.max_batch_megapixels as f64 * 1e6 {
        return Err(ApiError::http(
            422,
            format!("SD upscale to {up_w}x{up_h} is more than this server makes (SDAPI_MAX_BATCH_MEGAPIXELS)"),
        ));
    }
    let tiles_across =
        |size: usize, tile: usize| ((size.saturating_sub(overlap)) as f64 / (tile - overlap) as f64).ceil().max(1.0);
    let tile_count = (tiles_across(up_w.max(width), width) * tiles_across(up_h.max(height), height)) as i64;
    let n_iter = request.n_iter.unwrap_or(1).max(1);
    let cost = WorkCost::of(width as i64, height as i64, tile_count, n_iter, request.steps.unwrap_or(50));
    if let Some(message) = cost.over(&limits) {
        return Err(ApiError::http(422, format!("SD upscale with {tile_count} tiles: {message}")));
    }

    let seed = fixed_seed(request.seed.unwrap_or(-1));
    let subseed = fixed_seed(request.subseed.unwrap_or(-1));
    let source = init.to_raster();
    let upscaled = match &upscaler {
        PixelUpscaler::Builtin(BuiltinUpscaler::None) => source,
        PixelUpscaler::Builtin(b) => b.upscale(&source, scale),
        PixelUpscaler::Model(m) => ctx
            .runner
            .upscale(UpscaleJob { image: source, upscaler: m.clone(), scale })
            .wait()
            .await
            .map_err(|e| ApiError::runtime(e.to_string()))?,
    };
    let mut grid = split_grid(&upscaled, width, height, overlap);
    let work: Vec<RgbImage> = grid
        .tiles
        .iter()
        .flat_map(|(_, _, row)| row.iter().map(|(_, _, t)| RgbImage::from_raster(t.clone())))
        .collect();
    let batch_size = request.batch_size.unwrap_or(1).max(1) as usize;

    let mut extra = Map::new();
    extra.insert("SD upscale overlap".into(), Value::from(overlap));
    extra.insert("SD upscale upscaler".into(), Value::String(upscaler.name().to_string()));
    let mut results = Vec::new();
    let mut first: Option<Processed> = None;
    let mut result_seeds = Vec::new();
    for n in 0..n_iter {
        let mut batch_seed = seed + n;
        result_seeds.push(batch_seed);
        let mut runs = TileRuns::default();
        for chunk in work.chunks(batch_size) {
            let mut fields = run_fields(batch_size, batch_seed, subseed);
            fields.push(("resize_mode", Value::from(0)));
            let run = GenerationRequest::Img2Img { request: request.clone(), init_images: chunk.to_vec() };
            let interrupted;
            (batch_seed, interrupted) = runs.run(ctx, with_fields(run, &fields), &extra, batch_seed).await?;
            if interrupted {
                break;
            }
        }
        fill_tiles(&mut grid, &runs.images, (width, height), |_, _, _, _| false);
        results.push(RgbImage::from_raster(combine_grid(&grid)));
        first = first.or(runs.first);
    }
    let first = first.ok_or_else(|| ApiError::runtime("SD upscale produced no tiles"))?;
    Ok(script_result(first, results, result_seeds, seed))
}

/// The script's title as the API matches it (case-insensitively); both tabs have it.
pub const PROMPTS_FROM_FILE: &str = "prompts from file or textbox";

/// Whether a request runs "Prompts from file or textbox".
pub fn is_prompts_from_file(request: &GenerationRequest) -> bool {
    request.field("script_name").as_str().is_some_and(|n| n.eq_ignore_ascii_case(PROMPTS_FROM_FILE))
}

/// Python's `shlex.split` (POSIX mode, no comments): whitespace-separated words, `'…'` literal,
/// `"…"` with `\` escaping `\`, `"`, `$`, `` ` `` and newline, `\` escaping any character outside
/// quotes. An unclosed quote or a trailing `\` is an error, as in Python.
pub fn shlex_split(line: &str) -> Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut word: Option<String> = None;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            c if c.is_whitespace() => {
                if let Some(w) = word.take() {
                    words.push(w);
                }
            }
            '\\' => word.get_or_insert_with(String::new).push(chars.next().ok_or("No escaped character")?),
            '\'' => {
                let w = word.get_or_insert_with(String::new);
                loop {
                    match chars.next().ok_or("No closing quotation")? {
                        '\'' => break,
                        other => w.push(other),
                    }
                }
            }
            '"' => {
                let w = word.get_or_insert_with(String::new);
                loop {
                    match chars.next().ok_or("No closing quotation")? {
                        '"' => break,
                        '\\' => match chars.next().ok_or("No closing quotation")? {
                            e @ ('\\' | '"' | '$' | '`' | '\n') => w.push(e),
                            e => {
                                w.push('\\');
                                w.push(e);
                            }
                        },
                        other => w.push(other),
                    }
                }
            }
            other => word.get_or_insert_with(String::new).push(other),
        }
    }
    if let Some(w) = word {
        words.push(w);
    }
    Ok(words)
}

/// `cmdargs(line)`: `--tag value` pairs (`--prompt`/`--negative_prompt` take every word up to the
/// next `--`), as request fields. `None` when the line is not a valid command line (A1111 then uses
/// the whole line as the prompt).
fn line_fields(line: &str, ctx: &ProcessingContext) -> Option<Vec<(String, Value)>> {
    let args = shlex_split(line).ok()?;
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < args.len() {
        let tag = args[pos].strip_prefix("--")?;
        let value = args.get(pos + 1)?;
        if tag == "prompt" || tag == "negative_prompt" {
            let mut text = value.clone();
            pos += 2;
            while pos < args.len() && !args[pos].starts_with("--") {
                text.push(' ');
                text.push_str(&args[pos]);
                pos += 1;
            }
            out.push((tag.to_string(), Value::String(text)));
            continue;
        }
        let parsed = match tag {
            "seed" | "subseed" | "seed_resize_from_h" | "seed_resize_from_w" | "batch_size" | "n_iter" | "steps"
            | "width" | "height" => Value::from(value.trim().parse::<i64>().ok()?),
            "subseed_strength" | "cfg_scale" => Value::from(value.trim().parse::<f64>().ok()?),
            "restore_faces" | "tiling" | "do_not_save_samples" | "do_not_save_grid" => Value::Bool(value == "true"),
            // `sd_samplers.samplers_map`: lower-cased names and aliases; unknown → the first sampler.
            "sampler_name" => {
                let lower = value.to_lowercase();
                let found = sdapi_protocol::choices::SamplerKind::ALL.into_iter().find(|s| {
                    s.name().to_lowercase() == lower || s.aliases().iter().any(|a| a.to_lowercase() == lower)
                });
                Value::String(found.unwrap_or(sdapi_protocol::choices::SamplerKind::DEFAULT).name().to_string())
            }
            // A string assigned to `p.styles`: A1111 then applies each character as a style name.
            "styles" => Value::Array(value.chars().map(|c| Value::String(c.to_string())).collect()),
            "sd_model" => {
                let models = ctx.models.read().unwrap_or_else(|e| e.into_inner());
                let found = models.find_checkpoint(value)?.name.clone();
                out.push(("sd_model_checkpoint".into(), Value::String(found)));
                pos += 2;
                continue;
            }
            // Output paths, `sampler_index` and the display prompt change nothing this server writes.
            "outpath_samples" | "outpath_grids" | "prompt_for_display" | "sampler_index" => {
                pos += 2;
                continue;
            }
            _ => return None,
        };
        out.push((tag.to_string(), parsed));
        pos += 2;
    }
    Some(out)
}

/// A line's fields set on `request`; `sd_model_checkpoint` goes into its `override_settings`.
fn line_request(request: &GenerationRequest, fields: &[(String, Value)]) -> GenerationRequest {
    let mut request = request.clone();
    for (k, v) in fields {
        if k == "sd_model_checkpoint" {
            let mut overrides = request.field("override_settings").as_object().cloned().unwrap_or_default();
            overrides.insert(k.clone(), v.clone());
            request.set_field("override_settings", Value::Object(overrides));
        } else {
            request.set_field(k, v.clone());
        }
    }
    request
}

/// Most lines one "Prompts from file or textbox" request runs.
pub const MAX_PROMPT_LINES: usize = 1000;

/// Runs "Prompts from file or textbox" (`script_args` = [iterate seed every line, same random
/// seed for all lines, "start"|"end", the lines]): one generation per non-empty line.
pub async fn prompts_from_file(ctx: &ProcessingContext, request: GenerationRequest) -> Result<Processed, ApiError> {
    let args = request.field("script_args").as_array().cloned().unwrap_or_default();
    let bad = |m: String| {
        ApiError::http(
            422,
            format!(
                "script 'Prompts from file or textbox' takes [checkbox_iterate, checkbox_iterate_batch, prompt_position, prompt_txt]: {m}"
            ),
        )
    };
    if args.len() != 4 {
        return Err(bad(format!("got {} arguments", args.len())));
    }
    let truthy = |v: &Value| v.as_bool().unwrap_or_else(|| v.as_i64().is_some_and(|i| i != 0));
    let (iterate, iterate_batch) = (truthy(&args[0]), truthy(&args[1]));
    let at_start = args[2].as_str() != Some("end");
    let text = args[3].as_str().ok_or_else(|| bad("prompt_txt must be a string".into()))?;
    let lines: Vec<&str> = text.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
    if lines.len() > MAX_PROMPT_LINES {
        return Err(bad(format!("{} lines, more than {MAX_PROMPT_LINES}", lines.len())));
    }
    let common = request.common();
    let mut seed = common.seed;
    if (iterate || iterate_batch) && seed == -1 {
        seed = fixed_seed(-1);
    }
    let base = with_fields(request, &[("script_name", Value::Null), ("script_args", Value::Array(vec![]))]);
    let mut jobs = Vec::with_capacity(lines.len());
    let mut total = 0.0;
    for line in &lines {
        let mut fields = if line.contains("--") { line_fields(line, ctx) } else { None }
            .unwrap_or_else(|| vec![("prompt".into(), Value::String(line.to_string()))]);
        for (key, base_text) in [("prompt", &common.prompt), ("negative_prompt", &common.negative_prompt)] {
            if let Some((_, Value::String(t))) = fields.iter_mut().find(|(k, _)| k == key)
                && !t.is_empty()
                && !base_text.is_empty()
            {
                *t = if at_start { format!("{t} {base_text}") } else { format!("{base_text} {t}") };
            }
        }
        let job = line_request(&base, &fields);
        let p = job.common();
        total += WorkCost::of(p.width, p.height, p.batch_size, p.n_iter, p.steps).megapixel_steps;
        jobs.push(job);
    }
    if total > ctx.limits.max_request_megapixel_steps as f64 {
        return Err(ApiError::http(
            422,
            format!(
                "{} lines add up to {total:.0} megapixel-steps, more than this server runs for one request ({}, SDAPI_MAX_MEGAPIXEL_STEPS)",
                lines.len(),
                ctx.limits.max_request_megapixel_steps
            ),
        ));
    }
    let (mut images, mut infotexts, mut all_prompts, mut all_seeds) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut first: Option<Processed> = None;
    for job in jobs {
        let job = with_fields(job, &[("seed", Value::from(seed))]);
        let processed = Box::pin(super::process_images_with(ctx, job, &Map::new())).await?;
        if iterate {
            seed += common.batch_size * common.n_iter;
        }
        images.extend(processed.images.iter().cloned());
        infotexts.extend(processed.infotexts.iter().cloned());
        all_seeds.extend(processed.all_seeds.iter().copied());
        if let Ok(Value::Object(info)) = serde_json::from_str::<Value>(&processed.info)
            && let Some(Value::Array(p)) = info.get("all_prompts")
        {
            all_prompts.extend(p.iter().cloned());
        }
        let interrupted = processed.interrupted;
        if first.is_none() {
            first = Some(processed);
        }
        if interrupted {
            break;
        }
    }
    let mut processed = first.ok_or_else(|| ApiError::runtime("Prompts from file or textbox: no lines"))?;
    // `Processed(p, images, p.seed, "", all_prompts=…, infotexts=…)`.
    patch_info(
        &mut processed.info,
        vec![("all_prompts", Value::from(all_prompts)), ("infotexts", Value::from(infotexts.clone()))],
    );
    processed.images = images;
    processed.infotexts = infotexts;
    processed.all_seeds = all_seeds;
    Ok(processed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shlex_split_follows_python() {
        assert_eq!(
            shlex_split(r#"--prompt "a red cube" --steps 3"#).unwrap(),
            vec!["--prompt", "a red cube", "--steps", "3"]
        );
        assert_eq!(shlex_split(r#"a\ b 'c d' "e\"f" g\\h"#).unwrap(), vec!["a b", "c d", "e\"f", "g\\h"]);
        assert_eq!(shlex_split(r#""x\y""#).unwrap(), vec!["x\\y"]);
        assert!(shlex_split("'unclosed").is_err());
        assert!(shlex_split("trailing\\").is_err());
    }
}
