//! A1111's settings (`GET/POST /sdapi/v1/options`): every option registered by default in
//! v1.10.1 (`modules/shared_options.py` plus the built-in extensions), its default, and the
//! behaviours of `opts.set` and of the generated `OptionsModel`.
//!
//! `Options` is an `Arc` around the values, so cloning for a per-request copy is cheap; a
//! write clones the map once (copy on write).

use std::sync::{Arc, OnceLock};

use serde_json::{Map, Value};

use super::errors::ApiError;
use super::lax;
use crate::choices::{EmphasisMode, RandnSource, UniPcSettings, UniPcSkipType, UniPcVariant};

/// One registered option.
#[derive(Debug, Clone, PartialEq)]
pub struct OptionDef {
    pub key: String,
    pub default: Value,
    /// `restrict_api=True`: POST /options silently ignores it.
    pub restrict_api: bool,
    /// Infotext label (e.g. "Clip skip"), if the option is written to / read from infotexts.
    pub infotext: Option<String>,
    /// `OptionHTML` explanations: listed, never stored.
    pub do_not_save: bool,
}

/// Default table extracted from A1111 v1.10.1 sources: `[key, default, restrict_api, infotext, html]`.
const DEFAULTS_JSON: &str = include_str!("data/options_defaults.json");

/// All registered options in registration order (= GET /options key order).
pub fn option_defs() -> &'static [OptionDef] {
    static DEFS: OnceLock<Vec<OptionDef>> = OnceLock::new();
    DEFS.get_or_init(|| {
        let rows: Vec<(String, Value, bool, Option<String>, bool)> =
            serde_json::from_str(DEFAULTS_JSON).expect("bundled options table is valid JSON");
        rows.into_iter()
            .map(|(key, default, restrict_api, infotext, do_not_save)| OptionDef {
                key,
                default,
                restrict_api,
                infotext,
                do_not_save,
            })
            .collect()
    })
}

/// Looks up an option definition by key.
pub fn option_def(key: &str) -> Option<&'static OptionDef> {
    static INDEX: OnceLock<std::collections::HashMap<&'static str, usize>> = OnceLock::new();
    let index = INDEX.get_or_init(|| option_defs().iter().enumerate().map(|(i, d)| (d.key.as_str(), i)).collect());
    index.get(key).map(|&i| &option_defs()[i])
}

/// Option key for an infotext label ("Clip skip" → `CLIP_stop_at_last_layers`).
pub fn option_for_infotext_label(label: &str) -> Option<&'static OptionDef> {
    option_defs().iter().find(|d| d.infotext.as_deref() == Some(label))
}

/// Python truthiness of a JSON value (decides OptionsModel's field type).
fn truthy(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
    }
}

/// Python `==` for option values (1 == 1.0 == True).
fn py_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(_) | Value::Bool(_), Value::Number(_) | Value::Bool(_)) => {
            let num = |v: &Value| match v {
                Value::Bool(b) => Some(*b as i64 as f64),
                Value::Number(n) => n.as_f64(),
                _ => None,
            };
            num(a) == num(b)
        }
        _ => a == b,
    }
}

/// The current option values (`opts.data`, defaults filled in).
#[derive(Debug, Clone)]
pub struct Options {
    values: Arc<Map<String, Value>>,
}

impl Default for Options {
    fn default() -> Self {
        Self::new()
    }
}

impl Options {
    /// Every option at its default.
    pub fn new() -> Self {
        let values = option_defs().iter().map(|d| (d.key.clone(), d.default.clone())).collect();
        Self { values: Arc::new(values) }
    }

    /// Defaults overlaid with a saved `config.json` object (unknown keys are kept, as A1111 does).
    pub fn from_saved(saved: &Map<String, Value>) -> Self {
        let mut o = Self::new();
        let values = Arc::make_mut(&mut o.values);
        for (k, v) in saved {
            values.insert(k.clone(), v.clone());
        }
        o
    }

