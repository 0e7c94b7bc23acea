//! UniPC (Zhao et al. 2023) as A1111 runs it (`models/diffusion/uni_pc`, `sd_samplers_timesteps_impl.unipc`):
//! multistep, data prediction (predict_x0), B(h) variants bh1/bh2, orders up to 3, corrector on every
//! step but the last, on the VP "discrete" noise schedule built from `alphas_cumprod`.
//!
//! Continuous time t ∈ [1/N, 1]: log α(t) interpolates 0.5·ln(alphas_cumprod[i]) at t = (i+1)/N
//! linearly; the model is evaluated at timestep (t - 1/N)·1000.

use candle_core::Tensor;
use sdapi_protocol::choices::{UniPcSkipType, UniPcVariant};

use super::SamplingError;
use super::context::{SamplerContext, lin2};
use super::discrete::linspace_f64;

/// `NoiseScheduleVP('discrete')`.
struct VpSchedule {
    t_array: Vec<f64>,
    log_alpha: Vec<f64>,
}

/// Piecewise-linear interpolation through (xp, yp) (xp increasing), extrapolating the end segments.
fn interpolate(x: f64, xp: &[f64], yp: &[f64]) -> f64 {
    let n = xp.len();
    let k = match xp.iter().rposition(|&v| v <= x) {
        None => 0,
        Some(k) => k.min(n - 2),
    };
    yp[k] + (x - xp[k]) * (yp[k + 1] - yp[k]) / (xp[k + 1] - xp[k])
}

impl VpSchedule {
    fn new(alphas_cumprod: &[f32]) -> Self {
        let n = alphas_cumprod.len();
        Self {
            t_array: (1..=n).map(|i| i as f64 / n as f64).collect(),
            log_alpha: alphas_cumprod.iter().map(|&a| 0.5 * f64::from(a).ln()).collect(),
        }
    }
    fn total_n(&self) -> usize {
        self.t_array.len()
    }
    fn log_alpha(&self, t: f64) -> f64 {
        interpolate(t, &self.t_array, &self.log_alpha)
    }
    fn alpha(&self, t: f64) -> f64 {
        self.log_alpha(t).exp()
    }
    fn std(&self, t: f64) -> f64 {
        (1.0 - (2.0 * self.log_alpha(t)).exp()).sqrt()
    }
    fn lambda(&self, t: f64) -> f64 {
        let la = self.log_alpha(t);
        la - 0.5 * (1.0 - (2.0 * la).exp()).ln()
    }
    fn inverse_lambda(&self, lambda: f64) -> f64 {
        // log α = -0.5·logaddexp(0, -2λ); t by interpolation over the reversed (increasing) log α.
        let log_alpha = -0.5 * (0f64.max(-2.0 * lambda) + (1.0 + (-(2.0 * lambda).abs()).exp()).ln());
        let xs: Vec<f64> = self.log_alpha.iter().rev().copied().collect();
        let ys: Vec<f64> = self.t_array.iter().rev().copied().collect();
        interpolate(log_alpha, &xs, &ys)
    }
}

/// Solves the small dense system a·x = b (Gaussian elimination with partial pivoting).
#[allow(clippy::needless_range_loop)] // textbook elimination reads clearer with indices
fn solve(mut a: Vec<Vec<f64>>, mut b: Vec<f64>) -> Result<Vec<f64>, SamplingError> {
    let n = b.len();
    for col in 0..n {
        let pivot = (col..n).max_by(|&i, &j| a[i][col].abs().total_cmp(&a[j][col].abs())).unwrap_or(col);
        if a[pivot][col].abs() < 1e-300 {
            return Err(SamplingError::Other("UniPC: singular coefficient matrix".into()));
        }
        a.swap(col, pivot);
        b.swap(col, pivot);
        for row in col + 1..n {
            let f = a[row][col] / a[col][col];
            for k in col..n {
                a[row][k] -= f * a[col][k];
            }
            b[row] -= f * b[col];
        }
    }
    let mut x = vec![0.0; n];
    for row in (0..n).rev() {
        let s: f64 = (row + 1..n).map(|k| a[row][k] * x[k]).sum();
        x[row] = (b[row] - s) / a[row][row];
    }
    Ok(x)
}

struct UniPc<'c, 'a> {
    ctx: &'c mut SamplerContext<'a>,
    ns: VpSchedule,
    bh2: bool,
}

