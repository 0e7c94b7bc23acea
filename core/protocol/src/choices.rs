//! Every named choice a request or an option can make — sampler, scheduler, random source,
//! emphasis — as enums with A1111 v1.10.1's names. Each enum is the one table of its concept: the
//! listing routes, the sampler resolution, the infotext writer and the engine all read it, and
//! names are parsed into it once, at the API edge.

/// One of A1111's 20 samplers, in `/sdapi/v1/samplers` order (`all_samplers`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SamplerKind {
    DpmPp2M,
    DpmPpSde,
    DpmPp2MSde,
    DpmPp2MSdeHeun,
    DpmPp2SAncestral,
    DpmPp3MSde,
    EulerAncestral,
    Euler,
    Lms,
    Heun,
    Dpm2,
    Dpm2Ancestral,
    DpmFast,
    DpmAdaptive,
    Restart,
    Ddim,
    DdimCfgPp,
    Plms,
    UniPc,
    Lcm,
}

/// A sampler's `SamplerData.options` (and whether it runs on timesteps).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct SamplerFlags {
    /// Scheduler used when the request says "Automatic" (`None`: the model's uniform schedule).
    pub default_scheduler: Option<Scheduler>,
    /// Two model evaluations per step: doubles `total_steps` for prompt schedules / the CFG counter.
    pub second_order: bool,
    /// Uses `eta_noise_seed_delta` (the infotext shows ENSD only for these).
    pub uses_ensd: bool,
    /// Step noise from a Brownian tree seeded with the batch seeds.
    pub brownian_noise: bool,
    /// Generate steps+1 sigmas and drop the penultimate one.
    pub discard_next_to_last_sigma: bool,
    /// `solver_type` option (DPM++ 2M SDE Heun: "heun").
    pub solver_type: Option<&'static str>,
    /// Driven by integer timesteps (DDIM, DDIM CFG++, PLMS, UniPC) instead of sigmas.
    pub timesteps: bool,
}

impl SamplerKind {
    pub const ALL: [SamplerKind; 20] = [
        Self::DpmPp2M,
        Self::DpmPpSde,
        Self::DpmPp2MSde,
        Self::DpmPp2MSdeHeun,
        Self::DpmPp2SAncestral,
        Self::DpmPp3MSde,
        Self::EulerAncestral,
        Self::Euler,
        Self::Lms,
        Self::Heun,
        Self::Dpm2,
        Self::Dpm2Ancestral,
        Self::DpmFast,
        Self::DpmAdaptive,
        Self::Restart,
        Self::Ddim,
        Self::DdimCfgPp,
        Self::Plms,
        Self::UniPc,
        Self::Lcm,
    ];

    /// The sampler A1111 falls back to for an unknown name (the first one).
    pub const DEFAULT: SamplerKind = SamplerKind::DpmPp2M;

