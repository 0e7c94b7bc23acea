//! `get_sampler_and_scheduler` of `modules/sd_samplers.py` (docs/a1111-behaviour.md §2.4 step 4).

use crate::choices::{SamplerKind, Scheduler};

/// Resolves a requested sampler name and scheduler to `(sampler, scheduler)`:
/// * scheduler by name or label, unknown/None → Automatic;
/// * a sampler name ending in `" " + <scheduler label|name|alias>` has that suffix stripped and
///   selects that scheduler (every scheduler is tried in order, as A1111's loop does);
/// * sampler by exact name, unknown (including aliases) → the first sampler, "DPM++ 2M";
/// * with `convert_automatic`, a scheduler equal to the sampler's default is reported Automatic.
pub fn resolve_sampler_and_scheduler(
    sampler_name: Option<&str>,
    scheduler: Option<&str>,
    convert_automatic: bool,
) -> (SamplerKind, Scheduler) {
    let mut found = scheduler.and_then(Scheduler::find).unwrap_or(Scheduler::Automatic);
    let mut name: String = sampler_name.filter(|s| !s.is_empty()).unwrap_or(SamplerKind::DEFAULT.name()).to_string();

    for sched in Scheduler::ALL {
        let options = [sched.label(), sched.name()].into_iter().chain(sched.aliases().iter().copied());
        for option in options {
            let suffix = format!(" {option}");
            if name.ends_with(&suffix) {
                found = sched;
                name.truncate(name.len() - suffix.len());
                break;
            }
        }
    }

    let sampler = SamplerKind::find(&name).unwrap_or(SamplerKind::DEFAULT);
    if convert_automatic && sampler.flags().default_scheduler == Some(found) {
        found = Scheduler::Automatic;
    }
    (sampler, found)
}

/// A generation request's sampler and scheduler as A1111 ends up using them: its API resolves
/// with Automatic conversion and stores a concrete scheduler only when the request named none,
/// then `process_images` resolves again without conversion.
pub fn resolve_request_sampler(requested_sampler: &str, scheduler: Option<&str>) -> (SamplerKind, Scheduler) {
    let (sampler, resolved) = resolve_sampler_and_scheduler(Some(requested_sampler), scheduler, true);
    let populated = match scheduler.filter(|s| !s.is_empty()) {
        Some(s) => Some(s),
        None => (resolved != Scheduler::Automatic).then(|| resolved.label()),
    };
    resolve_sampler_and_scheduler(Some(sampler.name()), populated, false)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The resolution as the names A1111 writes (sampler name, scheduler label).
    fn names(sampler_name: Option<&str>, scheduler: Option<&str>, convert_automatic: bool) -> (String, String) {
        let (sampler, scheduler) = resolve_sampler_and_scheduler(sampler_name, scheduler, convert_automatic);
        (sampler.name().to_string(), scheduler.label().to_string())
    }
    fn r(s: Option<&str>, sch: Option<&str>) -> (String, String) {
        names(s, sch, true)
    }
    fn pair(a: &str, b: &str) -> (String, String) {
        (a.to_string(), b.to_string())
    }

    #[test]
    fn resolution_cases() {
        // Expected values follow the algorithm of docs/a1111-behaviour.md §2.4 step 4 applied by hand.
        assert_eq!(r(Some("Euler"), None), pair("Euler", "Automatic"));
        assert_eq!(r(Some("Euler a"), Some("Karras")), pair("Euler a", "Karras"));
        assert_eq!(r(Some("Euler a"), Some("karras")), pair("Euler a", "Karras"));
        // legacy combined name; Karras is DPM++ 2M's own default → reported Automatic
        assert_eq!(r(Some("DPM++ 2M Karras"), None), pair("DPM++ 2M", "Automatic"));
        assert_eq!(names(Some("DPM++ 2M Karras"), None, false), pair("DPM++ 2M", "Karras"));
        assert_eq!(r(Some("DPM++ 2M"), Some("Karras")), pair("DPM++ 2M", "Automatic"));
        assert_eq!(r(Some("DPM++ SDE Exponential"), None), pair("DPM++ SDE", "Exponential"));
        assert_eq!(r(Some("Euler SGMUniform"), None), pair("Euler", "SGM Uniform"));
        assert_eq!(r(Some("Euler sgm_uniform"), None), pair("Euler", "SGM Uniform"));
        // unknown names and aliases fall back to the first sampler
        assert_eq!(r(Some("k_euler"), None), pair("DPM++ 2M", "Automatic"));
        assert_eq!(r(Some("nope"), Some("nope")), pair("DPM++ 2M", "Automatic"));
        assert_eq!(r(None, None), pair("DPM++ 2M", "Automatic"));
        assert_eq!(r(Some(""), Some("Uniform")), pair("DPM++ 2M", "Uniform"));
        // DPM++ 2M SDE defaults to exponential
        assert_eq!(r(Some("DPM++ 2M SDE"), Some("Exponential")), pair("DPM++ 2M SDE", "Automatic"));
        // "DDIM" is also a scheduler label, but only a *suffix* after a space is stripped
        assert_eq!(r(Some("DDIM"), None), pair("DDIM", "Automatic"));
        assert_eq!(r(Some("DDIM CFG++"), None), pair("DDIM CFG++", "Automatic"));
    }
}
