//! LoRA benchmark inputs and timings: a kohya-named rank-r LoRA with random values over the
//! layers kohya's trainer targets on SD 1.x (text encoder attention and MLP; UNet transformer
//! blocks with proj_in/out), and how long loading a model with it merged takes.

use std::collections::HashMap;
use std::path::Path;
use std::time::Instant;

use candle_core::{DType, Device, Tensor};

use super::{BenchError, Samples, input};
use crate::checkpoint::open_checkpoint;
use crate::loader::diffusers_names::{CLIP_PREFIX, UNET_PREFIX};
use crate::loader::tensor_store::ResidentWeights;
use crate::model::{LoadedModel, LoraApplication};
use crate::networks::LoraFile;

/// Whether kohya's default SD 1.x network targets this weight.
fn is_target(name: &str) -> bool {
    let text = name.starts_with(CLIP_PREFIX)
        && [
            "self_attn.q_proj.",
            "self_attn.k_proj.",
            "self_attn.v_proj.",
            "self_attn.out_proj.",
            "mlp.fc1.",
            "mlp.fc2.",
        ]
        .iter()
        .any(|p| name.contains(p));
    let unet = name.starts_with(UNET_PREFIX)
        && (name.contains(".transformer_blocks.")
            && [".to_q.", ".to_k.", ".to_v.", ".to_out.0.", ".ff.net.0.proj.", ".ff.net.2."]
                .iter()
                .any(|p| name.contains(p))
            || name.ends_with(".proj_in.weight")
            || name.ends_with(".proj_out.weight"));
    name.ends_with(".weight") && (text || unet)
}

/// The kohya key of a canonical weight (LDM naming, which A1111 resolves through its fallbacks).
fn kohya_key(name: &str) -> Option<String> {
    let path = name.strip_suffix(".weight")?;
    if let Some(rest) = path.strip_prefix(CLIP_PREFIX) {
        return Some(format!("lora_te_text_model_{}", rest.replace('.', "_")));
    }
    path.strip_prefix(UNET_PREFIX).map(|rest| format!("lora_unet_{}", rest.replace('.', "_")))
}

/// Writes a rank-`rank` LoRA (f16 up/down, alpha = rank / 2) for every targeted weight of
/// `checkpoint`, and a JSON list of the target shapes beside it (for the PyTorch reference).
/// Returns the number of modules.
pub fn write_lora(checkpoint: &Path, path: &Path, rank: usize, seed: u64) -> Result<usize, BenchError> {
    let ckpt = open_checkpoint(checkpoint)?;
    let mut names: Vec<&str> = ckpt.store.names().filter(|n| is_target(n)).collect();
    names.sort();
    let mut tensors = HashMap::new();
    let mut shapes = Vec::new();
    for (i, name) in names.iter().enumerate() {
        let Some(shape) = ckpt.store.shape(name) else { continue };
        let Some(key) = kohya_key(name) else { continue };
        let out = shape[0];
        let inp: usize = shape[1..].iter().product();
        let (up_shape, down_shape): (Vec<usize>, Vec<usize>) = if shape.len() == 4 {
            (vec![out, rank, 1, 1], vec![rank, shape[1], shape[2], shape[3]])
        } else {
            (vec![out, rank], vec![rank, inp])
        };
        let scale = 0.01f64;
        let up = (input(&up_shape, seed + 2 * i as u64)? * scale)?.to_dtype(DType::F16)?;
        let down = (input(&down_shape, seed + 2 * i as u64 + 1)? * scale)?.to_dtype(DType::F16)?;
        tensors.insert(format!("{key}.lora_up.weight"), up);
        tensors.insert(format!("{key}.lora_down.weight"), down);
        tensors.insert(format!("{key}.alpha"), Tensor::new(rank as f32 / 2.0, &Device::Cpu)?.to_dtype(DType::F16)?);
        shapes.push(serde_json::json!({"key": key, "weight": name, "shape": shape}));
    }
    candle_core::safetensors::save(&tensors, path)?;
    let listing = path.with_extension("json");
    std::fs::write(&listing, serde_json::to_string(&shapes).unwrap_or_default())
        .map_err(|e| BenchError::Io(listing.display().to_string(), e))?;
    Ok(shapes.len())
}

/// Load timings of a checkpoint alone and with LoRAs merged.
pub struct LoraTimes {
    /// `LoadedModel::load` without networks.
    pub base: Samples,
    /// Reading one LoRA file (safetensors → f32 updates).
    pub read: Samples,
    /// Loading with LoRA A merged (what a request with a new LoRA set costs).
    pub with_lora: Samples,
    /// With the checkpoint resident, alternating A and B: each load switches the set.
    pub switch: Samples,
}

/// Measures [`LoraTimes`] for `checkpoint` and two LoRA files, `iters` samples each.
pub fn lora_times(checkpoint: &Path, lora_a: &Path, lora_b: &Path, iters: usize) -> Result<LoraTimes, BenchError> {
    let load = || LoadedModel::load(checkpoint, None, &Device::Cpu, DType::F32);
    let base = Samples::measure(1, iters, || Ok(load()?))?;
    let read = Samples::measure(0, iters, || Ok(LoraFile::read(lora_a)?))?;
    let (a, b) = (LoraFile::read(lora_a)?, LoraFile::read(lora_b)?);
    let merged = |file: &LoraFile, resident: Option<ResidentWeights>| -> Result<LoadedModel, BenchError> {
        let set = [LoraApplication { file, te_multiplier: 1.0, unet_multiplier: 1.0, dyn_dim: None }];
        Ok(LoadedModel::load_with_loras(checkpoint, None, &set, resident, &Device::Cpu, DType::F32)?.0)
    };
    // A fresh load with the LoRA (no resident weights): a request whose checkpoint is not loaded.
    let with_lora = Samples::measure(0, iters, || merged(&a, None))?;
    // The executor's case: the checkpoint is loaded (resident weights filled), the set changes.
    // As in the executor, the previous model is dropped before the next one is built.
    let resident = ResidentWeights::new();
    let mut current = Some(merged(&a, Some(resident.clone()))?);
    let mut switch = Samples::default();
    for i in 0..iters {
        drop(current.take());
        let start = Instant::now();
        current = Some(merged(if i % 2 == 0 { &b } else { &a }, Some(resident.clone()))?);
        switch.push(start.elapsed().as_secs_f64() * 1e3);
    }
    drop(current);
    Ok(LoraTimes { base, read, with_lora, switch })
}
