//! Samplers on the analytic model (data ~ N(0, s²), exact denoiser x·s²/(s²+σ²)): deterministic
//! samplers must reach the exact ODE answer, stochastic ones the right spread, and samplers no
//! fixture covers are checked step by step against scalar re-derivations of the k-diffusion / A1111
//! formulas (2–3 steps, written out independently below).

use candle_core::{Device, Tensor};

use super::test_support::{AnalyticModel, CountingNoise, scalar, sd1_alphas_cumprod};
use super::{
    DiscreteSchedule, Model, SampleOutput, SamplerContext, SamplerKind, SamplerParams, SamplingError, SamplingPlan,
    Scheduler, SchedulerOptions, StepInfo, sample,
};

fn plan(kind: SamplerKind, steps: usize) -> SamplingPlan {
    SamplingPlan::txt2img(kind, Scheduler::Automatic, steps, &sd1_alphas_cumprod(), &SchedulerOptions::default(), false)
        .unwrap()
}

fn run(kind: SamplerKind, plan: &SamplingPlan, params: SamplerParams, x: Tensor) -> (SampleOutput, usize, usize) {
    let ac = sd1_alphas_cumprod();
    let mut model = AnalyticModel::new(1.0, ac.clone());
    let mut noise = CountingNoise::new();
    assert_eq!(plan.kind, kind);
    let out = {
        let mut ctx = SamplerContext::new(&mut model, &mut noise, params, &ac);
        sample(&mut ctx, plan, x).unwrap()
    };
    (out, model.calls, noise.draws)
}

fn eta0() -> SamplerParams {
    SamplerParams { eta: 0.0, ..Default::default() }
}

fn one(v: f64) -> Tensor {
    Tensor::from_vec(vec![v as f32], (1, 1, 1, 1), &Device::Cpu).unwrap()
}

/// Exact ODE transport of the analytic model (s = 1) from sigma a to sigma b.
fn ode_factor(a: f64, b: f64) -> f64 {
    ((1.0 + b * b) / (1.0 + a * a)).sqrt()
}

fn f(sigma: f64) -> f64 {
    1.0 / (1.0 + sigma * sigma)
}

#[test]
fn deterministic_k_samplers_converge_to_exact_answer() {
    // Tolerances: first-order methods at 100 steps ~1%, higher-order ones well below; the final
    // step to sigma 0 is a plain Euler/denoise step for all of them (error ~ sigma_min² / 2).
    let cases: [(SamplerKind, usize, f64, SamplerParams); 10] = [
        (SamplerKind::Euler, 100, 0.02, SamplerParams::default()),
        (SamplerKind::Heun, 100, 0.002, SamplerParams::default()),
        (SamplerKind::Lms, 100, 0.002, SamplerParams::default()),
        (SamplerKind::Dpm2, 100, 0.002, SamplerParams::default()),
        (SamplerKind::DpmPp2M, 100, 0.002, SamplerParams::default()),
        (SamplerKind::EulerAncestral, 100, 0.02, eta0()),
        (SamplerKind::DpmPp2SAncestral, 100, 0.002, eta0()),
        (SamplerKind::DpmPp2MSde, 100, 0.002, eta0()),
        (SamplerKind::DpmPp2MSdeHeun, 100, 0.002, eta0()),
        (SamplerKind::DpmPp3MSde, 100, 0.002, eta0()),
    ];
    for (kind, steps, tol, params) in cases {
        let p = plan(kind, steps);
        let s0 = p.sigmas[0];
        let (out, _, _) = run(kind, &p, params, one(s0));
        let want = s0 * ode_factor(s0, 0.0);
        let got = scalar(&out.latent);
        eprintln!("{}: {got} vs {want} (rel {:.2e})", kind.name(), (got - want).abs() / want);
        assert!((got - want).abs() / want < tol, "{}: {got} vs {want}", kind.name());
    }
}

#[test]
fn dpm_solver_samplers_converge_to_sigma_min() {
    for (kind, steps, tol) in [(SamplerKind::DpmFast, 30, 0.003), (SamplerKind::DpmAdaptive, 1, 0.05)] {
        let p = plan(kind, steps);
        let (out, _, _) = run(kind, &p, eta0(), one(p.dpm_sigma_max));
        let want = p.dpm_sigma_max * ode_factor(p.dpm_sigma_max, p.dpm_sigma_min);
        let got = scalar(&out.latent);
        eprintln!("{}: {got} vs {want}", kind.name());
        assert!((got - want).abs() / want < tol, "{}: {got} vs {want}", kind.name());
    }
}

