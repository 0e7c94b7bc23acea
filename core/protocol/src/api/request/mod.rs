//! The txt2img / img2img request models, exactly as A1111 v1.10.1 generates them (docs/a1111-behaviour.md §1.2, §1.3):
//! field order, types, defaults, which fields accept `null`, and pydantic v1 coercion.
//!
//! Use [`Txt2ImgRequest::from_json`] / [`Img2ImgRequest::from_json`]; the typed fields hold the
//! validated values, `fields` keeps the raw validated map (for the `parameters` echo) and the
//! set of fields the client sent (for infotext application).

pub mod fields;

use serde_json::{Map, Value};

pub use fields::{FieldDefault, FieldKind, FieldSpec, ValidatedFields, json_schema, parse_body, validate};

use crate::api::errors::ValidationErrors;
use FieldDefault as D;
use FieldKind as K;

/// Conversion of an already validated JSON value into a typed Rust field.
pub trait FromValidated: Sized {
    fn from_validated(v: &Value) -> Self;
}

impl FromValidated for Option<String> {
    fn from_validated(v: &Value) -> Self {
        v.as_str().map(String::from)
    }
}
impl FromValidated for String {
    fn from_validated(v: &Value) -> Self {
        v.as_str().unwrap_or_default().to_string()
    }
}
impl FromValidated for Option<i64> {
    fn from_validated(v: &Value) -> Self {
        v.as_i64()
    }
}
impl FromValidated for Option<f64> {
    fn from_validated(v: &Value) -> Self {
        v.as_f64()
    }
}
impl FromValidated for i64 {
    fn from_validated(v: &Value) -> Self {
        v.as_i64().unwrap_or_default()
    }
}
impl FromValidated for f64 {
    fn from_validated(v: &Value) -> Self {
        v.as_f64().unwrap_or_default()
    }
}
impl FromValidated for Option<bool> {
    fn from_validated(v: &Value) -> Self {
        v.as_bool()
    }
}
impl FromValidated for bool {
    fn from_validated(v: &Value) -> Self {
        v.as_bool().unwrap_or_default()
    }
}
impl FromValidated for Option<Vec<String>> {
    fn from_validated(v: &Value) -> Self {
        v.as_array().map(|a| a.iter().filter_map(|s| s.as_str().map(String::from)).collect())
    }
}
impl FromValidated for Option<Vec<Value>> {
    fn from_validated(v: &Value) -> Self {
        v.as_array().cloned()
    }
}
impl FromValidated for Vec<Value> {
    fn from_validated(v: &Value) -> Self {
        v.as_array().cloned().unwrap_or_default()
    }
}
impl FromValidated for Option<Map<String, Value>> {
    fn from_validated(v: &Value) -> Self {
        v.as_object().cloned()
    }
}
impl FromValidated for Map<String, Value> {
    fn from_validated(v: &Value) -> Self {
        v.as_object().cloned().unwrap_or_default()
    }
}

/// Declares a request model: the field table (in model order) and the typed struct.
macro_rules! request_model {
    (
        $(#[$meta:meta])* $name:ident, $table:ident, $title:literal {
            $( $field:ident : $rty:ty = $kind:ident, $default:expr, $nullable:literal; )*
        }
    ) => {
        /// Field table of the model, in A1111's order.
        pub static $table: &[FieldSpec] = &[
            $( FieldSpec { name: stringify!($field), kind: K::$kind, default: $default, nullable: $nullable }, )*
        ];

        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq)]
        pub struct $name {
            $( pub $field: $rty, )*
            /// Validated values in model order plus the explicitly sent field names.
            pub fields: ValidatedFields,
        }

        impl $name {
            /// OpenAPI component name.
            pub const SCHEMA_NAME: &'static str = $title;

            /// Validates a JSON body (pydantic v1 semantics, all errors collected).
            pub fn from_json(body: &Value) -> Result<Self, ValidationErrors> {
                validate($table, body).map(Self::from_fields)
            }

            /// Builds the typed view from validated fields.
            pub fn from_fields(fields: ValidatedFields) -> Self {
                Self { $( $field: FromValidated::from_validated(fields.get(stringify!($field))), )* fields }
            }

            /// Sets a field after validation (used by infotext application), keeping the
            /// typed view and the echo map in sync. Unknown names are ignored.
            pub fn set_field(&mut self, name: &str, value: Value) {
                if $table.iter().any(|f| f.name == name) {
                    self.fields.values.insert(name.to_string(), value);
                    *self = Self::from_fields(std::mem::take(&mut self.fields));
                }
            }

            /// OpenAPI schema of the model (see [`json_schema`]).
            pub fn json_schema() -> Value {
                json_schema($title, $table)
            }
        }
    };
}

