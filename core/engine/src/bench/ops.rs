//! Single-op timings at the shapes that dominate an SD 1.5 UNet step at a given latent size, so a
//! gap to PyTorch can be pinned on an op class (conv, matmul, attention, norm) rather than guessed.
//! `scripts/bench/reference.py ops` times the same list with torch; the names must match. Both run
//! on any device and precision (`--device cuda --dtype f16` on a GPU: each timing then ends with
//! a device synchronisation, so it is the op's whole time, not its launch).

use candle_core::{Module, Tensor};
use candle_nn::{Conv2dConfig, Linear, VarBuilder, VarMap};

use super::{BenchDevice, BenchError, Samples};
use crate::attention::{multi_head_attention, sliced_multi_head_attention};
use crate::norm::GroupNorm32;

/// One op's timing (batch 2 = a CFG pair).
#[derive(Debug, Clone, serde::Serialize)]
pub struct OpTiming {
    pub name: String,
    pub samples: Samples,
}

/// `ours`: the engine's convolution (`conv::forward`); else candle's `conv2d` (the "before").
fn conv3x3(
    t: &BenchDevice,
    ch: usize,
    hw: usize,
    (warmup, iters): (usize, usize),
    ours: bool,
) -> Result<Samples, BenchError> {
    let bound = 1.0 / ((ch * 9) as f64).sqrt();
    let w = (t.input(&[ch, ch, 3, 3], 11)? * bound)?;
    let bias = Tensor::zeros(ch, t.dtype, &t.device)?;
    let conv = candle_nn::Conv2d::new(w, Some(bias), Conv2dConfig { padding: 1, ..Default::default() });
    let x = t.input(&[2, ch, hw, hw], 12)?;
    if ours {
        t.measure(warmup, iters, || crate::conv::forward(&conv, &x))
    } else {
        t.measure(warmup, iters, || conv.forward(&x))
    }
}

/// The UNet's GroupNorm (statistics and affine in f32 whatever the input's precision).
fn group_norm(t: &BenchDevice, ch: usize, hw: usize, (warmup, iters): (usize, usize)) -> Result<Samples, BenchError> {
    // Through a VarMap so the affine parameters get their real initial values (ones, zeros).
    let gn = GroupNorm32::new(32, ch, 1e-5, VarBuilder::from_varmap(&VarMap::new(), t.dtype, &t.device))?;
    let x = t.input(&[2, ch, hw, hw], 13)?;
    t.measure(warmup, iters, || gn.forward(&x))
}

fn linear(
    t: &BenchDevice,
    tokens: usize,
    cin: usize,
    cout: usize,
    (warmup, iters): (usize, usize),
) -> Result<Samples, BenchError> {
    let w = (t.input(&[cout, cin], 14)? * (1.0 / (cin as f64).sqrt()))?;
    let lin = Linear::new(w, None);
    let x = t.input(&[2, tokens, cin], 15)?;
    t.measure(warmup, iters, || lin.forward(&x))
}

/// The engine's own attention (what the UNet runs), 8 heads as in SD 1.x.
fn attention(
    t: &BenchDevice,
    (tokens, kv_tokens, width): (usize, usize, usize),
    (warmup, iters): (usize, usize),
    sliced: bool,
) -> Result<Samples, BenchError> {
    let q = t.input(&[2, tokens, width], 16)?;
    let k = t.input(&[2, kv_tokens, width], 17)?;
    let v = t.input(&[2, kv_tokens, width], 18)?;
    let attend = if sliced { sliced_multi_head_attention } else { multi_head_attention };
    t.measure(warmup, iters, || attend(&q, &k, &v, 8, None))
}

/// One operation to time, boxed so the list can mix shapes.
type TimedOp<'a> = Box<dyn Fn() -> Result<Samples, BenchError> + 'a>;

/// The ops of the first (most expensive per op) UNet levels at `latent`×`latent`.
pub fn time_ops(target: &BenchDevice, latent: usize, warmup: usize, iters: usize) -> Result<Vec<OpTiming>, BenchError> {
    let (l1, l2, l3) = (latent, latent / 2, latent / 4);
    let t1 = l1 * l1;
    let (t, n) = (target, (warmup, iters));
    let list: Vec<(String, TimedOp)> = vec![
        (format!("conv3x3 320ch {l1}x{l1}"), Box::new(move || conv3x3(t, 320, l1, n, true))),
        (format!("conv3x3 320ch {l1}x{l1} (candle conv2d)"), Box::new(move || conv3x3(t, 320, l1, n, false))),
        (format!("conv3x3 640ch {l2}x{l2}"), Box::new(move || conv3x3(t, 640, l2, n, true))),
        (format!("conv3x3 1280ch {l3}x{l3}"), Box::new(move || conv3x3(t, 1280, l3, n, true))),
        (format!("groupnorm 320ch {l1}x{l1}"), Box::new(move || group_norm(t, 320, l1, n))),
        (format!("linear {t1}x320->320"), Box::new(move || linear(t, t1, 320, 320, n))),
        (format!("linear {t1}x320->2560 (geglu in)"), Box::new(move || linear(t, t1, 320, 2560, n))),
        (format!("self-attn {t1} tok 320 wide"), Box::new(move || attention(t, (t1, t1, 320), n, false))),
        (format!("self-attn {t1} tok 320 wide (sliced path)"), Box::new(move || attention(t, (t1, t1, 320), n, true))),
        (format!("cross-attn {t1}x77 tok 320 wide"), Box::new(move || attention(t, (t1, 77, 320), n, false))),
    ];
    list.into_iter().map(|(name, f)| Ok(OpTiming { name, samples: f()? })).collect()
}