#[test]
fn timestep_samplers_converge() {
    let ac = sd1_alphas_cumprod();
    let sigma_at = |t: usize| ((1.0 - f64::from(ac[t])) / f64::from(ac[t])).sqrt();
    for (kind, steps, tol) in [
        (SamplerKind::Ddim, 100, 0.02),
        (SamplerKind::DdimCfgPp, 100, 0.02),
        (SamplerKind::Plms, 30, 0.005),
        (SamplerKind::UniPc, 20, 0.02),
        (SamplerKind::UniPc, 100, 0.003),
    ] {
        let p = plan(kind, steps);
        let (t_first, t_last) = (p.timesteps[0], *p.timesteps.last().unwrap());
        let (out, _, _) = run(kind, &p, eta0(), one(1.0));
        // x = sqrt(a) * (x0 + sigma * eps): transport x / sqrt(a) along the ODE.
        let end_t = if kind == SamplerKind::UniPc { 0 } else { t_first };
        let a_t = f64::from(ac[t_last]);
        let a_e = f64::from(ac[end_t]);
        let want = a_e.sqrt() * (1.0 / a_t.sqrt()) * ode_factor(sigma_at(t_last), sigma_at(end_t));
        let got = scalar(&out.latent);
        eprintln!("{}: {got} vs {want}", kind.name());
        assert!((got - want).abs() / want < tol, "{}: {got} vs {want}", kind.name());
    }
}

#[test]
fn stochastic_samplers_reach_data_spread() {
    // 4096 independent elements starting from noise * sigma_max: the final std must be ≈ s = 1.
    let kinds = [
        SamplerKind::EulerAncestral,
        SamplerKind::Dpm2Ancestral,
        SamplerKind::DpmPp2SAncestral,
        SamplerKind::DpmPpSde,
        SamplerKind::DpmPp2MSde,
        SamplerKind::DpmPp3MSde,
        SamplerKind::DpmFast,
        SamplerKind::Ddim,
        SamplerKind::Restart, // its restart segments re-noise the latent
    ];
    // (LCM is left out: its denoiser queries eps at the nearest of 50 timesteps while keeping the
    // exact sigma, which is only consistent for a consistency model; see lcm_two_steps_by_hand.)
    let start =
        Tensor::from_vec(crate::rng::PhiloxGenerator::new(99).randn(4096), (1, 4, 32, 32), &Device::Cpu).unwrap();
    for kind in kinds {
        let p = plan(kind, 100);
        let params = if kind == SamplerKind::Ddim {
            SamplerParams { eta: 1.0, ..Default::default() }
        } else {
            SamplerParams::default()
        };
        let x = if kind.flags().timesteps { start.clone() } else { (&start * p.sigmas[0]).unwrap() };
        let (out, _, draws) = run(kind, &p, params, x);
        let std = f64::from(out.latent.sqr().unwrap().mean_all().unwrap().to_scalar::<f32>().unwrap()).sqrt();
        eprintln!("{}: std {std:.4}, {draws} draws", kind.name());
        assert!((std - 1.0).abs() < 0.1, "{}: std {std}", kind.name());
    }
}

/// LCM, 2 steps on the SD1 table. LCM's schedule is sigma(t=999), sigma(t=19), 0; each step is
/// x <- c_out·D(x) + c_skip·x with st = 10·t, c_skip = 0.25/(st²+0.25), c_out = st/sqrt(st²+0.25),
/// then + sigma_next·z. The analytic eps at the table's own timestep gives D(x) = f(σ)·x exactly.
#[test]
fn lcm_two_steps_by_hand() {
    let ac = sd1_alphas_cumprod();
    let p = plan(SamplerKind::Lcm, 2);
    let sig = |t: usize| f64::from(((1.0 - ac[t]) / ac[t]).sqrt());
    assert!((p.sigmas[0] - sig(999)).abs() < 1e-5 && (p.sigmas[1] - sig(19)).abs() < 1e-6 && p.sigmas[2] == 0.0);
    let (out, calls, draws) = run(SamplerKind::Lcm, &p, SamplerParams::default(), one(1.0));
    let scal = |t: f64| {
        let st = 10.0 * t;
        (st / (st * st + 0.25).sqrt(), 0.25 / (st * st + 0.25))
    };
    let z0 = -0.9246624f64; // Philox seed 0, first draw, element 0 (docs/a1111-behaviour.md §4.4 test vector).
    let (co, cs) = scal(999.0);
    let x1 = co * f(p.sigmas[0]) + cs + p.sigmas[1] * z0;
    let (co, cs) = scal(19.0);
    let x2 = (co * f(p.sigmas[1]) + cs) * x1;
    assert_eq!((calls, draws), (2, 1));
    assert!((scalar(&out.latent) - x2).abs() < 1e-5 * x2.abs().max(1.0), "{} vs {x2}", scalar(&out.latent));
}