request_model! {
    /// `StableDiffusionProcessingTxt2Img` (docs/a1111-behaviour.md §1.2).
    Txt2ImgRequest, TXT2IMG_FIELDS, "StableDiffusionProcessingTxt2Img" {
        prompt: Option<String> = Str, D::Str(""), true;
        negative_prompt: Option<String> = Str, D::Str(""), true;
        styles: Option<Vec<String>> = StrList, D::Null, true;
        seed: Option<i64> = Int, D::Int(-1), true;
        subseed: Option<i64> = Int, D::Int(-1), true;
        subseed_strength: Option<f64> = Float, D::Int(0), true;
        seed_resize_from_h: Option<i64> = Int, D::Int(-1), true;
        seed_resize_from_w: Option<i64> = Int, D::Int(-1), true;
        sampler_name: Option<String> = Str, D::Null, true;
        scheduler: Option<String> = Str, D::Null, true;
        batch_size: Option<i64> = Int, D::Int(1), true;
        n_iter: Option<i64> = Int, D::Int(1), true;
        steps: Option<i64> = Int, D::Int(50), true;
        cfg_scale: Option<f64> = Float, D::Float(7.0), true;
        width: Option<i64> = Int, D::Int(512), true;
        height: Option<i64> = Int, D::Int(512), true;
        restore_faces: Option<bool> = Bool, D::Null, true;
        tiling: Option<bool> = Bool, D::Null, true;
        do_not_save_samples: Option<bool> = Bool, D::Bool(false), true;
        do_not_save_grid: Option<bool> = Bool, D::Bool(false), true;
        eta: Option<f64> = Float, D::Null, true;
        denoising_strength: Option<f64> = Float, D::Null, true;
        s_min_uncond: Option<f64> = Float, D::Null, true;
        s_churn: Option<f64> = Float, D::Null, true;
        s_tmax: Option<f64> = Float, D::Null, true;
        s_tmin: Option<f64> = Float, D::Null, true;
        s_noise: Option<f64> = Float, D::Null, true;
        override_settings: Option<Map<String, Value>> = StrDict, D::Null, true;
        override_settings_restore_afterwards: Option<bool> = Bool, D::Bool(true), true;
        refiner_checkpoint: Option<String> = Str, D::Null, true;
        refiner_switch_at: Option<f64> = Float, D::Null, true;
        disable_extra_networks: Option<bool> = Bool, D::Bool(false), true;
        firstpass_image: Option<String> = Str, D::Null, true;
        comments: Option<Map<String, Value>> = Dict, D::Null, true;
        enable_hr: Option<bool> = Bool, D::Bool(false), true;
        firstphase_width: Option<i64> = Int, D::Int(0), true;
        firstphase_height: Option<i64> = Int, D::Int(0), true;
        hr_scale: Option<f64> = Float, D::Float(2.0), true;
        hr_upscaler: Option<String> = Str, D::Null, true;
        hr_second_pass_steps: Option<i64> = Int, D::Int(0), true;
        hr_resize_x: Option<i64> = Int, D::Int(0), true;
        hr_resize_y: Option<i64> = Int, D::Int(0), true;
        hr_checkpoint_name: Option<String> = Str, D::Null, true;
        hr_sampler_name: Option<String> = Str, D::Null, true;
        hr_scheduler: Option<String> = Str, D::Null, true;
        hr_prompt: Option<String> = Str, D::Str(""), true;
        hr_negative_prompt: Option<String> = Str, D::Str(""), true;
        force_task_id: Option<String> = Str, D::Null, true;
        sampler_index: String = Str, D::Str("Euler"), false;
        script_name: Option<String> = Str, D::Null, true;
        script_args: Vec<Value> = List, D::EmptyList, false;
        send_images: bool = Bool, D::Bool(true), false;
        save_images: bool = Bool, D::Bool(false), false;
        alwayson_scripts: Map<String, Value> = Dict, D::EmptyDict, false;
        infotext: Option<String> = Str, D::Null, true;
    }
}

