//! The hires fix between its two passes (A1111's `sample_hr_pass` up to the second sampling): the
//! first pass's latent upscaled in latent space, or decoded, upscaled in pixels and re-encoded;
//! then cropped to the requested box.

use candle_core::{Device, Tensor};
use sdapi_core::runner::{HiresPass, HiresUpscale, PixelUpscaler, RgbImage, RunnerError};
use sdapi_protocol::images::{Raster, resize_with, resize_with_upscaler, upscale_loop};

use super::{decode_images, encode_image, exec_err};
use crate::latent_upscale::interpolate;
use crate::model::LoadedModel;
use crate::upscaler::UpscaleModel;

/// The first pass upscaled: a latent already, or pixels still to be encoded (by the second
/// pass's model, which the hires checkpoint may have replaced).
pub(super) enum Upscaled {
    Latent(Tensor),
    Pixels(Vec<RgbImage>),
}

/// A1111's upscale step: a latent mode on the latent, else decode → `resize_image(0, …, upscaler)`.
pub(super) fn upscale_first_pass(
    model: &LoadedModel,
    latent: &Tensor,
    hires: &HiresPass,
    loaded_upscaler: Option<&UpscaleModel>,
) -> Result<Upscaled, RunnerError> {
    let pixel_upscaler = match &hires.upscale {
        HiresUpscale::Latent(mode) => {
            let (interpolation, antialias) = mode.interpolation();
            let (lh, lw) = (hires.upscale_height / 8, hires.upscale_width / 8);
            return Ok(Upscaled::Latent(interpolate(latent, lh, lw, interpolation, antialias).map_err(exec_err)?));
        }
        HiresUpscale::Pixel(p) => p,
    };
    let mut images = Vec::new();
    for image in decode_images(model, latent)? {
        let pixels = image.to_image().ok_or_else(|| exec_err("decoded image has the wrong size"))?;
        let resized = match pixel_upscaler {
            PixelUpscaler::Builtin(b) => {
                resize_with_upscaler(&pixels, hires.upscale_width as u32, hires.upscale_height as u32, Some(*b))
            }
            // `resize_image(0, …)` with the model's `Upscaler.upscale`.
            PixelUpscaler::Model(m) => {
                let net = loaded_upscaler.ok_or_else(|| exec_err("the hires model upscaler is not loaded"))?;
                let mut step = |img: &Raster, scale: f64| {
                    upscale_loop(img, scale, |i| net.upscale_tiled(i, m.tile, m.tile_overlap))
                };
                resize_with(&Raster::from_rgb(&pixels), hires.upscale_width, hires.upscale_height, Some(&mut step))
                    .map_err(exec_err)?
                    .into_rgb()
                    .ok_or_else(|| exec_err("upscaled image is not RGB"))?
            }
        };
        images.push(resized.into());
    }
    Ok(Upscaled::Pixels(images))
}

/// The latent the second pass starts from: (batch, 4, upscale_height/8 − truncate_y,
/// upscale_width/8 − truncate_x), pixels encoded by `model`.
pub(super) fn into_latent(
    model: &LoadedModel,
    upscaled: Upscaled,
    hires: &HiresPass,
    device: &Device,
) -> Result<Tensor, RunnerError> {
    let upscaled = match upscaled {
        Upscaled::Latent(latent) => latent,
        Upscaled::Pixels(images) => {
            let latents = images.iter().map(|img| encode_image(model, img, device)).collect::<Result<Vec<_>, _>>()?;
            Tensor::cat(&latents, 0).map_err(exec_err)?
        }
    };
    // `samples[:, :, ty//2 : h - (ty+1)//2, tx//2 : w - (tx+1)//2]`
    let (ty, tx) = (hires.truncate_y, hires.truncate_x);
    let (h, w) = (upscaled.dim(2).map_err(exec_err)?, upscaled.dim(3).map_err(exec_err)?);
    upscaled
        .narrow(2, ty / 2, h - ty)
        .and_then(|t| t.narrow(3, tx / 2, w - tx))
        .and_then(|t| t.contiguous())
        .map_err(exec_err)
}
