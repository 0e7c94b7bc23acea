//! Listing and settings routes: samplers, schedulers, models, options, flags, memory, png-info.

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::HeaderMap;
use axum::response::IntoResponse;
use sdapi_core::models_dir::ModelIndex;
use sdapi_protocol::api::errors::ApiError;
use sdapi_protocol::api::items::{
    ScriptsList, latent_upscale_mode_items, sampler_items, scheduler_items, upscaler_items,
};
use sdapi_protocol::api::responses::PngInfoResponse;
use sdapi_protocol::images::py_b64decode;
use serde_json::{Value, json};

use super::json_body;
use crate::app::AppState;
use crate::errors::HandlerError;

pub async fn samplers() -> impl IntoResponse {
    Json(sampler_items())
}

pub async fn schedulers() -> impl IntoResponse {
    Json(scheduler_items())
}

/// The built-in upscalers, then the model upscalers found in `ESRGAN/` and `RealESRGAN/`.
pub async fn upscalers(State(s): State<AppState>) -> impl IntoResponse {
    let mut items = upscaler_items();
    let models = s.ctx.models.read().unwrap_or_else(|e| e.into_inner());
    items.extend(models.upscalers.iter().map(|u| sdapi_protocol::api::items::UpscalerItem {
        name: u.name.clone(),
        model_name: u.model_name.clone(),
        model_path: Some(u.path.to_string_lossy().into_owned()),
        model_url: None,
        scale: Some(u.scale),
    }));
    Json(items)
}

pub async fn latent_upscale_modes() -> impl IntoResponse {
    Json(latent_upscale_mode_items())
}

/// Lists for capabilities with nothing installed (hypernetworks, scripts info, …): `[]`.
pub async fn empty_list() -> impl IntoResponse {
    Json(Vec::<Value>::new())
}

/// The selectable scripts this server runs (A1111 lists lower-cased titles).
pub async fn scripts() -> impl IntoResponse {
    let (matrix, from_file, xyz) =
        ("prompt matrix".to_string(), "prompts from file or textbox".to_string(), "x/y/z plot".to_string());
    Json(ScriptsList {
        txt2img: vec![matrix.clone(), from_file.clone(), xyz.clone()],
        img2img: vec!["loopback".into(), "poor man's outpainting".into(), matrix, from_file, "sd upscale".into(), xyz],
    })
}