impl UniPc<'_, '_> {
    /// Data prediction x0 = (x - σ_t·eps) / α_t, eps from the model at (t - 1/N)·1000.
    fn model_x0(&mut self, x: &Tensor, t: f64) -> Result<Tensor, SamplingError> {
        let t_input = (t - 1.0 / self.ns.total_n() as f64) * 1000.0;
        let eps = self.ctx.model.eps_at_continuous_timestep(x, t_input)?;
        Ok((lin2(x, 1.0, &eps, -self.ns.std(t))? / self.ns.alpha(t))?)
    }

    /// `multistep_uni_pc_bh_update` with predict_x0. Returns the new x and, when the corrector ran,
    /// the model value at t.
    fn update(
        &mut self,
        x: &Tensor,
        models: &[Tensor],
        times: &[f64],
        t: f64,
        order: usize,
        use_corrector: bool,
    ) -> Result<(Tensor, Option<Tensor>), SamplingError> {
        let ns = &self.ns;
        let (t_prev_0, model_prev_0) = (times[times.len() - 1], &models[models.len() - 1]);
        let (lambda_prev_0, lambda_t) = (ns.lambda(t_prev_0), ns.lambda(t));
        let (sigma_prev_0, sigma_t, alpha_t) = (ns.std(t_prev_0), ns.std(t), ns.alpha(t));
        let h = lambda_t - lambda_prev_0;
        let mut rks = Vec::with_capacity(order);
        let mut d1s = Vec::with_capacity(order);
        for i in 1..order {
            let rk = (ns.lambda(times[times.len() - 1 - i]) - lambda_prev_0) / h;
            rks.push(rk);
            d1s.push(((&models[models.len() - 1 - i] - model_prev_0)? / rk)?);
        }
        rks.push(1.0);
        let hh = -h;
        let h_phi_1 = hh.exp_m1();
        let mut h_phi_k = h_phi_1 / hh - 1.0;
        let b_h = if self.bh2 { hh.exp_m1() } else { hh };
        let mut factorial = 1.0;
        let mut r = Vec::with_capacity(order);
        let mut b = Vec::with_capacity(order);
        for i in 1..=order {
            r.push(rks.iter().map(|&rk| rk.powi(i as i32 - 1)).collect::<Vec<f64>>());
            b.push(h_phi_k * factorial / b_h);
            factorial *= (i + 1) as f64;
            h_phi_k = h_phi_k / hh - 1.0 / factorial;
        }
        let sub = |m: &Vec<Vec<f64>>, n: usize| m[..n].iter().map(|row| row[..n].to_vec()).collect::<Vec<_>>();
        let x_t_ = lin2(x, sigma_t / sigma_prev_0, model_prev_0, -alpha_t * h_phi_1)?;
        // Predictor.
        let mut x_t = x_t_.clone();
        if !d1s.is_empty() {
            let rhos_p = if order == 2 { vec![0.5] } else { solve(sub(&r, order - 1), b[..order - 1].to_vec())? };
            for (rho, d) in rhos_p.iter().zip(&d1s) {
                x_t = lin2(&x_t, 1.0, d, -alpha_t * b_h * rho)?;
            }
        }
        if !use_corrector {
            return Ok((x_t, None));
        }
        // Corrector.
        let rhos_c = if order == 1 { vec![0.5] } else { solve(r, b)? };
        let model_t = self.model_x0(&x_t, t)?;
        let d1_t = (&model_t - model_prev_0)?;
        let mut x_c = lin2(&x_t_, 1.0, &d1_t, -alpha_t * b_h * rhos_c[order - 1])?;
        for (rho, d) in rhos_c.iter().zip(&d1s) {
            x_c = lin2(&x_c, 1.0, d, -alpha_t * b_h * rho)?;
        }
        Ok((x_c, Some(model_t)))
    }
}

/// Time points of the solver (`get_time_steps`).
fn time_steps(ns: &VpSchedule, skip_type: UniPcSkipType, t_t: f64, t_0: f64, n: usize) -> Vec<f64> {
    match skip_type {
        UniPcSkipType::TimeUniform => linspace_f64(t_t, t_0, n + 1),
        UniPcSkipType::TimeQuadratic => {
            linspace_f64(t_t.sqrt(), t_0.sqrt(), n + 1).into_iter().map(|v| v * v).collect()
        }
        UniPcSkipType::LogSnr => {
            linspace_f64(ns.lambda(t_t), ns.lambda(t_0), n + 1).into_iter().map(|l| ns.inverse_lambda(l)).collect()
        }
    }
}

