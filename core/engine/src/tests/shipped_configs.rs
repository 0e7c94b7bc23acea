//! Heads the tensors cannot show come from the configs the user ships. A text encoder 48 channels
//! wide in 4 heads (12-wide heads: neither the published 64 nor any width rule) is loaded from a
//! diffusers folder whose `text_encoder/config.json` says so and from a single file with a
//! `<checkpoint>.yaml` beside it; both must condition exactly like a reference built with 4 heads.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use sdapi_protocol::choices::EmphasisMode;

use super::{diffusers_path, max_abs_diff, single_file_path};
use crate::text::{ClipTokenizer, PromptChunk};
use crate::{ClipActivation, ClipConfig, ClipTextModel, LoadedModel};

const WIDTH: usize = 48;
const HEADS: usize = 4;

fn clip_config(heads: usize) -> ClipConfig {
    ClipConfig {
        vocab_size: 49408,
        hidden_size: WIDTH,
        num_layers: 2,
        num_heads: heads,
        intermediate_size: 96,
        max_positions: 77,
        activation: ClipActivation::QuickGelu,
        layer_norm_eps: 1e-5,
    }
}

/// Random 48-wide CLIP weights in transformers naming (`text_model.…`).
fn clip_weights() -> HashMap<String, Tensor> {
    let vm = VarMap::new();
    let vb = VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu);
    ClipTextModel::new(clip_config(HEADS), vb.pp("text_model")).expect("build");
    let data = vm.data().lock().expect("varmap");
    data.iter().map(|(name, var)| (name.clone(), var.as_tensor().clone())).collect()
}

/// The same weights run with `heads` heads.
fn reference(weights: &HashMap<String, Tensor>, heads: usize, ids: &Tensor) -> Tensor {
    let vb = VarBuilder::from_tensors(weights.clone(), DType::F32, &Device::Cpu);
    ClipTextModel::new(clip_config(heads), vb.pp("text_model")).expect("reference").forward(ids, 1).expect("forward")
}

/// A fresh folder per call: tests run in parallel and must not share (or delete) each other's files.
fn scratch(name: &str) -> PathBuf {
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("sdapi-shipped-{name}-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("read_dir") {
        let path = entry.expect("entry").path();
        let target = to.join(path.file_name().expect("name"));
        if path.is_dir() {
            copy_dir(&path, &target);
        } else {
            std::fs::copy(&path, &target).expect("copy");
        }
    }
}

/// The tiny SD-1.x diffusers folder with its text encoder replaced and described by config.json.
fn diffusers_folder(weights: &HashMap<String, Tensor>) -> PathBuf {
    let folder = scratch("diffusers").join("model");
    copy_dir(&diffusers_path(), &folder);
    let text = folder.join("text_encoder");
    candle_core::safetensors::save(weights, text.join("model.safetensors")).expect("save");
    let mut config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(text.join("config.json")).expect("config")).expect("json");
    config["hidden_size"] = WIDTH.into();
    config["intermediate_size"] = 96.into();
    config["num_hidden_layers"] = 2.into();
    config["num_attention_heads"] = HEADS.into();
    std::fs::write(text.join("config.json"), config.to_string()).expect("write config");
    folder
}

/// The tiny SD-1.x single file with its text encoder replaced; `yaml`: the sidecar to write.
fn single_file(weights: &HashMap<String, Tensor>, yaml: Option<&str>) -> PathBuf {
    let path = scratch("single").join("model.safetensors");
    let mut tensors = candle_core::safetensors::load(single_file_path(), &Device::Cpu).expect("fixture");
    let prefix = "cond_stage_model.transformer.";
    tensors.retain(|name, _| !name.starts_with(&format!("{prefix}text_model.")));
    tensors.extend(weights.iter().map(|(name, t)| (format!("{prefix}{name}"), t.clone())));
    candle_core::safetensors::save(&tensors, &path).expect("save");
    if let Some(yaml) = yaml {
        std::fs::write(path.with_extension("yaml"), yaml).expect("yaml");
    }
    path
}

fn tokens() -> [u32; 77] {
    let line = ClipTokenizer::shared().tokenize_line("a red cube on a table", &Default::default()).expect("tokens");
    line.chunks.first().map(|c| c.tokens).unwrap_or(PromptChunk::empty().tokens)
}

fn encode(model: &LoadedModel, row: [u32; 77]) -> Tensor {
    model.text.encode(&[row], &[[1.0; 77]], EmphasisMode::None, 1).expect("encode").crossattn
}

#[test]
fn text_encoder_heads_come_from_the_shipped_config() {
    let weights = clip_weights();
    let row = tokens();
    let ids = Tensor::new(&[row], &Device::Cpu).expect("ids");
    let want = reference(&weights, HEADS, &ids);
    // The head count matters: the same weights split into other head counts give other results,
    // so a loader that guessed (6 heads of 8, 3 of 16, 12 of 4) would fail below.
    for wrong in [3, 6, 12] {
        assert!(max_abs_diff(&reference(&weights, wrong, &ids), &want) > 1e-4, "{wrong} heads");
    }

    let folder = LoadedModel::load(&diffusers_folder(&weights), None, &Device::Cpu, DType::F32).expect("folder");
    assert_eq!(folder.clip().config().num_heads, HEADS);
    assert!(max_abs_diff(&encode(&folder, row), &want) < 1e-6);

    let yaml = "model:\n  params:\n    unet_config:\n      params:\n        num_heads: 8\n    cond_stage_config:\n      target: ldm.modules.encoders.modules.FrozenCLIPEmbedder\n      arch:\n        num_attention_heads: 4\n";
    let single = LoadedModel::load(&single_file(&weights, Some(yaml)), None, &Device::Cpu, DType::F32).expect("file");
    assert_eq!(single.clip().config().num_heads, HEADS);
    assert!(max_abs_diff(&encode(&single, row), &want) < 1e-6);
}

#[test]
fn without_a_config_a_narrow_encoder_is_refused_not_guessed() {
    let path = single_file(&clip_weights(), None);
    let err = LoadedModel::load(&path, None, &Device::Cpu, DType::F32).err().expect("must not guess the heads");
    let message = err.to_string();
    assert!(message.contains("48 wide") && message.contains("ship the model's config"), "{message}");
}

#[test]
fn unet_heads_per_level_from_a_diffusers_config() {
    // diffusers' `attention_head_dim` is a head count; a list gives one per down block.
    let folder = scratch("unet-heads").join("model");
    copy_dir(&diffusers_path(), &folder);
    let config_path = folder.join("unet").join("config.json");
    let mut config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&config_path).expect("config")).expect("json");
    config["attention_head_dim"] = serde_json::json!([4, 8]);
    std::fs::write(&config_path, config.to_string()).expect("write");
    let model = LoadedModel::load(&folder, None, &Device::Cpu, DType::F32).expect("load");
    let heads = &model.unet.config().heads;
    assert_eq!((heads.heads_at(0, 32), heads.heads_at(1, 64)), (4, 8));

    config["attention_head_dim"] = serde_json::json!(5);
    std::fs::write(&config_path, config.to_string()).expect("write");
    let err = LoadedModel::load(&folder, None, &Device::Cpu, DType::F32).err().expect("32 channels in 5 heads");
    assert!(err.to_string().contains("whole heads"), "{err}");
}
