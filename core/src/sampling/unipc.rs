//! UniPC (placeholder, replaced below).
use candle_core::Tensor;
use super::SamplingError;
use super::context::SamplerContext;
pub fn unipc(_ctx: &mut SamplerContext<'_>, _x: Tensor, _timesteps: &[usize], _is_img2img: bool) -> Result<Tensor, SamplingError> {
    Err(SamplingError::Other("UniPC is not implemented yet".into()))
}
