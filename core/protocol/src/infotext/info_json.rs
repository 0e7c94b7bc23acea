//! The `info` string of txt2img/img2img responses: `Processed.js()` (docs/a1111-behaviour.md §3.1), 32 keys in order,
//! rendered with Python's default `json.dumps`.

use serde::Serialize;
use serde_json::{Map, Value};

use crate::python_json::dumps;

/// `Processed` fields in `js()` order. Numbers kept as `Value` where A1111's int/float
/// distinction shows (`subseed_strength`, `denoising_strength`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct InfoJson {
    pub prompt: String,
    pub all_prompts: Vec<String>,
    pub negative_prompt: String,
    pub all_negative_prompts: Vec<String>,
    pub seed: i64,
    pub all_seeds: Vec<i64>,
    pub subseed: i64,
    pub all_subseeds: Vec<i64>,
    pub subseed_strength: Value,
    pub width: i64,
    pub height: i64,
    pub sampler_name: String,
    pub cfg_scale: f64,
    pub steps: i64,
    pub batch_size: i64,
    pub restore_faces: bool,
    pub face_restoration_model: Option<String>,
    pub sd_model_name: Option<String>,
    pub sd_model_hash: Option<String>,
    pub sd_vae_name: Option<String>,
    pub sd_vae_hash: Option<String>,
    pub seed_resize_from_w: i64,
    pub seed_resize_from_h: i64,
    pub denoising_strength: Value,
    pub extra_generation_params: Map<String, Value>,
    pub index_of_first_image: i64,
    pub infotexts: Vec<String>,
    pub styles: Vec<String>,
    pub job_timestamp: String,
    pub clip_skip: i64,
    pub is_using_inpainting_conditioning: bool,
    pub version: Option<String>,
}

impl InfoJson {
    /// The ordered JSON object.
    pub fn to_value(&self) -> Value {
        serde_json::to_value(self).unwrap_or(Value::Null)
    }

    /// `json.dumps(obj)`: the exact `info` string.
    pub fn to_info_string(&self) -> String {
        dumps(&self.to_value())
    }
}
