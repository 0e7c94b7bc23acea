//! Inpainting on the CPU side of the runner (docs/inpainting.md): A1111's img2img `init` mask
//! branch (binary mask, invert, OpenCV blur, "only masked" crop, the pixel fill, the latent mask)
//! before queueing, and its `apply_overlay` on the images that come back.

use sdapi_protocol::api::errors::ApiError;
use sdapi_protocol::api::request::Img2ImgRequest;
use sdapi_protocol::images::pil_ops::{
    alpha_composite, bbox, crop, masking_fill, paste, paste_with_mask, premultiply, to_luma, unpremultiply,
};
use sdapi_protocol::images::{
    DecodedImage, PilFilter, Raster, cv_blur, decode_base64_file, decode_base64_image, decode_image_bytes,
    opens_as_rgba, pil_resize_raster, resize_raster,
};
use serde_json::Value;

use crate::runner::{InpaintJob, LatentFill, RgbImage};

/// Most blur work one mask may cost: pixels × (horizontal + vertical kernel taps). A 2048² mask
/// at A1111's largest UI blur (64) is 2.7 G; beyond this the request is refused before the work.
const MAX_BLUR_WORK: u64 = 4_000_000_000;

/// `inpainting_fill`: what the masked area starts from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MaskedContent {
    /// 0: the pixel fill (`masking.fill`); other values outside 0–3 take the same path unlabelled.
    Fill { labelled: bool },
    /// 1: the original pixels.
    Original,
    /// 2: pixel fill, then the masked latent replaced by noise.
    LatentNoise,
    /// 3: pixel fill, then the masked latent zeroed.
    LatentNothing,
}

impl MaskedContent {
    fn from_request(v: i64) -> Self {
        match v {
            0 => MaskedContent::Fill { labelled: true },
            1 => MaskedContent::Original,
            2 => MaskedContent::LatentNoise,
            3 => MaskedContent::LatentNothing,
            _ => MaskedContent::Fill { labelled: false },
        }
    }

    fn latent_fill(self) -> LatentFill {
        match self {
            MaskedContent::LatentNoise => LatentFill::Noise,
            MaskedContent::LatentNothing => LatentFill::Nothing,
            _ => LatentFill::Keep,
        }
    }
}

/// The mask fields of an img2img request, checked.
#[derive(Clone, Debug)]
pub struct MaskSettings {
    /// As sent (A1111's `mask_blur` property reads them; ≤ 0 is no blur).
    pub blur_x: i64,
    pub blur_y: i64,
    pub round: bool,
    pub content: MaskedContent,
    /// `inpaint_full_res` ("Only masked").
    pub only_masked: bool,
    pub padding: i64,
    pub invert: bool,
    pub resize_mode: i64,
    pub width: usize,
    pub height: usize,
}

/// Largest blur A1111's UI offers is 64; far beyond it the kernel outgrows any sensible mask.
const MAX_MASK_BLUR: i64 = 1024;

impl MaskSettings {
    /// The request's mask fields, or None without a mask. `mask_blur`, when sent, sets both
    /// directions (A1111's property setter).
    pub fn from_request(r: &Img2ImgRequest) -> Result<Option<Self>, ApiError> {
        if r.mask.as_deref().is_none_or(str::is_empty) {
            return Ok(None);
        }
        let (mut blur_x, mut blur_y) = (r.mask_blur_x.unwrap_or(4), r.mask_blur_y.unwrap_or(4));
        if let Some(b) = r.mask_blur {
            (blur_x, blur_y) = (b, b);
        }
        for (name, v) in [("mask_blur_x", blur_x), ("mask_blur_y", blur_y)] {
            if v > MAX_MASK_BLUR {
                return Err(ApiError::http(422, format!("{name} must be at most {MAX_MASK_BLUR}, got {v}")));
            }
        }
        let padding = r.inpaint_full_res_padding.unwrap_or(0);
        if padding < 0 {
            return Err(ApiError::http(422, format!("inpaint_full_res_padding must not be negative, got {padding}")));
        }
        Ok(Some(Self {
            blur_x,
            blur_y,
            round: r.mask_round.unwrap_or(true),
            content: MaskedContent::from_request(r.inpainting_fill.unwrap_or(0)),
            only_masked: r.inpaint_full_res.unwrap_or(true),
            padding,
            invert: r.inpainting_mask_invert.unwrap_or(0) != 0,
            resize_mode: r.resize_mode.unwrap_or(0),
            width: r.width.unwrap_or(512).clamp(8, 8192) as usize,
            height: r.height.unwrap_or(512).clamp(8, 8192) as usize,
        }))
    }