    /// Display name (`sampler_name` in requests and infotexts).
    pub fn name(self) -> &'static str {
        match self {
            Self::DpmPp2M => "DPM++ 2M",
            Self::DpmPpSde => "DPM++ SDE",
            Self::DpmPp2MSde => "DPM++ 2M SDE",
            Self::DpmPp2MSdeHeun => "DPM++ 2M SDE Heun",
            Self::DpmPp2SAncestral => "DPM++ 2S a",
            Self::DpmPp3MSde => "DPM++ 3M SDE",
            Self::EulerAncestral => "Euler a",
            Self::Euler => "Euler",
            Self::Lms => "LMS",
            Self::Heun => "Heun",
            Self::Dpm2 => "DPM2",
            Self::Dpm2Ancestral => "DPM2 a",
            Self::DpmFast => "DPM fast",
            Self::DpmAdaptive => "DPM adaptive",
            Self::Restart => "Restart",
            Self::Ddim => "DDIM",
            Self::DdimCfgPp => "DDIM CFG++",
            Self::Plms => "PLMS",
            Self::UniPc => "UniPC",
            Self::Lcm => "LCM",
        }
    }

    pub fn aliases(self) -> &'static [&'static str] {
        match self {
            Self::DpmPp2M => &["k_dpmpp_2m"],
            Self::DpmPpSde => &["k_dpmpp_sde"],
            Self::DpmPp2MSde => &["k_dpmpp_2m_sde"],
            Self::DpmPp2MSdeHeun => &["k_dpmpp_2m_sde_heun"],
            Self::DpmPp2SAncestral => &["k_dpmpp_2s_a"],
            Self::DpmPp3MSde => &["k_dpmpp_3m_sde"],
            Self::EulerAncestral => &["k_euler_a", "k_euler_ancestral"],
            Self::Euler => &["k_euler"],
            Self::Lms => &["k_lms"],
            Self::Heun => &["k_heun"],
            Self::Dpm2 => &["k_dpm_2"],
            Self::Dpm2Ancestral => &["k_dpm_2_a"],
            Self::DpmFast => &["k_dpm_fast"],
            Self::DpmAdaptive => &["k_dpm_ad"],
            Self::Restart => &["restart"],
            Self::Ddim => &["ddim"],
            Self::DdimCfgPp => &["ddim_cfgpp"],
            Self::Plms => &["plms"],
            Self::UniPc => &["unipc"],
            Self::Lcm => &["k_lcm"],
        }
    }

    /// Exact display-name lookup (A1111's `all_samplers_map` as `get_sampler_and_scheduler` uses
    /// it: aliases are not accepted there).
    pub fn find(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.name() == name)
    }

    pub fn flags(self) -> SamplerFlags {
        let f = SamplerFlags::default();
        let karras = Some(Scheduler::Karras);
        let exponential = Some(Scheduler::Exponential);
        match self {
            Self::DpmPp2M => SamplerFlags { default_scheduler: karras, ..f },
            Self::DpmPpSde => SamplerFlags { default_scheduler: karras, second_order: true, brownian_noise: true, ..f },
            Self::DpmPp2MSde => SamplerFlags { default_scheduler: exponential, brownian_noise: true, ..f },
            Self::DpmPp2MSdeHeun => {
                SamplerFlags { default_scheduler: exponential, brownian_noise: true, solver_type: Some("heun"), ..f }
            }
            Self::DpmPp2SAncestral => {
                SamplerFlags { default_scheduler: karras, uses_ensd: true, second_order: true, ..f }
            }
            Self::DpmPp3MSde => SamplerFlags {
                default_scheduler: exponential,
                discard_next_to_last_sigma: true,
                brownian_noise: true,
                ..f
            },
            Self::EulerAncestral | Self::DpmFast | Self::DpmAdaptive => SamplerFlags { uses_ensd: true, ..f },
            Self::Euler | Self::Lms | Self::Lcm => f,
            Self::Heun => SamplerFlags { second_order: true, ..f },
            Self::Dpm2 => {
                SamplerFlags { default_scheduler: karras, discard_next_to_last_sigma: true, second_order: true, ..f }
            }
            Self::Dpm2Ancestral => SamplerFlags {
                default_scheduler: karras,
                discard_next_to_last_sigma: true,
                uses_ensd: true,
                second_order: true,
                ..f
            },
            Self::Restart => SamplerFlags { default_scheduler: karras, second_order: true, ..f },
            Self::Ddim | Self::DdimCfgPp | Self::Plms | Self::UniPc => SamplerFlags { timesteps: true, ..f },
        }
    }

    /// The `options` dict of `/sdapi/v1/samplers` in A1111's key order, values stringified as
    /// pydantic does (`True` → "True"). Key order follows the Python dict literals of
    /// `sd_samplers_kdiffusion.py`.
    pub fn listed_options(self) -> Vec<(&'static str, String)> {
        let flags = self.flags();
        let order: &[&str] = match self {
            Self::DpmPp2SAncestral => &["scheduler", "uses_ensd", "second_order"],
            Self::DpmPp3MSde => &["scheduler", "discard_next_to_last_sigma", "brownian_noise"],
            Self::Dpm2 => &["scheduler", "discard_next_to_last_sigma", "second_order"],
            Self::Dpm2Ancestral => &["scheduler", "discard_next_to_last_sigma", "uses_ensd", "second_order"],
            _ => &[
                "scheduler",
                "second_order",
                "brownian_noise",
                "uses_ensd",
                "discard_next_to_last_sigma",
                "solver_type",
            ],
        };
        let truth = |b: bool| b.then(|| "True".to_string());
        order
            .iter()
            .filter_map(|&key| {
                let value = match key {
                    "scheduler" => flags.default_scheduler.map(|s| s.name().to_string()),
                    "second_order" => truth(flags.second_order),
                    "brownian_noise" => truth(flags.brownian_noise),
                    "uses_ensd" => truth(flags.uses_ensd),
                    "discard_next_to_last_sigma" => truth(flags.discard_next_to_last_sigma),
                    "solver_type" => flags.solver_type.map(String::from),
                    _ => None,
                };
                value.map(|v| (key, v))
            })
            .collect()
    }

    /// Which of s_churn/s_tmin/s_tmax/s_noise A1111 passes to this sampler (`sampler_extra_params`).
    pub fn extra_params(self) -> &'static [&'static str] {
        match self {
            Self::Euler | Self::Heun | Self::Dpm2 => &["s_churn", "s_tmin", "s_tmax", "s_noise"],
            Self::DpmFast
            | Self::Dpm2Ancestral
            | Self::DpmPp2SAncestral
            | Self::DpmPpSde
            | Self::DpmPp2MSde
            | Self::DpmPp2MSdeHeun
            | Self::DpmPp3MSde => &["s_noise"],
            _ => &[],
        }
    }

    /// Whether the sampler function takes `eta` (A1111 then passes `p.eta` or the eta option).
    pub fn takes_eta(self) -> bool {
        matches!(
            self,
            Self::EulerAncestral
                | Self::Dpm2Ancestral
                | Self::DpmFast
                | Self::DpmAdaptive
                | Self::DpmPp2SAncestral
                | Self::DpmPpSde
                | Self::DpmPp2MSde
                | Self::DpmPp2MSdeHeun
                | Self::DpmPp3MSde
                | Self::Ddim
                | Self::DdimCfgPp
        )
    }
}

