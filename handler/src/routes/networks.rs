//! Extra networks and styles: `/loras`, `/embeddings`, `/prompt-styles` and their refresh routes,
//! with A1111's shapes.

use std::path::PathBuf;
use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use sdapi_core::networks::EmbeddingInfo;
use sdapi_core::styles::StyleDatabase;
use sdapi_protocol::api::errors::ApiError;
use sdapi_protocol::api::items::{EmbeddingItem, EmbeddingsResponse, PromptStyleItem};
use serde_json::{Map, Value, json};

use crate::app::AppState;
use crate::errors::HandlerError;

fn blocking_error(e: tokio::task::JoinError) -> HandlerError {
    ApiError::runtime(e.to_string()).into()
}

/// `GET /sdapi/v1/loras`: `[{name, alias, path, metadata}]`.
pub async fn loras(State(s): State<AppState>) -> Json<Value> {
    let models = s.ctx.models.read().unwrap_or_else(|e| e.into_inner());
    let items: Vec<Value> = models
        .networks
        .loras
        .iter()
        .map(|l| {
            let path = std::path::absolute(&l.path).unwrap_or_else(|_| l.path.clone());
            json!({"name": l.name, "alias": l.alias, "path": path.to_string_lossy(), "metadata": l.metadata})
        })
        .collect();
    Json(Value::Array(items))
}

/// `POST /sdapi/v1/refresh-loras` and `/refresh-embeddings`: rescan the folders → `null`.
pub async fn refresh_networks(State(s): State<AppState>) -> Result<Json<Value>, HandlerError> {
    let models = s.ctx.models.clone();
    tokio::task::spawn_blocking(move || models.write().unwrap_or_else(|e| e.into_inner()).rescan_networks())
        .await
        .map_err(blocking_error)?;
    Ok(Json(Value::Null))
}

/// `GET /sdapi/v1/embeddings`: every readable embedding file, `loaded` when its width fits the
/// current checkpoint, else `skipped` (A1111 leaves unreadable files out of both).
pub async fn embeddings(State(s): State<AppState>) -> Result<Json<EmbeddingsResponse>, HandlerError> {
    let Some(inspector) = s.inspector.clone() else {
        return Ok(Json(EmbeddingsResponse::default()));
    };
    let (files, checkpoint) = {
        let models = s.ctx.models.read().unwrap_or_else(|e| e.into_inner());
        let wanted = s.ctx.options.read().unwrap_or_else(|e| e.into_inner()).sd_model_checkpoint().unwrap_or_default();
        let checkpoint = models.find_checkpoint(&wanted).or_else(|| models.default_checkpoint()).map(|c| c.path());
        (Arc::clone(&models.networks.embeddings), checkpoint)
    };
    let listed = tokio::task::spawn_blocking(move || {
        let width = checkpoint.and_then(|c: PathBuf| inspector.embedding_width(&c).ok());
        let mut response = EmbeddingsResponse::default();
        for file in files.iter() {
            let info = match inspector.embedding_info(&file.path) {
                Ok(info) => info,
                Err(e) => {
                    tracing::warn!("embedding not listed: {e}");
                    continue;
                }
            };
            let fits = width.is_none_or(|w| w == info.shape);
            let target: &mut Map<String, Value> = if fits { &mut response.loaded } else { &mut response.skipped };
            target.insert(file.name.clone(), item(&info));
        }
        response
    })
    .await
    .map_err(blocking_error)?;
    Ok(Json(listed))
}

fn item(info: &EmbeddingInfo) -> Value {
    serde_json::to_value(EmbeddingItem {
        step: info.step,
        sd_checkpoint: info.sd_checkpoint.clone(),
        sd_checkpoint_name: info.sd_checkpoint_name.clone(),
        shape: info.shape as i64,
        vectors: info.vectors as i64,
    })
    .unwrap_or(Value::Null)
}

/// `GET /sdapi/v1/prompt-styles`: `[{name, prompt, negative_prompt}]`, re-read from the file so
/// edits show without a restart.
pub async fn prompt_styles(State(s): State<AppState>) -> Result<Json<Vec<PromptStyleItem>>, HandlerError> {
    let path = s.config.styles_file.clone();
    let loaded = tokio::task::spawn_blocking(move || StyleDatabase::load(&path)).await.map_err(blocking_error)?;
    match loaded {
        Ok(db) => {
            let items = db.items();
            *s.ctx.styles.write().unwrap_or_else(|e| e.into_inner()) = db;
            Ok(Json(items))
        }
        Err(e) => Err(ApiError::runtime(e.to_string()).into()),
    }
}
