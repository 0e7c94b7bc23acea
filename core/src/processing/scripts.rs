//! Selectable scripts (`script_name` / `script_args`) as A1111's API runs them. Only "SD upscale"
//! (img2img) is built in: the init image upscaled, cut into overlapping tiles of the request's
//! size, each tile run through img2img, the results blended back together (`scripts/sd_upscale.py`).
//! Any other name keeps A1111's 422 "Script 'X' not found".

use serde_json::{Map, Value};

use sdapi_protocol::api::errors::ApiError;
use sdapi_protocol::api::request::Img2ImgRequest;
use sdapi_protocol::images::grid::{combine_grid, split_grid};
use sdapi_protocol::images::{BuiltinUpscaler, Raster};

use super::{GenerationRequest, Processed, ProcessingContext, WorkCost, fixed_seed, model_upscaler};
use crate::runner::{ModelUpscaler, RgbImage, UpscaleJob};

/// The script's title as the API matches it (case-insensitively).
pub const SD_UPSCALE: &str = "sd upscale";

/// Whether an img2img request runs "SD upscale" (its init image then keeps its own size).
pub fn is_sd_upscale(r: &Img2ImgRequest) -> bool {
    r.script_name.as_deref().is_some_and(|n| n.eq_ignore_ascii_case(SD_UPSCALE))
}

enum ScriptUpscaler {
    Builtin(BuiltinUpscaler),
    Model(ModelUpscaler),
}

impl ScriptUpscaler {
    fn name(&self) -> &str {
        match self {
            ScriptUpscaler::Builtin(b) => b.name(),
            ScriptUpscaler::Model(m) => &m.name,
        }
    }
}

/// `run(p, _, overlap, upscaler_index, scale_factor)`: the upscaler by index into A1111's
/// `sd_upscalers` (built-ins, then the model files) or by case-insensitive name.
fn upscaler_arg(ctx: &ProcessingContext, arg: &Value) -> Result<ScriptUpscaler, ApiError> {
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
        Some(b) => Ok(ScriptUpscaler::Builtin(*b)),
        None => model_upscaler(&models, &opts, &names[index])
            .map(ScriptUpscaler::Model)
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
    let source =
        Raster { width: init.width as usize, height: init.height as usize, channels: 3, data: init.pixels.clone() };
    let upscaled = match &upscaler {
        ScriptUpscaler::Builtin(BuiltinUpscaler::None) => source,
        ScriptUpscaler::Builtin(b) => b.upscale(&source, scale),
        ScriptUpscaler::Model(m) => ctx
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
        .flat_map(|(_, _, row)| {
            row.iter().map(|(_, _, t)| RgbImage {
                width: t.width as u32,
                height: t.height as u32,
                pixels: t.data.clone(),
            })
        })
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
        let mut tiles_out: Vec<RgbImage> = Vec::with_capacity(work.len());
        for chunk in work.chunks(batch_size) {
            let mut tile_request = request.clone();
            for (k, v) in [
                ("script_name", Value::Null),
                ("script_args", Value::Array(vec![])),
                ("n_iter", Value::from(1)),
                ("batch_size", Value::from(batch_size)),
                ("seed", Value::from(batch_seed)),
                ("subseed", Value::from(subseed)),
                ("resize_mode", Value::from(0)),
            ] {
                tile_request.set_field(k, v);
            }
            let generation = GenerationRequest::Img2Img { request: tile_request, init_images: chunk.to_vec() };
            let processed = Box::pin(super::process_images_with(ctx, generation, &extra)).await?;
            batch_seed = processed.all_seeds.first().copied().unwrap_or(batch_seed) + 1;
            tiles_out.extend(processed.images.iter().cloned());
            let interrupted = processed.interrupted;
            if first.is_none() {
                first = Some(processed);
            }
            if interrupted {
                break;
            }
        }
        let mut index = 0;
        for (_, _, row) in grid.tiles.iter_mut() {
            for (_, _, tile) in row.iter_mut() {
                *tile = match tiles_out.get(index) {
                    Some(img) => Raster {
                        width: img.width as usize,
                        height: img.height as usize,
                        channels: 3,
                        data: img.pixels.clone(),
                    },
                    None => Raster::blank(width, height, 3),
                };
                index += 1;
            }
        }
        let combined = combine_grid(&grid);
        results.push(RgbImage { width: combined.width as u32, height: combined.height as u32, pixels: combined.data });
    }
    let mut processed = first.ok_or_else(|| ApiError::runtime("SD upscale produced no tiles"))?;
    // `Processed(p, result_images, seed, initial_info)`: every result carries the first tile
    // batch's infotext.
    let infotext = processed.infotexts.first().cloned().unwrap_or_default();
    processed.infotexts = vec![infotext; results.len()];
    if let Ok(Value::Object(mut info)) = serde_json::from_str::<Value>(&processed.info) {
        info.insert("infotexts".into(), Value::from(processed.infotexts.clone()));
        info.insert("seed".into(), Value::from(seed));
        processed.info = sdapi_protocol::python_json::dumps(&Value::Object(info));
    }
    processed.images = results;
    processed.all_seeds = result_seeds;
    Ok(processed)
}