    /// A1111's `mask_blur` property: the blur when both directions agree, else None.
    fn blur_value(&self) -> Value {
        if self.blur_x == self.blur_y { Value::from(self.blur_x) } else { Value::Null }
    }
}

/// The init images and everything the mask decided, ready for the runner.
#[derive(Debug)]
pub struct PreparedInpaint {
    /// Cropped/resized to the processing size and filled: what the VAE encodes.
    pub init_images: Vec<RgbImage>,
    /// None when "only masked" found a blank mask (A1111 then runs plain img2img).
    pub job: Option<InpaintJob>,
    pub overlay: Overlay,
    /// Infotext entries in A1111's insertion order (after `Denoising strength`).
    pub extra: Vec<(String, Value)>,
}

/// What `apply_overlay` pastes over each generated image.
#[derive(Clone, Debug, Default)]
pub struct Overlay {
    /// RGBA, one per init image (one shared by the whole batch when there is one init image).
    pub images: Vec<Raster>,
    /// "Only masked": where the generated crop goes back, (x, y, w, h) in the init image.
    pub paste_to: Option<(usize, usize, usize, usize)>,
}

/// Decodes the mask (and `latent_mask`, when sent) and prepares the init images, which come at
/// their own size (flattened). CPU work: call it off the async threads.
pub fn prepare(
    r: &Img2ImgRequest,
    settings: &MaskSettings,
    images: &[RgbImage],
    max_pixels: u64,
) -> Result<PreparedInpaint, ApiError> {
    let mask = decode_mask(r.mask.as_deref().unwrap_or_default(), settings, max_pixels)?;
    let latent_mask = r
        .latent_mask
        .as_deref()
        .filter(|m| !m.is_empty())
        .map(|m| decode_base64_image(m).map(|img| decoded_to_raster(&img)))
        .transpose()?;
    prepare_with(mask, latent_mask, settings, images)
}

/// A1111's `create_binary_mask`: an RGBA mask whose alpha is not all opaque is its alpha
/// (thresholded at 128 with `mask_round`), anything else its luminance.
fn decode_mask(encoded: &str, settings: &MaskSettings, max_pixels: u64) -> Result<Raster, ApiError> {
    let bytes = decode_base64_file(encoded)?;
    let img = decode_image_bytes(&bytes).ok_or_else(ApiError::invalid_encoded_image)?;
    let (w, h) = (u64::from(img.width()), u64::from(img.height()));
    if w * h > max_pixels {
        return Err(ApiError::http(
            422,
            format!(
                "a mask of {w}x{h} is more than this server takes ({} megapixels, SDAPI_MAX_BATCH_MEGAPIXELS)",
                max_pixels / 1_000_000
            ),
        ));
    }
    let taps = |blur: i64| if blur > 0 { cv_blur::mask_kernel_size(blur as u32) as u64 } else { 0 };
    if w * h * (taps(settings.blur_x) + taps(settings.blur_y)) > MAX_BLUR_WORK {
        return Err(ApiError::http(
            422,
            format!("mask_blur {} is too large for a {w}x{h} mask", settings.blur_value()),
        ));
    }
    Ok(match &img {
        DecodedImage::Rgba(rgba) if opens_as_rgba(&bytes) && rgba.pixels().any(|p| p.0[3] != 255) => {
            let alpha = rgba.pixels().map(|p| p.0[3]);
            let data =
                if settings.round { alpha.map(|a| if a > 128 { 255 } else { 0 }).collect() } else { alpha.collect() };
            Raster { width: w as usize, height: h as usize, channels: 1, data }
        }
        other => to_luma(&decoded_to_raster(other)),
    })
}

fn decoded_to_raster(img: &DecodedImage) -> Raster {
    match img {
        DecodedImage::Rgb(i) => Raster::from_rgb(i),
        DecodedImage::Rgba(i) => Raster::from_rgba(i),
    }
}