/// DPM fast with n = 3 evaluations (eta 0): m = 2 intervals of ts = linspace(t_max, t_min, 3),
/// orders [2, 1]. eps(x, t) = e(t)·x with e = (1 - f(σ))/σ, σ = exp(-t).
#[test]
fn dpm_fast_three_evals_by_hand() {
    let p = plan(SamplerKind::DpmFast, 3);
    let (t0, t2) = (-p.dpm_sigma_max.ln(), -p.dpm_sigma_min.ln());
    let t1 = t0 + (t2 - t0) / 2.0;
    let sg = |t: f64| (-t).exp();
    let e = |t: f64| (1.0 - f(sg(t))) / sg(t);
    let x = 3.0;
    // DPM-Solver-2 (r1 = 1/2) from t0 to t1.
    let h = t1 - t0;
    let eps0 = e(t0) * x;
    let s1 = t0 + 0.5 * h;
    let u1 = x - sg(s1) * (0.5 * h).exp_m1() * eps0;
    let eps_r1 = e(s1) * u1;
    let x1 = x - sg(t1) * h.exp_m1() * eps0 - sg(t1) * h.exp_m1() * (eps_r1 - eps0);
    // DPM-Solver-1 from t1 to t2.
    let h2 = t2 - t1;
    let x2 = x1 - sg(t2) * h2.exp_m1() * e(t1) * x1;
    let (out, calls, draws) = run(SamplerKind::DpmFast, &p, eta0(), one(x));
    assert_eq!((calls, draws), (3, 2));
    assert!((scalar(&out.latent) - x2).abs() < 1e-5 * x2.abs(), "{} vs {x2}", scalar(&out.latent));
}

/// PLMS with 3 steps: timesteps [1, 334, 667, 999]. eps(x, t) = g(t)·x with
/// g = (1 - f(σ_t))/(σ_t sqrt(a_t)) (x/sqrt(a) is the k-diffusion latent). Step 1 is pseudo improved
/// Euler (two evaluations), then Adams–Bashforth 2 and 3.
#[test]
fn plms_three_steps_by_hand() {
    let ac = sd1_alphas_cumprod();
    let p = plan(SamplerKind::Plms, 3);
    assert_eq!(p.timesteps, vec![1, 334, 667, 999]);
    let a = |t: usize| f64::from(ac[t]);
    let g = |t: usize| {
        let s = ((1.0 - a(t)) / a(t)).sqrt();
        (1.0 - f(s)) / (s * a(t).sqrt())
    };
    let step = |x: f64, e: f64, t: usize, tp: usize| {
        let x0 = (x - (1.0 - a(t)).sqrt() * e) / a(t).sqrt();
        a(tp).sqrt() * x0 + (1.0 - a(tp)).sqrt() * e
    };
    let x = 1.0;
    let e1 = g(999) * x;
    let e_next = g(667) * step(x, e1, 999, 667);
    let x = step(x, (e1 + e_next) / 2.0, 999, 667);
    let e2 = g(667) * x;
    let x = step(x, (3.0 * e2 - e1) / 2.0, 667, 334);
    let e3 = g(334) * x;
    let want = step(x, (23.0 * e3 - 16.0 * e2 + 5.0 * e1) / 12.0, 334, 1);
    let (out, calls, draws) = run(SamplerKind::Plms, &p, SamplerParams::default(), one(1.0));
    assert_eq!((calls, draws), (4, 0));
    assert!((scalar(&out.latent) - want).abs() < 1e-5, "{} vs {want}", scalar(&out.latent));
}

