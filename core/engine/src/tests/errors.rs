//! Clear, typed errors for checkpoints we cannot or do not yet run.

use std::collections::HashMap;

use candle_core::{DType, Device, Tensor};

use super::*;
use crate::{EngineError, LoadedModel};

fn temp_path(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("sdapi-engine-errors-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

fn load(path: &std::path::Path) -> Result<LoadedModel, EngineError> {
    LoadedModel::load(path, None, &Device::Cpu, DType::F32)
}

/// Writes `tensors` with the fixture's sidecar config beside them (the tiny model's heads), so
/// the error under test is the one the tensors cause.
fn write(name: &str, tensors: &HashMap<String, Tensor>) -> std::path::PathBuf {
    let path = temp_path(name);
    candle_core::safetensors::save(tensors, &path).unwrap();
    std::fs::copy(single_file_path().with_extension("yaml"), path.with_extension("yaml")).unwrap();
    path
}

fn small(names: &[&str]) -> HashMap<String, Tensor> {
    names.iter().map(|n| (n.to_string(), Tensor::zeros((2, 2), DType::F32, &Device::Cpu).unwrap())).collect()
}

#[test]
fn sgm_checkpoint_without_known_text_encoders_is_refused_clearly() {
    // Neither SDXL base's encoders (CLIP-L at embedders.0, bigG at embedders.1) nor the
    // refiner's (bigG alone at embedders.0).
    let path = write(
        "sgm-unknown.safetensors",
        &small(&["conditioner.embedders.2.model.ln_final.weight", "model.diffusion_model.label_emb.0.0.weight"]),
    );
    let err = load(&path).err().expect("must fail");
    assert!(matches!(err, EngineError::Unsupported(_)), "{err}");
    assert!(err.to_string().contains("refiner's (OpenCLIP-bigG)"), "{err}");
}

#[test]
fn incomplete_sd2_checkpoint_names_the_missing_tensor() {
    // Recognised as SD 2.x (OpenCLIP under cond_stage_model.model), then loading asks for the
    // first tensor it needs under its canonical name.
    let path = write(
        "sd2.safetensors",
        &small(&[
            "cond_stage_model.model.transformer.resblocks.0.attn.in_proj_weight",
            "model.diffusion_model.input_blocks.0.0.weight",
        ]),
    );
    let err = load(&path).err().expect("must fail");
    assert!(matches!(err, EngineError::MissingTensor(_)), "{err}");
}

#[test]
fn pickle_checkpoints_are_refused() {
    let path = temp_path("model.ckpt");
    std::fs::write(&path, b"PK\x03\x04 not really a zip").unwrap();
    assert!(matches!(load(&path), Err(EngineError::PickleNotSupported(_))));
    // Content is checked too, whatever the extension says.
    let disguised = temp_path("disguised.safetensors");
    std::fs::write(&disguised, [0x80u8, 2, 0x7d, 0x71]).unwrap();
    assert!(matches!(load(&disguised), Err(EngineError::PickleNotSupported(_))));
}

/// A valid safetensors file whose header length ends in byte 0x80 (the first byte of the file)
/// is a safetensors file, not a pickle: the fixture with its JSON header padded to 0x180 bytes.
#[test]
fn safetensors_with_header_length_ending_in_0x80_loads() {
    let bytes = std::fs::read(single_file_path()).unwrap();
    let header_len = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let padded = (header_len / 256 + 1) * 256 + 0x80;
    let mut out = Vec::with_capacity(bytes.len() + padded);
    out.extend_from_slice(&(padded as u64).to_le_bytes());
    out.extend_from_slice(&bytes[8..8 + header_len]);
    out.resize(8 + padded, b' '); // JSON whitespace, as the safetensors format allows
    out.extend_from_slice(&bytes[8 + header_len..]);
    assert_eq!(out[0], 0x80);
    let path = temp_path("header-0x80.safetensors");
    std::fs::write(&path, &out).unwrap();
    // The sidecar config goes with it.
    std::fs::copy(single_file_path().with_extension("yaml"), path.with_extension("yaml")).unwrap();
    let model = load(&path).expect("a safetensors file is recognised by its structure");
    assert_eq!(model.unet.config(), super::model().unet.config());
    assert_eq!(model.alphas_cumprod, super::model().alphas_cumprod);
}

#[test]
fn non_model_files_are_refused() {
    let path = write("lora.safetensors", &small(&["lora_unet_down_blocks_0.lora_up.weight"]));
    assert!(matches!(load(&path), Err(EngineError::UnknownLayout(_))));
}

/// The fixture checkpoint without `missing`.
fn checkpoint_without(missing: &str, file: &str) -> std::path::PathBuf {
    let mut all = candle_core::safetensors::load(single_file_path(), &Device::Cpu).unwrap();
    assert!(all.remove(missing).is_some(), "{missing} is in the fixture");
    write(file, &all)
}

#[test]
fn missing_tensor_is_named() {
    // Needed while inferring the architecture.
    let name = "model.diffusion_model.out.2.weight";
    match load(&checkpoint_without(name, "no-out.safetensors")) {
        Err(EngineError::MissingTensor(n)) => assert_eq!(n, name),
        other => panic!("expected MissingTensor, got {:?}", other.err()),
    }
    // Needed only while building the layers.
    let name = "model.diffusion_model.output_blocks.2.1.transformer_blocks.0.attn2.to_v.weight";
    match load(&checkpoint_without(name, "no-to-v.safetensors")) {
        Err(EngineError::MissingTensor(n)) => assert_eq!(n, name),
        other => panic!("expected MissingTensor, got {:?}", other.err()),
    }
}

#[test]
fn wrongly_shaped_tensor_is_named() {
    let name = "model.diffusion_model.middle_block.1.transformer_blocks.0.ff.net.2.weight";
    let mut all = candle_core::safetensors::load(single_file_path(), &Device::Cpu).unwrap();
    all.insert(name.to_string(), Tensor::zeros((64, 128), DType::F32, &Device::Cpu).unwrap());
    match load(&write("bad-shape.safetensors", &all)) {
        Err(EngineError::ShapeMismatch { name: n, expected, actual }) => {
            assert_eq!(n, name);
            assert_eq!((expected, actual), (vec![64, 256], vec![64, 128]));
        }
        other => panic!("expected ShapeMismatch, got {:?}", other.err()),
    }
}

#[test]
fn loaded_model_can_move_between_threads() {
    // The runner keeps the model in a blocking worker thread and shares it.
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<LoadedModel>();
}
