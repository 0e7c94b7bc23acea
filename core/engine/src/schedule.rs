//! The DDPM noise schedule (`alphas_cumprod`) a checkpoint was trained with.

/// Beta schedules found in SD checkpoints / diffusers scheduler configs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum BetaSchedule {
    /// LDM "linear" = diffusers "scaled_linear": linear in sqrt(beta).
    ScaledLinear { start: f64, end: f64 },
    /// diffusers "linear": linear in beta.
    Linear { start: f64, end: f64 },
}

/// SD 1.x / 2.x training schedule.
pub const SD_BETAS: BetaSchedule = BetaSchedule::ScaledLinear { start: 0.00085, end: 0.012 };

/// `cumprod(1 - beta)` computed in f64 (as LDM does with numpy) and stored as f32.
pub fn alphas_cumprod(schedule: BetaSchedule, steps: usize) -> Vec<f32> {
    let betas: Vec<f64> = match schedule {
        BetaSchedule::ScaledLinear { start, end } => {
            crate::sampling::linspace_f64(start.sqrt(), end.sqrt(), steps).into_iter().map(|b| b * b).collect()
        }
        BetaSchedule::Linear { start, end } => crate::sampling::linspace_f64(start, end, steps),
    };
    let mut product = 1.0f64;
    betas
        .into_iter()
        .map(|beta| {
            product *= 1.0 - beta;
            product as f32
        })
        .collect()
}
