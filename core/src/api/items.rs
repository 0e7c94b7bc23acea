//! The listing payloads: samplers (§5.1), schedulers (§5.2), latent upscale modes, upscalers,
//! and the small item models of `modules/api/models.py`.

use serde::Serialize;
use serde_json::{Map, Value};

/// A sampler as registered by A1111 (`all_samplers`, in order).
#[derive(Debug, Clone, PartialEq)]
pub struct SamplerDef {
    pub name: &'static str,
    pub aliases: &'static [&'static str],
    /// Default scheduler *name* (`options['scheduler']`), e.g. "karras".
    pub scheduler: Option<&'static str>,
    pub second_order: bool,
    pub brownian_noise: bool,
    pub uses_ensd: bool,
    pub discard_next_to_last_sigma: bool,
    pub solver_type: Option<&'static str>,
}

const fn sampler(name: &'static str, aliases: &'static [&'static str]) -> SamplerDef {
    SamplerDef { name, aliases, scheduler: None, second_order: false, brownian_noise: false, uses_ensd: false, discard_next_to_last_sigma: false, solver_type: None }
}

/// The 20 samplers of v1.10.1 in `all_samplers` order; the first is the fallback for unknown names.
pub static SAMPLERS: [SamplerDef; 20] = [
    SamplerDef { scheduler: Some("karras"), ..sampler("DPM++ 2M", &["k_dpmpp_2m"]) },
    SamplerDef { scheduler: Some("karras"), second_order: true, brownian_noise: true, ..sampler("DPM++ SDE", &["k_dpmpp_sde"]) },
    SamplerDef { scheduler: Some("exponential"), brownian_noise: true, ..sampler("DPM++ 2M SDE", &["k_dpmpp_2m_sde"]) },
    SamplerDef { scheduler: Some("exponential"), brownian_noise: true, solver_type: Some("heun"), ..sampler("DPM++ 2M SDE Heun", &["k_dpmpp_2m_sde_heun"]) },
    SamplerDef { scheduler: Some("karras"), uses_ensd: true, second_order: true, ..sampler("DPM++ 2S a", &["k_dpmpp_2s_a"]) },
    SamplerDef { scheduler: Some("exponential"), discard_next_to_last_sigma: true, brownian_noise: true, ..sampler("DPM++ 3M SDE", &["k_dpmpp_3m_sde"]) },
    SamplerDef { uses_ensd: true, ..sampler("Euler a", &["k_euler_a", "k_euler_ancestral"]) },
    sampler("Euler", &["k_euler"]),
    sampler("LMS", &["k_lms"]),
    SamplerDef { second_order: true, ..sampler("Heun", &["k_heun"]) },
    SamplerDef { scheduler: Some("karras"), discard_next_to_last_sigma: true, second_order: true, ..sampler("DPM2", &["k_dpm_2"]) },
    SamplerDef { scheduler: Some("karras"), discard_next_to_last_sigma: true, uses_ensd: true, second_order: true, ..sampler("DPM2 a", &["k_dpm_2_a"]) },
    SamplerDef { uses_ensd: true, ..sampler("DPM fast", &["k_dpm_fast"]) },
    SamplerDef { uses_ensd: true, ..sampler("DPM adaptive", &["k_dpm_ad"]) },
    SamplerDef { scheduler: Some("karras"), second_order: true, ..sampler("Restart", &["restart"]) },
    sampler("DDIM", &["ddim"]),
    sampler("DDIM CFG++", &["ddim_cfgpp"]),
    sampler("PLMS", &["plms"]),
    sampler("UniPC", &["unipc"]),
    sampler("LCM", &["k_lcm"]),
];

/// Exact-name lookup (A1111's `all_samplers_map`).
pub fn find_sampler(name: &str) -> Option<&'static SamplerDef> {
    SAMPLERS.iter().find(|s| s.name == name)
}

impl SamplerDef {
    /// The options dict in A1111's key order, values stringified as pydantic does (`True` → "True").
    pub fn options_stringified(&self) -> Map<String, Value> {
        // Key order per sampler follows the Python dict literals of sd_samplers_kdiffusion.py.
        let order: &[&str] = match self.name {
            "DPM++ 2S a" => &["scheduler", "uses_ensd", "second_order"],
            "DPM++ 3M SDE" => &["scheduler", "discard_next_to_last_sigma", "brownian_noise"],
            "DPM2" => &["scheduler", "discard_next_to_last_sigma", "second_order"],
            "DPM2 a" => &["scheduler", "discard_next_to_last_sigma", "uses_ensd", "second_order"],
            _ => &["scheduler", "second_order", "brownian_noise", "uses_ensd", "discard_next_to_last_sigma", "solver_type"],
        };
        let mut m = Map::new();
        for key in order {
            let v = match *key {
                "scheduler" => self.scheduler.map(String::from),
                "second_order" => self.second_order.then(|| "True".to_string()),
                "brownian_noise" => self.brownian_noise.then(|| "True".to_string()),
                "uses_ensd" => self.uses_ensd.then(|| "True".to_string()),
                "discard_next_to_last_sigma" => self.discard_next_to_last_sigma.then(|| "True".to_string()),
                "solver_type" => self.solver_type.map(String::from),
                _ => None,
            };
            if let Some(v) = v {
                m.insert(key.to_string(), Value::String(v));
            }
        }
        m
    }
}