/// A model whose unconditional eps differs from the guided one, for DDIM CFG++.
struct SplitEps {
    ac: Vec<f32>,
    multiplier_seen: f64,
}

impl Model for SplitEps {
    fn denoised(&mut self, _x: &Tensor, _s: f64) -> Result<Tensor, SamplingError> {
        unreachable!()
    }
    fn eps_at_timestep(&mut self, _x: &Tensor, _t: usize) -> Result<Tensor, SamplingError> {
        unreachable!()
    }
    fn eps_and_uncond_at_timestep(&mut self, x: &Tensor, t: usize, m: f64) -> Result<(Tensor, Tensor), SamplingError> {
        self.multiplier_seen = m;
        let k = 0.1 + f64::from(self.ac[t]);
        Ok(((x * k)?, (x * (0.5 * k))?))
    }
}

/// DDIM CFG++, 3 steps (timesteps [1, 334, 667, 999]), eta 0: pred_x0 uses the guided eps k·x, the
/// direction term the unconditional eps k/2·x, with k = 0.1 + a_t (the test model above).
#[test]
fn ddim_cfgpp_three_steps_by_hand() {
    let ac = sd1_alphas_cumprod();
    let p = plan(SamplerKind::DdimCfgPp, 3);
    let a = |t: usize| f64::from(ac[t]);
    let mut want = 1.0;
    for (t, tp) in [(999, 667), (667, 334), (334, 1)] {
        let k = 0.1 + a(t);
        let x0 = (want - (1.0 - a(t)).sqrt() * k * want) / a(t).sqrt();
        want = a(tp).sqrt() * x0 + (1.0 - a(tp)).sqrt() * 0.5 * k * want;
    }
    let mut model = SplitEps { ac: ac.clone(), multiplier_seen: 0.0 };
    let mut noise = CountingNoise::new();
    let mut ctx = SamplerContext::new(&mut model, &mut noise, eta0(), &ac);
    let out = sample(&mut ctx, &p, one(1.0)).unwrap();
    assert!((scalar(&out.latent) - want).abs() < 1e-5, "{} vs {want}", scalar(&out.latent));
    assert_eq!(noise.draws, 3);
    assert_eq!(model.multiplier_seen, 1.0 / 12.5);
}

/// DPM++ 3M SDE (eta 0, exponential schedule with the penultimate sigma discarded) and
/// DPM++ 2M SDE Heun (eta 0), 3 steps, against scalar transcriptions of k-diffusion's updates
/// with D(x, σ) = f(σ)·x.
#[test]
fn multistep_sde_samplers_three_steps_by_hand() {
    // 3M SDE: x <- e^{-h} x + (1 - e^{-h}) D, plus phi_2/phi_3 corrections from earlier D's.
    let p = plan(SamplerKind::DpmPp3MSde, 3);
    let s = p.sigmas.clone();
    assert_eq!(s.len(), 4);
    let mut x = s[0];
    let mut hist: Vec<(f64, f64)> = vec![]; // (denoised, h), newest last
    for i in 0..3 {
        let d = f(s[i]) * x;
        if s[i + 1] == 0.0 {
            x = d;
            break;
        }
        let h = s[i].ln() - s[i + 1].ln();
        let mut nx = (-h).exp() * x + (1.0 - (-h).exp()) * d;
        let phi2 = (-h).exp_m1() / h + 1.0;
        match hist.len() {
            0 => {}
            1 => nx += phi2 * (d - hist[0].0) / (hist[0].1 / h),
            _ => {
                let (d1, h1) = hist[hist.len() - 1];
                let (d2, h2) = hist[hist.len() - 2];
                let (r0, r1) = (h1 / h, h2 / h);
                let (d10, d11) = ((d - d1) / r0, (d1 - d2) / r1);
                let phi3 = phi2 / h - 0.5;
                nx += phi2 * (d10 + (d10 - d11) * r0 / (r0 + r1)) - phi3 * (d10 - d11) / (r0 + r1);
            }
        }
        x = nx;
        hist.push((d, h));
    }
    let (out, _, draws) = run(SamplerKind::DpmPp3MSde, &p, eta0(), one(s[0]));
    assert_eq!(draws, 0);
    assert!((scalar(&out.latent) - x).abs() < 1e-5 * x.abs(), "3M: {} vs {x}", scalar(&out.latent));

    // 2M SDE Heun, eta 0: x <- (σ'/σ) x + (1 - e^{-h}) D + ((1 - e^{-h})/(-h) ... ) Heun correction.
    let p = plan(SamplerKind::DpmPp2MSdeHeun, 3);
    let s = p.sigmas.clone();
    let mut x = s[0];
    let mut old: Option<(f64, f64)> = None;
    for i in 0..3 {
        let d = f(s[i]) * x;
        if s[i + 1] == 0.0 {
            x = d;
            break;
        }
        let h = s[i].ln() - s[i + 1].ln();
        x = s[i + 1] / s[i] * x + (-(-h).exp_m1()) * d;
        if let Some((od, oh)) = old {
            let r = oh / h;
            x += (-(-h).exp_m1() / (-h) + 1.0) * (1.0 / r) * (d - od);
        }
        old = Some((d, h));
    }
    let (out, _, _) = run(SamplerKind::DpmPp2MSdeHeun, &p, eta0(), one(s[0]));
    assert!((scalar(&out.latent) - x).abs() < 1e-5 * x.abs(), "2M SDE Heun: {} vs {x}", scalar(&out.latent));
}

