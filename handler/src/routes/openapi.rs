//! `/openapi.json` and `/docs`, generated from the same field tables the request parser uses.

use axum::Json;
use axum::response::{Html, IntoResponse};
use sdapi_protocol::api::request::{Img2ImgRequest, Txt2ImgRequest};
use serde_json::{Map, Value, json};

use super::table::{API_ROUTES, ApiRoute};

/// The route list (method, path) as registered; tests compare it with A1111's.
pub fn route_list() -> Vec<(&'static str, &'static str)> {
    API_ROUTES.iter().map(|r| (r.method, r.path)).collect()
}

pub fn openapi_document() -> Value {
    let mut paths = Map::new();
    for ApiRoute { method, path, schema, .. } in API_ROUTES {
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