    /// Raw value (`opts.data.get(key, default)`).
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.values.get(key)
    }

    /// All stored values (what `config.json` would hold).
    pub fn values(&self) -> &Map<String, Value> {
        &self.values
    }

    /// `opts.set(key, value, is_api=True)`: returns whether the value changed.
    /// Equal values are no-ops (even for unknown keys, so `{"unknown": null}` is accepted);
    /// unknown keys → `KeyError`; `restrict_api` and HTML options are silently ignored.
    pub fn set(&mut self, key: &str, value: Value) -> Result<bool, ApiError> {
        let old = self.values.get(key).cloned().unwrap_or(Value::Null);
        if py_eq(&old, &value) {
            return Ok(false);
        }
        let def = option_def(key).ok_or_else(|| ApiError::key_error(key))?;
        if def.do_not_save || def.restrict_api {
            return Ok(false);
        }
        Arc::make_mut(&mut self.values).insert(key.to_string(), value);
        Ok(true)
    }

    /// Applies a POST /options body (or `override_settings`) key by key.
    pub fn set_many(&mut self, body: &Map<String, Value>) -> Result<(), ApiError> {
        for (k, v) in body {
            self.set(k, v.clone())?;
        }
        Ok(())
    }

    /// GET /options: every registered option, coerced through A1111's `OptionsModel`:
    /// a truthy default's type (with int→float) is applied; falsy defaults pass values through.
    pub fn to_api_json(&self) -> Map<String, Value> {
        let mut out = Map::new();
        for def in option_defs() {
            let v = self.values.get(&def.key).cloned().unwrap_or_else(|| def.default.clone());
            out.insert(def.key.clone(), coerce_like_default(&def.default, v));
        }
        out
    }

    // ---- typed getters for what the engine reads ----

    fn num(&self, key: &str) -> f64 {
        let v = self.get(key).or_else(|| option_def(key).map(|d| &d.default));
        match v {
            Some(Value::Bool(b)) => *b as i64 as f64,
            Some(v) => lax::to_float(v).ok().and_then(|f| f.as_f64()).unwrap_or(0.0),
            None => 0.0,
        }
    }
    fn int(&self, key: &str) -> i64 {
        let v = self.get(key).or_else(|| option_def(key).map(|d| &d.default));
        v.and_then(|v| lax::to_int(v).ok()).and_then(|v| v.as_i64()).unwrap_or(0)
    }
    fn flag(&self, key: &str) -> bool {
        let v = self.get(key).or_else(|| option_def(key).map(|d| &d.default));
        v.map(truthy).unwrap_or(false)
    }
    fn text(&self, key: &str) -> String {
        match self.get(key).or_else(|| option_def(key).map(|d| &d.default)) {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Null) | None => String::new(),
            Some(v) => crate::python_json::py_str(v),
        }
    }

    pub fn clip_stop_at_last_layers(&self) -> i64 {
        self.int("CLIP_stop_at_last_layers")
    }
    /// "GPU", "CPU" or "NV".
    /// The option's text as set (the infotext's `RNG` shows it verbatim).
    pub fn randn_source_option(&self) -> String {
        self.text("randn_source")
    }
    /// Anything but "CPU" or "NV" draws like "GPU", as A1111's `rng.randn` branches.
    pub fn randn_source(&self) -> RandnSource {
        RandnSource::from_option(&self.text("randn_source")).unwrap_or_default()
    }
    pub fn eta_noise_seed_delta(&self) -> i64 {
        self.int("eta_noise_seed_delta")
    }
    pub fn eta_ancestral(&self) -> f64 {
        self.num("eta_ancestral")
    }
    pub fn eta_ddim(&self) -> f64 {
        self.num("eta_ddim")
    }
    pub fn s_churn(&self) -> f64 {
        self.num("s_churn")
    }
    pub fn s_tmin(&self) -> f64 {
        self.num("s_tmin")
    }
    pub fn s_tmax(&self) -> f64 {
        self.num("s_tmax")
    }
    pub fn s_noise(&self) -> f64 {
        self.num("s_noise")
    }
    pub fn s_min_uncond(&self) -> f64 {
        self.num("s_min_uncond")
    }
    pub fn sigma_min(&self) -> f64 {
        self.num("sigma_min")
    }
    pub fn sigma_max(&self) -> f64 {
        self.num("sigma_max")
    }
    pub fn rho(&self) -> f64 {
        self.num("rho")
    }
    pub fn always_discard_next_to_last_sigma(&self) -> bool {
        self.flag("always_discard_next_to_last_sigma")
    }
    /// "Original", "No norm", "Ignore" or "None".
    /// Unknown names are "Original", as `sd_emphasis.get_current_option` falls back.
    pub fn emphasis(&self) -> EmphasisMode {
        EmphasisMode::from_option(&self.text("emphasis")).unwrap_or_default()
    }
    pub fn comma_padding_backtrack(&self) -> i64 {
        self.int("comma_padding_backtrack")
    }
    /// Lower-cased, as `encode_pil_to_base64` uses it.
    pub fn samples_format(&self) -> String {
        self.text("samples_format").to_lowercase()
    }
    pub fn jpeg_quality(&self) -> i64 {
        self.int("jpeg_quality")
    }
    pub fn webp_lossless(&self) -> bool {
        self.flag("webp_lossless")
    }
    pub fn enable_pnginfo(&self) -> bool {
        self.flag("enable_pnginfo")
    }
    pub fn add_model_hash_to_info(&self) -> bool {
        self.flag("add_model_hash_to_info")
    }
    pub fn add_model_name_to_info(&self) -> bool {
        self.flag("add_model_name_to_info")
    }
    pub fn add_vae_name_to_info(&self) -> bool {
        self.flag("add_vae_name_to_info")
    }
    pub fn add_vae_hash_to_info(&self) -> bool {
        self.flag("add_vae_hash_to_info")
    }
    pub fn add_version_to_infotext(&self) -> bool {
        self.flag("add_version_to_infotext")
    }
    pub fn show_progress_every_n_steps(&self) -> i64 {
        self.int("show_progress_every_n_steps")
    }
    pub fn live_previews_enable(&self) -> bool {
        self.flag("live_previews_enable")
    }
    /// `None` until a checkpoint is selected.
    pub fn sd_model_checkpoint(&self) -> Option<String> {
        self.get("sd_model_checkpoint").and_then(|v| v.as_str()).map(String::from)
    }
    pub fn sd_vae(&self) -> String {
        self.text("sd_vae")
    }
    pub fn samples_save(&self) -> bool {
        self.flag("samples_save")
    }
    pub fn samples_filename_pattern(&self) -> String {
        self.text("samples_filename_pattern")
    }
    pub fn save_images_add_number(&self) -> bool {
        self.flag("save_images_add_number")
    }
    pub fn outdir_samples(&self) -> String {
        self.text("outdir_samples")
    }
    pub fn outdir_txt2img_samples(&self) -> String {
        self.text("outdir_txt2img_samples")
    }
    pub fn outdir_img2img_samples(&self) -> String {
        self.text("outdir_img2img_samples")
    }
    pub fn return_grid(&self) -> bool {
        self.flag("return_grid")
    }
    pub fn grid_only_if_multiple(&self) -> bool {
        self.flag("grid_only_if_multiple")
    }
    pub fn img2img_fix_steps(&self) -> bool {
        self.flag("img2img_fix_steps")
    }
    pub fn initial_noise_multiplier(&self) -> f64 {
        self.num("initial_noise_multiplier")
    }
    pub fn img2img_extra_noise(&self) -> f64 {
        self.num("img2img_extra_noise")
    }
    pub fn img2img_background_color(&self) -> String {
        self.text("img2img_background_color")
    }
    /// The UniPC settings; a variant or skip type A1111 does not know is an error (A1111's
    /// sampler fails on it too), raised before anything is queued.
    pub fn uni_pc(&self) -> Result<UniPcSettings, ApiError> {
        let unknown = |key: &str, value: &str| ApiError::python("ValueError", format!("unknown {key} {value:?}"));
        let variant = self.text("uni_pc_variant");
        let skip_type = self.text("uni_pc_skip_type");
        Ok(UniPcSettings {
            variant: UniPcVariant::from_option(&variant).ok_or_else(|| unknown("uni_pc_variant", &variant))?,
            skip_type: UniPcSkipType::from_option(&skip_type).ok_or_else(|| unknown("uni_pc_skip_type", &skip_type))?,
            order: self.int("uni_pc_order").clamp(1, 50) as usize,
            lower_order_final: self.flag("uni_pc_lower_order_final"),
        })
    }
    pub fn beta_dist_alpha(&self) -> f64 {
        self.num("beta_dist_alpha")
    }
    pub fn beta_dist_beta(&self) -> f64 {
        self.num("beta_dist_beta")
    }
    pub fn use_old_scheduling(&self) -> bool {
        self.flag("use_old_scheduling")
    }
    pub fn use_old_karras_scheduler_sigmas(&self) -> bool {
        self.flag("use_old_karras_scheduler_sigmas")
    }
    pub fn sgm_noise_multiplier(&self) -> bool {
        self.flag("sgm_noise_multiplier")
    }
    pub fn pad_cond_uncond(&self) -> bool {
        self.flag("pad_cond_uncond")
    }
    pub fn batch_cond_uncond(&self) -> bool {
        self.flag("batch_cond_uncond")
    }
    pub fn enable_prompt_comments(&self) -> bool {
        self.flag("enable_prompt_comments")
    }
    pub fn face_restoration(&self) -> bool {
        self.flag("face_restoration")
    }
    pub fn face_restoration_model(&self) -> String {
        self.text("face_restoration_model")
    }
    pub fn tiling(&self) -> bool {
        self.flag("tiling")
    }
    pub fn skip_early_cond(&self) -> f64 {
        self.num("skip_early_cond")
    }
    pub fn sd_noise_schedule(&self) -> String {
        self.text("sd_noise_schedule")
    }
    pub fn use_downcasted_alpha_bar(&self) -> bool {
        self.flag("use_downcasted_alpha_bar")
    }
    pub fn inpainting_mask_weight(&self) -> f64 {
        self.num("inpainting_mask_weight")
    }
}

