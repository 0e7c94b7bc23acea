//! The model in f16 (what CUDA runs by default), on the CPU: decodes stay in half precision while
//! they are finite, and fall back to an f32 VAE as A1111's `auto_vae_precision` does once one
//! gives NaNs.

use candle_core::{DType, Device, Tensor};

use super::{model, single_file_path};
use crate::LoadedModel;

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    (a - b).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap()
}

#[test]
fn an_f16_decode_that_overflows_is_redone_in_f32_and_stays_there() {
    let half = LoadedModel::load(&single_file_path(), None, &Device::Cpu, DType::F16).unwrap();
    assert!(half.vae_upcast.as_ref().is_some_and(|u| u.active().is_none()), "an f16 model starts with an f16 VAE");
    let latent = Tensor::randn(0f32, 1.0, (1, 4, 8, 8), &Device::Cpu).unwrap();

    // A normal latent: decoded in f16, close to the f32 model's decode, no upcast.
    let decoded = half.decode_latent(&latent).unwrap();
    assert_eq!(decoded.dtype(), DType::F32);
    let reference = model().decode_latent(&latent).unwrap();
    assert!(
        max_abs_diff(&decoded, &reference) < 0.05,
        "f16 decode far from f32: {}",
        max_abs_diff(&decoded, &reference)
    );
    assert!(half.vae_upcast.as_ref().unwrap().active().is_none());

    // A latent beyond f16's range: the half decode gives NaNs; the result is the f32 decode.
    let huge = (&latent * 1e6).unwrap();
    let decoded = half.decode_latent(&huge).unwrap();
    let nans = decoded.ne(&decoded).unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar::<u8>().unwrap();
    assert_eq!(nans, 0, "the fallback must give a NaN-free image");
    assert_eq!(max_abs_diff(&decoded, &model().decode_latent(&huge).unwrap()), 0.0, "the fallback is the f32 VAE");
    assert!(half.vae_upcast.as_ref().unwrap().active().is_some(), "the VAE stays in f32");

    // From now on decodes and encodes use the f32 VAE: bit-equal to the f32 model's.
    assert_eq!(max_abs_diff(&half.decode_latent(&latent).unwrap(), &reference), 0.0);
    let pixels = Tensor::randn(0f32, 0.5, (1, 3, 64, 64), &Device::Cpu).unwrap();
    assert_eq!(max_abs_diff(&half.encode_pixels(&pixels).unwrap(), &model().encode_pixels(&pixels).unwrap()), 0.0);
}

#[test]
fn an_f32_model_has_no_fallback_to_keep() {
    assert!(model().vae_upcast.is_none());
}
