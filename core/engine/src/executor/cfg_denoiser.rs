//! A1111's `CFGDenoiser` over the UNet: batches cond and uncond, applies the CompVis wrapping
//! (`c_in`, continuous `t`, `denoised = x - sigma * eps`) and combines with the CFG scale and AND
//! weights. Prompt-editing schedules are looked up by the denoiser call counter.

use candle_core::{DType, Tensor};

use sdapi_core::runner::JobControl;

use super::inpaint::LatentBlend;
use crate::checkpoint::PredictionType;
use crate::model::LoadedModel;
use crate::sampling::{Model, SamplingError};
use crate::text::{
    CondsList, MulticondLearnedConditioning, PromptSchedule, reconstruct_cond_batch, reconstruct_cond_vectors,
    reconstruct_multicond_batch, reconstruct_multicond_vectors,
};

/// The refiner a pass may switch to (A1111's `apply_refiner`), with its own conditioning.
pub struct RefinerSwitch<'a> {
    pub model: &'a LoadedModel,
    pub cond: &'a MulticondLearnedConditioning,
    pub uncond: &'a [PromptSchedule],
    pub switch_at: Option<f64>,
    /// `refiner_switch_by_sample_steps`: the ratio is denoiser calls / `total_steps`.
    pub by_sample_steps: bool,
    pub total_steps: usize,
    /// The base model's sigma table (for the timestep nearest a sigma).
    pub sigmas: &'a [f32],
}

/// Where the sampler is when the denoiser is called: a sigma (k-diffusion) or a timestep.
enum Progress {
    Sigma(f64),
    Timestep(f64),
}

/// The denoiser a sampler drives for one batch.
pub struct CfgDenoiser<'a> {
    pub model: &'a LoadedModel,
    pub cond: &'a MulticondLearnedConditioning,
    pub uncond: &'a [PromptSchedule],
    pub cfg_scale: f64,
    /// Maps sigma to the model's continuous timestep (k-diffusion `sigma_to_t`).
    pub sigma_to_t: &'a dyn Fn(f64) -> f64,
    pub control: &'a JobControl<'a>,
    /// Denoiser calls so far (A1111's `self.step`).
    pub step: usize,
    /// A refiner not switched to yet; `None` once switched (then `refined` is true).
    pub refiner: Option<RefinerSwitch<'a>>,
    pub refined: bool,
    /// Inpainting checkpoints: (B, 5, h, w) mask + masked-image latent, concatenated to the input.
    pub image_cond: Option<&'a Tensor>,
    /// Inpainting: the latent mask blend (after CFG; timestep samplers blend their input instead).
    pub blend: Option<&'a LatentBlend>,
}

fn prompt_err(e: impl std::fmt::Display) -> SamplingError {
    SamplingError::Other(format!("conditioning: {e}"))
}

