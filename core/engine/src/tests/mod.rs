//! Engine tests: parity with A1111's intermediates, layout equivalence, inference, errors.

mod errors;
mod family;
mod half_precision;
mod hooks;
mod layouts;
mod parity;
mod shipped_configs;
mod synthetic;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::OnceLock;

use candle_core::{DType, Device, Tensor};

use super::LoadedModel;

pub fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/a1111-parity")
}

pub fn single_file_path() -> PathBuf {
    fixtures().join("models/tiny-sd15.safetensors")
}

pub fn diffusers_path() -> PathBuf {
    fixtures().join("models/tiny-sd15-diffusers")
}

/// The fixture model loaded once from the single file (CPU, f32).
pub fn model() -> &'static LoadedModel {
    static MODEL: OnceLock<LoadedModel> = OnceLock::new();
    MODEL.get_or_init(|| {
        LoadedModel::load(&single_file_path(), None, &Device::Cpu, DType::F32).expect("fixture model loads")
    })
}

/// Case directories, sorted by name.
pub fn cases() -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(fixtures().join("cases"))
        .expect("cases dir")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.join("intermediates.safetensors").is_file())
        .collect();
    dirs.sort();
    assert!(dirs.len() >= 10, "expected the parity cases, found {}", dirs.len());
    dirs
}

pub fn intermediates(case: &std::path::Path) -> HashMap<String, Tensor> {
    candle_core::safetensors::load(case.join("intermediates.safetensors"), &Device::Cpu).expect("intermediates load")
}

/// Largest absolute element difference of two equally shaped tensors.
pub fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    assert_eq!(a.dims(), b.dims(), "shape mismatch");
    let a = a.to_dtype(DType::F32).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let b = b.to_dtype(DType::F32).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
    a.iter().zip(&b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

/// Exact equality, bit for bit.
pub fn bits(t: &Tensor) -> Vec<u32> {
    t.flatten_all().unwrap().to_vec1::<f32>().unwrap().into_iter().map(f32::to_bits).collect()
}

pub fn case_name(case: &std::path::Path) -> String {
    case.file_name().unwrap().to_string_lossy().into_owned()
}
