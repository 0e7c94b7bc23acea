//! The listing payloads: samplers (docs/a1111-behaviour.md §5.1), schedulers (docs/a1111-behaviour.md §5.2), latent upscale modes, upscalers,
//! and the small item models of `modules/api/models.py`.

use serde::Serialize;
use serde_json::{Map, Value};

use crate::choices::{SamplerKind, Scheduler};

/// `SamplerItem`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SamplerItem {
    pub name: String,
    pub aliases: Vec<String>,
    pub options: Map<String, Value>,
}

/// GET /samplers, from the one sampler table.
pub fn sampler_items() -> Vec<SamplerItem> {
    SamplerKind::ALL
        .iter()
        .map(|s| SamplerItem {
            name: s.name().into(),
            aliases: s.aliases().iter().map(|a| a.to_string()).collect(),
            options: s.listed_options().into_iter().map(|(k, v)| (k.to_string(), Value::String(v))).collect(),
        })
        .collect()
}

/// `SchedulerItem`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SchedulerItem {
    pub name: String,
    pub label: String,
    pub aliases: Option<Vec<String>>,
    pub default_rho: Option<f64>,
    pub need_inner_model: Option<bool>,
}

/// GET /schedulers, from the one scheduler table.
pub fn scheduler_items() -> Vec<SchedulerItem> {
    Scheduler::ALL
        .iter()
        .map(|s| SchedulerItem {
            name: s.name().into(),
            label: s.label().into(),
            aliases: (!s.aliases().is_empty()).then(|| s.aliases().iter().map(|x| x.to_string()).collect()),
            default_rho: Some(s.default_rho()),
            need_inner_model: Some(s.needs_model()),
        })
        .collect()
}

/// `LatentUpscalerModeItem`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LatentUpscalerModeItem {
    pub name: String,
}

/// The keys of `shared.latent_upscale_modes`.
pub fn latent_upscale_mode_items() -> Vec<LatentUpscalerModeItem> {
    crate::choices::LatentUpscaleMode::ALL
        .iter()
        .map(|m| LatentUpscalerModeItem { name: m.name().to_string() })
        .collect()
}

/// `UpscalerItem`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct UpscalerItem {
    pub name: String,
    pub model_name: Option<String>,
    pub model_path: Option<String>,
    pub model_url: Option<String>,
    pub scale: Option<f64>,
}

/// The upscalers we actually implement, with the fields A1111's built-ins report
/// (`UpscalerNone`/`UpscalerLanczos`/`UpscalerNearest`: no model, scale 4).
pub fn upscaler_items() -> Vec<UpscalerItem> {
    crate::images::BuiltinUpscaler::ALL
        .iter()
        .map(|u| UpscalerItem {
            name: u.name().to_string(),
            model_name: None,
            model_path: None,
            model_url: None,
            scale: Some(4.0),
        })
        .collect()
}

/// `SDModelItem`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SDModelItem {
    pub title: String,
    pub model_name: String,
    pub hash: Option<String>,
    pub sha256: Option<String>,
    pub filename: String,
    pub config: Option<String>,
}

/// `SDVaeItem`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SDVaeItem {
    pub model_name: String,
    pub filename: String,
}

/// `HypernetworkItem`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HypernetworkItem {
    pub name: String,
    pub path: Option<String>,
}

/// `FaceRestorerItem`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FaceRestorerItem {
    pub name: String,
    pub cmd_dir: Option<String>,
}

/// `RealesrganItem`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RealesrganItem {
    pub name: String,
    pub path: Option<String>,
    pub scale: Option<i64>,
}

/// `PromptStyleItem`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PromptStyleItem {
    pub name: String,
    pub prompt: Option<String>,
    pub negative_prompt: Option<String>,
}

/// `EmbeddingItem`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EmbeddingItem {
    pub step: Option<i64>,
    pub sd_checkpoint: Option<String>,
    pub sd_checkpoint_name: Option<String>,
    pub shape: i64,
    pub vectors: i64,
}

/// `EmbeddingsResponse`.
#[derive(Debug, Clone, PartialEq, Serialize, Default)]
pub struct EmbeddingsResponse {
    pub loaded: Map<String, Value>,
    pub skipped: Map<String, Value>,
}

/// `ScriptsList`: the selectable scripts per tab.
#[derive(Debug, Clone, PartialEq, Serialize, Default)]
pub struct ScriptsList {
    pub txt2img: Vec<String>,
    pub img2img: Vec<String>,
}

/// `ScriptArg`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ScriptArg {
    pub label: Option<String>,
    pub value: Option<Value>,
    pub minimum: Option<Value>,
    pub maximum: Option<Value>,
    pub step: Option<Value>,
    pub choices: Option<Vec<String>>,
}

/// `ScriptInfo`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ScriptInfo {
    pub name: Option<String>,
    pub is_alwayson: Option<bool>,
    pub is_img2img: Option<bool>,
    pub args: Vec<ScriptArg>,
}

/// `ExtensionItem`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ExtensionItem {
    pub name: String,
    pub remote: String,
    pub branch: String,
    pub commit_hash: String,
    pub version: String,
    pub commit_date: String,
    pub enabled: bool,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn samplers_payload() {
        let items = sampler_items();
        assert_eq!(items.len(), 20);
        assert_eq!(items[0].name, "DPM++ 2M");
        assert_eq!(items[19].name, "LCM");
        let v = serde_json::to_value(&items).unwrap();
        // docs/a1111-behaviour.md §5.1: DPM++ SDE options {scheduler: karras, second_order: True, brownian_noise: True}
        assert_eq!(
            v[1],
            json!({"name": "DPM++ SDE", "aliases": ["k_dpmpp_sde"], "options": {"scheduler": "karras", "second_order": "True", "brownian_noise": "True"}})
        );
        assert_eq!(
            v[3]["options"],
            json!({"scheduler": "exponential", "brownian_noise": "True", "solver_type": "heun"})
        );
        assert_eq!(
            v[11]["options"],
            json!({"scheduler": "karras", "discard_next_to_last_sigma": "True", "uses_ensd": "True", "second_order": "True"})
        );
        assert_eq!(v[6]["aliases"], json!(["k_euler_a", "k_euler_ancestral"]));
        assert_eq!(v[7]["options"], json!({}));
    }

    #[test]
    fn schedulers_payload() {
        let v = serde_json::to_value(scheduler_items()).unwrap();
        assert_eq!(v.as_array().unwrap().len(), 12);
        assert_eq!(
            v[0],
            json!({"name": "automatic", "label": "Automatic", "aliases": null, "default_rho": -1.0, "need_inner_model": false})
        );
        assert_eq!(v[5]["aliases"], json!(["SGMUniform"]));
        assert_eq!(v[2]["default_rho"], json!(7.0));
    }
}