impl CfgDenoiser<'_> {
    /// Runs the UNet on `x_in` with per-row timesteps, context and (SDXL) vector; returns eps or v.
    fn unet(&self, x_in: &Tensor, t: &Tensor, context: &Tensor, y: Option<&Tensor>) -> Result<Tensor, SamplingError> {
        let dtype = self.model.dtype;
        let y = y.map(|y| y.to_dtype(dtype)).transpose()?;
        let out =
            self.model.unet.forward_with_vector(&x_in.to_dtype(dtype)?, t, &context.to_dtype(dtype)?, y.as_ref())?;
        Ok(out.to_dtype(DType::F32)?)
    }

    /// The SDXL vectors of the batch rows, `[cond rows…, uncond rows…]`, if the model uses them.
    fn vectors(&self) -> Result<Option<(Tensor, Tensor)>, SamplingError> {
        let c = reconstruct_multicond_vectors(self.cond, self.step).map_err(prompt_err)?;
        let u = reconstruct_cond_vectors(self.uncond, self.step).map_err(prompt_err)?;
        Ok(c.zip(u))
    }

    /// Builds the A1111 batch `[cond rows…, uncond rows…]` and returns (x_in, conds per image, uncond,
    /// cond tensor, the image conditioning of each row).
    fn batch(&self, x: &Tensor) -> Result<(Tensor, CondsList, Tensor, Tensor, Option<Tensor>), SamplingError> {
        let (conds_list, tensor) = reconstruct_multicond_batch(self.cond, self.step).map_err(prompt_err)?;
        let uncond = reconstruct_cond_batch(self.uncond, self.step).map_err(prompt_err)?;
        let mut row_image: Vec<u32> = Vec::new();
        for (i, conds) in conds_list.iter().enumerate() {
            row_image.extend(std::iter::repeat_n(i as u32, conds.len()));
        }
        // The uncond rows: one per image, in order.
        row_image.extend(0..x.dim(0)? as u32);
        let rows = Tensor::new(row_image.as_slice(), x.device())?;
        let x_in = x.index_select(&rows, 0)?;
        let image_cond_in = self.image_cond.map(|c| c.index_select(&rows, 0)).transpose()?;
        Ok((x_in, conds_list, uncond, tensor, image_cond_in))
    }

    /// Evaluates the model output for every row of `x_in`, in one call when cond and uncond have the
    /// same token length, else in two (A1111's behaviour, which matters for numerics).
    fn evaluate(
        &self,
        x_in: &Tensor,
        scale: Option<f64>,
        t: f64,
        tensor: &Tensor,
        uncond: &Tensor,
        image_cond_in: Option<&Tensor>,
    ) -> Result<Tensor, SamplingError> {
        let rows = x_in.dim(0)?;
        let scaled = match scale {
            Some(c) => (x_in * c)?,
            None => x_in.clone(),
        };
        // `c_concat`: inpainting checkpoints see the unscaled conditioning beside the input.
        let scaled = match image_cond_in {
            Some(c) => Tensor::cat(&[&scaled, c], 1)?,
            None => scaled,
        };
        let t_all = Tensor::full(t as f32, rows, x_in.device())?;
        let vectors = self.vectors()?;
        if tensor.dim(1)? == uncond.dim(1)? {
            let context = Tensor::cat(&[tensor, uncond], 0)?;
            let y = vectors.map(|(c, u)| Tensor::cat(&[c, u], 0)).transpose()?;
            self.unet(&scaled, &t_all, &context, y.as_ref())
        } else {
            let n_cond = tensor.dim(0)?;
            let n_uncond = uncond.dim(0)?;
            let (yc, yu) = match vectors {
                Some((c, u)) => (Some(c), Some(u)),
                None => (None, None),
            };
            let a = self.unet(&scaled.narrow(0, 0, n_cond)?, &t_all.narrow(0, 0, n_cond)?, tensor, yc.as_ref())?;
            let b = self.unet(
                &scaled.narrow(0, n_cond, n_uncond)?,
                &t_all.narrow(0, n_cond, n_uncond)?,
                uncond,
                yu.as_ref(),
            )?;
            Ok(Tensor::cat(&[a, b], 0)?)
        }
    }

    /// `denoised_i = uncond_i + Σ_k (cond_{i,k} − uncond_i) · (w_k · cfg_scale)`.
    fn combine(
        &self,
        out: &Tensor,
        conds_list: &[Vec<(usize, f64)>],
        n_uncond: usize,
    ) -> Result<Tensor, SamplingError> {
        let total = out.dim(0)?;
        let denoised_uncond = out.narrow(0, total - n_uncond, n_uncond)?;
        let mut images = Vec::with_capacity(conds_list.len());
        for (i, conds) in conds_list.iter().enumerate() {
            let u = denoised_uncond.narrow(0, i, 1)?;
            let mut acc = u.clone();
            for &(index, weight) in conds {
                let c = out.narrow(0, index, 1)?;
                acc = (acc + ((c - &u)? * (weight * self.cfg_scale))?)?;
            }
            images.push(acc);
        }
        Ok(Tensor::cat(&images, 0)?)
    }

    fn check_stop(&self) -> Result<(), SamplingError> {
        if self.control.should_stop() { Err(SamplingError::Interrupted) } else { Ok(()) }
    }

    /// `apply_refiner`: once the completed ratio reaches the switch point, the rest of the pass
    /// runs on the refiner with its conditioning.
    fn maybe_refine(&mut self, at: Progress) {
        let Some(r) = &self.refiner else { return };
        let completed = if r.by_sample_steps {
            self.step as f64 / r.total_steps.max(1) as f64
        } else {
            let timestep = match at {
                Progress::Timestep(t) => t.max(0.0) as usize,
                Progress::Sigma(sigma) => {
                    r.sigmas
                        .iter()
                        .enumerate()
                        .map(|(i, s)| (i, (f64::from(*s) - sigma).abs()))
                        .fold((0, f64::INFINITY), |best, (i, d)| if d < best.1 { (i, d) } else { best })
                        .0
                }
            };
            (999.0 - timestep as f64) / 1000.0
        };
        if r.switch_at.is_some_and(|at| completed < at) {
            return;
        }
        if let Some(r) = self.refiner.take() {
            (self.model, self.cond, self.uncond) = (r.model, r.cond, r.uncond);
            self.refined = true;
        }
    }
}