/// `SamplerItem`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SamplerItem {
    pub name: String,
    pub aliases: Vec<String>,
    pub options: Map<String, Value>,
}

/// GET /samplers.
pub fn sampler_items() -> Vec<SamplerItem> {
    SAMPLERS
        .iter()
        .map(|s| SamplerItem { name: s.name.into(), aliases: s.aliases.iter().map(|a| a.to_string()).collect(), options: s.options_stringified() })
        .collect()
}

/// A scheduler of `modules/sd_schedulers.py`.
#[derive(Debug, Clone, PartialEq)]
pub struct SchedulerDef {
    pub name: &'static str,
    pub label: &'static str,
    pub aliases: Option<&'static [&'static str]>,
    pub default_rho: f64,
    pub need_inner_model: bool,
}

const fn sched(name: &'static str, label: &'static str, default_rho: f64, need_inner_model: bool) -> SchedulerDef {
    SchedulerDef { name, label, aliases: None, default_rho, need_inner_model }
}

/// The 12 schedulers in order; the first ("Automatic") is the fallback.
pub static SCHEDULERS: [SchedulerDef; 12] = [
    sched("automatic", "Automatic", -1.0, false),
    sched("uniform", "Uniform", -1.0, true),
    sched("karras", "Karras", 7.0, false),
    sched("exponential", "Exponential", -1.0, false),
    sched("polyexponential", "Polyexponential", 1.0, false),
    SchedulerDef { aliases: Some(&["SGMUniform"]), ..sched("sgm_uniform", "SGM Uniform", -1.0, true) },
    sched("kl_optimal", "KL Optimal", -1.0, false),
    sched("align_your_steps", "Align Your Steps", -1.0, false),
    sched("simple", "Simple", -1.0, true),
    sched("normal", "Normal", -1.0, true),
    sched("ddim", "DDIM", -1.0, true),
    sched("beta", "Beta", -1.0, true),
];

/// `schedulers_map`: name or label.
pub fn find_scheduler(name_or_label: &str) -> Option<&'static SchedulerDef> {
    SCHEDULERS.iter().find(|s| s.name == name_or_label).or_else(|| SCHEDULERS.iter().find(|s| s.label == name_or_label))
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

/// GET /schedulers.
pub fn scheduler_items() -> Vec<SchedulerItem> {
    SCHEDULERS
        .iter()
        .map(|s| SchedulerItem {
            name: s.name.into(),
            label: s.label.into(),
            aliases: s.aliases.map(|a| a.iter().map(|x| x.to_string()).collect()),
            default_rho: Some(s.default_rho),
            need_inner_model: Some(s.need_inner_model),
        })
        .collect()
}

/// `LatentUpscalerModeItem`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LatentUpscalerModeItem {
    pub name: String,
}

/// The keys of `shared.latent_upscale_modes`.
pub const LATENT_UPSCALE_MODES: [&str; 6] =
    ["Latent", "Latent (antialiased)", "Latent (bicubic)", "Latent (bicubic antialiased)", "Latent (nearest)", "Latent (nearest-exact)"];

pub fn latent_upscale_mode_items() -> Vec<LatentUpscalerModeItem> {
    LATENT_UPSCALE_MODES.iter().map(|n| LatentUpscalerModeItem { name: n.to_string() }).collect()
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
    ["None", "Lanczos", "Nearest"]
        .iter()
        .map(|n| UpscalerItem { name: n.to_string(), model_name: None, model_path: None, model_url: None, scale: Some(4.0) })
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

/// `ScriptsList` (we have no selectable scripts).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ScriptsList {
    pub txt2img: Vec<String>,
    pub img2img: Vec<String>,
}

impl Default for ScriptsList {
    fn default() -> Self {
        Self { txt2img: vec![], img2img: vec![] }
    }
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
        // §5.1: DPM++ SDE options {scheduler: karras, second_order: True, brownian_noise: True}
        assert_eq!(v[1], json!({"name": "DPM++ SDE", "aliases": ["k_dpmpp_sde"], "options": {"scheduler": "karras", "second_order": "True", "brownian_noise": "True"}}));
        assert_eq!(v[3]["options"], json!({"scheduler": "exponential", "brownian_noise": "True", "solver_type": "heun"}));
        assert_eq!(v[11]["options"], json!({"scheduler": "karras", "discard_next_to_last_sigma": "True", "uses_ensd": "True", "second_order": "True"}));
        assert_eq!(v[6]["aliases"], json!(["k_euler_a", "k_euler_ancestral"]));
        assert_eq!(v[7]["options"], json!({}));
    }

    #[test]
    fn schedulers_payload() {
        let v = serde_json::to_value(scheduler_items()).unwrap();
        assert_eq!(v.as_array().unwrap().len(), 12);
        assert_eq!(v[0], json!({"name": "automatic", "label": "Automatic", "aliases": null, "default_rho": -1.0, "need_inner_model": false}));
        assert_eq!(v[5]["aliases"], json!(["SGMUniform"]));
        assert_eq!(v[2]["default_rho"], json!(7.0));
        assert_eq!(find_scheduler("Karras").unwrap().name, "karras");
        assert_eq!(find_scheduler("karras").unwrap().label, "Karras");
        assert!(find_scheduler("SGMUniform").is_none());
    }
}
