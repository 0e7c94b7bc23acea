//! GroupNorm that always normalises in f32 (LDM's `GroupNorm32`), so f16 models stay stable.

use candle_core::{DType, Module, Result, Tensor};
use candle_nn::{GroupNorm, VarBuilder};

pub struct GroupNorm32(GroupNorm);

impl GroupNorm32 {
    pub fn new(groups: usize, channels: usize, eps: f64, vb: VarBuilder) -> Result<Self> {
        // Load the affine parameters in f32 so the whole normalisation runs in f32.
        let vb = vb.set_dtype(DType::F32);
        Ok(Self(candle_nn::group_norm(groups, channels, eps, vb)?))
    }
}

impl Module for GroupNorm32 {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let dtype = x.dtype();
        self.0.forward(&x.to_dtype(DType::F32)?)?.to_dtype(dtype)
    }
}
