//! The 20 A1111 samplers (`/sdapi/v1/samplers` order, §5.1) with their aliases and options.

use super::Scheduler;

/// One of A1111's samplers.
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

/// Sampler options as A1111's `SamplerData.options`.
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

    /// Looks a sampler up by name or alias (exact match, as A1111's `all_samplers_map`).
    pub fn from_name(value: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|k| k.name() == value || k.aliases().contains(&value))
    }

    pub fn flags(self) -> SamplerFlags {
        let f = SamplerFlags::default();
        let karras = Some(Scheduler::Karras);
        let exponential = Some(Scheduler::Exponential);
        match self {
            Self::DpmPp2M => SamplerFlags {
                default_scheduler: karras,
                ..f
            },
            Self::DpmPpSde => SamplerFlags {
                default_scheduler: karras,
                second_order: true,
                brownian_noise: true,
                ..f
            },
            Self::DpmPp2MSde | Self::DpmPp2MSdeHeun => SamplerFlags {
                default_scheduler: exponential,
                brownian_noise: true,
                ..f
            },
            Self::DpmPp2SAncestral => SamplerFlags {
                default_scheduler: karras,
                uses_ensd: true,
                second_order: true,
                ..f
            },
            Self::DpmPp3MSde => SamplerFlags {
                default_scheduler: exponential,
                discard_next_to_last_sigma: true,
                brownian_noise: true,
                ..f
            },
            Self::EulerAncestral | Self::DpmFast | Self::DpmAdaptive => SamplerFlags {
                uses_ensd: true,
                ..f
            },
            Self::Euler | Self::Lms | Self::Lcm => f,
            Self::Heun => SamplerFlags {
                second_order: true,
                ..f
            },
            Self::Dpm2 => SamplerFlags {
                default_scheduler: karras,
                discard_next_to_last_sigma: true,
                second_order: true,
                ..f
            },
            Self::Dpm2Ancestral => SamplerFlags {
                default_scheduler: karras,
                discard_next_to_last_sigma: true,
                uses_ensd: true,
                second_order: true,
                ..f
            },
            Self::Restart => SamplerFlags {
                default_scheduler: karras,
                second_order: true,
                ..f
            },
            Self::Ddim | Self::DdimCfgPp | Self::Plms | Self::UniPc => SamplerFlags {
                timesteps: true,
                ..f
            },
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_aliases_and_flags() {
        assert_eq!(SamplerKind::ALL.len(), 20);
        for k in SamplerKind::ALL {
            assert_eq!(SamplerKind::from_name(k.name()), Some(k));
            for a in k.aliases() {
                assert_eq!(SamplerKind::from_name(a), Some(k));
            }
        }
        assert_eq!(SamplerKind::from_name("euler"), None);
        assert_eq!(
            SamplerKind::DpmPp2M.flags().default_scheduler,
            Some(Scheduler::Karras)
        );
        assert!(SamplerKind::Heun.flags().second_order && !SamplerKind::Euler.flags().second_order);
        assert!(SamplerKind::DpmPp3MSde.flags().discard_next_to_last_sigma);
        assert!(SamplerKind::Ddim.flags().timesteps);
    }
}