/// One of A1111's 12 schedulers (`modules/sd_schedulers.py`, `/sdapi/v1/schedulers` order).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scheduler {
    Automatic,
    Uniform,
    Karras,
    Exponential,
    Polyexponential,
    SgmUniform,
    KlOptimal,
    AlignYourSteps,
    Simple,
    Normal,
    Ddim,
    Beta,
}

impl Scheduler {
    pub const ALL: [Scheduler; 12] = [
        Self::Automatic,
        Self::Uniform,
        Self::Karras,
        Self::Exponential,
        Self::Polyexponential,
        Self::SgmUniform,
        Self::KlOptimal,
        Self::AlignYourSteps,
        Self::Simple,
        Self::Normal,
        Self::Ddim,
        Self::Beta,
    ];

    /// Internal name (`automatic`, `karras`, ...).
    pub fn name(self) -> &'static str {
        match self {
            Self::Automatic => "automatic",
            Self::Uniform => "uniform",
            Self::Karras => "karras",
            Self::Exponential => "exponential",
            Self::Polyexponential => "polyexponential",
            Self::SgmUniform => "sgm_uniform",
            Self::KlOptimal => "kl_optimal",
            Self::AlignYourSteps => "align_your_steps",
            Self::Simple => "simple",
            Self::Normal => "normal",
            Self::Ddim => "ddim",
            Self::Beta => "beta",
        }
    }

    /// Display label (`Automatic`, `Karras`, ...), written to the infotext as "Schedule type".
    pub fn label(self) -> &'static str {
        match self {
            Self::Automatic => "Automatic",
            Self::Uniform => "Uniform",
            Self::Karras => "Karras",
            Self::Exponential => "Exponential",
            Self::Polyexponential => "Polyexponential",
            Self::SgmUniform => "SGM Uniform",
            Self::KlOptimal => "KL Optimal",
            Self::AlignYourSteps => "Align Your Steps",
            Self::Simple => "Simple",
            Self::Normal => "Normal",
            Self::Ddim => "DDIM",
            Self::Beta => "Beta",
        }
    }

    /// Extra names A1111 recognises only as a suffix of a legacy sampler name.
    pub fn aliases(self) -> &'static [&'static str] {
        if self == Self::SgmUniform { &["SGMUniform"] } else { &[] }
    }

    /// `schedulers_map`: the name or the label (aliases are not keys of that map).
    pub fn find(name_or_label: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|s| s.name() == name_or_label)
            .or_else(|| Self::ALL.into_iter().find(|s| s.label() == name_or_label))
    }

    /// Scheduler default rho (-1 = takes no rho).
    pub fn default_rho(self) -> f64 {
        match self {
            Self::Karras => 7.0,
            Self::Polyexponential => 1.0,
            _ => -1.0,
        }
    }

    /// Whether the scheduler reads the model's sigma table (`need_inner_model`).
    pub fn needs_model(self) -> bool {
        matches!(self, Self::Uniform | Self::SgmUniform | Self::Simple | Self::Normal | Self::Ddim | Self::Beta)
    }
}

/// A1111's `randn_source` option. `Gpu` (A1111's default, CUDA's Philox) is reproduced with the NV
/// emulation, which is what A1111 produces on NVIDIA hardware.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub enum RandnSource {
    #[default]
    Gpu,
    Cpu,
    Nv,
}

impl RandnSource {
    pub const ALL: [RandnSource; 3] = [Self::Gpu, Self::Cpu, Self::Nv];

