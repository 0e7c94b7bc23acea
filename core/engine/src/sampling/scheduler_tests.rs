//! The 12 schedulers against values derived by hand from their definitions .

use super::test_support::sd1_alphas_cumprod;
use super::{DiscreteSchedule, Scheduler, SchedulerOptions, SchedulerSigmas};

fn model() -> DiscreteSchedule {
    DiscreteSchedule::from_alphas_cumprod(&sd1_alphas_cumprod()).unwrap()
}

#[test]
fn names_labels_and_lengths() {
    assert_eq!(Scheduler::ALL.len(), 12);
    let (m, o) = (model(), SchedulerOptions::default());
    for s in Scheduler::ALL {
        let v = s.sigmas(10, &m, &o);
        match s {
            // KL Optimal returns n+1 values ending at sigma_min.
            Scheduler::KlOptimal => assert!((v[10] - m.sigma_min()).abs() < 1e-9 && v.len() == 11),
            _ => assert_eq!((v.len(), v[10]), (11, 0.0), "{s:?}"),
        }
        // Every schedule is non-increasing.
        assert!(v.windows(2).all(|w| w[0] >= w[1]), "{s:?}: {v:?}");
    }
}

#[test]
fn closed_forms() {
    let (m, o) = (model(), SchedulerOptions::default());
    let (lo, hi) = (m.sigma_min(), m.sigma_max());
    // Karras n=3: ramp 0, 0.5, 1 -> midpoint ((hi^(1/7) + lo^(1/7)) / 2)^7.
    let k = Scheduler::Karras.sigmas(3, &m, &o);
    assert!((k[1] - ((hi.powf(1.0 / 7.0) + lo.powf(1.0 / 7.0)) / 2.0).powi(7)).abs() < 1e-9);
    // Exponential n=3: geometric mean in the middle; Polyexponential with rho 1 is the same schedule.
    let e = Scheduler::Exponential.sigmas(3, &m, &o);
    assert!((e[1] - (hi * lo).sqrt()).abs() < 1e-9);
    let p = Scheduler::Polyexponential.sigmas(3, &m, &o);
    assert!(e.iter().zip(&p).all(|(a, b)| (a - b).abs() < 1e-9));
    // KL Optimal n=2: tan of the mean arctangent.
    let kl = Scheduler::KlOptimal.sigmas(2, &m, &o);
    assert!((kl[1] - ((lo.atan() + hi.atan()) / 2.0).tan()).abs() < 1e-12);
    // Align Your Steps with n = 11 is the SD1.5 table itself; n = 21 keeps every table value at even indices.
    let ays = Scheduler::AlignYourSteps.sigmas(11, &m, &o);
    assert_eq!(ays[1], 6.475);
    let ays21 = Scheduler::AlignYourSteps.sigmas(21, &m, &o);
    assert!((ays21[2] - 6.475).abs() < 1e-9 && (ays21[1] - (14.615f64 * 6.475).sqrt()).abs() < 1e-9);
    // Simple n=4: table[-1], table[-251], table[-501], table[-751].
    let t = m.sigmas();
    let simple = Scheduler::Simple.sigmas(4, &m, &o);
    assert_eq!(simple[..4], [999, 749, 499, 249].map(|i| f64::from(t[i])));
    // DDIM n=4: table[1], [251], [501], [751] reversed.
    // DDIM n=7: stride 1000 // 7 = 142 gives 8 values (1, 143, ..., 995): its count can exceed n.
    assert_eq!(Scheduler::Ddim.sigmas(7, &m, &o).len(), 9);
    let ddim = Scheduler::Ddim.sigmas(4, &m, &o);
    assert_eq!(ddim[..4], [751, 501, 251, 1].map(|i| f64::from(t[i])));
    // Normal n=3 runs over t = 999, 499.5, 0; Uniform matches it for this model (range = table ends).
    let normal = Scheduler::Normal.sigmas(3, &m, &o);
    let uniform = Scheduler::Uniform.sigmas(3, &m, &o);
    assert!((normal[1] - m.t_to_sigma(499.5)).abs() < 1e-5 && (uniform[1] - normal[1]).abs() < 1e-5);
    // SGM Uniform n=2: t = 999, 499.5 (n+1 points, last dropped).
    let sgm = Scheduler::SgmUniform.sigmas(2, &m, &o);
    assert!((sgm[1] - m.t_to_sigma(499.5)).abs() < 1e-5);
    // Beta(0.6, 0.6) is symmetric: the middle of n=3 is sigma_min + 0.5 (sigma_max - sigma_min).
    let beta = Scheduler::Beta.sigmas(3, &m, &o);
    assert!(
        (beta[0] - hi).abs() < 1e-12 && (beta[1] - (lo + 0.5 * (hi - lo))).abs() < 1e-9 && (beta[2] - lo).abs() < 1e-12
    );
    // Options: rho override for Karras, sigma range overrides.
    let o2 = SchedulerOptions { rho: 3.0, sigma_max: 10.0, ..Default::default() };
    let k2 = Scheduler::Karras.sigmas(3, &m, &o2);
    assert!(
        (k2[0] - 10.0).abs() < 1e-9
            && (k2[1] - ((10f64.powf(1.0 / 3.0) + lo.powf(1.0 / 3.0)) / 2.0).powi(3)).abs() < 1e-9
    );
}

#[test]
fn sigma_t_round_trip() {
    let m = model();
    for t in [0.0, 0.25, 10.5, 500.0, 998.75, 999.0] {
        let back = m.sigma_to_t(m.t_to_sigma(t));
        assert!((back - t).abs() < 2e-3, "{t} -> {back}");
    }
    // Clamped outside the table.
    assert_eq!(m.sigma_to_t(100.0), 999.0);
    assert_eq!(m.sigma_to_t(1e-4), 0.0);
}
