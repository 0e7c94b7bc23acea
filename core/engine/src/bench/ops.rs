//! Single-op timings at the shapes that dominate an SD 1.5 UNet step at a given latent size, so a
//! gap to PyTorch can be pinned on an op class (conv, matmul, attention, norm) rather than guessed.
//! `scripts/bench/reference.py ops` times the same list with torch; the names must match.

use candle_core::{Device, Module, Tensor};
use candle_nn::{Conv2dConfig, GroupNorm, Linear};

use super::{BenchError, Samples, input};
use crate::attention::{multi_head_attention, sliced_multi_head_attention};

/// One op's timing (batch 2 = a CFG pair).
#[derive(Debug, Clone, serde::Serialize)]
pub struct OpTiming {
    pub name: String,
    pub samples: Samples,
}

/// `ours`: the engine's convolution (`conv::forward`); else candle's `conv2d` (the "before").
fn conv3x3(ch: usize, hw: usize, warmup: usize, iters: usize, ours: bool) -> Result<Samples, BenchError> {
    let bound = 1.0 / ((ch * 9) as f32).sqrt();
    let w = (input(&[ch, ch, 3, 3], 11)? * bound as f64)?;
    let conv = candle_nn::Conv2d::new(
        w,
        Some(Tensor::zeros(ch, candle_core::DType::F32, &Device::Cpu)?),
        Conv2dConfig { padding: 1, ..Default::default() },
    );
    let x = input(&[2, ch, hw, hw], 12)?;
    if ours {
        Samples::measure(warmup, iters, || Ok(crate::conv::forward(&conv, &x)?))
    } else {
        Samples::measure(warmup, iters, || Ok(conv.forward(&x)?))
    }
}

fn group_norm(ch: usize, hw: usize, warmup: usize, iters: usize) -> Result<Samples, BenchError> {
    let ones = Tensor::ones(ch, candle_core::DType::F32, &Device::Cpu)?;
    let gn = GroupNorm::new(ones.clone(), ones.zeros_like()?, ch, 32, 1e-5)?;
    let x = input(&[2, ch, hw, hw], 13)?;
    Samples::measure(warmup, iters, || Ok(gn.forward(&x)?))
}

fn linear(tokens: usize, cin: usize, cout: usize, warmup: usize, iters: usize) -> Result<Samples, BenchError> {
    let w = (input(&[cout, cin], 14)? * (1.0 / (cin as f64).sqrt()))?;
    let lin = Linear::new(w, None);
    let x = input(&[2, tokens, cin], 15)?;
    Samples::measure(warmup, iters, || Ok(lin.forward(&x)?))
}

/// The engine's own attention (what the UNet runs), 8 heads as in SD 1.x.
fn attention(
    tokens: usize,
    kv_tokens: usize,
    width: usize,
    warmup: usize,
    iters: usize,
    sliced: bool,
) -> Result<Samples, BenchError> {
    let q = input(&[2, tokens, width], 16)?;
    let k = input(&[2, kv_tokens, width], 17)?;
    let v = input(&[2, kv_tokens, width], 18)?;
    let attend = if sliced { sliced_multi_head_attention } else { multi_head_attention };
    Samples::measure(warmup, iters, || Ok(attend(&q, &k, &v, 8, None)?))
}

/// The ops of the first (most expensive per op) UNet levels at `latent`×`latent`.
/// One operation to time, boxed so the list can mix shapes.
type TimedOp = Box<dyn Fn() -> Result<Samples, BenchError>>;

pub fn time_ops(latent: usize, warmup: usize, iters: usize) -> Result<Vec<OpTiming>, BenchError> {
    let (l1, l2, l3) = (latent, latent / 2, latent / 4);
    let t1 = l1 * l1;
    let list: Vec<(String, TimedOp)> = vec![
        (format!("conv3x3 320ch {l1}x{l1}"), Box::new(move || conv3x3(320, l1, warmup, iters, true))),
        (format!("conv3x3 320ch {l1}x{l1} (candle conv2d)"), Box::new(move || conv3x3(320, l1, warmup, iters, false))),
        (format!("conv3x3 640ch {l2}x{l2}"), Box::new(move || conv3x3(640, l2, warmup, iters, true))),
        (format!("conv3x3 1280ch {l3}x{l3}"), Box::new(move || conv3x3(1280, l3, warmup, iters, true))),
        (format!("groupnorm 320ch {l1}x{l1}"), Box::new(move || group_norm(320, l1, warmup, iters))),
        (format!("linear {t1}x320->320"), Box::new(move || linear(t1, 320, 320, warmup, iters))),
        (format!("linear {t1}x320->2560 (geglu in)"), Box::new(move || linear(t1, 320, 2560, warmup, iters))),
        (format!("self-attn {t1} tok 320 wide"), Box::new(move || attention(t1, t1, 320, warmup, iters, false))),
        (
            format!("self-attn {t1} tok 320 wide (sliced path)"),
            Box::new(move || attention(t1, t1, 320, warmup, iters, true)),
        ),
        (format!("cross-attn {t1}x77 tok 320 wide"), Box::new(move || attention(t1, 77, 320, warmup, iters, false))),
    ];
    list.into_iter().map(|(name, f)| Ok(OpTiming { name, samples: f()? })).collect()
}