    pub fn option_name(self) -> &'static str {
        match self {
            Self::Gpu => "GPU",
            Self::Cpu => "CPU",
            Self::Nv => "NV",
        }
    }

    /// Parses the option value ("GPU", "CPU", "NV"); `None` for anything else.
    pub fn from_option(value: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.option_name() == value)
    }
}

/// `opts.emphasis` (`modules/sd_emphasis.py`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub enum EmphasisMode {
    /// Multiply by the weights, then restore the tensor's mean.
    #[default]
    Original,
    /// Multiply by the weights only ("No norm").
    NoNorm,
    /// Parse the brackets but leave the embeddings alone.
    Ignore,
    /// No parsing: brackets and BREAK are literal text.
    None,
}

impl EmphasisMode {
    pub const ALL: [EmphasisMode; 4] = [Self::Original, Self::NoNorm, Self::Ignore, Self::None];

    pub fn option_name(self) -> &'static str {
        match self {
            Self::Original => "Original",
            Self::NoNorm => "No norm",
            Self::Ignore => "Ignore",
            Self::None => "None",
        }
    }

    /// From the option value; unknown names give `None` (A1111's `get_current_option` then falls
    /// back to Original, which the caller decides).
    pub fn from_option(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|m| m.option_name() == name)
    }

    /// Whether the token multipliers change the conditioning.
    pub fn weights_tokens(self) -> bool {
        matches!(self, Self::Original | Self::NoNorm)
    }
}

/// The sampler parameters a request may set (`eta`, `s_churn`, `s_tmin`, `s_tmax`, `s_noise`;
/// all optional in the API) and the settings A1111 combines them with.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RequestExtraParams {
    pub eta: Option<f64>,
    pub s_churn: Option<f64>,
    pub s_tmin: Option<f64>,
    pub s_tmax: Option<f64>,
    pub s_noise: Option<f64>,
}

/// The corresponding A1111 settings (`opts.*`).
#[derive(Debug, Clone, PartialEq)]
pub struct ExtraParamOptions {
    pub eta_ancestral: f64,
    pub eta_ddim: f64,
    pub s_churn: f64,
    pub s_tmin: f64,
    pub s_tmax: f64,
    pub s_noise: f64,
}

impl Default for ExtraParamOptions {
    fn default() -> Self {
        Self { eta_ancestral: 1.0, eta_ddim: 0.0, s_churn: 0.0, s_tmin: 0.0, s_tmax: 0.0, s_noise: 1.0 }
    }
}

/// `opts.uni_pc_variant`: UniPC's corrector variant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub enum UniPcVariant {
    #[default]
    Bh1,
    Bh2,
    VaryCoeff,
}

impl UniPcVariant {
    pub const ALL: [UniPcVariant; 3] = [Self::Bh1, Self::Bh2, Self::VaryCoeff];

    pub fn option_name(self) -> &'static str {
        match self {
            Self::Bh1 => "bh1",
            Self::Bh2 => "bh2",
            Self::VaryCoeff => "vary_coeff",
        }
    }

    pub fn from_option(value: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|v| v.option_name() == value)
    }
}

/// `opts.uni_pc_skip_type`: how UniPC spaces its time points.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub enum UniPcSkipType {
    #[default]
    TimeUniform,
    TimeQuadratic,
    LogSnr,
}

impl UniPcSkipType {
    pub const ALL: [UniPcSkipType; 3] = [Self::TimeUniform, Self::TimeQuadratic, Self::LogSnr];

    pub fn option_name(self) -> &'static str {
        match self {
            Self::TimeUniform => "time_uniform",
            Self::TimeQuadratic => "time_quadratic",
            Self::LogSnr => "logSNR",
        }
    }

    pub fn from_option(value: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|v| v.option_name() == value)
    }
}

/// UniPC's settings (`uni_pc_variant`, `uni_pc_skip_type`, `uni_pc_order`,
/// `uni_pc_lower_order_final`); `Default` is A1111's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct UniPcSettings {
    pub variant: UniPcVariant,
    pub skip_type: UniPcSkipType,
    pub order: usize,
    pub lower_order_final: bool,
}

impl Default for UniPcSettings {
    fn default() -> Self {
        Self { variant: UniPcVariant::Bh1, skip_type: UniPcSkipType::TimeUniform, order: 3, lower_order_final: true }
    }
}

/// How a latent is resized (`torch.nn.functional.interpolate` modes A1111 uses).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interpolation {
    Bilinear,
    Bicubic,
    Nearest,
    NearestExact,
}

/// `shared.latent_upscale_modes`: the hires fix's latent upscalers, in A1111's order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LatentUpscaleMode {
    Latent,
    LatentAntialiased,
    LatentBicubic,
    LatentBicubicAntialiased,
    LatentNearest,
    LatentNearestExact,
}