/// `ScriptInfo` of the built-in scripts: their UI controls in `ui()` order (the order of
/// `script_args`).
pub async fn script_info(State(s): State<AppState>) -> impl IntoResponse {
    use sdapi_protocol::api::items::{ScriptArg, ScriptInfo};
    let arg = |label: &str, value: Value| ScriptArg {
        label: Some(label.into()),
        value: Some(value),
        minimum: None,
        maximum: None,
        step: None,
        choices: None,
    };
    let mut upscalers: Vec<String> = upscaler_items().into_iter().map(|u| u.name).collect();
    upscalers.extend(s.ctx.models.read().unwrap_or_else(|e| e.into_inner()).upscalers.iter().map(|u| u.name.clone()));
    let info = arg(
        "",
        json!(
            "<p style=\"margin-bottom:0.75em\">Will upscale the image by the selected scale factor; use width and height sliders to set tile size</p>"
        ),
    );
    let overlap = ScriptArg {
        minimum: Some(json!(0)),
        maximum: Some(json!(256)),
        step: Some(json!(16)),
        ..arg("Tile overlap", json!(64))
    };
    let upscaler = ScriptArg { choices: Some(upscalers.clone()), ..arg("Upscaler", json!(upscalers.first())) };
    let scale = ScriptArg {
        minimum: Some(json!(1.0)),
        maximum: Some(json!(4.0)),
        step: Some(json!(0.05)),
        ..arg("Scale Factor", json!(2.0))
    };
    let slider = |label: &str, value: Value, min: Value, max: Value, step: Value| ScriptArg {
        minimum: Some(min),
        maximum: Some(max),
        step: Some(step),
        ..arg(label, value)
    };
    let dropdown = |label: &str, value: &str, choices: &[&str]| ScriptArg {
        choices: Some(choices.iter().map(|c| c.to_string()).collect()),
        ..arg(label, json!(value))
    };
    let loopback = vec![
        slider("Loops", json!(4), json!(1), json!(32), json!(1)),
        slider("Final denoising strength", json!(0.5), json!(0), json!(1), json!(0.01)),
        dropdown("Denoising strength curve", "Linear", &["Aggressive", "Linear", "Lazy"]),
        dropdown("Append interrogated prompt at each iteration", "None", &["None", "CLIP", "DeepBooru"]),
    ];
    let directions = ["left", "right", "up", "down"];
    let outpainting = vec![
        slider("Pixels to expand", json!(128), json!(8), json!(256), json!(8)),
        slider("Mask blur", json!(4), json!(0), json!(64), json!(1)),
        dropdown("Masked content", "fill", &["fill", "original", "latent noise", "latent nothing"]),
        ScriptArg {
            choices: Some(directions.iter().map(|c| c.to_string()).collect()),
            ..arg("Outpainting direction", json!(directions))
        },
    ];
    let from_file = || {
        vec![
            arg("Iterate seed every line", json!(false)),
            arg("Use same random seed for all lines", json!(false)),
            dropdown("Insert prompts at the", "start", &["start", "end"]),
            arg("List of prompt inputs", json!("")),
        ]
    };
    let matrix = || {
        vec![
            arg("Put variable parts at start of prompt", json!(false)),
            arg("Use different seed for each picture", json!(false)),
            dropdown("Select prompt", "positive", &["positive", "negative"]),
            dropdown("Select joining char", "comma", &["comma", "space"]),
            slider("Grid margins (px)", json!(0), json!(0), json!(500), json!(2)),
        ]
    };
    let xyz = |img2img: bool| {
        let labels = sdapi_core::processing::xyz_axis_labels(img2img);
        let axis = |name: &str, default: usize| {
            vec![
                ScriptArg {
                    choices: Some(labels.iter().map(|l| l.to_string()).collect()),
                    ..arg(&format!("{name} type"), json!(labels.get(default)))
                },
                arg(&format!("{name} values"), json!("")),
                ScriptArg { choices: Some(vec![]), ..arg(&format!("{name} values"), Value::Null) },
            ]
        };
        let mut args = axis("X", 1);
        args.extend(axis("Y", 0));
        args.extend(axis("Z", 0));
        args.extend([
            arg("Draw legend", json!(true)),
            arg("Include Sub Images", json!(false)),
            arg("Include Sub Grids", json!(false)),
            arg("Keep -1 for seeds", json!(false)),
            arg("Vary seeds for X", json!(false)),
            arg("Vary seeds for Y", json!(false)),
            arg("Vary seeds for Z", json!(false)),
            slider("Grid margins (px)", json!(0), json!(0), json!(500), json!(2)),
            arg("Use text inputs instead of dropdowns", json!(false)),
        ]);
        args
    };
    let script = |name: &str, img2img: bool, args| ScriptInfo {
        name: Some(name.into()),
        is_alwayson: Some(false),
        is_img2img: Some(img2img),
        args,
    };
    Json(vec![
        script("prompt matrix", false, matrix()),
        script("prompts from file or textbox", false, from_file()),
        script("x/y/z plot", false, xyz(false)),
        script("loopback", true, loopback),
        script("poor man's outpainting", true, outpainting),
        script("prompt matrix", true, matrix()),
        script("prompts from file or textbox", true, from_file()),
        script("sd upscale", true, vec![info, overlap, upscaler, scale]),
        script("x/y/z plot", true, xyz(true)),
    ])
}

pub async fn sd_models(State(s): State<AppState>) -> impl IntoResponse {
    let models = s.ctx.models.read().unwrap_or_else(|e| e.into_inner());
    Json(models.sd_model_items())
}

pub async fn sd_vae(State(s): State<AppState>) -> impl IntoResponse {
    let models = s.ctx.models.read().unwrap_or_else(|e| e.into_inner());
    Json(models.sd_vae_items())
}

/// `POST /refresh-checkpoints` and `/refresh-vae`: rescan the models directory → `null`.
pub async fn refresh_checkpoints(State(s): State<AppState>) -> Result<Json<Value>, HandlerError> {
    let dir = s.config.models_dir.clone();
    let cache = s.ctx.models.read().unwrap_or_else(|e| e.into_inner()).network_cache.clone();
    let index = tokio::task::spawn_blocking(move || ModelIndex::scan(&dir))
        .await
        .map_err(|e| ApiError::runtime(e.to_string()))?
        .map_err(|e| ApiError::runtime(e.to_string()))?;
    // The fetch cache stays listed (a rescan of the root must not forget fetched networks).
    let index = match cache {
        Some(cache) => index.with_network_cache(cache),
        None => index,
    };
    *s.ctx.models.write().unwrap_or_else(|e| e.into_inner()) = index;
    Ok(Json(Value::Null))
}

