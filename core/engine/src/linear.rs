//! `Linear::forward` on the CPU in f32 as one GEMM into an output that starts as the bias.
//!
//! candle's `Linear` multiplies, then adds the bias in a second pass over the output (a broadcast
//! add that allocates another tensor). In the text encoders — twelve to thirty-two layers of six
//! small products over 77-token chunks — those passes are a visible share of the time
//! (docs/benchmarks.md). Other devices and dtypes keep candle's path.

use candle_core::{CpuStorage, CustomOp2, DType, Layout, Module, Result, Shape, Tensor};
use candle_nn::Linear;

use crate::cpu_storage::contiguous_f32;
use crate::matmul::{Parallelism, View, gemm_f32};

/// `linear` with its weight stored transposed — (in × out) row-major, seen through a transposed
/// view so `weight()` keeps its (out × in) shape. gemm then reads the weight as the column-major
/// operand its kernels want instead of packing a copy of it on every call, which for the text
/// encoders' 77–154-row products costs about as much as the multiplication (docs/benchmarks.md).
/// CPU f32 only; elsewhere the layout is left as loaded.
pub fn with_transposed_weight(linear: Linear) -> Result<Linear> {
    let weight = linear.weight();
    let cpu_f32 = weight.device().is_cpu() && weight.dtype() == DType::F32;
    if !cpu_f32 || weight.rank() != 2 || weight.t()?.is_contiguous() {
        return Ok(linear);
    }
    let transposed = weight.t()?.contiguous()?.t()?;
    Ok(Linear::new(transposed, linear.bias().cloned()))
}

/// `x · Wᵀ + b` for `x` of shape (…, in).
pub fn forward(linear: &Linear, x: &Tensor) -> Result<Tensor> {
    let weight = linear.weight();
    let cpu_f32 = x.device().is_cpu() && x.dtype() == DType::F32 && weight.dtype() == DType::F32;
    if !cpu_f32 || weight.rank() != 2 || x.rank() < 2 {
        return linear.forward(x);
    }
    let bias = linear.bias().map(|b| b.to_dtype(DType::F32)?.to_vec1::<f32>()).transpose()?;
    let (outputs, inputs) = weight.dims2()?;
    let dims = x.dims();
    if dims[dims.len() - 1] != inputs {
        candle_core::bail!("linear: input {:?} for a {outputs}x{inputs} weight", x.shape());
    }
    let rows = x.elem_count() / inputs.max(1);
    let flat = x.contiguous()?.reshape((rows, inputs))?;
    // The (in × out) matrix Wᵀ: stored that way, or read through the row-major (out × in) weight.
    let (operand, w_t) = if weight.t()?.is_contiguous() {
        (weight.t()?, View::row_major(inputs, outputs))
    } else {
        (weight.contiguous()?, View { offset: 0, rows: inputs, cols: outputs, row_stride: 1, col_stride: inputs })
    };
    let out = flat.apply_op2_no_bwd(&operand, &BiasedProduct { bias, w_t })?;
    let mut shape = dims.to_vec();
    *shape.last_mut().expect("rank checked above") = outputs;
    out.reshape(shape)
}

struct BiasedProduct {
    bias: Option<Vec<f32>>,
    /// Where Wᵀ (in × out) sits in the second operand's storage.
    w_t: View,
}

impl CustomOp2 for BiasedProduct {
    fn name(&self) -> &'static str {
        "linear-biased-product"
    }

    fn cpu_fwd(&self, x_s: &CpuStorage, x_l: &Layout, w_s: &CpuStorage, w_l: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = contiguous_f32(x_s, x_l, "linear", "input")?;
        let w = contiguous_f32(w_s, w_l, "linear", "weight")?;
        let (rows, inputs) = x_l.shape().dims2()?;
        let (w_t, outputs) = (self.w_t, self.w_t.cols);
        let biases = self.bias.as_ref().map(Vec::len);
        if w_t.rows != inputs || w.len() != inputs * outputs || biases.is_some_and(|n| n != outputs) {
            candle_core::bail!("linear: {:?} by a weight of {:?} with {biases:?} biases", x_l.shape(), w_l.shape());
        }
        let mut out = match &self.bias {
            Some(bias) => bias.iter().copied().cycle().take(rows * outputs).collect(),
            None => vec![0f32; rows * outputs],
        };
        let threads = Parallelism::Rayon(rayon::current_num_threads());
        let (d, l) = (View::row_major(rows, outputs), View::row_major(rows, inputs));
        gemm_f32(&mut out, d, self.bias.is_some(), x, l, w, w_t, 1.0, threads);
        Ok((CpuStorage::F32(out), Shape::from((rows, outputs))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn matches_candles_linear_in_both_weight_layouts() -> Result<()> {
        let dev = Device::Cpu;
        for (shape, with_bias) in [(vec![2usize, 77, 48], true), (vec![5, 48], false), (vec![1, 2, 3, 48], true)] {
            let w = Tensor::randn(0f32, 0.2, (33, 48), &dev)?;
            let b = with_bias.then(|| Tensor::randn(0f32, 1.0, 33, &dev)).transpose()?;
            let lin = Linear::new(w, b);
            let x = Tensor::randn(0f32, 1.0, shape.as_slice(), &dev)?;
            let theirs = lin.forward(&x)?;
            let transposed = with_transposed_weight(lin.clone())?;
            assert!(transposed.weight().t()?.is_contiguous());
            assert_eq!(transposed.weight().dims(), lin.weight().dims());
            for ours in [forward(&lin, &x)?, forward(&transposed, &x)?, transposed.forward(&x)?] {
                assert_eq!(ours.dims(), theirs.dims());
                let diff = (ours - &theirs)?.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()?;
                assert!(diff < 1e-5, "{shape:?} bias {with_bias}: differs by {diff}");
            }
        }
        Ok(())
    }
}
