//! The fields txt2img and img2img requests share, read once into plain types.

use serde_json::{Map, Value};

use sdapi_protocol::api::request::{Img2ImgRequest, Txt2ImgRequest};

/// Request fields both generation endpoints have, with A1111's fallbacks applied where A1111 applies
/// them before processing.
#[derive(Debug, Clone)]
pub struct CommonParams {
    pub prompt: String,
    pub negative_prompt: String,
    pub styles: Vec<String>,
    pub seed: i64,
    pub subseed: i64,
    /// `Value` because the `info` JSON reports it as sent: int `0` by default, float when sent.
    pub subseed_strength: Value,
    pub seed_resize_from_h: i64,
    pub seed_resize_from_w: i64,
    /// `sampler_name or sampler_index`.
    pub requested_sampler: String,
    pub scheduler: Option<String>,
    pub batch_size: i64,
    pub n_iter: i64,
    pub steps: i64,
    pub cfg_scale: f64,
    pub width: i64,
    pub height: i64,
    pub restore_faces: Option<bool>,
    pub tiling: Option<bool>,
    pub eta: Option<f64>,
    pub s_churn: Option<f64>,
    pub s_tmax: Option<f64>,
    pub s_tmin: Option<f64>,
    pub s_noise: Option<f64>,
    pub override_settings: Map<String, Value>,
    pub override_settings_restore_afterwards: bool,
    pub force_task_id: Option<String>,
    pub script_name: Option<String>,
    pub alwayson_scripts: Map<String, Value>,
    pub enable_hr: bool,
    pub send_images: bool,
    pub save_images: bool,
}

macro_rules! common_from {
    ($r:expr) => {{
        let r = $r;
        CommonParams {
            prompt: r.prompt.clone().unwrap_or_default(),
            negative_prompt: r.negative_prompt.clone().unwrap_or_default(),
            styles: r.styles.clone().unwrap_or_default(),
            seed: r.seed.unwrap_or(-1),
            subseed: r.subseed.unwrap_or(-1),
            subseed_strength: r.fields.get("subseed_strength").clone(),
            seed_resize_from_h: r.seed_resize_from_h.unwrap_or(-1),
            seed_resize_from_w: r.seed_resize_from_w.unwrap_or(-1),
            requested_sampler: r.requested_sampler().to_string(),
            scheduler: r.scheduler.clone(),
            batch_size: r.batch_size.unwrap_or(1),
            n_iter: r.n_iter.unwrap_or(1),
            steps: r.steps.unwrap_or(50),
            cfg_scale: r.cfg_scale.unwrap_or(7.0),
            width: r.width.unwrap_or(512),
            height: r.height.unwrap_or(512),
            restore_faces: r.restore_faces,
            tiling: r.tiling,
            eta: r.eta,
            s_churn: r.s_churn,
            s_tmax: r.s_tmax,
            s_tmin: r.s_tmin,
            s_noise: r.s_noise,
            override_settings: r.override_settings.clone().unwrap_or_default(),
            override_settings_restore_afterwards: r.override_settings_restore_afterwards.unwrap_or(true),
            force_task_id: r.force_task_id.clone(),
            script_name: r.script_name.clone(),
            alwayson_scripts: r.alwayson_scripts.clone(),
            enable_hr: false,
            send_images: r.send_images,
            save_images: r.save_images,
        }
    }};
}

impl CommonParams {
    pub fn from_txt2img(r: &Txt2ImgRequest) -> Self {
        let mut p = common_from!(r);
        p.enable_hr = r.enable_hr.unwrap_or(false);
        // Legacy hires fields (`__post_init__`): either one set makes them the first pass's size.
        let (fw, fh) = (r.firstphase_width.unwrap_or(0), r.firstphase_height.unwrap_or(0));
        if fw != 0 || fh != 0 {
            (p.width, p.height) = (fw, fh);
        }
        p
    }

    pub fn from_img2img(r: &Img2ImgRequest) -> Self {
        common_from!(r)
    }

    pub fn subseed_strength_f64(&self) -> f64 {
        self.subseed_strength.as_f64().unwrap_or(0.0)
    }
}
