//! The sampler side of inpainting (docs/inpainting.md): the latent mask blend, the latent fills
//! of `inpainting_fill` 2 and 3, and the extra input channels of inpainting checkpoints.

use candle_core::{DType, Device, Tensor};
use sdapi_core::runner::{BatchJob, InpaintJob, LatentFill, RunnerError};

use super::{encode_pixels, exec_err, image_to_tensor, init_image_for};
use crate::checkpoint::ModelFamily;
use crate::model::LoadedModel;
use crate::rng::{ImageRng, ImageRngOptions};

/// Latent channels of every supported family; a 9-channel UNet takes 4 + 1 mask + 4 image.
const LATENT_CHANNELS: usize = 4;
const INPAINTING_CHANNELS: usize = 9;

/// The blend A1111 applies inside the CFG denoiser and once more after sampling:
/// `x · nmask + init · mask` (nmask = 1 where the image is regenerated).
pub(super) struct LatentBlend {
    pub init: Tensor,
    nmask: Tensor,
    mask: Tensor,
}

impl LatentBlend {
    /// The job's latent mask as (1, 4, h, w) tensors over `init` (its fill already applied).
    pub fn new(job: &InpaintJob, init: Tensor) -> Result<Self, RunnerError> {
        let (_, _, lh, lw) = init.dims4().map_err(exec_err)?;
        if job.latent_nmask.len() != lh * lw {
            return Err(RunnerError::Execution(format!(
                "latent mask of {} values for a {lw}x{lh} latent",
                job.latent_nmask.len()
            )));
        }
        let plane = Tensor::from_slice(&job.latent_nmask, (1, 1, lh, lw), init.device()).map_err(exec_err)?;
        let nmask = plane.repeat((1, LATENT_CHANNELS, 1, 1)).map_err(exec_err)?;
        // `1.0 - latmask` in float32, as A1111 computes it.
        let mask = nmask.affine(-1.0, 1.0).map_err(exec_err)?;
        Ok(Self { init, nmask, mask })
    }

    pub fn apply(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        x.broadcast_mul(&self.nmask)?.add(&self.init.broadcast_mul(&self.mask)?)
    }

    /// `inpainting_fill` 2 (the masked latent replaced by the first draw of a fresh generator
    /// with the image seeds only) and 3 (by zero); other fills happened in pixels.
    pub fn fill(job: &InpaintJob, init: Tensor, batch: &BatchJob, device: &Device) -> Result<Tensor, RunnerError> {
        if job.latent_fill == LatentFill::Keep {
            return Ok(init);
        }
        let blend = Self::new(job, init.clone())?;
        let kept = init.broadcast_mul(&blend.mask).map_err(exec_err)?;
        if job.latent_fill == LatentFill::Nothing {
            return Ok(kept);
        }
        let (_, _, lh, lw) = init.dims4().map_err(exec_err)?;
        // A1111's `create_random_tensors(shape, seeds)`: no variation seed, no seed resize.
        let options = ImageRngOptions {
            source: batch.settings.randn_source,
            subseeds: None,
            subseed_strength: 0.0,
            seed_resize_from_h: 0,
            seed_resize_from_w: 0,
            eta_noise_seed_delta: 0,
        };
        let mut rng = ImageRng::new([LATENT_CHANNELS, lh, lw], batch.seeds.clone(), options, device.clone());
        let noise = rng.next().map_err(exec_err)?;
        kept.add(&noise.broadcast_mul(&blend.nmask).map_err(exec_err)?).map_err(exec_err)
    }
}

/// Whether `model` takes inpainting conditioning; other input widths than 4 and 9 (depth,
/// instruct-pix2pix) are refused before sampling.
pub(super) fn uses_inpainting_conditioning(model: &LoadedModel) -> Result<bool, RunnerError> {
    match model.unet.config().in_channels {
        LATENT_CHANNELS => Ok(false),
        INPAINTING_CHANNELS => Ok(true),
        other => Err(RunnerError::Model(format!(
            "a UNet with {other} input channels (depth or instruct-pix2pix checkpoints) is not supported by this server"
        ))),
    }
}

/// Where the masked-image half of the conditioning comes from.
pub(super) enum ConditioningSource<'a> {
    /// txt2img: everything is masked, the "image" is mid-grey (zeros in [-1, 1]).
    Blank { batch: usize, width: usize, height: usize },
    /// img2img: the prepared init images, with the job's mask when inpainting (else all ones).
    Images { pixels: &'a Tensor, mask: Option<&'a InpaintJob> },
}

