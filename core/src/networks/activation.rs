//! A batch's extra networks from its prompts (A1111's `parse_prompts` + `ExtraNetworkLora.activate`,
//! docs/a1111-behaviour.md §7.5): the tags leave the prompts the text encoder sees, the first
//! prompt's LoRA tags decide the batch's LoRAs, and the infotext gets `Lora hashes`.

use sdapi_protocol::prompt::{ExtraNetworkTag, parse_extra_networks};

use super::NetworkError;
use super::catalog::{LoraEntry, NetworkCatalog};
use crate::runner::LoraActivation;

/// Tag kinds handled as LoRAs (`lyco` is A1111's alias for the same network type).
const LORA_KINDS: [&str; 2] = ["lora", "lyco"];

/// Whether a tag activates a LoRA.
pub fn is_lora_tag(tag: &ExtraNetworkTag) -> bool {
    LORA_KINDS.contains(&tag.kind.as_str())
}

/// Most LoRA tags one prompt may activate: each one is a weight merge over the model.
pub const MAX_LORAS_PER_BATCH: usize = 32;

/// What one batch's prompts ask for.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BatchNetworks {
    /// The batch's prompts without extra-network tags (what the text encoder sees).
    pub prompts: Vec<String>,
    pub loras: Vec<LoraActivation>,
    /// `Lora hashes`: `name: shorthash, …` (None when no LoRA with a hash is active).
    pub lora_hashes: Option<String>,
    /// A1111's comments, e.g. `Lora not found: a, b` (logged; not part of `info`).
    pub comments: Vec<String>,
}

/// One parsed LoRA tag.
#[derive(Debug, Clone, PartialEq)]
struct LoraTag {
    name: String,
    te: f64,
    unet: f64,
    dyn_dim: Option<usize>,
}

impl LoraTag {
    /// `name:te:unet:dyn` positionally, `te=`/`unet=`/`dyn=` by name; unet defaults to te, te to
    /// `default_multiplier` (`extra_networks_default_multiplier` when a tag gives only a name).
    fn parse(tag: &ExtraNetworkTag, default_multiplier: f64) -> Result<Self, NetworkError> {
        let bad = |what: &str, value: &str| {
            NetworkError::BadTag(format!("<{}:{}>: {what} {value:?}", tag.kind, tag.items.join(":")))
        };
        let number = |value: &str, what: &str| -> Result<f64, NetworkError> {
            let v: f64 = value.trim().parse().map_err(|_| bad(what, value))?;
            if v.is_finite() { Ok(v) } else { Err(bad(what, value)) }
        };
        let named = |key: &str| tag.named.iter().rev().find(|(k, _)| k == key).map(|(_, v)| v.as_str());
        let name = tag.positional.first().cloned().ok_or_else(|| bad("no name in", ""))?;
        let mut te = match tag.positional.get(1) {
            Some(v) => number(v, "text encoder multiplier")?,
            None => default_multiplier,
        };
        if let Some(v) = named("te") {
            te = number(v, "text encoder multiplier")?;
        }
        let mut unet = match tag.positional.get(2) {
            Some(v) => number(v, "unet multiplier")?,
            None => te,
        };
        if let Some(v) = named("unet") {
            unet = number(v, "unet multiplier")?;
        }
        let dyn_text = named("dyn").or(tag.positional.get(3).map(String::as_str));
        let dyn_dim = match dyn_text {
            Some(v) => Some(v.trim().parse::<usize>().map_err(|_| bad("dyn (a rank, 0 or more)", v))?),
            None => None,
        };
        Ok(Self { name, te, unet, dyn_dim })
    }
}

