//! GroupNorm that always normalises in f32 (LDM's `GroupNorm32`), so f16 models stay stable.
//!
//! Large inputs are normalised a few groups at a time: candle's GroupNorm keeps several
//! full-size temporaries alive (the centred input, its square, the normalised values, the scaled
//! and the shifted ones), 16 GB at once for 256 channels of a 2048² image. Groups are independent
//! (statistics per batch item and group), so a slice of whole groups gives the same values bit for
//! bit while the temporaries stay the size of the slice.

use candle_core::{DType, Module, Result, Tensor};
use candle_nn::{GroupNorm, Init, VarBuilder};

/// Inputs above this many bytes (in f32) are normalised in slices of whole groups.
const MAX_SLICE_BYTES: usize = 256 << 20;

/// Per (batch item, group) statistics of one input: what normalising any part of it needs.
pub struct GroupStats {
    /// (B, groups, 1)
    mean: Tensor,
    /// sqrt(variance + eps), (B, groups, 1)
    denominator: Tensor,
}

pub struct GroupNorm32 {
    whole: GroupNorm,
    weight: Tensor,
    bias: Tensor,
    groups: usize,
    channels: usize,
    eps: f64,
}

impl GroupNorm32 {
    pub fn new(groups: usize, channels: usize, eps: f64, vb: VarBuilder) -> Result<Self> {
        // Load the affine parameters in f32 so the whole normalisation runs in f32.
        let vb = vb.set_dtype(DType::F32);
        let weight = vb.get_with_hints(channels, "weight", Init::Const(1.))?;
        let bias = vb.get_with_hints(channels, "bias", Init::Const(0.))?;
        let whole = GroupNorm::new(weight.clone(), bias.clone(), channels, groups, eps)?;
        Ok(Self { whole, weight, bias, groups, channels, eps })
    }

    /// Groups normalised together when `x` takes `bytes` (in f32) and slices stay under `max_bytes`.
    fn groups_per_slice(&self, bytes: usize, max_bytes: usize) -> usize {
        (self.groups * max_bytes / bytes.max(1)).clamp(1, self.groups)
    }

    fn forward_sliced(&self, x: &Tensor, max_bytes: usize) -> Result<Tensor> {
        let bytes = x.elem_count() * DType::F32.size_in_bytes();
        if bytes <= max_bytes || self.groups <= 1 {
            return self.whole.forward(x);
        }
        let per_group = self.channels / self.groups;
        let groups_per_slice = self.groups_per_slice(bytes, max_bytes);
        // Each slice goes into the output as soon as it is computed: one full-size tensor at a time.
        let out = Tensor::zeros(x.shape(), DType::F32, x.device())?;
        for first in (0..self.groups).step_by(groups_per_slice) {
            let n = groups_per_slice.min(self.groups - first);
            let (c0, cn) = (first * per_group, n * per_group);
            let norm = GroupNorm::new(self.weight.narrow(0, c0, cn)?, self.bias.narrow(0, c0, cn)?, cn, n, self.eps)?;
            out.slice_set(&norm.forward(&x.narrow(1, c0, cn)?.contiguous()?)?, 1, c0)?;
        }
        Ok(out)
    }

    /// The statistics [`Module::forward`] normalises `x` (B, C, …) with, computed a few groups at
    /// a time (bounded temporaries) with candle's GroupNorm arithmetic.
    pub fn statistics(&self, x: &Tensor) -> Result<GroupStats> {
        let x = x.to_dtype(DType::F32)?;
        let (batch, channels) = (x.dim(0)?, x.dim(1)?);
        let hidden = x.elem_count() / (batch * self.groups);
        let per_group = channels / self.groups;
        let groups_per_slice = self.groups_per_slice(x.elem_count() * DType::F32.size_in_bytes(), MAX_SLICE_BYTES);
        let (mut means, mut denominators) = (Vec::new(), Vec::new());
        for first in (0..self.groups).step_by(groups_per_slice) {
            let n = groups_per_slice.min(self.groups - first);
            let slice = x.narrow(1, first * per_group, n * per_group)?.contiguous()?.reshape((batch, n, hidden))?;
            let mean = (slice.sum_keepdim(2)? / hidden as f64)?;
            let centred = slice.broadcast_sub(&mean)?;
            let variance = (centred.sqr()?.sum_keepdim(2)? / hidden as f64)?;
            denominators.push((variance + self.eps)?.sqrt()?);
            means.push(mean);
        }
        Ok(GroupStats { mean: Tensor::cat(&means, 1)?, denominator: Tensor::cat(&denominators, 1)? })
    }

