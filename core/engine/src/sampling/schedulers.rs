//! The 12 sigma schedulers of A1111 v1.10.1 (`modules/sd_schedulers.py`, §5.2).
//! Every scheduler returns n+1 sigmas ending in 0, except KL Optimal (n+1 values ending at
//! sigma_min) and DDIM (its count depends on 1000 // n).

use sdapi_protocol::choices::Scheduler;

use super::beta_dist::beta_ppf;
use super::discrete::{DiscreteSchedule, linspace_f32, linspace_f64};

/// Options that tune the schedulers (A1111 settings); `Default` is A1111's default.
#[derive(Debug, Clone, PartialEq)]
pub struct SchedulerOptions {
    /// `opts.sigma_min` / `opts.sigma_max`: override the model's range when non-zero.
    pub sigma_min: f64,
    pub sigma_max: f64,
    /// `opts.rho`: used when non-zero and different from the scheduler's default rho.
    pub rho: f64,
    /// `opts.beta_dist_alpha` / `beta_dist_beta` (0.6 each).
    pub beta_alpha: f64,
    pub beta_beta: f64,
    /// `use_old_karras_scheduler_sigmas`: range (0.1, 10) instead of the model's.
    pub use_old_karras_scheduler_sigmas: bool,
    /// Align Your Steps uses its SDXL table for SDXL models.
    pub is_sdxl: bool,
}

impl Default for SchedulerOptions {
    fn default() -> Self {
        Self {
            sigma_min: 0.0,
            sigma_max: 0.0,
            rho: 0.0,
            beta_alpha: 0.6,
            beta_beta: 0.6,
            use_old_karras_scheduler_sigmas: false,
            is_sdxl: false,
        }
    }
}

const AYS_SD15: [f64; 11] = [14.615, 6.475, 3.861, 2.697, 1.886, 1.396, 0.963, 0.652, 0.399, 0.152, 0.029];
const AYS_SDXL: [f64; 11] = [14.615, 6.315, 3.771, 2.181, 1.342, 0.862, 0.555, 0.380, 0.234, 0.113, 0.029];

/// The sigma computations of each scheduler (the names live in `sdapi_protocol::choices`).
pub trait SchedulerSigmas {
    /// The schedule for `n` steps.
    fn sigmas(self, n: usize, model: &DiscreteSchedule, options: &SchedulerOptions) -> Vec<f64>;
    /// (sigma_min, sigma_max) after the options' overrides.
    fn sigma_range(self, model: &DiscreteSchedule, options: &SchedulerOptions) -> (f64, f64);
}