/// A1111's `txt2img_image_conditioning` / `inpainting_image_conditioning` for a 9-channel UNet:
/// `cat(mask at latent size, VAE(lerp(image, image·(1 − mask), inpainting_mask_weight)))`.
pub(super) fn image_conditioning(
    model: &LoadedModel,
    source: ConditioningSource<'_>,
    latent_size: (usize, usize),
    mask_weight: f64,
    device: &Device,
) -> Result<Tensor, RunnerError> {
    let (lh, lw) = latent_size;
    match source {
        ConditioningSource::Blank { batch, width, height } => {
            let grey = Tensor::zeros((batch, 3, height, width), DType::F32, device).map_err(exec_err)?;
            let encoded = encode_pixels(model, &grey)?;
            let ones = Tensor::ones((batch, 1, lh, lw), DType::F32, device).map_err(exec_err)?;
            Tensor::cat(&[&ones, &encoded], 1).map_err(exec_err)
        }
        ConditioningSource::Images { pixels, mask } => {
            let (batch, _, height, width) = pixels.dims4().map_err(exec_err)?;
            let mask = match mask {
                Some(job) => {
                    if job.conditioning_mask.len() != height * width {
                        return Err(RunnerError::Execution(format!(
                            "conditioning mask of {} values for {width}x{height} images",
                            job.conditioning_mask.len()
                        )));
                    }
                    let round = job.round_conditioning_mask || model.family == ModelFamily::Sdxl;
                    let values: Vec<f32> = if round {
                        job.conditioning_mask.iter().map(|v| v.round_ties_even()).collect()
                    } else {
                        job.conditioning_mask.clone()
                    };
                    Tensor::from_vec(values, (1, 1, height, width), device).map_err(exec_err)?
                }
                None => Tensor::ones((1, 1, height, width), DType::F32, device).map_err(exec_err)?,
            };
            let masked = pixels.broadcast_mul(&mask.affine(-1.0, 1.0).map_err(exec_err)?).map_err(exec_err)?;
            let blended = torch_lerp(pixels, &masked, mask_weight).map_err(exec_err)?;
            let encoded = encode_pixels(model, &blended)?;
            let small = nearest_resize(&mask, lh, lw).map_err(exec_err)?.repeat((batch, 1, 1, 1)).map_err(exec_err)?;
            Tensor::cat(&[&small, &encoded], 1).map_err(exec_err)
        }
    }
}

/// The init images of a batch as one (B, 3, H, W) tensor in [-1, 1].
pub(super) fn batch_pixels(
    images: &[sdapi_core::runner::RgbImage],
    batch: usize,
    device: &Device,
) -> Result<Tensor, RunnerError> {
    let mut rows = Vec::with_capacity(batch);
    for i in 0..batch {
        rows.push(image_to_tensor(init_image_for(images, i)?, device).map_err(exec_err)?);
    }
    Tensor::cat(&rows, 0).map_err(exec_err)
}

/// `torch.lerp(start, end, w)`: PyTorch switches formulas at 0.5 so that w = 1 gives `end` exactly.
fn torch_lerp(start: &Tensor, end: &Tensor, weight: f64) -> candle_core::Result<Tensor> {
    let diff = (end - start)?;
    if weight < 0.5 { start + (diff * weight)? } else { end - (diff * (1.0 - weight))? }
}