request_model! {
    /// `StableDiffusionProcessingImg2Img` (docs/a1111-behaviour.md §1.3).
    Img2ImgRequest, IMG2IMG_FIELDS, "StableDiffusionProcessingImg2Img" {
        prompt: Option<String> = Str, D::Str(""), true;
        negative_prompt: Option<String> = Str, D::Str(""), true;
        styles: Option<Vec<String>> = StrList, D::Null, true;
        seed: Option<i64> = Int, D::Int(-1), true;
        subseed: Option<i64> = Int, D::Int(-1), true;
        subseed_strength: Option<f64> = Float, D::Int(0), true;
        seed_resize_from_h: Option<i64> = Int, D::Int(-1), true;
        seed_resize_from_w: Option<i64> = Int, D::Int(-1), true;
        sampler_name: Option<String> = Str, D::Null, true;
        scheduler: Option<String> = Str, D::Null, true;
        batch_size: Option<i64> = Int, D::Int(1), true;
        n_iter: Option<i64> = Int, D::Int(1), true;
        steps: Option<i64> = Int, D::Int(50), true;
        cfg_scale: Option<f64> = Float, D::Float(7.0), true;
        width: Option<i64> = Int, D::Int(512), true;
        height: Option<i64> = Int, D::Int(512), true;
        restore_faces: Option<bool> = Bool, D::Null, true;
        tiling: Option<bool> = Bool, D::Null, true;
        do_not_save_samples: Option<bool> = Bool, D::Bool(false), true;
        do_not_save_grid: Option<bool> = Bool, D::Bool(false), true;
        eta: Option<f64> = Float, D::Null, true;
        denoising_strength: f64 = Float, D::Float(0.75), false;
        s_min_uncond: Option<f64> = Float, D::Null, true;
        s_churn: Option<f64> = Float, D::Null, true;
        s_tmax: Option<f64> = Float, D::Null, true;
        s_tmin: Option<f64> = Float, D::Null, true;
        s_noise: Option<f64> = Float, D::Null, true;
        override_settings: Option<Map<String, Value>> = StrDict, D::Null, true;
        override_settings_restore_afterwards: Option<bool> = Bool, D::Bool(true), true;
        refiner_checkpoint: Option<String> = Str, D::Null, true;
        refiner_switch_at: Option<f64> = Float, D::Null, true;
        disable_extra_networks: Option<bool> = Bool, D::Bool(false), true;
        firstpass_image: Option<String> = Str, D::Null, true;
        comments: Option<Map<String, Value>> = Dict, D::Null, true;
        init_images: Option<Vec<Value>> = List, D::Null, true;
        resize_mode: Option<i64> = Int, D::Int(0), true;
        image_cfg_scale: Option<f64> = Float, D::Null, true;
        mask: Option<String> = Str, D::Null, true;
        mask_blur_x: Option<i64> = Int, D::Int(4), true;
        mask_blur_y: Option<i64> = Int, D::Int(4), true;
        mask_blur: Option<i64> = Int, D::Null, true;
        mask_round: Option<bool> = Bool, D::Bool(true), true;
        inpainting_fill: Option<i64> = Int, D::Int(0), true;
        inpaint_full_res: Option<bool> = Bool, D::Bool(true), true;
        inpaint_full_res_padding: Option<i64> = Int, D::Int(0), true;
        inpainting_mask_invert: Option<i64> = Int, D::Int(0), true;
        initial_noise_multiplier: Option<f64> = Float, D::Null, true;
        latent_mask: Option<String> = Str, D::Null, true;
        force_task_id: Option<String> = Str, D::Null, true;
        sampler_index: String = Str, D::Str("Euler"), false;
        include_init_images: bool = Bool, D::Bool(false), false;
        script_name: Option<String> = Str, D::Null, true;
        script_args: Vec<Value> = List, D::EmptyList, false;
        send_images: bool = Bool, D::Bool(true), false;
        save_images: bool = Bool, D::Bool(false), false;
        alwayson_scripts: Map<String, Value> = Dict, D::EmptyDict, false;
        infotext: Option<String> = Str, D::Null, true;
    }
}

request_model! {
    /// `ExtrasSingleImageRequest` (`ExtrasBaseRequest` + `image`).
    ExtrasSingleImageRequest, EXTRAS_SINGLE_FIELDS, "ExtrasSingleImageRequest" {
        resize_mode: i64 = Int, D::Int(0), false;
        show_extras_results: bool = Bool, D::Bool(true), false;
        gfpgan_visibility: f64 = Float, D::Int(0), false;
        codeformer_visibility: f64 = Float, D::Int(0), false;
        codeformer_weight: f64 = Float, D::Int(0), false;
        upscaling_resize: f64 = Float, D::Int(2), false;
        upscaling_resize_w: i64 = Int, D::Int(512), false;
        upscaling_resize_h: i64 = Int, D::Int(512), false;
        upscaling_crop: bool = Bool, D::Bool(true), false;
        upscaler_1: String = Str, D::Str("None"), false;
        upscaler_2: String = Str, D::Str("None"), false;
        extras_upscaler_2_visibility: f64 = Float, D::Int(0), false;
        upscale_first: bool = Bool, D::Bool(false), false;
        image: String = Str, D::Str(""), false;
    }
}

