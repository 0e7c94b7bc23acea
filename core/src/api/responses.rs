//! Response bodies of the generation, png-info, progress and memory endpoints.

use serde::Serialize;
use serde_json::{Map, Value, json};

/// `TextToImageResponse` / `ImageToImageResponse`: base64 images, the request echo, and the
/// `info` JSON *string*.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TextToImageResponse {
    pub images: Vec<String>,
    pub parameters: Map<String, Value>,
    pub info: String,
}

/// Same shape for img2img.
pub type ImageToImageResponse = TextToImageResponse;

/// `PNGInfoResponse`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PngInfoResponse {
    pub info: String,
    pub items: Map<String, Value>,
    pub parameters: Map<String, Value>,
}

impl PngInfoResponse {
    /// `/png-info` from image bytes: metadata → infotext → `parse_generation_parameters`.
    pub fn from_image_bytes(bytes: &[u8], skip_fields: &[&str]) -> Self {
        let (info, items) = crate::images::read_infotext(bytes);
        let parameters = crate::infotext::parse_generation_parameters(&info, skip_fields);
        Self { info, items, parameters }
    }
}

/// `shared.state` as the progress endpoint reports it (keys in A1111's order).
#[derive(Debug, Clone, PartialEq, Serialize, Default)]
pub struct ProgressState {
    pub skipped: bool,
    pub interrupted: bool,
    pub stopping_generation: bool,
    pub job: String,
    pub job_count: i64,
    pub job_timestamp: String,
    pub job_no: i64,
    pub sampling_step: i64,
    pub sampling_steps: i64,
}

/// `ProgressResponse`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ProgressResponse {
    pub progress: f64,
    pub eta_relative: f64,
    pub state: ProgressState,
    pub current_image: Option<String>,
    pub textinfo: Option<String>,
}

impl ProgressResponse {
    /// §2.7: idle (`job_count == 0`) → zeros; else
    /// `0.01 + job_no/job_count + (1/job_count)*(step/steps)`, eta from elapsed seconds,
    /// progress clamped to 1 after computing eta.
    pub fn compute(state: ProgressState, elapsed_s: f64, current_image: Option<String>, textinfo: Option<String>) -> Self {
        if state.job_count == 0 {
            return Self { progress: 0.0, eta_relative: 0.0, state, current_image: None, textinfo };
        }
        let mut progress = 0.01;
        if state.job_count > 0 {
            progress += state.job_no as f64 / state.job_count as f64;
        }
        if state.sampling_steps > 0 && state.job_count > 0 {
            progress += 1.0 / state.job_count as f64 * state.sampling_step as f64 / state.sampling_steps as f64;
        }
        let eta_relative = elapsed_s / progress - elapsed_s;
        Self { progress: progress.min(1.0), eta_relative, state, current_image, textinfo }
    }
}

/// `MemoryResponse`: `ram: {free, used, total}`; `cuda` is `{"error": "unavailable"}` on CPU.
pub fn memory_response(ram_free: u64, ram_used: u64, ram_total: u64, cuda: Option<Value>) -> Value {
    json!({
        "ram": {"free": ram_free, "used": ram_used, "total": ram_total},
        "cuda": cuda.unwrap_or_else(|| json!({"error": "unavailable"})),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_formula() {
        let idle = ProgressResponse::compute(ProgressState::default(), 5.0, Some("x".into()), None);
        assert_eq!((idle.progress, idle.eta_relative, idle.current_image), (0.0, 0.0, None));
        let st = ProgressState { job_count: 2, job_no: 1, sampling_step: 5, sampling_steps: 10, ..Default::default() };
        let p = ProgressResponse::compute(st, 10.0, None, None);
        // 0.01 + 1/2 + (1/2)*(5/10) = 0.76; eta = 10/0.76 - 10
        assert!((p.progress - 0.76).abs() < 1e-12);
        assert!((p.eta_relative - (10.0 / 0.76 - 10.0)).abs() < 1e-12);
        let v = serde_json::to_value(&p).unwrap();
        let keys: Vec<_> = v["state"].as_object().unwrap().keys().cloned().collect();
        assert_eq!(keys, ["skipped", "interrupted", "stopping_generation", "job", "job_count", "job_timestamp", "job_no", "sampling_step", "sampling_steps"]);
    }

    #[test]
    fn png_info_without_metadata_still_has_defaults() {
        let png = crate::images::encode_png(&image::RgbImage::new(2, 2), None).unwrap();
        let r = PngInfoResponse::from_image_bytes(&png, &[]);
        assert_eq!(r.info, "");
        assert_eq!(r.parameters["Prompt"], json!(""));
        assert_eq!(r.parameters["Clip skip"], json!("1"));
        assert_eq!(memory_response(1, 2, 3, None)["cuda"], json!({"error": "unavailable"}));
    }
}