impl LatentUpscaleMode {
    pub const ALL: [LatentUpscaleMode; 6] = [
        LatentUpscaleMode::Latent,
        LatentUpscaleMode::LatentAntialiased,
        LatentUpscaleMode::LatentBicubic,
        LatentUpscaleMode::LatentBicubicAntialiased,
        LatentUpscaleMode::LatentNearest,
        LatentUpscaleMode::LatentNearestExact,
    ];

    pub fn name(self) -> &'static str {
        match self {
            LatentUpscaleMode::Latent => "Latent",
            LatentUpscaleMode::LatentAntialiased => "Latent (antialiased)",
            LatentUpscaleMode::LatentBicubic => "Latent (bicubic)",
            LatentUpscaleMode::LatentBicubicAntialiased => "Latent (bicubic antialiased)",
            LatentUpscaleMode::LatentNearest => "Latent (nearest)",
            LatentUpscaleMode::LatentNearestExact => "Latent (nearest-exact)",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|m| m.name() == name)
    }

    /// The interpolation and whether it is antialiased.
    pub fn interpolation(self) -> (Interpolation, bool) {
        match self {
            LatentUpscaleMode::Latent => (Interpolation::Bilinear, false),
            LatentUpscaleMode::LatentAntialiased => (Interpolation::Bilinear, true),
            LatentUpscaleMode::LatentBicubic => (Interpolation::Bicubic, false),
            LatentUpscaleMode::LatentBicubicAntialiased => (Interpolation::Bicubic, true),
            LatentUpscaleMode::LatentNearest => (Interpolation::Nearest, false),
            LatentUpscaleMode::LatentNearestExact => (Interpolation::NearestExact, false),
        }
    }
}

/// What upscales the first pass of a hires fix: a latent mode, or a pixel upscaler between a
/// decode and an encode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HiresUpscaler {
    Latent(LatentUpscaleMode),
    Pixel(crate::images::BuiltinUpscaler),
}

impl HiresUpscaler {
    /// `hr_upscaler`: null is A1111's default latent mode ("Latent"); latent names first, then
    /// the pixel upscalers; anything else is unknown (A1111: "could not find upscaler named X").
    pub fn resolve(name: Option<&str>) -> Option<Self> {
        match name {
            None => Some(HiresUpscaler::Latent(LatentUpscaleMode::Latent)),
            Some(n) => LatentUpscaleMode::from_name(n)
                .map(HiresUpscaler::Latent)
                .or_else(|| crate::images::BuiltinUpscaler::from_name(n).map(HiresUpscaler::Pixel)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sampler_names_and_aliases_round_trip() {
        for k in SamplerKind::ALL {
            assert_eq!(SamplerKind::find(k.name()), Some(k));
            for a in k.aliases() {
                assert_eq!(SamplerKind::find(a), None, "aliases are not all_samplers_map keys");
            }
        }
        assert_eq!(SamplerKind::find("euler"), None);
        assert_eq!(SamplerKind::ALL[0], SamplerKind::DEFAULT);
        assert_eq!(SamplerKind::DpmPp2M.flags().default_scheduler, Some(Scheduler::Karras));
        assert!(SamplerKind::Heun.flags().second_order && !SamplerKind::Euler.flags().second_order);
        assert!(SamplerKind::DpmPp3MSde.flags().discard_next_to_last_sigma);
        assert!(SamplerKind::Ddim.flags().timesteps);
    }

    #[test]
    fn scheduler_lookup_is_a1111_schedulers_map() {
        for s in Scheduler::ALL {
            assert_eq!(Scheduler::find(s.name()), Some(s));
            assert_eq!(Scheduler::find(s.label()), Some(s));
        }
        assert_eq!(Scheduler::find("SGMUniform"), None);
        assert_eq!(Scheduler::find("Karras").map(Scheduler::name), Some("karras"));
    }

    #[test]
    fn option_values_round_trip() {
        for s in RandnSource::ALL {
            assert_eq!(RandnSource::from_option(s.option_name()), Some(s));
        }
        for m in EmphasisMode::ALL {
            assert_eq!(EmphasisMode::from_option(m.option_name()), Some(m));
        }
        for v in UniPcVariant::ALL {
            assert_eq!(UniPcVariant::from_option(v.option_name()), Some(v));
        }
        for t in UniPcSkipType::ALL {
            assert_eq!(UniPcSkipType::from_option(t.option_name()), Some(t));
        }
        assert_eq!(RandnSource::from_option("gpu"), None);
        assert_eq!(EmphasisMode::from_option("bogus"), None);
    }
}
