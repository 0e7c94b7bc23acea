//! LoRA merges on SD 2.x and SDXL, checked against the arithmetic by hand: for every targeted
//! weight `W' = W + ((up @ down) · alpha/rank) · multiplier` (te multiplier on text-encoder
//! layers, unet on the rest), computed here with plain loops, and untouched weights unchanged.
//! The LoRAs are built in the test with kohya names: both SDXL text encoders (`lora_te1_`,
//! `lora_te2_`), SD 2.x's OpenCLIP (`lora_te_` under A1111's `is_sd2` rule), UNet keys in
//! kohya's diffusers naming (SD-1.5 block arithmetic) and in LDM naming (the fallback), and a
//! 3x3 LoCon conv.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use candle_core::{DType, Device, Tensor};
use sdapi_engine::checkpoint::{ModelFamily, open_checkpoint};
use sdapi_engine::networks::{LayerIndex, LoraFile, LoraPatch};

fn fixture(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures").join(path)
}

/// Deterministic values in [-0.5, 0.5).
fn values(n: usize, seed: u64) -> Vec<f32> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 40) as f32 / (1u64 << 24) as f32 - 0.5
        })
        .collect()
}

/// One module of the test LoRA: its kohya key, the canonical weight it must change, the weight's
/// shape (out, in, kh, kw), rank and whether the te multiplier applies.
struct Module {
    key: &'static str,
    weight: String,
    out: usize,
    inp: usize,
    kernel: usize,
    rank: usize,
    text: bool,
}

struct Built {
    up: Vec<f32>,
    down: Vec<f32>,
}

const ALPHA: f32 = 3.0;

fn write_lora(dir: &Path, name: &str, modules: &[Module]) -> (PathBuf, Vec<Built>) {
    let mut tensors = HashMap::new();
    let mut built = Vec::new();
    for (i, m) in modules.iter().enumerate() {
        let up = values(m.out * m.rank, 2 * i as u64 + 1);
        let down = values(m.rank * m.inp * m.kernel * m.kernel, 2 * i as u64 + 2);
        let up_shape: Vec<usize> = if m.kernel > 1 { vec![m.out, m.rank, 1, 1] } else { vec![m.out, m.rank] };
        let down_shape: Vec<usize> =
            if m.kernel > 1 { vec![m.rank, m.inp, m.kernel, m.kernel] } else { vec![m.rank, m.inp] };
        // Stored in f16 as kohya does; the merge reads them as f32.
        let as_f16 = |v: &[f32], shape: &[usize]| {
            Tensor::from_vec(v.to_vec(), shape, &Device::Cpu).unwrap().to_dtype(DType::F16).unwrap()
        };
        tensors.insert(format!("{}.lora_up.weight", m.key), as_f16(&up, &up_shape));
        tensors.insert(format!("{}.lora_down.weight", m.key), as_f16(&down, &down_shape));
        tensors.insert(
            format!("{}.alpha", m.key),
            Tensor::new(ALPHA, &Device::Cpu).unwrap().to_dtype(DType::F16).unwrap(),
        );
        let round = |v: Vec<f32>| v.into_iter().map(|x| half::f16::from_f32(x).to_f32()).collect();
        built.push(Built { up: round(up), down: round(down) });
    }
    let path = dir.join(format!("{name}.safetensors"));
    candle_core::safetensors::save(&tensors, &path).unwrap();
    (path, built)
}

fn flat(t: &Tensor) -> Vec<f32> {
    t.to_dtype(DType::F32).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap()
}