    /// Rows of an input (B, C, rows, W), normalised with the whole input's `stats`: the same values
    /// as the same rows of [`Module::forward`] of the whole input, bit for bit (each element goes
    /// through the same subtraction, division, scale and shift). Returned in `x`'s dtype.
    pub fn normalise_rows(&self, x: &Tensor, stats: &GroupStats) -> Result<Tensor> {
        let dtype = x.dtype();
        let (batch, channels, rows, width) = x.dims4()?;
        let grouped = x.to_dtype(DType::F32)?.contiguous()?.reshape((
            batch,
            self.groups,
            channels / self.groups * rows * width,
        ))?;
        let normed = grouped.broadcast_sub(&stats.mean)?.broadcast_div(&stats.denominator)?;
        let normed = normed.reshape((batch, channels, rows, width))?;
        let weight = self.weight.reshape((1, channels, 1, 1))?;
        let bias = self.bias.reshape((1, channels, 1, 1))?;
        normed.broadcast_mul(&weight)?.broadcast_add(&bias)?.to_dtype(dtype)
    }
}

impl Module for GroupNorm32 {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let dtype = x.dtype();
        self.forward_sliced(&x.to_dtype(DType::F32)?, MAX_SLICE_BYTES)?.to_dtype(dtype)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn slices_of_groups_give_the_whole_normalisation() {
        let dev = Device::Cpu;
        let varmap = candle_nn::VarMap::new();
        let vb = VarBuilder::from_varmap(&varmap, DType::F32, &dev);
        let norm = GroupNorm32::new(8, 32, 1e-6, vb).unwrap();
        // Non-trivial affine parameters.
        for (name, var) in varmap.data().lock().unwrap().iter() {
            let values = Tensor::randn(0f32, 1.0, 32, &dev).unwrap();
            var.set(&values).unwrap_or_else(|e| panic!("{name}: {e}"));
        }
        let norm =
            GroupNorm32 { whole: GroupNorm::new(norm.weight.clone(), norm.bias.clone(), 32, 8, 1e-6).unwrap(), ..norm };
        let x = (Tensor::randn(0f32, 3.0, (2, 32, 9, 7), &dev).unwrap() + 0.5).unwrap();
        let whole = norm.forward_sliced(&x, usize::MAX).unwrap();
        for bound in [1, 2 * 32 * 63 * 4 / 3, 2 * 32 * 63 * 4 / 2] {
            let sliced = norm.forward_sliced(&x, bound).unwrap();
            let diff = (&sliced - &whole).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap();
            assert_eq!(diff.to_scalar::<f32>().unwrap(), 0.0, "bound {bound}");
        }
        // Rows normalised with the whole input's statistics are the whole normalisation's rows.
        let stats = norm.statistics(&x).unwrap();
        for (first, rows) in [(0, 9), (0, 1), (4, 3), (8, 1)] {
            let part = norm.normalise_rows(&x.narrow(2, first, rows).unwrap(), &stats).unwrap();
            let expected = whole.narrow(2, first, rows).unwrap();
            let diff = (&part - &expected).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap();
            assert_eq!(diff.to_scalar::<f32>().unwrap(), 0.0, "rows {first}+{rows}");
        }
    }
}
