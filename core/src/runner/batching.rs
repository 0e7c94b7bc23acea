//! Several requests in one UNet batch: which queued jobs may share a run, how they are joined
//! into one [`BatchJob`], and how the run's output is split back per job.
//!
//! A shared run must give every job the images it would get alone. Rows of a batch are
//! independent in A1111's pipeline (one noise generator per seed, per-row conditioning, per-image
//! VAE decode) as long as the batch-shaping settings agree, so two jobs may share a run when
//! everything but their rows (prompts, negative prompts, seeds, subseeds) is equal. What this
//! crate cannot see — prompts that tokenize to different chunk counts, which A1111 pads in a
//! shared batch — the executor checks ([`super::BatchExecutor::can_batch`]) before the run.

use sdapi_protocol::choices::SamplerKind;

use super::{BatchJob, BatchOutput, JobMode};

/// How far the runner may join queued jobs (`SDAPI_BATCH_MAX_IMAGES`, `SDAPI_MAX_BATCH_MEGAPIXELS`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchingLimits {
    /// Most images in one shared run; 1 turns batching off.
    pub max_images: usize,
    /// Most pixels (width × height × images) in one shared run.
    pub max_pixels: usize,
}

impl Default for BatchingLimits {
    /// Off: each job runs alone, exactly as A1111 runs it.
    fn default() -> Self {
        Self { max_images: 1, max_pixels: usize::MAX }
    }
}

impl BatchingLimits {
    pub fn enabled(&self) -> bool {
        self.max_images > 1
    }

    /// Whether a run of `images` images of `job`'s size stays within the limits.
    pub fn admits(&self, job: &BatchJob, images: usize) -> bool {
        images <= self.max_images && job.width.saturating_mul(job.height).saturating_mul(images) <= self.max_pixels
    }
}

impl BatchJob {
    /// Images in this job.
    pub fn rows(&self) -> usize {
        self.seeds.len()
    }

    /// Whether `self` and `other` may share one run: same model, networks, size, sampler and
    /// every other batch-shaping setting; txt2img without a second pass or refiner (those switch
    /// models or sizes mid-run); a sampler whose steps do not depend on the whole batch (DPM
    /// adaptive sizes its steps from an error norm over all rows).
    pub fn can_share_run_with(&self, other: &BatchJob) -> bool {
        let simple = |j: &BatchJob| {
            matches!(j.mode, JobMode::Txt2Img)
                && j.hires.is_none()
                && j.refiner.is_none()
                && j.sampler != SamplerKind::DpmAdaptive
                && j.rows() > 0
                && j.prompts.len() == j.rows()
                && j.negative_prompts.len() == j.rows()
                && j.subseeds.len() == j.rows()
        };
        simple(self)
            && simple(other)
            && self.model == other.model
            && self.networks == other.networks
            && self.sampler == other.sampler
            && self.scheduler == other.scheduler
            && self.steps == other.steps
            && self.cfg_scale == other.cfg_scale
            && (self.width, self.height) == (other.width, other.height)
            && self.subseed_strength == other.subseed_strength
            && (self.seed_resize_from_w, self.seed_resize_from_h)
                == (other.seed_resize_from_w, other.seed_resize_from_h)
            && self.settings == other.settings
    }

    /// One job with the rows of `jobs` in order; everything else is the first job's (equal in
    /// all of them, see [`Self::can_share_run_with`]). None for an empty list.
    pub fn joined(jobs: &[&BatchJob]) -> Option<BatchJob> {
        let first = *jobs.first()?;
        let rows = |f: fn(&BatchJob) -> &Vec<String>| jobs.iter().flat_map(|j| f(j).iter().cloned()).collect();
        let numbers = |f: fn(&BatchJob) -> &Vec<i64>| jobs.iter().flat_map(|j| f(j).iter().copied()).collect();
        Some(BatchJob {
            prompts: rows(|j| &j.prompts),
            negative_prompts: rows(|j| &j.negative_prompts),
            seeds: numbers(|j| &j.seeds),
            subseeds: numbers(|j| &j.subseeds),
            ..first.clone()
        })
    }
}