/// `interpolate(mask, size, mode="nearest")`: source index `floor(dst · in / out)`.
fn nearest_resize(mask: &Tensor, out_h: usize, out_w: usize) -> candle_core::Result<Tensor> {
    let (_, _, in_h, in_w) = mask.dims4()?;
    let index = |out: usize, inp: usize| -> Vec<u32> {
        let scale = inp as f32 / out as f32;
        (0..out).map(|d| ((d as f32 * scale).floor() as usize).min(inp - 1) as u32).collect()
    };
    let device = mask.device();
    let rows = Tensor::new(index(out_h, in_h), device)?;
    let cols = Tensor::new(index(out_w, in_w), device)?;
    mask.index_select(&rows, 2)?.index_select(&cols, 3)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    #[test]
    fn lerp_at_one_is_the_end_exactly() {
        let d = Device::Cpu;
        let a = Tensor::new(&[0.3f32, -0.7, 1.0], &d).unwrap();
        let b = Tensor::new(&[0.1f32, 0.2, -0.0], &d).unwrap();
        assert_eq!(torch_lerp(&a, &b, 1.0).unwrap().to_vec1::<f32>().unwrap(), b.to_vec1::<f32>().unwrap());
        assert_eq!(torch_lerp(&a, &b, 0.0).unwrap().to_vec1::<f32>().unwrap(), a.to_vec1::<f32>().unwrap());
    }

    /// The fixture model with a 9-channel first convolution: the original weights on the latent
    /// channels, `extra` on the mask and masked-image channels.
    pub(crate) fn inpainting_variant(dir: &std::path::Path, extra: impl Fn(usize) -> f32) -> std::path::PathBuf {
        let src = crate::tests::single_file_path();
        let mut tensors = candle_core::safetensors::load(&src, &Device::Cpu).unwrap();
        let name = "model.diffusion_model.input_blocks.0.0.weight";
        let w = tensors[name].to_dtype(DType::F32).unwrap();
        let (out_c, in_c, kh, kw) = w.dims4().unwrap();
        assert_eq!(in_c, 4);
        let values: Vec<f32> = (0..out_c * 5 * kh * kw).map(&extra).collect();
        let more = Tensor::from_vec(values, (out_c, 5, kh, kw), &Device::Cpu).unwrap();
        let widened = Tensor::cat(&[&w, &more], 1).unwrap().to_dtype(tensors[name].dtype()).unwrap();
        tensors.insert(name.to_string(), widened);
        std::fs::create_dir_all(dir).unwrap();
        let path = dir.join("tiny-sd15-inpainting.safetensors");
        candle_core::safetensors::save(&tensors, &path).unwrap();
        std::fs::copy(src.with_extension("yaml"), path.with_extension("yaml")).unwrap();
        path
    }

    /// Deterministic pseudo-random weights in [-0.05, 0.05).
    pub(crate) fn pseudo_random(i: usize) -> f32 {
        let x = (i as u64).wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407) >> 40;
        (x as f32 / (1u64 << 24) as f32 - 0.5) * 0.1
    }

    #[test]
    fn inpainting_conditioning_is_mask_and_encoded_masked_image() {
        let dir = std::env::temp_dir().join(format!("sdapi-inpaint-cond-{}", std::process::id()));
        let path = inpainting_variant(&dir, pseudo_random);
        let model = LoadedModel::load(&path, None, &Device::Cpu, DType::F32).unwrap();
        assert!(uses_inpainting_conditioning(&model).unwrap(), "9 input channels are read from the tensors");

        // A 16x16 image and a mask with soft values (rounded: > 0.5 is masked).
        let (w, h) = (16usize, 16usize);
        let pixels: Vec<f32> = (0..3 * w * h).map(|i| ((i * 37) % 255) as f32 / 255.0 * 2.0 - 1.0).collect();
        let mask: Vec<f32> = (0..w * h).map(|i| if (i % w) >= 6 { 0.8 } else { 0.2 }).collect();
        let job = InpaintJob {
            latent_nmask: vec![1.0; 4],
            latent_fill: LatentFill::Keep,
            conditioning_mask: mask.clone(),
            round_conditioning_mask: true,
        };
        let image = Tensor::from_vec(pixels.clone(), (1, 3, h, w), &Device::Cpu).unwrap();
        let source = ConditioningSource::Images { pixels: &image, mask: Some(&job) };
        let got = image_conditioning(&model, source, (h / 8, w / 8), 1.0, &Device::Cpu).unwrap();

        // Independently: round the mask, black out (to 0 in [-1, 1]) the masked pixels, encode,
        // and sample the mask at every 8th pixel.
        let rounded: Vec<f32> = mask.iter().map(|v| if *v > 0.5 { 1.0 } else { 0.0 }).collect();
        let masked: Vec<f32> = pixels.iter().enumerate().map(|(i, p)| p * (1.0 - rounded[i % (w * h)])).collect();
        let masked = Tensor::from_vec(masked, (1, 3, h, w), &Device::Cpu).unwrap();
        let encoded = model.vae.encode(&masked).unwrap();
        let small: Vec<f32> =
            (0..h / 8).flat_map(|y| (0..w / 8).map(move |x| (y, x))).map(|(y, x)| rounded[y * 8 * w + x * 8]).collect();
        let small = Tensor::from_vec(small, (1, 1, h / 8, w / 8), &Device::Cpu).unwrap();
        let want = Tensor::cat(&[&small, &encoded], 1).unwrap();
        assert_eq!(got.dims(), &[1, 5, 2, 2]);
        assert_eq!(crate::tests::max_abs_diff(&got, &want), 0.0);

        // txt2img: an all-ones mask beside the encoded mid-grey image.
        let blank = image_conditioning(
            &model,
            ConditioningSource::Blank { batch: 2, width: w, height: h },
            (2, 2),
            1.0,
            &Device::Cpu,
        )
        .unwrap();
        let grey = model.vae.encode(&Tensor::zeros((1, 3, h, w), DType::F32, &Device::Cpu).unwrap()).unwrap();
        assert_eq!(blank.dims(), &[2, 5, 2, 2]);
        assert_eq!(blank.narrow(1, 0, 1).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap(), vec![1.0; 8]);
        assert_eq!(crate::tests::max_abs_diff(&blank.narrow(0, 1, 1).unwrap().narrow(1, 1, 4).unwrap(), &grey), 0.0);
        std::fs::remove_dir_all(&dir).ok();
    }

    /// An inpainting request through `process_images` on 9-channel variants of the fixture model:
    /// with zero weights on the extra channels it must draw what the 4-channel model draws; with
    /// random ones it draws something else, and both report inpainting conditioning.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn inpainting_checkpoints_run_through_process_images() {
        use sdapi_core::models_dir::ModelIndex;
        use sdapi_core::processing::{GenerationRequest, ProcessingContext, process_images};
        use sdapi_core::runner::{ProcessingRunner, Runner};
        use sdapi_protocol::api::request::Img2ImgRequest;
        use sdapi_protocol::images::{decode_base64_image, parse_hex_color};

        let root = std::env::temp_dir().join(format!("sdapi-inpaint-models-{}", std::process::id()));
        let sd = root.join("Stable-diffusion");
        let zero = inpainting_variant(&sd, |_| 0.0);
        std::fs::rename(&zero, sd.join("zero-inpainting.safetensors")).unwrap();
        std::fs::rename(zero.with_extension("yaml"), sd.join("zero-inpainting.yaml")).unwrap();
        inpainting_variant(&sd, pseudo_random);
        let base = crate::tests::single_file_path();
        std::fs::copy(&base, sd.join("tiny-sd15.safetensors")).unwrap();
        std::fs::copy(base.with_extension("yaml"), sd.join("tiny-sd15.yaml")).unwrap();
        let runner: std::sync::Arc<dyn Runner> =
            std::sync::Arc::new(ProcessingRunner::start(crate::executor::DiffusionExecutor::new("cpu").unwrap()));
        let ctx = ProcessingContext::new(runner, ModelIndex::scan(&root).unwrap(), "v1.10.1");

        let case = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../tests/fixtures/a1111-parity-features/cases/ip_original_blur4_euler_a/request.json");
        let mut request: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(case).unwrap()).unwrap();
        let mut run = |checkpoint: &str| {
            request["override_settings"]["sd_model_checkpoint"] = checkpoint.into();
            let r = Img2ImgRequest::from_json(&request).unwrap();
            let init = r.init_images.clone().unwrap()[0].as_str().unwrap().to_string();
            let init = decode_base64_image(&init).unwrap().flatten(parse_hex_color("#ffffff")).into();
            let ctx = &ctx;
            async move {
                process_images(ctx, GenerationRequest::Img2Img { request: r, init_images: vec![init] }).await.unwrap()
            }
        };
        let plain = run("tiny-sd15").await;
        let zeroed = run("zero-inpainting").await;
        let random = run("tiny-sd15-inpainting").await;
        let flag = |p: &sdapi_core::processing::Processed| {
            serde_json::from_str::<serde_json::Value>(&p.info).unwrap()["is_using_inpainting_conditioning"].clone()
        };
        assert_eq!(flag(&plain), false);
        assert_eq!((flag(&zeroed), flag(&random)), (true.into(), true.into()));
        assert!(random.infotexts[0].contains("Conditional mask weight: 1.0"), "{}", random.infotexts[0]);
        assert!(!plain.infotexts[0].contains("Conditional mask weight"));
        let diff = |a: &sdapi_core::runner::RgbImage, b: &sdapi_core::runner::RgbImage| {
            a.pixels.iter().zip(&b.pixels).map(|(x, y)| x.abs_diff(*y)).max().unwrap_or(0)
        };
        assert!(diff(&plain.images[0], &zeroed.images[0]) <= 1, "zero extra weights change nothing");
        assert!(diff(&plain.images[0], &random.images[0]) > 2, "the conditioning reaches the UNet");
        std::fs::remove_dir_all(&root).ok();
    }

    #[test]
    fn nearest_takes_every_eighth_pixel() {
        let d = Device::Cpu;
        let m = Tensor::arange(0f32, 256.0, &d).unwrap().reshape((1, 1, 16, 16)).unwrap();
        let r = nearest_resize(&m, 2, 2).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert_eq!(r, vec![0.0, 8.0, 128.0, 136.0]);
    }
}
