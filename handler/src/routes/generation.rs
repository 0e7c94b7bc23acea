//! `POST /sdapi/v1/txt2img` and `/img2img`: validate, hand to `process_images`, encode, respond.

use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use sdapi_core::api::errors::ApiError;
use sdapi_core::api::request::{Img2ImgRequest, Txt2ImgRequest};
use sdapi_core::images::{decode_base64_image, encode_image_base64, parse_hex_color};
use sdapi_core::processing::{GenerationRequest, Processed, process_images};
use sdapi_core::runner::RgbImage;
use serde_json::{Map, Value, json};

use super::json_body;
use crate::app::AppState;
use crate::errors::{HandlerError, json_response};

pub async fn txt2img(
    State(s): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, HandlerError> {
    let value = json_body(&headers, body)?;
    let req = Txt2ImgRequest::from_json(&value)?;
    let parameters = req.to_parameters();
    let send_images = req.send_images;
    let processed = process_images(&s.ctx, GenerationRequest::Txt2Img(req)).await?;
    respond(processed, parameters, send_images).await
}

pub async fn img2img(
    State(s): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, HandlerError> {
    let value = json_body(&headers, body)?;
    let req = Img2ImgRequest::from_json(&value)?;
    let Some(encoded) = req.init_images.clone() else {
        return Err(ApiError::init_image_not_found().into());
    };
    let (width, height) = (req.width.unwrap_or(512).max(8) as u32, req.height.unwrap_or(512).max(8) as u32);
    let background = {
        let opts = s.ctx.options.read().unwrap_or_else(|e| e.into_inner());
        opts.get("img2img_background_color").and_then(Value::as_str).unwrap_or("#ffffff").to_string()
    };
    // Decoding and resizing is CPU work: keep it off the async executor.
    let init_images = tokio::task::spawn_blocking(move || -> Result<Vec<RgbImage>, ApiError> {
        encoded
            .iter()
            .map(|v| {
                let s = v.as_str().ok_or_else(ApiError::invalid_encoded_image)?;
                // RGBA is flattened over `img2img_background_color`, as A1111 does.
                let img: RgbImage = decode_base64_image(s)?.flatten(parse_hex_color(&background)).into();
                Ok(resize_to(img, width, height))
            })
            .collect()
    })
    .await
    .map_err(|e| ApiError::runtime(e.to_string()))??;
    let parameters = req.to_parameters();
    let send_images = req.send_images;
    let processed = process_images(&s.ctx, GenerationRequest::Img2Img { request: req, init_images }).await?;
    respond(processed, parameters, send_images).await
}

/// A1111 resize mode 0 ("Just resize"): stretch to the requested size with Lanczos.
fn resize_to(img: RgbImage, width: u32, height: u32) -> RgbImage {
    if img.width == width && img.height == height {
        return img;
    }
    let Some(buf) = image::RgbImage::from_raw(img.width, img.height, img.pixels.clone()) else {
        return img;
    };
    let resized = image::imageops::resize(&buf, width, height, image::imageops::FilterType::Lanczos3);
    RgbImage { width, height, pixels: resized.into_raw() }
}

/// `X-Runner-Job`: every runner job of this request with its timings, e.g.
/// `id=3;queue_ms=0;execute_ms=812;total_ms=812`, comma-separated for n_iter > 1.
fn runner_header(processed: &Processed) -> Option<HeaderValue> {
    let v = processed
        .jobs
        .iter()
        .map(|j| {
            format!(
                "id={};queue_ms={};execute_ms={};total_ms={}",
                j.job_id,
                j.timings.queue_wait.as_millis(),
                j.timings.execute.as_millis(),
                j.timings.total.as_millis()
            )
        })
        .collect::<Vec<_>>()
        .join(", ");
    HeaderValue::from_str(&v).ok()
}

async fn respond(processed: Processed, parameters: Map<String, Value>, send_images: bool) -> Result<Response, HandlerError> {
    let header = runner_header(&processed);
    let task_id = HeaderValue::from_str(&processed.task_id).ok();
    let images: Vec<String> = if send_images {
        let p = processed.clone();
        tokio::task::spawn_blocking(move || -> Result<Vec<String>, ApiError> {
            p.images
                .iter()
                .zip(&p.infotexts)
                .map(|(img, info)| {
                    let buf = img.to_image().ok_or_else(|| ApiError::runtime("generated image has an invalid size"))?;
                    encode_image_base64(&buf, Some(info), &p.options)
                })
                .collect()
        })
        .await
        .map_err(|e| ApiError::runtime(e.to_string()))??
    } else {
        Vec::new()
    };
    let body = json!({ "images": images, "parameters": parameters, "info": processed.info });
    let mut resp = json_response(StatusCode::OK, &body);
    if let Some(h) = header {
        resp.headers_mut().insert("x-runner-job", h);
    }
    if let Some(t) = task_id {
        resp.headers_mut().insert("x-task-id", t);
    }
    Ok(resp.into_response())
}