/// Restart below 20 steps has no restart segments: it is Heun on its (Karras) schedule. With 20
/// steps it runs a Karras schedule of 11 steps plus one restart segment of 9 steps (20 pairs).
#[test]
fn restart_by_hand() {
    let p = plan(SamplerKind::Restart, 2);
    let s = p.sigmas.clone();
    // Heun from s0 to s1, then Euler to 0 (which lands on D = f(s1)·x).
    let x0 = s[0];
    let d = (x0 - f(s[0]) * x0) / s[0];
    let x2 = x0 + d * (s[1] - s[0]);
    let d2 = (x2 - f(s[1]) * x2) / s[1];
    let x1 = x0 + (d + d2) / 2.0 * (s[1] - s[0]);
    let want = x1 * f(s[1]);
    let (out, calls, draws) = run(SamplerKind::Restart, &p, SamplerParams::default(), one(x0));
    assert_eq!((calls, draws), (3, 0));
    assert!((scalar(&out.latent) - want).abs() < 1e-5 * want.abs(), "{} vs {want}", scalar(&out.latent));

    let p20 = plan(SamplerKind::Restart, 20);
    let list = super::restart::restart_step_list(&p20.sigmas);
    assert_eq!(list.len(), 11 + 9);
    let jumps = list.windows(2).filter(|w| w[1].0 > w[0].1).count();
    assert_eq!(jumps, 1);
    let (_, _, draws) = run(SamplerKind::Restart, &p20, SamplerParams::default(), one(p20.sigmas[0]));
    assert_eq!(draws, 1);
}

/// UniPC's first step (order 1, bh1) from t = 1 to the next time-uniform point, followed by the
/// model evaluation at the new point, equals DDIM's update for the data-prediction model:
/// x' = (σ'/σ)·x_k-form ... checked through convergence above; here the step count and calls.
#[test]
fn unipc_calls_and_progress() {
    let p = plan(SamplerKind::UniPc, 5);
    let mut steps_seen = vec![];
    let ac = sd1_alphas_cumprod();
    let mut model = AnalyticModel::new(1.0, ac.clone());
    let mut noise = CountingNoise::new();
    let mut cb = |info: &StepInfo<'_>| {
        steps_seen.push((info.step, info.total_steps));
        Ok(())
    };
    let mut ctx = SamplerContext::new(&mut model, &mut noise, SamplerParams::default(), &ac).with_callback(&mut cb);
    sample(&mut ctx, &p, one(1.0)).unwrap();
    // 5 steps -> timesteps [1, 201, 401, 601, 801]; A1111 runs UniPC with steps = len(timesteps) = 5:
    // one initial evaluation plus one corrector evaluation per step except the last (5 calls), and
    // after_update reports every step once.
    assert_eq!(p.timesteps.len(), 5);
    assert_eq!(model.calls, 5);
    assert_eq!(steps_seen, vec![(0, 5), (1, 5), (2, 5), (3, 5), (4, 5)]);
}