impl SchedulerSigmas for Scheduler {
    /// `Automatic` has no function of its own and gives the model's uniform schedule (callers
    /// resolve it to the sampler default first, see `plan`).
    fn sigmas(self, n: usize, model: &DiscreteSchedule, options: &SchedulerOptions) -> Vec<f64> {
        let (sigma_min, sigma_max) = self.sigma_range(model, options);
        let rho_opt = options.rho;
        let rho = if self.default_rho() != -1.0 && rho_opt != 0.0 { rho_opt } else { self.default_rho() };
        let with_zero = |mut v: Vec<f64>| {
            v.push(0.0);
            v
        };
        match self {
            Self::Automatic | Self::Uniform => model.uniform_sigmas(n),
            Self::Karras => with_zero(karras(n, sigma_min, sigma_max, rho)),
            Self::Exponential => {
                with_zero(linspace_f64(sigma_max.ln(), sigma_min.ln(), n).into_iter().map(f64::exp).collect())
            }
            Self::Polyexponential => with_zero(
                linspace_f64(1.0, 0.0, n)
                    .into_iter()
                    .map(|r| (r.powf(rho) * (sigma_max.ln() - sigma_min.ln()) + sigma_min.ln()).exp())
                    .collect(),
            ),
            Self::SgmUniform | Self::Normal => {
                let (start, end) = (model.sigma_to_t(sigma_max) as f32, model.sigma_to_t(sigma_min) as f32);
                let ts = if self == Self::SgmUniform {
                    let mut t = linspace_f32(start, end, n + 1);
                    t.pop();
                    t
                } else {
                    linspace_f32(start, end, n)
                };
                with_zero(ts.into_iter().map(|t| model.t_to_sigma(f64::from(t))).collect())
            }
            Self::KlOptimal => {
                let (a_min, a_max) = (sigma_min.atan(), sigma_max.atan());
                (0..=n)
                    .map(|i| {
                        let f = i as f64 / n as f64;
                        (f * a_min + (1.0 - f) * a_max).tan()
                    })
                    .collect()
            }
            Self::AlignYourSteps => {
                let table = if options.is_sdxl { &AYS_SDXL } else { &AYS_SD15 };
                if n == table.len() { with_zero(table.to_vec()) } else { with_zero(loglinear_interp(table, n)) }
            }
            Self::Simple => {
                let table = model.sigmas();
                let ss = table.len() as f64 / n as f64;
                with_zero((0..n).map(|x| f64::from(table[table.len() - 1 - (x as f64 * ss) as usize])).collect())
            }
            Self::Ddim => {
                let table = model.sigmas();
                let ss = (table.len() / n.max(1)).max(1);
                let mut v: Vec<f64> = (1..table.len()).step_by(ss).map(|i| f64::from(table[i])).collect();
                v.reverse();
                with_zero(v)
            }
            Self::Beta => with_zero(
                linspace_f64(0.0, 1.0, n)
                    .into_iter()
                    .map(|x| {
                        sigma_min + beta_ppf(1.0 - x, options.beta_alpha, options.beta_beta) * (sigma_max - sigma_min)
                    })
                    .collect(),
            ),
        }
    }

    /// (sigma_min, sigma_max) the scheduler uses: the model's range (or (0.1, 10) with the old
    /// Karras option), overridden by non-zero `opts.sigma_min/sigma_max`.
    fn sigma_range(self, model: &DiscreteSchedule, options: &SchedulerOptions) -> (f64, f64) {
        let (mut lo, mut hi) =
            if options.use_old_karras_scheduler_sigmas { (0.1, 10.0) } else { (model.sigma_min(), model.sigma_max()) };
        if options.sigma_min != 0.0 {
            lo = options.sigma_min;
        }
        if options.sigma_max != 0.0 {
            hi = options.sigma_max;
        }
        (lo, hi)
    }
}

/// k-diffusion `get_sigmas_karras` without the trailing zero (ramp in float32 as torch.linspace).
pub fn karras(n: usize, sigma_min: f64, sigma_max: f64, rho: f64) -> Vec<f64> {
    let (min_inv, max_inv) = (sigma_min.powf(1.0 / rho), sigma_max.powf(1.0 / rho));
    linspace_f32(0.0, 1.0, n).into_iter().map(|r| (max_inv + f64::from(r) * (min_inv - max_inv)).powf(rho)).collect()
}

/// Align Your Steps' log-linear resampling of a decreasing table to `n` points (numpy interp).
fn loglinear_interp(table: &[f64], n: usize) -> Vec<f64> {
    let xs = linspace_f64(0.0, 1.0, table.len());
    let ys: Vec<f64> = table.iter().rev().map(|v| v.ln()).collect();
    let mut out: Vec<f64> = linspace_f64(0.0, 1.0, n)
        .into_iter()
        .map(|x| {
            let k = xs.iter().rposition(|&xk| xk <= x).unwrap_or(0).min(xs.len() - 2);
            let w = ((x - xs[k]) / (xs[k + 1] - xs[k])).clamp(0.0, 1.0);
            (ys[k] + w * (ys[k + 1] - ys[k])).exp()
        })
        .collect();
    out.reverse();
    out
}
