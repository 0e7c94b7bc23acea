//! Sampler parameters (eta, s_churn, s_tmin, s_tmax, s_noise) and A1111's rules for filling them
//! from the request and the settings (docs/parity.md).

use super::SamplerKind;
pub use sdapi_protocol::choices::{ExtraParamOptions, RequestExtraParams, UniPcSettings};

/// Values the sampler functions receive.
#[derive(Debug, Clone, PartialEq)]
pub struct SamplerParams {
    pub eta: f64,
    pub s_churn: f64,
    pub s_tmin: f64,
    pub s_tmax: f64,
    pub s_noise: f64,
    /// UniPC's options (variant, skip type, order, lower_order_final).
    pub unipc: UniPcSettings,
}

impl Default for SamplerParams {
    /// k-diffusion defaults: eta 1, no churn, full churn window, s_noise 1; A1111's UniPC options.
    fn default() -> Self {
        Self {
            eta: 1.0,
            s_churn: 0.0,
            s_tmin: 0.0,
            s_tmax: f64::INFINITY,
            s_noise: 1.0,
            unipc: UniPcSettings::default(),
        }
    }
}

/// A1111's resolution of the sampler parameters and the infotext entries it adds
/// (`Eta`, `Eta DDIM`, `Sigma churn`, `Sigma tmin`, `Sigma tmax`, `Sigma noise`).
///
/// The quirk reproduced here: for a parameter the sampler takes, an option value that differs from
/// the sampler default (0, 0, inf, 1) wins over the request value and is written to the infotext.
pub fn resolve_sampler_params(
    kind: SamplerKind,
    request: &RequestExtraParams,
    options: &ExtraParamOptions,
) -> (SamplerParams, Vec<(&'static str, f64)>) {
    let mut params = SamplerParams::default();
    let mut infotext = Vec::new();
    let timesteps = kind.flags().timesteps;
    // Processing defaults: `x or opts.x` for churn/tmin (so 0 falls through), `is not None` for the rest.
    let or_opt = |v: Option<f64>, o: f64| v.filter(|&v| v != 0.0).unwrap_or(o);
    let (p_churn, p_tmin) = (or_opt(request.s_churn, options.s_churn), or_opt(request.s_tmin, options.s_tmin));
    let p_tmax = match request.s_tmax.unwrap_or(options.s_tmax) {
        0.0 => f64::INFINITY,
        v => v,
    };
    let p_noise = request.s_noise.unwrap_or(options.s_noise);

    let (eta_default, eta_option, eta_label) =
        if timesteps { (0.0, options.eta_ddim, "Eta DDIM") } else { (1.0, options.eta_ancestral, "Eta") };
    let eta = request.eta.unwrap_or(eta_option);
    params.eta = if kind.takes_eta() { eta } else { eta_default };
    if kind.takes_eta() && eta != eta_default {
        infotext.push((eta_label, eta));
    }

    let extra = kind.extra_params();
    let opt_tmax = if options.s_tmax == 0.0 { f64::INFINITY } else { options.s_tmax };
    let mut pick = |name: &'static str, label: &'static str, request_value: f64, option_value: f64, default: f64| {
        if !extra.contains(&name) {
            return default;
        }
        if option_value != default {
            infotext.push((label, option_value));
            option_value
        } else {
            request_value
        }
    };
    params.s_churn = pick("s_churn", "Sigma churn", p_churn, options.s_churn, 0.0);
    params.s_tmin = pick("s_tmin", "Sigma tmin", p_tmin, options.s_tmin, 0.0);
    params.s_tmax = pick("s_tmax", "Sigma tmax", p_tmax, opt_tmax, f64::INFINITY);
    params.s_noise = pick("s_noise", "Sigma noise", p_noise, options.s_noise, 1.0);
    (params, infotext)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn option_overrides_request_when_not_default() {
        let request = RequestExtraParams { s_churn: Some(0.5), s_noise: Some(0.9), ..Default::default() };
        let (p, info) = resolve_sampler_params(SamplerKind::Euler, &request, &ExtraParamOptions::default());
        assert_eq!((p.s_churn, p.s_noise, p.s_tmax), (0.5, 0.9, f64::INFINITY));
        assert!(info.is_empty());
        let options = ExtraParamOptions { s_churn: 0.2, ..Default::default() };
        let (p, info) = resolve_sampler_params(SamplerKind::Euler, &request, &options);
        assert_eq!(p.s_churn, 0.2);
        assert_eq!(info, vec![("Sigma churn", 0.2)]);
        // LMS takes none of them: defaults, no infotext.
        let (p, info) = resolve_sampler_params(SamplerKind::Lms, &request, &options);
        assert_eq!((p.s_churn, p.s_noise), (0.0, 1.0));
        assert!(info.is_empty());
    }

    #[test]
    fn eta_defaults_per_family() {
        let none = RequestExtraParams::default();
        let (p, info) = resolve_sampler_params(SamplerKind::EulerAncestral, &none, &ExtraParamOptions::default());
        assert_eq!(p.eta, 1.0);
        assert!(info.is_empty());
        let (p, _) = resolve_sampler_params(SamplerKind::Ddim, &none, &ExtraParamOptions::default());
        assert_eq!(p.eta, 0.0);
        let (p, info) = resolve_sampler_params(
            SamplerKind::Ddim,
            &RequestExtraParams { eta: Some(0.3), ..none.clone() },
            &ExtraParamOptions::default(),
        );
        assert_eq!((p.eta, info), (0.3, vec![("Eta DDIM", 0.3)]));
    }
}