#[test]
fn interrupt_returns_last_denoised() {
    let ac = sd1_alphas_cumprod();
    let p = plan(SamplerKind::Euler, 10);
    let mut model = AnalyticModel::new(1.0, ac.clone());
    let mut noise = CountingNoise::new();
    let mut cb = |info: &StepInfo<'_>| {
        if info.step == 3 { Err(SamplingError::Interrupted) } else { Ok(()) }
    };
    let mut ctx = SamplerContext::new(&mut model, &mut noise, SamplerParams::default(), &ac).with_callback(&mut cb);
    let out = sample(&mut ctx, &p, one(p.sigmas[0])).unwrap();
    assert!(out.interrupted);
    // The returned latent is step 3's denoised prediction f(σ3)·x3, not x3 itself.
    let mut x = p.sigmas[0];
    for i in 0..3 {
        x += (x - f(p.sigmas[i]) * x) / p.sigmas[i] * (p.sigmas[i + 1] - p.sigmas[i]);
    }
    let want = f(p.sigmas[3]) * x;
    assert!((scalar(&out.latent) - want).abs() < 1e-5 * want, "{} vs {want}", scalar(&out.latent));
    assert_eq!(model.calls, 4);
    let _ = DiscreteSchedule::lcm(&ac).unwrap();
}

/// `/sdapi/v1/samplers` and `/sdapi/v1/schedulers` list exactly what the engine runs: every listed
/// sampler name parses and samples 3 steps to a finite latent with every listed scheduler.
#[test]
fn every_listed_sampler_and_scheduler_runs() {
    use sdapi_protocol::api::items::{sampler_items, scheduler_items};
    let samplers = sampler_items();
    let schedulers = scheduler_items();
    assert_eq!((samplers.len(), schedulers.len()), (SamplerKind::ALL.len(), Scheduler::ALL.len()));
    for item in &samplers {
        let kind =
            SamplerKind::find(&item.name).unwrap_or_else(|| panic!("listed sampler {:?} does not parse", item.name));
        for listed in &schedulers {
            let scheduler = Scheduler::find(&listed.name).expect("listed scheduler parses");
            let plan =
                SamplingPlan::txt2img(kind, scheduler, 3, &sd1_alphas_cumprod(), &SchedulerOptions::default(), false)
                    .unwrap_or_else(|e| panic!("{} / {}: {e}", item.name, listed.label));
            let (out, _, _) = run(kind, &plan, SamplerParams::default(), one(1.0));
            let v = scalar(&out.latent);
            assert!(v.is_finite() && !out.interrupted, "{} / {}: {v}", item.name, listed.label);
        }
    }
}

/// The UniPC options reach the solver: each skip type spaces the time points differently, so the
/// result changes; bh2 differs from bh1; order 1 differs from order 3.
#[test]
fn unipc_options_change_the_result() {
    use sdapi_protocol::choices::{UniPcSettings, UniPcSkipType, UniPcVariant};
    let run_with = |unipc: UniPcSettings| {
        let (out, _, _) =
            run(SamplerKind::UniPc, &plan(SamplerKind::UniPc, 5), SamplerParams { unipc, ..eta0() }, one(1.0));
        scalar(&out.latent)
    };
    let base = run_with(UniPcSettings::default());
    for changed in [
        UniPcSettings { skip_type: UniPcSkipType::TimeQuadratic, ..Default::default() },
        UniPcSettings { skip_type: UniPcSkipType::LogSnr, ..Default::default() },
        UniPcSettings { variant: UniPcVariant::Bh2, ..Default::default() },
        UniPcSettings { order: 1, ..Default::default() },
    ] {
        let v = run_with(changed);
        assert!(v.is_finite() && (v - base).abs() > 1e-9, "{changed:?}: {v} vs {base}");
    }
    let vary =
        SamplerParams { unipc: UniPcSettings { variant: UniPcVariant::VaryCoeff, ..Default::default() }, ..eta0() };
    let ac = sd1_alphas_cumprod();
    let mut model = AnalyticModel::new(1.0, ac.clone());
    let mut noise = CountingNoise::new();
    let mut ctx = SamplerContext::new(&mut model, &mut noise, vary, &ac);
    assert!(sample(&mut ctx, &plan(SamplerKind::UniPc, 5), one(1.0)).is_err(), "vary_coeff is refused, not ignored");
}
