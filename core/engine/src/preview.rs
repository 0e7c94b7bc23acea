//! Live previews for `/progress` (`current_image`): A1111's "Approx cheap" method, a fixed linear
//! map from the 4 latent channels to RGB (A1111's default "Approx NN" needs a separately
//! downloaded network, which this server does not ship).

use candle_core::{DType, Device, Tensor};

use crate::checkpoint::ModelFamily;

/// Latent channel → RGB weights (A1111 `sd_vae_approx.cheap_approximation`).
const SD_COEFS: [[f32; 3]; 4] =
    [[0.298, 0.207, 0.208], [0.187, 0.286, 0.173], [-0.158, 0.189, 0.264], [-0.184, -0.271, -0.473]];
const SDXL_COEFS: [[f32; 3]; 4] =
    [[0.3448, 0.4168, 0.4395], [-0.1953, -0.0290, 0.0250], [0.1074, 0.0886, -0.0163], [-0.3730, -0.2499, -0.2088]];

/// An h×w preview of the first image of a latent batch (B, 4, h, w).
pub struct PreviewPixels {
    pub width: u32,
    pub height: u32,
    /// Row-major RGB.
    pub rgb: Vec<u8>,
}

/// The first image of a latent batch (B, 4, h, w) as h×w RGB pixels.
pub fn cheap_preview(latent: &Tensor, family: ModelFamily) -> Option<PreviewPixels> {
    let coefs = if family == ModelFamily::Sdxl { &SDXL_COEFS } else { &SD_COEFS };
    let first = latent.get(0).ok()?.to_dtype(DType::F32).ok()?.to_device(&Device::Cpu).ok()?;
    let (c, h, w) = first.dims3().ok()?;
    if c != 4 {
        return None;
    }
    let data = first.flatten_all().ok()?.to_vec1::<f32>().ok()?;
    let mut pixels = Vec::with_capacity(h * w * 3);
    for i in 0..h * w {
        for channel in 0..3 {
            let v: f32 = coefs.iter().enumerate().map(|(ch, row)| data[ch * h * w + i] * row[channel]).sum();
            pixels.push((((v + 1.0) / 2.0).clamp(0.0, 1.0) * 255.0) as u8);
        }
    }
    Some(PreviewPixels { width: w as u32, height: h as u32, rgb: pixels })
}
