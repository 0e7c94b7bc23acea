//! k-diffusion `sample_lms`: linear multistep with coefficients from integrals of Lagrange basis
//! polynomials. k-diffusion integrates them numerically (scipy quad); the integrand is a polynomial,
//! so we integrate it exactly.

use candle_core::Tensor;

use super::SamplingError;
use super::context::{SamplerContext, to_d};

/// ∫_{t[i]}^{t[i+1]} Π_{k≠j, k<order} (τ - t[i-k]) / (t[i-j] - t[i-k]) dτ, exactly.
pub fn linear_multistep_coeff(order: usize, t: &[f64], i: usize, j: usize) -> Result<f64, SamplingError> {
    if order == 0 || order - 1 > i || i + 1 >= t.len() {
        return Err(SamplingError::Other(format!("LMS order {order} too high for step {i}")));
    }
    // Expand the basis polynomial into monomial coefficients (lowest degree first).
    let mut poly = vec![1.0f64];
    for k in (0..order).filter(|&k| k != j) {
        let (root, scale) = (t[i - k], 1.0 / (t[i - j] - t[i - k]));
        let mut next = vec![0.0; poly.len() + 1];
        for (deg, c) in poly.iter().enumerate() {
            next[deg + 1] += c * scale;
            next[deg] -= c * root * scale;
        }
        poly = next;
    }
    let antiderivative =
        |x: f64| poly.iter().enumerate().rev().fold(0.0, |acc, (deg, c)| acc * x + c / (deg + 1) as f64) * x;
    Ok(antiderivative(t[i + 1]) - antiderivative(t[i]))
}

pub fn lms(ctx: &mut SamplerContext<'_>, mut x: Tensor, sigmas: &[f64], order: usize) -> Result<Tensor, SamplingError> {
    let mut ds: Vec<Tensor> = Vec::with_capacity(order);
    for i in 0..sigmas.len().saturating_sub(1) {
        let denoised = ctx.denoise(&x, sigmas[i])?;
        ds.push(to_d(&x, sigmas[i], &denoised)?);
        if ds.len() > order {
            ds.remove(0);
        }
        ctx.report(i, &x, &denoised, sigmas[i])?;
        let cur_order = (i + 1).min(order);
        for (j, d) in ds.iter().rev().enumerate().take(cur_order) {
            let coeff = linear_multistep_coeff(cur_order, sigmas, i, j)?;
            x = (x + (d * coeff)?)?;
        }
    }
    Ok(x)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn coefficients_match_hand_integrals() {
        let t = [4.0, 3.0, 1.0, 0.0];
        // Order 1: the basis polynomial is 1, so the integral is t[i+1] - t[i].
        assert!((linear_multistep_coeff(1, &t, 0, 0).unwrap() - (-1.0)).abs() < 1e-15);
        // Order 2 at i=1 (nodes t1=3, t0=4), integrated from 3 to 1:
        // j=0: (τ-4)/(3-4) = 4-τ → ∫_3^1 (4-τ) dτ = [4τ - τ²/2]_3^1 = 3.5 - 7.5 = -4.
        // j=1: (τ-3)/(4-3) = τ-3 → ∫_3^1 (τ-3) dτ = [τ²/2 - 3τ]_3^1 = -2.5 - (-4.5) = 2.
        assert!((linear_multistep_coeff(2, &t, 1, 0).unwrap() - (-4.0)).abs() < 1e-12);
        assert!((linear_multistep_coeff(2, &t, 1, 1).unwrap() - 2.0).abs() < 1e-12);
        // Lagrange basis sums to 1, so the coefficients sum to t[i+1] - t[i].
        let s: f64 = (0..3).map(|j| linear_multistep_coeff(3, &t, 2, j).unwrap()).sum();
        assert!((s - (0.0 - 1.0)).abs() < 1e-12);
        assert!(linear_multistep_coeff(3, &t, 1, 0).is_err());
    }
}