/// [`prepare`] after decoding; `mask` is single-channel.
pub fn prepare_with(
    mask: Raster,
    latent_mask: Option<Raster>,
    s: &MaskSettings,
    images: &[RgbImage],
) -> Result<PreparedInpaint, ApiError> {
    let mut extra: Vec<(String, Value)> = Vec::new();
    let mut mask = mask;
    if s.invert {
        mask.data.iter_mut().for_each(|v| *v = 255 - *v);
        extra.push(("Mask mode".into(), "Inpaint not masked".into()));
    }
    let blur = |v: i64| if v > 0 { v as u32 } else { 0 };
    mask.data = cv_blur::mask_blur(&mask.data, mask.width, mask.height, blur(s.blur_x), blur(s.blur_y));
    if s.blur_x > 0 || s.blur_y > 0 {
        extra.push(("Mask blur".into(), s.blur_value()));
    }

    // The processed mask at width × height, the overlay mask, and "only masked"'s crop.
    let (image_mask, mut overlay_mask, crop_region) = if s.only_masked {
        match crop_region(&mask, s) {
            Some(region) => {
                let (x1, y1, x2, y2) = region;
                let cropped = crop(&mask, x1 as i64, y1 as i64, x2 as i64, y2 as i64);
                extra.push(("Inpaint area".into(), "Only masked".into()));
                extra.push(("Masked area padding".into(), Value::from(s.padding)));
                (Some(resize_raster(2, &cropped, s.width, s.height)), Some(mask), Some(region))
            }
            None => {
                tracing::info!(
                    "Unable to perform \"Inpaint Only mask\" because mask is blank, switch to img2img mode."
                );
                (None, None, None)
            }
        }
    } else {
        let resized = resize_raster(s.resize_mode, &mask, s.width, s.height);
        let doubled = Raster { data: resized.data.iter().map(|&v| v.saturating_mul(2)).collect(), ..resized.clone() };
        (Some(resized), Some(doubled), None)
    };
    let latent_mask = match (latent_mask, &image_mask) {
        (Some(l), Some(m)) if (l.width, l.height) != (m.width, m.height) => {
            return Err(ApiError::http(
                422,
                format!(
                    "latent_mask is {}x{}; it must have the processed size {}x{}",
                    l.width, l.height, m.width, m.height
                ),
            ));
        }
        (Some(l), _) => Some(l),
        (None, m) => m.clone(),
    };

    let mut init_images = Vec::with_capacity(images.len());
    let mut overlays = Vec::with_capacity(images.len());
    for img in images {
        let mut image = img.to_raster();
        if crop_region.is_none() && s.resize_mode != 3 {
            image = resize_raster(s.resize_mode, &image, s.width, s.height);
        }
        if let (Some(_), Some(om)) = (&image_mask, overlay_mask.as_mut()) {
            if (om.width, om.height) != (image.width, image.height) {
                *om = resize_raster(s.resize_mode, om, image.width, image.height);
            }
            overlays.push(overlay_of(&image, om));
        }
        if let Some((x1, y1, x2, y2)) = crop_region {
            let cropped = crop(&image, x1 as i64, y1 as i64, x2 as i64, y2 as i64);
            image = resize_raster(2, &cropped, s.width, s.height);
        }
        if let (Some(lm), true) = (&latent_mask, image_mask.is_some() && s.content != MaskedContent::Original) {
            image = masking_fill(&image, &to_luma(lm));
        }
        init_images.push(RgbImage::from_raster(image));
    }
    if image_mask.is_some() && s.content == (MaskedContent::Fill { labelled: true }) {
        extra.push(("Masked content".into(), "fill".into()));
    }

    let job = match (&image_mask, &latent_mask) {
        (Some(image_mask), Some(latent_mask)) => {
            match s.content {
                MaskedContent::LatentNoise => extra.push(("Masked content".into(), "latent noise".into())),
                MaskedContent::LatentNothing => extra.push(("Masked content".into(), "latent nothing".into())),
                _ => {}
            }
            Some(InpaintJob {
                latent_nmask: latent_nmask(latent_mask, s.width / 8, s.height / 8, s.round),
                latent_fill: s.content.latent_fill(),
                conditioning_mask: image_mask.data.iter().map(|&v| f32::from(v) / 255.0).collect(),
                round_conditioning_mask: s.round,
            })
        }
        _ => None,
    };
    Ok(PreparedInpaint {
        init_images,
        job,
        overlay: Overlay { images: overlays, paste_to: crop_region.map(|(x1, y1, x2, y2)| (x1, y1, x2 - x1, y2 - y1)) },
        extra,
    })
}