/// Merges `modules` into `checkpoint` with multipliers te / unet and checks every target, plus
/// `untouched` weights that must stay as they are.
fn check_merge(checkpoint: &Path, family: ModelFamily, modules: &[Module], untouched: &[&str]) {
    let dir = std::env::temp_dir().join(format!("sdapi-lora-merge-{}-{family:?}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (path, built) = write_lora(&dir, "test-lora", modules);
    let (te, unet) = (0.7, 0.4);

    let base = open_checkpoint(checkpoint).unwrap();
    assert_eq!(base.family, family);
    let mut patched = open_checkpoint(checkpoint).unwrap();
    let index = LayerIndex::new(patched.family, patched.store.names());
    let file = LoraFile::read(&path).unwrap();
    let (patch, report) = LoraPatch::new(&file, patched.family, &index, te, unet, None);
    assert!(report.unmatched.is_empty(), "unmatched keys: {:?}", report.unmatched);
    assert!(report.incomplete_attention.is_empty(), "{:?}", report.incomplete_attention);
    assert_eq!(report.matched, modules.len());
    patched.store.add_patch(Arc::new(patch));

    for (m, b) in modules.iter().zip(&built) {
        let w = flat(&base.store.load(&m.weight, DType::F32, &Device::Cpu).unwrap());
        let merged = flat(&patched.store.load(&m.weight, DType::F32, &Device::Cpu).unwrap());
        let cols = m.inp * m.kernel * m.kernel;
        assert_eq!(w.len(), m.out * cols, "{}: shape", m.weight);
        let multiplier = if m.text { te } else { unet } as f32;
        let scale = ALPHA / m.rank as f32;
        let mut worst = 0f32;
        for o in 0..m.out {
            for c in 0..cols {
                let product: f32 = (0..m.rank).map(|r| b.up[o * m.rank + r] * b.down[r * cols + c]).sum();
                let want = w[o * cols + c] + (product * scale) * multiplier;
                worst = worst.max((merged[o * cols + c] - want).abs());
            }
        }
        assert!(worst < 1e-5, "{} ({}): merged weight off by {worst}", m.key, m.weight);
        assert_ne!(w, merged, "{}: unchanged", m.weight);
    }
    for name in untouched {
        let w = flat(&base.store.load(name, DType::F32, &Device::Cpu).unwrap());
        let merged = flat(&patched.store.load(name, DType::F32, &Device::Cpu).unwrap());
        assert_eq!(w, merged, "{name} must not change");
    }
    std::fs::remove_dir_all(&dir).ok();
}

fn module(key: &'static str, weight: &str, out: usize, inp: usize, kernel: usize, text: bool) -> Module {
    Module { key, weight: weight.to_string(), out, inp, kernel, rank: 4, text }
}

#[test]
fn sdxl_lora_merges_both_text_encoders_and_the_unet() {
    let l = "conditioner.embedders.0.transformer.text_model.encoder.layers";
    let g = "conditioner.embedders.1.model.text_model.encoder.layers";
    let modules = [
        module(
            "lora_te1_text_model_encoder_layers_0_self_attn_q_proj",
            &format!("{l}.0.self_attn.q_proj.weight"),
            8,
            8,
            1,
            true,
        ),
        module("lora_te1_text_model_encoder_layers_1_mlp_fc2", &format!("{l}.1.mlp.fc2.weight"), 8, 16, 1, true),
        // bigG's fused attention: q, k, v and out together, as A1111 requires.
        module(
            "lora_te2_text_model_encoder_layers_0_self_attn_q_proj",
            &format!("{g}.0.self_attn.q_proj.weight"),
            16,
            16,
            1,
            true,
        ),
        module(
            "lora_te2_text_model_encoder_layers_0_self_attn_k_proj",
            &format!("{g}.0.self_attn.k_proj.weight"),
            16,
            16,
            1,
            true,
        ),
        module(
            "lora_te2_text_model_encoder_layers_0_self_attn_v_proj",
            &format!("{g}.0.self_attn.v_proj.weight"),
            16,
            16,
            1,
            true,
        ),
        module(
            "lora_te2_text_model_encoder_layers_0_self_attn_out_proj",
            &format!("{g}.0.self_attn.out_proj.weight"),
            16,
            16,
            1,
            true,
        ),
        module("lora_te2_text_model_encoder_layers_0_mlp_fc1", &format!("{g}.0.mlp.fc1.weight"), 64, 16, 1, true),
        // kohya SDXL LoRAs name the UNet in LDM terms (A1111's lora_unet → diffusion_model fallback) …
        module(
            "lora_unet_input_blocks_5_1_proj_in",
            "model.diffusion_model.input_blocks.5.1.proj_in.weight",
            32,
            32,
            1,
            false,
        ),
        module(
            "lora_unet_middle_block_1_transformer_blocks_1_attn2_to_out_0",
            "model.diffusion_model.middle_block.1.transformer_blocks.1.attn2.to_out.0.weight",
            32,
            32,
            1,
            false,
        ),
        // … or in diffusers terms (SD-1.5 block arithmetic: down block 1 → input block 4).
        module(
            "lora_unet_down_blocks_1_attentions_0_transformer_blocks_0_attn1_to_q",
            "model.diffusion_model.input_blocks.4.1.transformer_blocks.0.attn1.to_q.weight",
            32,
            32,
            1,
            false,
        ),
        module(
            "lora_unet_input_blocks_1_0_in_layers_2",
            "model.diffusion_model.input_blocks.1.0.in_layers.2.weight",
            32,
            32,
            3,
            false,
        ),
    ];
    let untouched = [
        "conditioner.embedders.1.model.text_model.encoder.layers.1.self_attn.q_proj.weight",
        "model.diffusion_model.input_blocks.4.1.proj_in.weight",
    ];
    check_merge(&fixture("a1111-parity-sdxl/models/tiny-sdxl.safetensors"), ModelFamily::Sdxl, &modules, &untouched);
}

#[test]
fn sd2_lora_merges_open_clip_and_the_unet() {
    let t = "cond_stage_model.model.text_model.encoder.layers";
    let modules = [
        module(
            "lora_te_text_model_encoder_layers_1_self_attn_q_proj",
            &format!("{t}.1.self_attn.q_proj.weight"),
            24,
            24,
            1,
            true,
        ),
        module(
            "lora_te_text_model_encoder_layers_1_self_attn_k_proj",
            &format!("{t}.1.self_attn.k_proj.weight"),
            24,
            24,
            1,
            true,
        ),
        module(
            "lora_te_text_model_encoder_layers_1_self_attn_v_proj",
            &format!("{t}.1.self_attn.v_proj.weight"),
            24,
            24,
            1,
            true,
        ),
        module(
            "lora_te_text_model_encoder_layers_1_self_attn_out_proj",
            &format!("{t}.1.self_attn.out_proj.weight"),
            24,
            24,
            1,
            true,
        ),
        module("lora_te_text_model_encoder_layers_0_mlp_fc1", &format!("{t}.0.mlp.fc1.weight"), 96, 24, 1, true),
        module("lora_te_text_model_encoder_layers_0_mlp_fc2", &format!("{t}.0.mlp.fc2.weight"), 24, 96, 1, true),
        module(
            "lora_unet_down_blocks_0_attentions_0_proj_in",
            "model.diffusion_model.input_blocks.1.1.proj_in.weight",
            32,
            32,
            1,
            false,
        ),
        module(
            "lora_unet_up_blocks_1_attentions_0_transformer_blocks_0_attn2_to_k",
            "model.diffusion_model.output_blocks.3.1.transformer_blocks.0.attn2.to_k.weight",
            32,
            24,
            1,
            false,
        ),
        module(
            "lora_unet_down_blocks_0_resnets_0_conv1",
            "model.diffusion_model.input_blocks.1.0.in_layers.2.weight",
            32,
            32,
            3,
            false,
        ),
    ];
    let untouched = [
        "cond_stage_model.model.text_model.encoder.layers.0.self_attn.q_proj.weight",
        "model.diffusion_model.middle_block.1.proj_in.weight",
    ];
    check_merge(&fixture("a1111-parity-sd2/models/tiny-sd2v.safetensors"), ModelFamily::Sd2, &modules, &untouched);
}

/// A1111 changes an OpenCLIP attention only when the network has q, k, v and out for it.
#[test]
fn an_incomplete_open_clip_attention_is_left_alone() {
    let dir = std::env::temp_dir().join(format!("sdapi-lora-incomplete-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let q = "cond_stage_model.model.text_model.encoder.layers.0.self_attn.q_proj.weight";
    let (path, _) = write_lora(
        &dir,
        "q-only",
        &[module("lora_te_text_model_encoder_layers_0_self_attn_q_proj", q, 24, 24, 1, true)],
    );
    let checkpoint = fixture("a1111-parity-sd2/models/tiny-sd2v.safetensors");
    let mut patched = open_checkpoint(&checkpoint).unwrap();
    let index = LayerIndex::new(patched.family, patched.store.names());
    let (patch, report) = LoraPatch::new(&LoraFile::read(&path).unwrap(), patched.family, &index, 1.0, 1.0, None);
    assert_eq!(report.matched, 0);
    assert_eq!(report.incomplete_attention, vec!["model_transformer_resblocks_0_attn".to_string()]);
    patched.store.add_patch(Arc::new(patch));
    let base = open_checkpoint(&checkpoint).unwrap();
    assert_eq!(
        flat(&base.store.load(q, DType::F32, &Device::Cpu).unwrap()),
        flat(&patched.store.load(q, DType::F32, &Device::Cpu).unwrap())
    );
    std::fs::remove_dir_all(&dir).ok();
}

/// The fixture LoRA at 0.8 on the tiny SD 1.5 model: every merged weight equals the one A1111
/// computed (`lora_merged.<layer>` intermediates of `lora_08_euler`).
#[test]
fn merged_weights_equal_a1111s_for_the_fixture_lora() {
    let case = fixture("a1111-parity-features/cases/lora_08_euler/intermediates.safetensors");
    let expected = candle_core::safetensors::load(&case, &Device::Cpu).unwrap();
    let checkpoint = fixture("a1111-parity/models/tiny-sd15.safetensors");
    let mut patched = open_checkpoint(&checkpoint).unwrap();
    let index = LayerIndex::new(patched.family, patched.store.names());
    let lora = LoraFile::read(&fixture("a1111-parity-features/models/Lora/tiny-lora.safetensors")).unwrap();
    let (patch, report) = LoraPatch::new(&lora, patched.family, &index, 0.8, 0.8, None);
    patched.store.add_patch(Arc::new(patch));
    let mut compared = 0;
    let mut worst = 0f32;
    for (key, want) in &expected {
        let Some(layer) = key.strip_prefix("lora_merged.") else { continue };
        let target = index.layers.get(layer).unwrap_or_else(|| panic!("no layer {layer}"));
        let got = flat(&patched.store.load(&target.weight, DType::F32, &Device::Cpu).unwrap());
        let want = flat(want);
        assert_eq!(got.len(), want.len(), "{layer}");
        worst = got.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(worst, f32::max);
        compared += 1;
    }
    assert_eq!(compared, report.matched, "every merged layer has an A1111 counterpart");
    assert!(compared > 60, "{compared} layers");
    assert!(worst <= 1e-6, "largest difference from A1111's merged weights: {worst}");
    println!("{compared} merged weights, largest difference {worst:e}");
}

/// Merges `tensors` (a network file written here) into tiny-sd15 with te 0.6 / unet 0.9 and
/// returns (base, merged) of `weight`.
fn merge_file(tag: &str, tensors: HashMap<String, Tensor>, weight: &str) -> (Vec<f32>, Vec<f32>) {
    let dir = std::env::temp_dir().join(format!("sdapi-lora-types-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("{tag}.safetensors"));
    candle_core::safetensors::save(&tensors, &path).unwrap();
    let checkpoint = fixture("a1111-parity/models/tiny-sd15.safetensors");
    let mut patched = open_checkpoint(&checkpoint).unwrap();
    let index = LayerIndex::new(patched.family, patched.store.names());
    let (patch, report) = LoraPatch::new(&LoraFile::read(&path).unwrap(), patched.family, &index, 0.6, 0.9, None);
    assert!(report.unmatched.is_empty(), "{tag}: unmatched {:?}", report.unmatched);
    patched.store.add_patch(Arc::new(patch));
    let base = flat(&open_checkpoint(&checkpoint).unwrap().store.load(weight, DType::F32, &Device::Cpu).unwrap());
    let merged = flat(&patched.store.load(weight, DType::F32, &Device::Cpu).unwrap());
    std::fs::remove_dir_all(&dir).ok();
    (base, merged)
}

fn tensor(values: &[f32], shape: &[usize]) -> Tensor {
    Tensor::from_vec(values.to_vec(), shape, &Device::Cpu).unwrap()
}

/// (rows × inner) @ (inner × cols), by hand.
fn matmul(a: &[f32], b: &[f32], rows: usize, inner: usize, cols: usize) -> Vec<f32> {
    (0..rows * cols).map(|i| (0..inner).map(|k| a[(i / cols) * inner + k] * b[k * cols + i % cols]).sum()).collect()
}

fn assert_merged(tag: &str, base: &[f32], merged: &[f32], delta: &[f32], scale: f32, multiplier: f32) {
    let worst =
        (0..base.len()).map(|i| (merged[i] - (base[i] + (delta[i] * scale) * multiplier)).abs()).fold(0f32, f32::max);
    assert!(worst < 1e-5, "{tag}: off by {worst}");
    assert_ne!(base, merged, "{tag}: unchanged");
}

/// LoHa: `(w1a @ w1b) ⊙ (w2a @ w2b) · alpha/rank · multiplier` (rank = w1b's rows).
#[test]
fn loha_updates_follow_the_hadamard_product() {
    let (r, n) = (3, 32);
    let (w1a, w1b, w2a, w2b) = (values(n * r, 11), values(r * n, 12), values(n * r, 13), values(r * n, 14));
    let key = "lora_te_text_model_encoder_layers_0_self_attn_q_proj";
    let mut t = HashMap::new();
    t.insert(format!("{key}.hada_w1_a"), tensor(&w1a, &[n, r]));
    t.insert(format!("{key}.hada_w1_b"), tensor(&w1b, &[r, n]));
    t.insert(format!("{key}.hada_w2_a"), tensor(&w2a, &[n, r]));
    t.insert(format!("{key}.hada_w2_b"), tensor(&w2b, &[r, n]));
    t.insert(format!("{key}.alpha"), Tensor::new(1.5f32, &Device::Cpu).unwrap());
    let (base, merged) =
        merge_file("loha", t, "cond_stage_model.transformer.text_model.encoder.layers.0.self_attn.q_proj.weight");
    let (p1, p2) = (matmul(&w1a, &w1b, n, r, n), matmul(&w2a, &w2b, n, r, n));
    let delta: Vec<f32> = p1.iter().zip(&p2).map(|(a, b)| a * b).collect();
    assert_merged("loha", &base, &merged, &delta, 1.5 / r as f32, 0.6);
}

/// LoKr: `kron(w1, w2)`; with whole factors there is no rank, so the scale is 1.
#[test]
fn lokr_updates_follow_the_kronecker_product() {
    let (w1, w2) = (values(4 * 2, 21), values(8 * 16, 22));
    let key = "lora_unet_down_blocks_0_attentions_0_proj_in";
    let mut t = HashMap::new();
    t.insert(format!("{key}.lokr_w1"), tensor(&w1, &[4, 2]));
    t.insert(format!("{key}.lokr_w2"), tensor(&w2, &[8, 16]));
    t.insert(format!("{key}.alpha"), Tensor::new(7.0f32, &Device::Cpu).unwrap());
    let (base, merged) = merge_file("lokr", t, "model.diffusion_model.input_blocks.1.1.proj_in.weight");
    // kron: row (i·8 + p), column (j·16 + q) = w1[i][j] · w2[p][q]
    let delta: Vec<f32> = (0..32 * 32)
        .map(|x| (x / 32, x % 32))
        .map(|(row, col)| w1[(row / 8) * 2 + col / 16] * w2[(row % 8) * 16 + col % 16])
        .collect();
    assert_merged("lokr", &base, &merged, &delta, 1.0, 0.9);
}

/// diffusers / PEFT layouts (`unet.<path>.lora_A.weight`, `text_encoder.<path>.lora.down.weight`)
/// land on the same layers as kohya's names.
#[test]
fn diffusers_and_peft_key_layouts_are_understood() {
    let (r, n) = (2, 32);
    let (a, b) = (values(r * n, 31), values(n * r, 32));
    let mut t = HashMap::new();
    let unet = "unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q";
    t.insert(format!("{unet}.lora_A.weight"), tensor(&a, &[r, n]));
    t.insert(format!("{unet}.lora_B.weight"), tensor(&b, &[n, r]));
    let (base, merged) =
        merge_file("peft", t, "model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn1.to_q.weight");
    assert_merged("peft", &base, &merged, &matmul(&b, &a, n, r, n), 1.0, 0.9);

    let mut t = HashMap::new();
    let text = "text_encoder.text_model.encoder.layers.0.mlp.fc1";
    t.insert(format!("{text}.lora.down.weight"), tensor(&a, &[r, n]));
    t.insert(format!("{text}.lora.up.weight"), tensor(&values(64 * r, 33), &[64, r]));
    t.insert(format!("{text}.alpha"), Tensor::new(1.0f32, &Device::Cpu).unwrap());
    let (base, merged) =
        merge_file("diffusers", t, "cond_stage_model.transformer.text_model.encoder.layers.0.mlp.fc1.weight");
    assert_merged("diffusers", &base, &merged, &matmul(&values(64 * r, 33), &a, 64, r, n), 1.0 / r as f32, 0.6);
}