/// A1111 `unipc(model, x, timesteps, is_img2img)`: runs `len(timesteps)` UniPC steps from t = 1
/// (img2img: timesteps[-1]/1000 + 1/1000) down to t = 1/N.
pub fn unipc(
    ctx: &mut SamplerContext<'_>,
    mut x: Tensor,
    timesteps: &[usize],
    is_img2img: bool,
) -> Result<Tensor, SamplingError> {
    let settings = ctx.params.unipc;
    let bh2 = match settings.variant {
        UniPcVariant::Bh1 => false,
        UniPcVariant::Bh2 => true,
        UniPcVariant::VaryCoeff => {
            return Err(SamplingError::Other("UniPC variant \"vary_coeff\" is not supported (bh1, bh2)".into()));
        }
    };
    let (order, lower_order_final, skip_type) = (settings.order, settings.lower_order_final, settings.skip_type);
    let steps = timesteps.len();
    if order == 0 || steps < order {
        return Err(SamplingError::Other(format!("UniPC order {order} must be in 1..={steps} (steps)")));
    }
    let ns = VpSchedule::new(ctx.alphas_cumprod);
    let t_0 = 1.0 / ns.total_n() as f64;
    let t_t = match (is_img2img, timesteps.last()) {
        (true, Some(&last)) => last as f64 / 1000.0 + 1.0 / 1000.0,
        _ => 1.0,
    };
    let ts = time_steps(&ns, skip_type, t_t, t_0, steps);
    let mut solver = UniPc { ctx, ns, bh2 };
    let mut models = vec![solver.model_x0(&x, ts[0])?];
    let mut times = vec![ts[0]];
    let mut step_index = 0;
    for (init_order, &t) in ts.iter().enumerate().take(order).skip(1) {
        let (nx, model_x) = solver.update(&x, &models, &times, t, init_order, true)?;
        x = nx;
        let model_x = match model_x {
            Some(m) => m,
            None => solver.model_x0(&x, t)?,
        };
        solver.ctx.report(step_index, &x, &model_x, 0.0)?;
        step_index += 1;
        models.push(model_x);
        times.push(t);
    }
    for (step, &t) in ts.iter().enumerate().skip(order) {
        let step_order = if lower_order_final { order.min(steps + 1 - step) } else { order };
        let use_corrector = step != steps;
        let (nx, model_x) = solver.update(&x, &models, &times, t, step_order, use_corrector)?;
        x = nx;
        // A1111 reports after each update; the last step has no model value (reported as x).
        solver.ctx.report(step_index, &x, model_x.as_ref().unwrap_or(&x), 0.0)?;
        step_index += 1;
        let oldest = models.remove(0);
        times.remove(0);
        times.push(t);
        if step < steps {
            let m = match model_x {
                Some(m) => m,
                None => solver.model_x0(&x, t)?,
            };
            models.push(m);
        } else {
            // A1111 leaves the newest entry in place after the last step; with order 1 the list
            // held only that entry, which was just shifted out.
            let last = models.last().cloned().unwrap_or(oldest);
            models.push(last);
        }
    }
    Ok(x)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn solve_and_interpolate() {
        let x = solve(vec![vec![2.0, 1.0], vec![1.0, 3.0]], vec![3.0, 5.0]).unwrap();
        assert!((x[0] - 0.8).abs() < 1e-12 && (x[1] - 1.4).abs() < 1e-12);
        assert_eq!(interpolate(1.5, &[1.0, 2.0, 3.0], &[10.0, 20.0, 40.0]), 15.0);
        assert_eq!(interpolate(4.0, &[1.0, 2.0, 3.0], &[10.0, 20.0, 40.0]), 60.0);
    }

    #[test]
    fn lambda_round_trip() {
        let ns = VpSchedule::new(&super::super::test_support::sd1_alphas_cumprod());
        for t in [0.01, 0.3, 0.77, 0.999] {
            assert!((ns.inverse_lambda(ns.lambda(t)) - t).abs() < 1e-6, "{t}");
        }
    }
}
