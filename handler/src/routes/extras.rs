//! `POST /sdapi/v1/extra-single-image` and `/extra-batch-images`: A1111's extras upscale with the
//! built-in upscalers (face restoration answers 501). The work is pixel work on the CPU, so it
//! runs off the async threads and is bounded before it starts; results are returned as A1111's
//! API returns them, and stored as well when the operator stores every output.

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use sdapi_protocol::api::errors::{ApiError, ValidationError, ValidationErrors};
use sdapi_protocol::api::request::{
    ExtrasBatchImagesRequest, ExtrasSingleImageRequest, ValidatedFields, extras_constraint_errors,
};
use std::collections::HashMap;
use std::sync::Arc;

use sdapi_core::processing::model_upscaler;
use sdapi_core::runner::{ModelUpscaler, Runner, UpscaleJob};
use sdapi_protocol::images::extras::{ExtrasUpscale, ExtrasUpscaler, plaintext_to_html, resolve_upscaler};
use sdapi_protocol::images::{DecodedImage, Raster, decode_base64_file, decode_image_bytes, read_infotext, to_base64};
use serde_json::{Value, json};

use super::json_body;
use crate::app::AppState;
use crate::errors::HandlerError;
use crate::storage;

/// Most images one `/extra-batch-images` call upscales.
pub const MAX_BATCH_IMAGES: usize = 64;

/// The fields both extras requests share, and what runs model upscalers.
struct Common {
    upscale: ExtrasUpscale,
    pnginfo: bool,
    max_output_pixels: f64,
    /// Model upscalers by name (tiling from the options), run by the runner on its device.
    models: HashMap<String, ModelUpscaler>,
    runner: Arc<dyn Runner>,
}

fn common(s: &AppState, fields: &ValidatedFields) -> Result<Common, HandlerError> {
    let sent: Vec<&str> = fields.explicitly_set.iter().map(String::as_str).collect();
    let errors = extras_constraint_errors(&fields.values, &sent);
    let get = |k: &str| fields.get(k);
    if !errors.is_empty() {
        return Err(HandlerError::Validation(ValidationErrors { detail: errors }));
    }
    let num = |k: &str| get(k).as_f64().unwrap_or(0.0);
    if num("gfpgan_visibility") > 0.0 || num("codeformer_visibility") > 0.0 {
        return Err(ApiError::http(501, "Face restoration (GFPGAN, CodeFormer) is not supported by this server").into());
    }
    let text = |k: &str| get(k).as_str().unwrap_or("None").to_string();
    let models: HashMap<String, ModelUpscaler> = {
        let index = s.ctx.models.read().unwrap_or_else(|e| e.into_inner());
        let opts = s.ctx.options.read().unwrap_or_else(|e| e.into_inner());
        index
            .upscalers
            .iter()
            .filter_map(|u| model_upscaler(&index, &opts, &u.name))
            .map(|m| (m.name.clone(), m))
            .collect()
    };
    let is_model = |name: &str| models.contains_key(name);
    let upscale = ExtrasUpscale {
        mode: get("resize_mode").as_i64().unwrap_or(0),
        upscale_by: num("upscaling_resize"),
        to_width: get("upscaling_resize_w").as_u64().unwrap_or(512) as usize,
        to_height: get("upscaling_resize_h").as_u64().unwrap_or(512) as usize,
        crop: get("upscaling_crop").as_bool().unwrap_or(true),
        upscaler_1: resolve_upscaler(&text("upscaler_1"), is_model)?,
        upscaler_2: resolve_upscaler(&text("upscaler_2"), is_model)?,
        upscaler_2_visibility: num("extras_upscaler_2_visibility"),
    };
    let pnginfo = s.ctx.options.read().unwrap_or_else(|e| e.into_inner()).enable_pnginfo();
    Ok(Common {
        upscale,
        pnginfo,
        max_output_pixels: s.ctx.limits.max_batch_megapixels as f64 * 1e6,
        models,
        runner: s.ctx.runner.clone(),
    })
}