impl CfgDenoiser<'_> {
    /// Timestep-sampler view: CFG-combined eps (CFG scale times `cfg_scale_multiplier`, for DDIM
    /// CFG++) and the unconditional eps of each image.
    fn eps_and_uncond(
        &mut self,
        x: &Tensor,
        t: f64,
        cfg_scale_multiplier: f64,
    ) -> Result<(Tensor, Tensor), SamplingError> {
        self.check_stop()?;
        self.maybe_refine(Progress::Timestep(t));
        // A1111's timestep denoiser blends the masked input before denoising.
        let blended;
        let x = match self.blend {
            Some(b) => {
                blended = b.apply(x)?;
                &blended
            }
            None => x,
        };
        let (x_in, conds_list, uncond, tensor, image_cond_in) = self.batch(x)?;
        let out = self.evaluate(&x_in, None, t, &tensor, &uncond, image_cond_in.as_ref())?;
        // v-prediction (A1111's CompVisTimestepsVDenoiser): eps = sqrt(a_t) v + sqrt(1 - a_t) x_t.
        let out = match self.model.prediction {
            PredictionType::Eps => out,
            PredictionType::V => {
                let a = alpha_at(&self.model.alphas_cumprod, t);
                ((out * a.sqrt())? + (&x_in * (1.0 - a).sqrt())?)?
            }
        };
        let n_uncond = uncond.dim(0)?;
        let saved = self.cfg_scale;
        self.cfg_scale = saved * cfg_scale_multiplier;
        let eps = self.combine(&out, &conds_list, n_uncond);
        self.cfg_scale = saved;
        let eps = eps?;
        let total = out.dim(0)?;
        let eps_uncond = out.narrow(0, total - n_uncond, n_uncond)?;
        self.step += 1;
        Ok((eps, eps_uncond))
    }
}

/// `alphas_cumprod` at a continuous timestep (linear between the neighbouring integers).
fn alpha_at(alphas: &[f32], t: f64) -> f64 {
    let last = alphas.len().saturating_sub(1);
    let t = t.clamp(0.0, last as f64);
    let (lo, hi) = (t.floor() as usize, t.ceil() as usize);
    let (a, b) = (f64::from(alphas[lo]), f64::from(alphas[hi]));
    a + (b - a) * (t - lo as f64)
}

impl Model for CfgDenoiser<'_> {
    fn denoised(&mut self, x: &Tensor, sigma: f64) -> Result<Tensor, SamplingError> {
        self.check_stop()?;
        self.maybe_refine(Progress::Sigma(sigma));
        let (x_in, conds_list, uncond, tensor, image_cond_in) = self.batch(x)?;
        let c_in = 1.0 / (sigma * sigma + 1.0).sqrt();
        let t = (self.sigma_to_t)(sigma);
        let out = self.evaluate(&x_in, Some(c_in), t, &tensor, &uncond, image_cond_in.as_ref())?;
        // CompVisDenoiser: x0 = x - sigma * eps;  CompVisVDenoiser: x0 = c_skip x + c_out v.
        let denoised_rows = match self.model.prediction {
            PredictionType::Eps => (&x_in - (out * sigma)?)?,
            PredictionType::V => {
                let s2 = sigma * sigma + 1.0;
                let c_skip = 1.0 / s2;
                let c_out = -sigma / s2.sqrt();
                ((&x_in * c_skip)? + (out * c_out)?)?
            }
        };
        let denoised = self.combine(&denoised_rows, &conds_list, uncond.dim(0)?)?;
        // Inpainting: the kept region is pulled back to the init latent after every CFG step.
        let denoised = match self.blend {
            Some(b) => b.apply(&denoised)?,
            None => denoised,
        };
        self.step += 1;
        Ok(denoised)
    }

    fn eps_at_timestep(&mut self, x: &Tensor, t: usize) -> Result<Tensor, SamplingError> {
        self.eps_at_continuous_timestep(x, t as f64)
    }

    /// UniPC evaluates between integer timesteps; the UNet takes a continuous `t` anyway.
    fn eps_at_continuous_timestep(&mut self, x: &Tensor, t: f64) -> Result<Tensor, SamplingError> {
        let (eps, _) = self.eps_and_uncond(x, t, 1.0)?;
        Ok(eps)
    }

    fn eps_and_uncond_at_timestep(
        &mut self,
        x: &Tensor,
        t: usize,
        cfg_scale_multiplier: f64,
    ) -> Result<(Tensor, Tensor), SamplingError> {
        self.eps_and_uncond(x, t as f64, cfg_scale_multiplier)
    }
}
