//! A1111's "Automatically revert VAE to 32-bit floats" (`auto_vae_precision`, on by default): a
//! model running in half precision decodes in half, and when the image comes out with NaNs — the
//! SDXL VAE overflows f16 — the VAE is converted to f32, the decode repeated, and the VAE stays in
//! f32 for that model from then on (encodes included), as A1111 keeps it.

use std::sync::{Arc, OnceLock};

use candle_core::{DType, Device, Result, Tensor};

use crate::config::VaeConfig;
use crate::loader::diffusers_names::VAE_PREFIX;
use crate::loader::tensor_store::TensorStore;
use crate::vae::AutoencoderKl;

/// Where a half-precision model's VAE is rebuilt in f32 from, once needed.
pub struct VaeUpcast {
    source: Arc<TensorStore>,
    config: VaeConfig,
    device: Device,
    vae: OnceLock<AutoencoderKl>,
}

impl VaeUpcast {
    pub fn new(source: Arc<TensorStore>, config: VaeConfig, device: Device) -> Self {
        Self { source, config, device, vae: OnceLock::new() }
    }

    /// The f32 VAE, if a decode has needed it already.
    pub fn active(&self) -> Option<&AutoencoderKl> {
        self.vae.get()
    }

    fn build(&self) -> Result<&AutoencoderKl> {
        if let Some(vae) = self.vae.get() {
            return Ok(vae);
        }
        let vb = self.source.var_builder(DType::F32, &self.device);
        let vae = AutoencoderKl::new(self.config.clone(), vb.pp(VAE_PREFIX.trim_end_matches('.')))?;
        Ok(self.vae.get_or_init(|| vae))
    }
}

/// Whether `t` holds a NaN (A1111 tests the decoded image for NaNs only; infinities clamp).
fn has_nan(t: &Tensor) -> Result<bool> {
    Ok(t.ne(t)?.flatten_all()?.max(0)?.to_scalar::<u8>()? != 0)
}

/// Decodes `latent` (f32) with `vae` in `dtype`, falling back to the f32 VAE of `upcast` as
/// A1111 does; f32 pixels.
pub fn decode(vae: &AutoencoderKl, dtype: DType, upcast: Option<&VaeUpcast>, latent: &Tensor) -> Result<Tensor> {
    let Some(upcast) = upcast else {
        return vae.decode(&latent.to_dtype(dtype)?)?.to_dtype(DType::F32);
    };
    if let Some(f32_vae) = upcast.active() {
        return f32_vae.decode(&latent.to_dtype(DType::F32)?);
    }
    let decoded = vae.decode(&latent.to_dtype(dtype)?)?.to_dtype(DType::F32)?;
    if !has_nan(&decoded)? {
        return Ok(decoded);
    }
    tracing::warn!(?dtype, "the VAE produced NaNs; converting it to float32 (A1111's auto_vae_precision)");
    upcast.build()?.decode(&latent.to_dtype(DType::F32)?)
}

/// Encodes pixels (f32) with the f32 VAE once a decode has needed it, else with `vae` in `dtype`
/// (A1111 checks encodes for NaNs only through the decode that follows); f32 latents.
pub fn encode(vae: &AutoencoderKl, dtype: DType, upcast: Option<&VaeUpcast>, pixels: &Tensor) -> Result<Tensor> {
    match upcast.and_then(VaeUpcast::active) {
        Some(f32_vae) => f32_vae.encode(&pixels.to_dtype(DType::F32)?),
        None => vae.encode(&pixels.to_dtype(dtype)?)?.to_dtype(DType::F32),
    }
}
