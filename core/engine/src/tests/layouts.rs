//! The same weights in different layouts must give bit-identical results.

use std::collections::HashMap;

use candle_core::{DType, Device, Tensor};

use super::*;
use crate::LoadedModel;

fn probe_inputs() -> (Tensor, Tensor, Tensor, Tensor) {
    let t = intermediates(&fixtures().join("cases/t2i_euler_nv_seed1234"));
    let context = Tensor::cat(&[&t["iter0.cond"], &t["iter0.uncond"]], 0).unwrap();
    let ids = t["iter0.cond_tokens.0"].reshape((1, 77)).unwrap().to_dtype(DType::U32).unwrap();
    (t["unet_probe.x_in"].clone(), t["unet_probe.t"].clone(), context, ids)
}

/// CLIP, UNet, VAE decode and VAE encode outputs of `m` on fixed inputs.
fn outputs(m: &LoadedModel) -> Vec<Vec<u32>> {
    let (x, t, context, ids) = probe_inputs();
    let latent = x.narrow(0, 0, 1).unwrap();
    let decoded = m.vae.decode(&latent).unwrap();
    vec![
        bits(&m.clip().forward(&ids, 1).unwrap()),
        bits(&m.clip().forward(&ids, 2).unwrap()),
        bits(&m.unet.forward(&x, &t, &context).unwrap()),
        bits(&decoded),
        bits(&m.vae.encode(&decoded.clamp(-1f32, 1f32).unwrap()).unwrap()),
    ]
}

#[test]
fn diffusers_folder_is_bit_identical_to_single_file() {
    let folder = LoadedModel::load(&diffusers_path(), None, &Device::Cpu, DType::F32).unwrap();
    let single = model();
    assert_eq!(folder.unet.config(), single.unet.config());
    assert_eq!(folder.vae.config(), single.vae.config());
    assert_eq!(folder.clip().config(), single.clip().config());
    // The folder's schedule is computed from scheduler_config.json, the file's is stored.
    assert_eq!(folder.alphas_cumprod, single.alphas_cumprod);
    let names = ["clip", "clip skip 2", "unet", "vae decode", "vae encode"];
    for ((a, b), name) in outputs(&folder).iter().zip(outputs(single)).zip(names) {
        assert!(*a == b, "{name}: diffusers and single-file outputs differ");
    }
}

fn temp_path(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("sdapi-engine-tests-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

#[test]
fn vae_override_in_every_naming_is_bit_identical() {
    let all = candle_core::safetensors::load(single_file_path(), &Device::Cpu).unwrap();
    // Bare LDM names (`encoder.*`), as many standalone VAE files are published.
    let bare: HashMap<String, Tensor> = all
        .iter()
        .filter_map(|(k, v)| k.strip_prefix("first_stage_model.").map(|s| (s.to_string(), v.clone())))
        .collect();
    let bare_path = temp_path("vae-bare.safetensors");
    candle_core::safetensors::save(&bare, &bare_path).unwrap();
    let diffusers_vae = diffusers_path().join("vae/diffusion_pytorch_model.safetensors");

    let reference = model();
    let decode = |m: &LoadedModel| {
        let (x, ..) = probe_inputs();
        bits(&m.vae.decode(&x.narrow(0, 0, 1).unwrap()).unwrap())
    };
    for vae in [&bare_path, &diffusers_vae] {
        let m = LoadedModel::load(&single_file_path(), Some(vae), &Device::Cpu, DType::F32).unwrap();
        assert!(decode(&m) == decode(reference), "VAE override {} decodes differently", vae.display());
    }
    // And a checkpoint VAE replaced by a *different* VAE must change the output.
    let scaled: HashMap<String, Tensor> = bare
        .iter()
        .map(|(k, v)| (k.clone(), if k == "decoder.conv_out.bias" { (v + 0.5).unwrap() } else { v.clone() }))
        .collect();
    let scaled_path = temp_path("vae-shifted.safetensors");
    candle_core::safetensors::save(&scaled, &scaled_path).unwrap();
    let m = LoadedModel::load(&single_file_path(), Some(&scaled_path), &Device::Cpu, DType::F32).unwrap();
    assert!(decode(&m) != decode(reference), "override VAE was ignored");
}