/// Decodes, upscales and encodes one image: (PNG bytes, the `postprocessing` infotext).
fn process_one(encoded: &str, c: &Common) -> Result<(Vec<u8>, String), ApiError> {
    // The file is decoded once: its pixels, and its own infotext to carry over.
    let bytes = decode_base64_file(encoded)?;
    let decoded = decode_image_bytes(&bytes).ok_or_else(ApiError::invalid_encoded_image)?;
    let raster = match &decoded {
        DecodedImage::Rgb(i) => Raster::from_rgb(i),
        DecodedImage::Rgba(i) => Raster::from_rgba(i),
    };
    let (w, h) = c.upscale.output_size(raster.width, raster.height);
    // A model step runs at the model's own scale (4 for nearly all) before the final resize: that
    // intermediate, up to 4× per side, may use four times the output budget.
    let uses_model =
        [&c.upscale.upscaler_1, &c.upscale.upscaler_2].iter().any(|u| matches!(u, Some(ExtrasUpscaler::Model(_))));
    let intermediate = if uses_model { 16.0 * raster.width as f64 * raster.height as f64 } else { 0.0 };
    if w as f64 * h as f64 > c.max_output_pixels || intermediate > 4.0 * c.max_output_pixels {
        return Err(ApiError::http(
            422,
            format!(
                "the upscaled image would be {w}x{h}, more than this server makes ({} megapixels, SDAPI_MAX_BATCH_MEGAPIXELS)",
                c.max_output_pixels / 1e6
            ),
        ));
    }
    let handle = tokio::runtime::Handle::current();
    let mut run_model = |name: &str, img: &Raster, scale: f64| -> Result<Raster, ApiError> {
        let upscaler = c
            .models
            .get(name)
            .cloned()
            .ok_or_else(|| ApiError::assertion(format!("could not find upscaler named {name}")))?;
        let job = UpscaleJob { image: img.clone(), upscaler, scale };
        handle.block_on(c.runner.upscale(job).wait()).map_err(|e| ApiError::runtime(e.to_string()))
    };
    let (out, info) = c.upscale.run(&raster, &mut run_model)?;
    // The input's own infotext travels with the result, plus the step's (A1111's pnginfo).
    let parameters = read_infotext(&bytes).ok().map(|(text, _)| text).filter(|t| !t.is_empty());
    let mut texts: Vec<(&str, &str)> = Vec::new();
    if c.pnginfo {
        if let Some(p) = parameters.as_deref() {
            texts.push(("parameters", p));
        }
        texts.push(("postprocessing", info.as_str()));
    }
    let png = sdapi_protocol::images::encode::encode_png_raster(&out, &texts)
        .map_err(|e| ApiError::runtime(format!("encoding the result failed: {e}")))?;
    Ok((png, info))
}

async fn off_thread<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, HandlerError> {
    Ok(tokio::task::spawn_blocking(f).await.map_err(|e| ApiError::runtime(e.to_string()))??)
}

pub async fn extra_single_image(
    State(s): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, HandlerError> {
    let value = json_body(&headers, body)?;
    let req = ExtrasSingleImageRequest::from_json(&value)?;
    let c = common(&s, &req.fields)?;
    let image = req.image.clone();
    let (png, info) = off_thread(move || process_one(&image, &c)).await?;
    let body = json!({ "html_info": plaintext_to_html(&info), "image": to_base64(&png) });
    Ok(respond(&s, body, vec![(png, info)]).await)
}

/// The JSON answer; when the operator stores every output (`SDAPI_SAVE_ALL`, or a bucket), the
/// results go to the store too (A1111's API itself does not save extras), reported in headers.
async fn respond(s: &AppState, body: Value, images: Vec<(Vec<u8>, String)>) -> Response {
    let mut resp = Json(body).into_response();
    if s.outputs.save_all {
        let folder = {
            let opts = s.ctx.options.read().unwrap_or_else(|e| e.into_inner());
            sdapi_core::store::naming::extras_folder(&opts)
        };
        let total = images.len();
        let saved = storage::store_extras(&s.outputs, &folder, images).await;
        super::generation::storage_headers(resp.headers_mut(), &saved, total, true);
    }
    resp
}

pub async fn extra_batch_images(
    State(s): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, HandlerError> {
    let value = json_body(&headers, body)?;
    let req = ExtrasBatchImagesRequest::from_json(&value)?;
    // `imageList: list[FileData]` is required, each item with string `data` and `name`.
    let mut missing = Vec::new();
    if !req.fields.explicitly_set.iter().any(|f| f == "imageList") {
        missing.push(ValidationError::new(
            vec!["body".into(), "imageList".into()],
            "field required",
            "value_error.missing",
        ));
    }
    for (i, item) in req.imageList.iter().enumerate() {
        for key in ["data", "name"] {
            if !item.get(key).is_some_and(Value::is_string) {
                missing.push(ValidationError::new(
                    vec!["body".into(), "imageList".into(), i.into(), key.into()],
                    "field required",
                    "value_error.missing",
                ));
            }
        }
    }
    if !missing.is_empty() {
        return Err(HandlerError::Validation(ValidationErrors { detail: missing }));
    }
    if req.imageList.len() > MAX_BATCH_IMAGES {
        return Err(ApiError::http(
            422,
            format!(
                "{} images in one call, more than this server upscales at once ({MAX_BATCH_IMAGES})",
                req.imageList.len()
            ),
        )
        .into());
    }
    let c = common(&s, &req.fields)?;
    let datas: Vec<String> =
        req.imageList.iter().filter_map(|i| i.get("data").and_then(Value::as_str).map(str::to_string)).collect();
    let results =
        off_thread(move || datas.iter().map(|data| process_one(data, &c)).collect::<Result<Vec<_>, _>>()).await?;
    let last_info = results.last().map(|(_, info)| info.clone()).unwrap_or_default();
    let images: Vec<String> = results.iter().map(|(png, _)| to_base64(png)).collect();
    let body = json!({ "html_info": plaintext_to_html(&last_info), "images": images });
    Ok(respond(&s, body, results).await)
}