/// "Only masked": the blurred mask's bounding box, padded, then grown to the processing aspect
/// ratio (`masking.get_crop_region_v2` + `expand_crop_region`); None for a blank mask.
fn crop_region(mask: &Raster, s: &MaskSettings) -> Option<(usize, usize, usize, usize)> {
    let (x1, y1, x2, y2) = bbox(mask)?;
    let pad = s.padding.max(0) as usize;
    let padded =
        (x1.saturating_sub(pad), y1.saturating_sub(pad), (x2 + pad).min(mask.width), (y2 + pad).min(mask.height));
    Some(expand_crop_region(padded, s.width, s.height, mask.width, mask.height))
}

/// A1111's `masking.expand_crop_region`: the short side grows by `int(desired − current)`, half
/// before (floor), then the region is shifted back inside the image.
fn expand_crop_region(
    (x1, y1, x2, y2): (usize, usize, usize, usize),
    processing_width: usize,
    processing_height: usize,
    image_width: usize,
    image_height: usize,
) -> (usize, usize, usize, usize) {
    let (mut x1, mut y1, mut x2, mut y2) = (x1 as i64, y1 as i64, x2 as i64, y2 as i64);
    let ratio_crop = (x2 - x1) as f64 / (y2 - y1) as f64;
    let ratio_processing = processing_width as f64 / processing_height as f64;
    let grow = |lo: &mut i64, hi: &mut i64, diff: i64, limit: i64| {
        *lo -= diff.div_euclid(2);
        *hi += diff - diff.div_euclid(2);
        if *hi >= limit {
            let over = *hi - limit;
            *hi -= over;
            *lo -= over;
        }
        if *lo < 0 {
            *hi -= *lo;
            *lo = 0;
        }
        if *hi >= limit {
            *hi = limit;
        }
    };
    if ratio_crop > ratio_processing {
        let desired_height = (x2 - x1) as f64 / ratio_processing;
        let diff = (desired_height - (y2 - y1) as f64) as i64;
        grow(&mut y1, &mut y2, diff, image_height as i64);
    } else {
        let desired_width = (y2 - y1) as f64 * ratio_processing;
        let diff = (desired_width - (x2 - x1) as f64) as i64;
        grow(&mut x1, &mut x2, diff, image_width as i64);
    }
    let u = |v: i64| v.max(0) as usize;
    (u(x1), u(y1), u(x2), u(y2))
}

/// The overlay of one init image: the image where the overlay mask is dark, transparent where
/// the mask is white (a premultiplied paste, then back to RGBA, as Pillow does it).
fn overlay_of(image: &Raster, overlay_mask: &Raster) -> Raster {
    let mut inverted = to_luma(overlay_mask);
    inverted.data.iter_mut().for_each(|v| *v = 255 - *v);
    let mut canvas = Raster::blank(image.width, image.height, 4);
    paste_with_mask(&mut canvas, &premultiply(&image.with_channels(4)), &inverted, 0, 0);
    unpremultiply(&canvas)
}

/// A1111's latent mask: the mask as RGB resized to the latent size (Pillow's default BICUBIC),
/// its first channel / 255 in float32, rounded half to even with `mask_round`.
fn latent_nmask(latent_mask: &Raster, latent_w: usize, latent_h: usize, round: bool) -> Vec<f32> {
    let first_channel = Raster {
        width: latent_mask.width,
        height: latent_mask.height,
        channels: 1,
        data: latent_mask.data.iter().step_by(latent_mask.channels.max(1)).copied().collect(),
    };
    let small = pil_resize_raster(&first_channel, latent_w.max(1), latent_h.max(1), PilFilter::Bicubic);
    small
        .data
        .iter()
        .map(|&v| {
            let x = f32::from(v) / 255.0;
            if round { x.round_ties_even() } else { x }
        })
        .collect()
}

/// A1111's `apply_overlay`: "only masked" results are resized back (`resize_image` mode 1) and
/// pasted at their crop on a transparent canvas of the init image's size, then the overlay is
/// alpha-composited and the alpha dropped.
pub fn apply_overlay(image: &RgbImage, overlay: &Overlay, index: usize) -> RgbImage {
    let Some(over) = overlay.images.get(index).or_else(|| overlay.images.first().filter(|_| overlay.images.len() == 1))
    else {
        return image.clone();
    };
    let mut base = match overlay.paste_to {
        Some((x, y, w, h)) => {
            let resized = resize_raster(1, &image.to_raster(), w, h);
            let mut canvas = Raster::blank(over.width, over.height, 4);
            paste(&mut canvas, &resized.with_channels(4), x as i64, y as i64);
            canvas
        }
        None => image.to_raster().with_channels(4),
    };
    alpha_composite(&mut base, over);
    RgbImage::from_raster(base)
}

#[cfg(test)]
mod tests;
