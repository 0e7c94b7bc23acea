//! `bench inpaint`: what a mask adds to img2img at `--size` (512): the CPU preparation
//! (`processing::inpaint::prepare`: mask decode, OpenCV blur, crop/resize, `masking.fill`,
//! overlays, latent mask) and the paste back (`apply_overlay`), against A1111's own Python code
//! for the same steps (`scripts/bench/inpaint_reference.py`, Pillow + OpenCV + numpy) on the same
//! inputs; then whole img2img requests with and without the mask through the router (bundled
//! tiny model, so the diffusion part is small and the mask's share is an upper bound).

use sdapi_core::processing::inpaint::{MaskSettings, apply_overlay, prepare};
use sdapi_core::runner::RgbImage;
use sdapi_engine::bench::{BenchError, Samples};
use sdapi_protocol::api::request::Img2ImgRequest;
use sdapi_protocol::images::{encode_png, to_base64};
use serde_json::{Value, json};

use super::overhead::{post_timed, tiny_app};
use super::{Args, report};

/// An RGB image of `size`², pixel by pixel.
fn image_from(size: u32, pixel: impl Fn(u32, u32) -> [u8; 3]) -> RgbImage {
    let pixels = (0..size).flat_map(|y| (0..size).map(move |x| (x, y))).flat_map(|(x, y)| pixel(x, y)).collect();
    RgbImage { width: size, height: size, pixels }
}

/// The init image both sides use: smooth gradients in every channel.
fn init_image(size: u32) -> RgbImage {
    image_from(size, |x, y| [((x * 7 + y * 3) % 256) as u8, ((x * 5) % 256) as u8, ((y * 11) % 256) as u8])
}

/// The mask both sides use: a white ellipse centred at (size/2, size/2) with radii size·15/64 and
/// size·10/64 on black, grey (RGB) as a client would send it.
fn mask_image(size: u32) -> RgbImage {
    let (c, rx, ry) = (f64::from(size) / 2.0, f64::from(size) * 15.0 / 64.0, f64::from(size) * 10.0 / 64.0);
    image_from(size, |x, y| {
        let (dx, dy) = ((f64::from(x) + 0.5 - c) / rx, (f64::from(y) + 0.5 - c) / ry);
        let v = if dx * dx + dy * dy <= 1.0 { 255 } else { 0 };
        [v, v, v]
    })
}

fn png_b64(img: &RgbImage) -> Result<String, BenchError> {
    let img = img.to_image().ok_or_else(|| BenchError::Request("image of inconsistent size".into()))?;
    let png = encode_png(&img, None).map_err(|e| BenchError::Request(e.to_string()))?;
    Ok(format!("data:image/png;base64,{}", to_base64(&png)))
}

pub async fn run(args: &Args) -> Result<(), BenchError> {
    let size: u32 = args.get("size", 512);
    let iters: usize = args.get("iters", 5);
    let steps: usize = args.get("steps", 10);
    let init = init_image(size);
    let mask = png_b64(&mask_image(size))?;
    let init_b64 = png_b64(&init)?;

    // The CPU side, for A1111's two inpaint areas (API default: only masked; masked content fill).
    for (area, full_res) in [("only_masked", true), ("whole_picture", false)] {
        let request = Img2ImgRequest::from_json(&json!({
            "width": size, "height": size, "mask": mask, "inpaint_full_res": full_res, "inpainting_fill": 0,
        }))
        .map_err(|e| BenchError::Request(format!("{e:?}")))?;
        let settings = MaskSettings::from_request(&request)
            .map_err(|e| BenchError::Request(format!("{e:?}")))?
            .ok_or_else(|| BenchError::Request("no mask".into()))?;
        let images = std::slice::from_ref(&init);
        let run = || prepare(&request, &settings, images, u64::MAX).map_err(|e| BenchError::Request(format!("{e:?}")));
        let prep = Samples::measure(1, iters, run)?;
        let prepared = run()?;
        let generated = prepared.init_images[0].clone();
        let paste = Samples::measure(1, iters, || Ok(apply_overlay(&generated, &prepared.overlay, 0)))?;
        let extra = json!({"size": size, "area": area});
        report("inpaint_prepare", extra.clone(), &prep);
        report("inpaint_overlay", extra, &paste);
    }

    // Whole requests: img2img with and without the mask, alternating.
    let (app, out) = tiny_app()?;
    let body = |with_mask: bool| {
        let mut b = json!({"prompt": "a red cube on a wooden table", "seed": 1234, "steps": steps,
            "width": size, "height": size, "sampler_name": "Euler", "denoising_strength": 0.75,
            "init_images": [init_b64], "override_settings": {"sd_model_checkpoint": "tiny-sd15"}});
        if with_mask {
            b["mask"] = Value::String(mask.clone());
        }
        b.to_string()
    };
    let (plain_body, masked_body) = (body(false), body(true));
    post_timed(&app, "/sdapi/v1/img2img", &plain_body).await?;
    let (mut plain, mut masked) = (Samples::default(), Samples::default());
    for _ in 0..iters {
        plain.push(post_timed(&app, "/sdapi/v1/img2img", &plain_body).await?.0);
        masked.push(post_timed(&app, "/sdapi/v1/img2img", &masked_body).await?.0);
    }
    let _ = std::fs::remove_dir_all(&out);
    let extra = json!({"model": "tiny-sd15", "size": size, "steps": steps});
    report("img2img_request", extra.clone(), &plain);
    report("inpaint_request", extra, &masked);
    println!(
        "{}",
        json!({"bench": "inpaint_added_ms", "size": size, "ms": super::round(masked.median() - plain.median())})
    );
    Ok(())
}