/// Removes the tags from every prompt of the batch and resolves the first prompt's LoRAs against
/// `catalog`. `hash_of` gives a LoRA's hash (the caller caches it); `hashes_in_infotext` is
/// `lora_add_hashes_to_infotext`.
pub fn batch_networks(
    prompts: &[String],
    catalog: &NetworkCatalog,
    default_multiplier: f64,
    hashes_in_infotext: bool,
    mut hash_of: impl FnMut(&LoraEntry) -> Option<String>,
) -> Result<BatchNetworks, NetworkError> {
    let mut cleaned = Vec::with_capacity(prompts.len());
    let mut first_tags = None;
    for prompt in prompts {
        let (text, tags) = parse_extra_networks(prompt);
        cleaned.push(text);
        first_tags.get_or_insert(tags);
    }
    let tags: Vec<LoraTag> = first_tags
        .unwrap_or_default()
        .iter()
        .filter(|t| is_lora_tag(t))
        .map(|t| LoraTag::parse(t, default_multiplier))
        .collect::<Result<_, _>>()?;
    if tags.len() > MAX_LORAS_PER_BATCH {
        return Err(NetworkError::TooMany { count: tags.len(), limit: MAX_LORAS_PER_BATCH });
    }

    let mut out = BatchNetworks { prompts: cleaned, ..Default::default() };
    let mut missing = Vec::new();
    let mut found: Vec<(&LoraTag, &LoraEntry)> = Vec::new();
    for tag in &tags {
        match catalog.find_lora(&tag.name) {
            Some(entry) => found.push((tag, entry)),
            None => missing.push(tag.name.clone()),
        }
    }
    // A1111 loads a LoRA named twice as the same object twice: every occurrence takes the
    // multipliers (and the mentioned name) of the last one.
    let last_of = |entry: &LoraEntry| found.iter().rev().find(|(_, e)| e.path == entry.path).map(|(t, _)| *t);
    let mut hashes = Vec::new();
    for (_, entry) in &found {
        let Some(tag) = last_of(entry) else { continue };
        out.loras.push(LoraActivation {
            path: entry.path.clone(),
            te_multiplier: tag.te,
            unet_multiplier: tag.unet,
            dyn_dim: tag.dyn_dim,
        });
        if let Some(hash) = hash_of(entry) {
            let short = hash.get(..12).unwrap_or(&hash);
            let key: String = tag.name.chars().filter(|c| !matches!(c, ':' | ',')).collect();
            hashes.push(format!("{key}: {short}"));
        }
    }
    if hashes_in_infotext && !hashes.is_empty() {
        out.lora_hashes = Some(hashes.join(", "));
    }
    if !missing.is_empty() {
        out.comments.push(format!("Lora not found: {}", missing.join(", ")));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::networks::catalog::LoraEntry;

    fn entry(name: &str, alias: &str) -> LoraEntry {
        LoraEntry {
            name: name.into(),
            alias: alias.into(),
            path: PathBuf::from(format!("/models/Lora/{name}.safetensors")),
            metadata: Default::default(),
            is_safetensors: true,
            hash: Default::default(),
        }
    }

    fn catalog() -> NetworkCatalog {
        NetworkCatalog { loras: vec![entry("detail", "add_detail"), entry("style", "style")], ..Default::default() }
    }

    fn resolve(prompts: &[&str]) -> Result<BatchNetworks, NetworkError> {
        let prompts: Vec<String> = prompts.iter().map(|p| p.to_string()).collect();
        batch_networks(&prompts, &catalog(), 1.0, true, |e| Some(format!("{}0123456789abcdef", e.name.len())))
    }

    fn multipliers(b: &BatchNetworks) -> Vec<(f64, f64, Option<usize>)> {
        b.loras.iter().map(|l| (l.te_multiplier, l.unet_multiplier, l.dyn_dim)).collect()
    }

    #[test]
    fn arguments_follow_a1111_defaults() {
        let b = resolve(&["a <lora:detail> b <lora:style:0.5:0.25:8> <lyco:add_detail:unet=0.3:te=2>"]).unwrap();
        assert_eq!(b.prompts, vec!["a  b  "]);
        // `add_detail` is detail's alias: the same file twice, both with the last multipliers.
        assert_eq!(multipliers(&b), vec![(2.0, 0.3, None), (0.5, 0.25, Some(8)), (2.0, 0.3, None)]);
        assert_eq!(
            b.lora_hashes.as_deref(),
            Some("add_detail: 60123456789a, style: 50123456789a, add_detail: 60123456789a")
        );
        assert!(b.comments.is_empty());
    }

    #[test]
    fn only_the_first_prompt_decides_and_missing_names_are_a_comment() {
        let b = resolve(&["x <lora:nope:1> <lora:style:0.7>", "y <lora:detail:1>"]).unwrap();
        assert_eq!(b.prompts, vec!["x  ", "y "]);
        assert_eq!(multipliers(&b), vec![(0.7, 0.7, None)]);
        assert_eq!(b.comments, vec!["Lora not found: nope"]);
        // Other network kinds are stripped and ignored; `name:with,chars` keys lose ':' and ','.
        let b = resolve(&["<hypernet:h:1>plain"]).unwrap();
        assert_eq!((b.prompts[0].as_str(), b.loras.len(), b.lora_hashes), ("plain", 0, None));
    }

    #[test]
    fn numbers_that_python_rejects_are_errors() {
        for bad in ["<lora:style:x>", "<lora:style:1:y>", "<lora:style:1:1:-2>", "<lora:style:te=inf>"] {
            assert!(matches!(resolve(&[bad]), Err(NetworkError::BadTag(_))), "{bad}");
        }
        let many = "<lora:style:1>".repeat(MAX_LORAS_PER_BATCH + 1);
        assert!(matches!(resolve(&[&many]), Err(NetworkError::TooMany { .. })));
    }
}