pub async fn get_options(State(s): State<AppState>) -> impl IntoResponse {
    let opts = s.ctx.options.read().unwrap_or_else(|e| e.into_inner());
    Json(opts.to_api_json())
}

/// `POST /options`: `sd_model_checkpoint` is validated first (500 RuntimeError), unknown keys fail
/// with A1111's KeyError; the whole update applies or nothing does.
pub async fn set_options(
    State(s): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, HandlerError> {
    let value = json_body(&headers, body)?;
    let Value::Object(map) = value else {
        return Err(HandlerError::Validation(sdapi_protocol::api::errors::ValidationErrors {
            detail: vec![sdapi_protocol::api::errors::ValidationError::body_not_a_dict()],
        }));
    };
    if let Some(ckpt) = map.get("sd_model_checkpoint").filter(|v| !v.is_null()) {
        let name = ckpt.as_str().map(str::to_string).unwrap_or_else(|| ckpt.to_string());
        let models = s.ctx.models.read().unwrap_or_else(|e| e.into_inner());
        match models.find_checkpoint(&name) {
            Some(info) => {
                let mut m = map.clone();
                m.insert("sd_model_checkpoint".into(), Value::String(info.item.title.clone()));
                drop(models);
                return apply_options(&s, &m);
            }
            None => return Err(ApiError::runtime(format!("model {name:?} not found")).into()),
        }
    }
    apply_options(&s, &map)
}

fn apply_options(s: &AppState, map: &serde_json::Map<String, Value>) -> Result<Json<Value>, HandlerError> {
    let mut opts = s.ctx.options.write().unwrap_or_else(|e| e.into_inner());
    let mut updated = opts.clone();
    updated.set_many(map)?;
    *opts = updated;
    Ok(Json(Value::Null))
}

pub async fn cmd_flags(State(s): State<AppState>) -> impl IntoResponse {
    Json(s.flags.to_api_json())
}

/// `GET /memory`: process RSS and system RAM from /proc; no CUDA on this build.
pub async fn memory() -> impl IntoResponse {
    let ram = read_ram().map(|(free, used, total)| json!({"free": free, "used": used, "total": total}));
    Json(json!({
        "ram": ram.unwrap_or_else(|| json!({"error": "unavailable"})),
        "cuda": {"error": "unavailable"},
    }))
}

fn read_ram() -> Option<(u64, u64, u64)> {
    let kb = |text: &str, key: &str| -> Option<u64> {
        text.lines().find(|l| l.starts_with(key))?.split_whitespace().nth(1)?.parse::<u64>().ok().map(|v| v * 1024)
    };
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let total = kb(&meminfo, "MemTotal:")?;
    let used = kb(&status, "VmRSS:")?;
    Some((total.saturating_sub(used), used, total))
}

/// `POST /png-info`: the infotext of an image (PNG text chunk or EXIF UserComment), parsed.
pub async fn png_info(headers: HeaderMap, body: Result<Bytes, BytesRejection>) -> Result<Json<Value>, HandlerError> {
    let value = json_body(&headers, body)?;
    let image = match value.get("image") {
        Some(Value::String(s)) => s.clone(),
        Some(_) | None => {
            return Err(HandlerError::Validation(sdapi_protocol::api::errors::ValidationErrors {
                detail: vec![sdapi_protocol::api::errors::ValidationError::new(
                    vec!["body".into(), "image".into()],
                    "field required",
                    "value_error.missing",
                )],
            }));
        }
    };
    if image.trim().is_empty() {
        return Err(ApiError::http(404, "Image not found").into());
    }
    // A1111 decodes with decode_base64_to_image: data URLs are stripped to their payload.
    let payload = match image.strip_prefix("data:image/") {
        Some(_) => image.split(';').nth(1).and_then(|s| s.split(',').nth(1)).unwrap_or_default().to_string(),
        None => image.clone(),
    };
    // Decoding and parsing are CPU work with input-sized cost: off the async executor, so
    // `/progress` and health checks keep answering while a large image is read.
    let response = tokio::task::spawn_blocking(move || -> Result<PngInfoResponse, ApiError> {
        let bytes = py_b64decode(&payload).ok_or_else(ApiError::invalid_encoded_image)?;
        if sdapi_protocol::images::decode_image_bytes(&bytes).is_none() {
            return Err(ApiError::invalid_encoded_image());
        }
        PngInfoResponse::from_image_bytes(&bytes, &[])
    })
    .await
    .map_err(|e| ApiError::runtime(e.to_string()))??;
    Ok(Json(json!({ "info": response.info, "items": response.items, "parameters": response.parameters })))
}