/// OptionsModel's per-field coercion: the field type is `type(default)` (int→float) when the
/// default is truthy, `Any` otherwise. Values that fail coercion are passed through unchanged
/// (A1111 would fail response validation with a 500 instead).
fn coerce_like_default(default: &Value, v: Value) -> Value {
    if !truthy(default) || v.is_null() {
        return v;
    }
    let r = match default {
        Value::Number(_) => lax::to_float(&v),
        Value::String(_) => lax::to_str(&v),
        Value::Bool(_) => lax::to_bool(&v),
        Value::Array(_) => lax::to_list(&v).map(Value::Array),
        Value::Object(_) => lax::to_dict(&v).map(Value::Object),
        Value::Null => Ok(v.clone()),
    };
    r.unwrap_or(v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn table_has_the_options_the_engine_and_clients_use() {
        // Defaults read from A1111 v1.10.1 modules/shared_options.py.
        let o = Options::new();
        assert_eq!(o.clip_stop_at_last_layers(), 1);
        assert_eq!(o.randn_source(), RandnSource::Gpu);
        assert_eq!(o.eta_ancestral(), 1.0);
        assert_eq!(o.s_noise(), 1.0);
        assert_eq!(o.emphasis(), EmphasisMode::Original);
        assert_eq!(o.comma_padding_backtrack(), 20);
        assert_eq!(o.samples_format(), "png");
        assert_eq!(o.jpeg_quality(), 80);
        assert!(o.enable_pnginfo() && o.add_model_hash_to_info() && o.add_version_to_infotext());
        assert_eq!(o.show_progress_every_n_steps(), 10);
        assert_eq!(o.sd_model_checkpoint(), None);
        assert_eq!(o.sd_vae(), "Automatic");
        assert_eq!(o.outdir_txt2img_samples(), "outputs/txt2img-images");
        assert_eq!(o.img2img_background_color(), "#ffffff");
        assert_eq!(o.uni_pc().unwrap(), UniPcSettings::default());
        assert_eq!(o.beta_dist_alpha(), 0.6);
        assert!(o.enable_prompt_comments());
        assert!(option_defs().len() > 300);
        assert_eq!(option_for_infotext_label("Clip skip").unwrap().key, "CLIP_stop_at_last_layers");
        assert_eq!(option_for_infotext_label("RNG").unwrap().key, "randn_source");
        assert_eq!(option_for_infotext_label("ENSD").unwrap().key, "eta_noise_seed_delta");
    }

    #[test]
    fn get_applies_int_to_float_quirk() {
        let api = Options::new().to_api_json();
        assert_eq!(api["jpeg_quality"], json!(80.0));
        assert_eq!(api["CLIP_stop_at_last_layers"], json!(1.0));
        assert_eq!(api["show_progress_every_n_steps"], json!(10.0));
        // falsy int default → Any → stays int
        assert_eq!(api["eta_noise_seed_delta"], json!(0));
        assert_eq!(api["sd_model_checkpoint"], Value::Null);
        assert_eq!(api["samples_save"], json!(true));
        assert_eq!(api["send_seed"], json!(true));
        // float default: a stored int comes back as float
        let mut o = Options::new();
        o.set("eta_ancestral", json!(0)).unwrap();
        assert_eq!(o.to_api_json()["eta_ancestral"], json!(0.0));
        o.set("CLIP_stop_at_last_layers", json!(2)).unwrap();
        assert_eq!(o.to_api_json()["CLIP_stop_at_last_layers"], json!(2.0));
        assert_eq!(o.clip_stop_at_last_layers(), 2);
    }

    #[test]
    fn set_semantics() {
        let mut o = Options::new();
        let e = o.set("zzz", json!(1)).unwrap_err();
        assert_eq!(
            serde_json::to_value(&e).unwrap(),
            json!({"error":"KeyError","detail":"","body":"","errors":"'zzz'"})
        );
        assert_eq!(e.status, 500);
        // unknown key with null equals data.get(key) → no-op, no error
        assert_eq!(o.set("zzz", Value::Null), Ok(false));
        // restricted options are ignored
        assert_eq!(o.set("api_enable_requests", json!(false)), Ok(false));
        assert_eq!(o.get("api_enable_requests"), Some(&json!(true)));
        // equal values (1 == 1.0) are no-ops; different values change
        assert_eq!(o.set("CLIP_stop_at_last_layers", json!(1.0)), Ok(false));
        assert_eq!(o.set("send_seed", json!(false)), Ok(true));
        assert_eq!(o.to_api_json()["send_seed"], json!(false));
    }

    #[test]
    fn clones_are_independent() {
        let base = Options::new();
        let mut per_request = base.clone();
        per_request.set("randn_source", json!("NV")).unwrap();
        assert_eq!(per_request.randn_source(), RandnSource::Nv);
        assert_eq!(base.randn_source(), RandnSource::Gpu);
    }
}
