//! Sinusoidal timestep embedding of LDM (`timestep_embedding`, [cos, sin] order).

use candle_core::{DType, Device, Result, Tensor};

/// `t`: (B,) continuous timesteps → (B, dim) f32, `[cos(t f_i), sin(t f_i)]` with
/// `f_i = exp(-ln(max_period) * i / (dim/2))`, as LDM computes it in f32.
pub fn timestep_embedding(t: &Tensor, dim: usize, max_period: f64, device: &Device) -> Result<Tensor> {
    let half = dim / 2;
    // f32 like torch's `exp(-log(max_period) * arange(half, dtype=float32) / half)`.
    let neg_log = -(max_period.ln()) as f32;
    let freqs: Vec<f32> = (0..half).map(|i| (neg_log * i as f32 / half as f32).exp()).collect();
    let freqs = Tensor::from_vec(freqs, (1, half), device)?;
    let args = t.to_dtype(DType::F32)?.unsqueeze(1)?.broadcast_mul(&freqs)?;
    let emb = Tensor::cat(&[args.cos()?, args.sin()?], 1)?;
    if dim % 2 == 1 {
        // LDM pads odd widths with one zero column.
        let zeros = Tensor::zeros((emb.dim(0)?, 1), DType::F32, device)?;
        return Tensor::cat(&[emb, zeros], 1);
    }
    Ok(emb)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cos_then_sin_with_geometric_frequencies() -> Result<()> {
        // dim 4: frequencies 1 and 10000^(-1/2) = 0.01; expected values from the formula in f64.
        let t = Tensor::new(&[0.0f32, 500.5], &Device::Cpu)?;
        let emb = timestep_embedding(&t, 4, 10000.0, &Device::Cpu)?.to_vec2::<f32>()?;
        assert_eq!(emb[0], vec![1.0, 1.0, 0.0, 0.0]);
        let expected = [500.5f64.cos(), 5.005f64.cos(), 500.5f64.sin(), 5.005f64.sin()];
        for (a, b) in emb[1].iter().zip(expected) {
            assert!((*a as f64 - b).abs() < 1e-4, "{a} vs {b}");
        }
        Ok(())
    }
}