request_model! {
    /// `ExtrasBatchImagesRequest` (`ExtrasBaseRequest` + `imageList`, required).
    #[allow(non_snake_case)]
    ExtrasBatchImagesRequest, EXTRAS_BATCH_FIELDS, "ExtrasBatchImagesRequest" {
        resize_mode: i64 = Int, D::Int(0), false;
        show_extras_results: bool = Bool, D::Bool(true), false;
        gfpgan_visibility: f64 = Float, D::Int(0), false;
        codeformer_visibility: f64 = Float, D::Int(0), false;
        codeformer_weight: f64 = Float, D::Int(0), false;
        upscaling_resize: f64 = Float, D::Int(2), false;
        upscaling_resize_w: i64 = Int, D::Int(512), false;
        upscaling_resize_h: i64 = Int, D::Int(512), false;
        upscaling_crop: bool = Bool, D::Bool(true), false;
        upscaler_1: String = Str, D::Str("None"), false;
        upscaler_2: String = Str, D::Str("None"), false;
        extras_upscaler_2_visibility: f64 = Float, D::Int(0), false;
        upscale_first: bool = Bool, D::Bool(false), false;
        imageList: Vec<Value> = List, D::EmptyList, false;
    }
}

/// The `ExtrasBaseRequest` constraints pydantic checks after coercion (`Literal[0, 1]`,
/// `ge`/`le`/`gt`), as its 422 items. `values` are the validated fields.
pub fn extras_constraint_errors(
    values: &Map<String, Value>,
    sent: &[&str],
) -> Vec<crate::api::errors::ValidationError> {
    use crate::api::errors::ValidationError;
    let loc = |f: &str| vec![Value::from("body"), Value::from(f)];
    let num = |f: &str| values.get(f).and_then(Value::as_f64).unwrap_or(0.0);
    let mut errors = Vec::new();
    if sent.contains(&"resize_mode") && !matches!(values.get("resize_mode").and_then(Value::as_i64), Some(0 | 1)) {
        let mut e = ValidationError::new(loc("resize_mode"), "unexpected value; permitted: 0, 1", "value_error.const");
        e.ctx = Some(serde_json::json!({"given": values.get("resize_mode"), "permitted": [0, 1]}));
        errors.push(e);
    }
    for f in ["gfpgan_visibility", "codeformer_visibility", "codeformer_weight", "extras_upscaler_2_visibility"] {
        let v = num(f);
        if v < 0.0 {
            let mut e = ValidationError::new(
                loc(f),
                "ensure this value is greater than or equal to 0",
                "value_error.number.not_ge",
            );
            e.ctx = Some(serde_json::json!({"limit_value": 0}));
            errors.push(e);
        } else if v > 1.0 {
            let mut e = ValidationError::new(
                loc(f),
                "ensure this value is less than or equal to 1",
                "value_error.number.not_le",
            );
            e.ctx = Some(serde_json::json!({"limit_value": 1}));
            errors.push(e);
        }
    }
    if num("upscaling_resize") <= 0.0 {
        let mut e = ValidationError::new(
            loc("upscaling_resize"),
            "ensure this value is greater than 0",
            "value_error.number.not_gt",
        );
        e.ctx = Some(serde_json::json!({"limit_value": 0}));
        errors.push(e);
    }
    for f in ["upscaling_resize_w", "upscaling_resize_h"] {
        if num(f) < 1.0 {
            let mut e = ValidationError::new(
                loc(f),
                "ensure this value is greater than or equal to 1",
                "value_error.number.not_ge",
            );
            e.ctx = Some(serde_json::json!({"limit_value": 1}));
            errors.push(e);
        }
    }
    errors
}

impl Txt2ImgRequest {
    /// The `parameters` echo: `vars(req)`, every field in model order, defaults as declared.
    pub fn to_parameters(&self) -> Map<String, Value> {
        self.fields.values.clone()
    }

    /// `sampler_name or sampler_index` — the name handed to sampler resolution.
    pub fn requested_sampler(&self) -> &str {
        self.sampler_name.as_deref().filter(|s| !s.is_empty()).unwrap_or(&self.sampler_index)
    }
}

impl Img2ImgRequest {
    /// The `parameters` echo; `init_images` and `mask` are nulled unless `include_init_images`.
    pub fn to_parameters(&self) -> Map<String, Value> {
        let mut out = self.fields.values.clone();
        if !self.include_init_images {
            out.insert("init_images".into(), Value::Null);
            out.insert("mask".into(), Value::Null);
        }
        out
    }

    /// `sampler_name or sampler_index`.
    pub fn requested_sampler(&self) -> &str {
        self.sampler_name.as_deref().filter(|s| !s.is_empty()).unwrap_or(&self.sampler_index)
    }
}

#[cfg(test)]
mod tests;
