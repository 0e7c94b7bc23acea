//! `/openapi.json` and `/docs`, generated from the same field tables the request parser uses.

use axum::Json;
use axum::response::{Html, IntoResponse};
use sdapi_protocol::api::request::{Img2ImgRequest, Txt2ImgRequest};
use serde_json::{Map, Value, json};

/// (method, path, request schema) for every route, in A1111's order.
const ROUTES: &[(&str, &str, Option<&str>)] = &[
    ("post", "/sdapi/v1/txt2img", Some("StableDiffusionProcessingTxt2Img")),
    ("post", "/sdapi/v1/img2img", Some("StableDiffusionProcessingImg2Img")),
    ("post", "/sdapi/v1/extra-single-image", None),
    ("post", "/sdapi/v1/extra-batch-images", None),
    ("post", "/sdapi/v1/png-info", None),
    ("get", "/sdapi/v1/progress", None),
    ("post", "/sdapi/v1/interrogate", None),
    ("post", "/sdapi/v1/interrupt", None),
    ("post", "/sdapi/v1/skip", None),
    ("get", "/sdapi/v1/options", None),
    ("post", "/sdapi/v1/options", None),
    ("get", "/sdapi/v1/cmd-flags", None),
    ("get", "/sdapi/v1/samplers", None),
    ("get", "/sdapi/v1/schedulers", None),
    ("get", "/sdapi/v1/upscalers", None),
    ("get", "/sdapi/v1/latent-upscale-modes", None),
    ("get", "/sdapi/v1/sd-models", None),
    ("get", "/sdapi/v1/sd-vae", None),
    ("get", "/sdapi/v1/hypernetworks", None),
    ("get", "/sdapi/v1/face-restorers", None),
    ("get", "/sdapi/v1/realesrgan-models", None),
    ("get", "/sdapi/v1/prompt-styles", None),
    ("get", "/sdapi/v1/embeddings", None),
    ("post", "/sdapi/v1/refresh-embeddings", None),
    ("post", "/sdapi/v1/refresh-checkpoints", None),
    ("post", "/sdapi/v1/refresh-vae", None),
    ("post", "/sdapi/v1/create/embedding", None),
    ("post", "/sdapi/v1/create/hypernetwork", None),
    ("post", "/sdapi/v1/train/embedding", None),
    ("post", "/sdapi/v1/train/hypernetwork", None),
    ("get", "/sdapi/v1/memory", None),
    ("post", "/sdapi/v1/unload-checkpoint", None),
    ("post", "/sdapi/v1/reload-checkpoint", None),
    ("get", "/sdapi/v1/scripts", None),
    ("get", "/sdapi/v1/script-info", None),
    ("get", "/sdapi/v1/extensions", None),
    ("get", "/sdapi/v1/loras", None),
    ("post", "/sdapi/v1/refresh-loras", None),
];

/// The route list (method, path) as registered; tests compare it with A1111's §2.1.
pub fn route_list() -> Vec<(&'static str, &'static str)> {
    ROUTES.iter().map(|(m, p, _)| (*m, *p)).collect()
}

pub fn openapi_document() -> Value {
    let mut paths = Map::new();
    for (method, path, schema) in ROUTES {
        let mut op = json!({
            "summary": path.trim_start_matches("/sdapi/v1/"),
            "responses": {"200": {"description": "Successful Response"}, "422": {"description": "Validation Error"}},
        });
        if let Some(name) = schema {
            op["requestBody"] = json!({
                "required": true,
                "content": {"application/json": {"schema": {"$ref": format!("#/components/schemas/{name}")}}}
            });
        }
        let entry = paths.entry(path.to_string()).or_insert_with(|| json!({}));
        entry[*method] = op;
    }
    json!({
        "openapi": "3.0.2",
        "info": {"title": "sdapi-rs", "version": sdapi_core::VERSION},
        "paths": paths,
        "components": {"schemas": {
            Txt2ImgRequest::SCHEMA_NAME: Txt2ImgRequest::json_schema(),
            Img2ImgRequest::SCHEMA_NAME: Img2ImgRequest::json_schema(),
        }},
    })
}

pub async fn openapi_json() -> impl IntoResponse {
    Json(openapi_document())
}

/// Swagger UI page, loaded from a CDN exactly as FastAPI's `/docs` does.
pub async fn docs() -> impl IntoResponse {
    Html(
        r#"<!DOCTYPE html><html><head><title>sdapi-rs - Swagger UI</title>
<link type="text/css" rel="stylesheet" href="https://cdn.jsdelivr.net/npm/swagger-ui-dist@5/swagger-ui.css">
</head><body><div id="swagger-ui"></div>
<script src="https://cdn.jsdelivr.net/npm/swagger-ui-dist@5/swagger-ui-bundle.js"></script>
<script>SwaggerUIBundle({url: '/openapi.json', dom_id: '#swagger-ui'})</script>
</body></html>"#,
    )
}