impl BatchOutput {
    /// The output of a shared run cut back into one output per job, `rows[i]` images each, in
    /// order. Flags and infotext entries belong to the whole run and are copied to every part.
    pub fn split(self, rows: &[usize]) -> Vec<BatchOutput> {
        let mut images = self.images.into_iter();
        rows.iter()
            .map(|&n| BatchOutput {
                images: images.by_ref().take(n).collect(),
                interrupted: self.interrupted,
                skipped: self.skipped,
                extra_generation_params: self.extra_generation_params.clone(),
                inpainting_conditioning: self.inpainting_conditioning,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::job;
    use super::*;
    use crate::runner::RgbImage;

    #[test]
    fn jobs_that_differ_only_in_rows_share_a_run() {
        let a = job("a", "a red cube", 4);
        let mut b = job("b", "a blue ball", 4);
        b.seeds = vec![7];
        b.subseeds = vec![8];
        assert!(a.can_share_run_with(&b));
        let joined = BatchJob::joined(&[&a, &b]).unwrap();
        assert_eq!(joined.prompts, ["a red cube", "a blue ball"]);
        assert_eq!(joined.seeds, [1, 7]);
        assert_eq!(joined.subseeds, [1, 8]);
        assert_eq!((joined.task_id.as_str(), joined.rows()), ("a", 2));
    }

    #[test]
    fn batch_shaping_settings_keep_jobs_apart() {
        let a = job("a", "x", 4);
        type Change = (&'static str, fn(&mut BatchJob));
        let changes: Vec<Change> = vec![
            ("steps", |j| j.steps = 5),
            ("cfg", |j| j.cfg_scale = 6.5),
            ("size", |j| j.width = 128),
            ("sampler", |j| j.sampler = SamplerKind::EulerAncestral),
            ("subseed strength", |j| j.subseed_strength = 0.5),
            ("seed resize", |j| j.seed_resize_from_w = 32),
            ("clip skip", |j| j.settings.clip_skip = 2),
            ("eta", |j| j.settings.request_extra.eta = Some(0.5)),
            ("checkpoint", |j| j.model.checkpoint = "other".into()),
            ("img2img", |j| {
                j.mode = JobMode::Img2Img {
                    init_images: vec![],
                    denoising_strength: 0.5,
                    initial_noise_multiplier: 1.0,
                    inpaint: None,
                }
            }),
            ("adaptive sampler", |j| j.sampler = SamplerKind::DpmAdaptive),
        ];
        for (what, change) in changes {
            let mut b = job("b", "x", 4);
            change(&mut b);
            assert!(!a.can_share_run_with(&b), "{what}");
            assert!(!b.can_share_run_with(&a), "{what}");
        }
        let mut adaptive = job("c", "x", 4);
        adaptive.sampler = SamplerKind::DpmAdaptive;
        assert!(!adaptive.can_share_run_with(&adaptive.clone()), "DPM adaptive never shares");
    }

    #[test]
    fn a_shared_output_splits_back_in_order() {
        let img = |v: u8| RgbImage { width: 1, height: 1, pixels: vec![v; 3] };
        let out = BatchOutput {
            images: (0..5).map(img).collect(),
            interrupted: true,
            extra_generation_params: vec![("Schedule type".into(), "Karras".into())],
            ..Default::default()
        };
        let parts = out.split(&[2, 1, 2]);
        let values: Vec<Vec<u8>> = parts.iter().map(|p| p.images.iter().map(|i| i.pixels[0]).collect()).collect();
        assert_eq!(values, vec![vec![0, 1], vec![2], vec![3, 4]]);
        assert!(parts.iter().all(|p| p.interrupted && p.extra_generation_params.len() == 1));
    }

    #[test]
    fn limits_bound_images_and_pixels() {
        let j = job("a", "x", 4); // 64 × 64
        let limits = BatchingLimits { max_images: 8, max_pixels: 64 * 64 * 4 };
        assert!(limits.admits(&j, 4));
        assert!(!limits.admits(&j, 5), "pixel bound");
        assert!(!BatchingLimits { max_pixels: usize::MAX, ..limits }.admits(&j, 9), "image bound");
        assert!(!BatchingLimits::default().enabled());
    }
}
