//! What the configuration files shipped with a model say about the facts its tensors cannot show:
//! attention head counts of the UNet and the text encoders, the prediction type and the latent
//! scale factor.
//!
//! * A diffusers folder: `unet/config.json` (`num_attention_heads`, else `attention_head_dim`,
//!   which diffusers uses as the head *count*), `text_encoder/config.json` and
//!   `text_encoder_2/config.json` (`num_attention_heads`), `vae/config.json` (`scaling_factor`),
//!   `scheduler/scheduler_config.json` (`prediction_type`, read with the noise schedule).
//! * A single file: `<checkpoint>.yaml` beside it, as A1111 reads it: `model.params.
//!   parameterization`, `model.params.scale_factor`, `unet_config` (SD 1.x/2.x) or
//!   `network_config` (SDXL) `params.num_heads` / `num_head_channels` (or the same keys directly
//!   under the config), and per text encoder
//!   (`cond_stage_config`, or SDXL's `conditioner.params.emb_models[i]`) an `arch` mapping (beside
//!   or inside `params`) with `num_attention_heads`, for encoders that are not the published ones.
//!
//! Whatever a config leaves out falls back to the family's published defaults (`model.rs`);
//! nothing here is inferred from the test models.

use std::path::{Path, PathBuf};

use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::Marker;
use yaml_rust2::{Yaml, YamlLoader};

use crate::config::{PredictionType, UnetHeads};
use crate::error::EngineError;

/// Facts stated by the shipped configs; `None` where no config says anything.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ShippedConfig {
    pub unet_heads: Option<UnetHeads>,
    /// Heads of the first text encoder (CLIP-L / OpenCLIP-H) and of SDXL's second (bigG).
    pub text_heads: [Option<usize>; 2],
    pub prediction: Option<PredictionType>,
    pub vae_scale_factor: Option<f64>,
}

fn config_error(path: &Path, message: impl Into<String>) -> EngineError {
    EngineError::ModelConfig { path: path.to_path_buf(), message: message.into() }
}

/// Config files are a few kB (A1111's largest `.yaml` is under 4 kB); more is not a config.
pub const MAX_CONFIG_BYTES: u64 = 1 << 20;
/// YAML nodes after aliases are expanded: a few hundred in real configs. The loader copies each
/// aliased node, so a kilobyte of nested aliases ("billion laughs") would expand to gigabytes.
pub const MAX_YAML_NODES: usize = 100_000;
/// Nesting depth of a YAML document (real configs: under 10); dropping a deeper tree recurses.
pub const MAX_YAML_DEPTH: usize = 64;

/// Reads a file that may be absent (`Ok(None)`); other read errors are errors.
fn read_optional(path: &Path) -> Result<Option<String>, EngineError> {
    let size = match std::fs::metadata(path) {
        Ok(meta) => meta.len(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(EngineError::Io { path: path.to_path_buf(), source }),
    };
    if size > MAX_CONFIG_BYTES {
        return Err(config_error(path, format!("{size} bytes is too large for a config file ({MAX_CONFIG_BYTES})")));
    }
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(Some(text)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(EngineError::Io { path: path.to_path_buf(), source }),
    }
}

/// Counts what loading a YAML text would build, from the parser's events alone: nodes with
/// every alias expanded, and nesting depth.
#[derive(Default)]
struct YamlSize {
    nodes: usize,
    depth: usize,
    max_depth: usize,
    /// Nodes under each anchor id, known once its node has ended.
    anchored: std::collections::HashMap<usize, usize>,
    /// Open sequences and mappings: (anchor id, node count when they started).
    open: Vec<(usize, usize)>,
}

impl MarkedEventReceiver for YamlSize {
    fn on_event(&mut self, event: Event, _mark: Marker) {
        match event {
            Event::Scalar(_, _, anchor, _) => {
                self.nodes = self.nodes.saturating_add(1);
                if anchor > 0 {
                    self.anchored.insert(anchor, 1);
                }
            }
            Event::Alias(anchor) => {
                self.nodes = self.nodes.saturating_add(self.anchored.get(&anchor).copied().unwrap_or(1));
            }
            Event::SequenceStart(anchor, _) | Event::MappingStart(anchor, _) => {
                self.open.push((anchor, self.nodes));
                self.nodes = self.nodes.saturating_add(1);
                self.depth += 1;
                self.max_depth = self.max_depth.max(self.depth);
            }
            Event::SequenceEnd | Event::MappingEnd => {
                self.depth = self.depth.saturating_sub(1);
                if let Some((anchor, start)) = self.open.pop()
                    && anchor > 0
                {
                    self.anchored.insert(anchor, self.nodes - start);
                }
            }
            _ => {}
        }
    }
}

/// Refuses YAML whose loaded form would be unbounded, before [`YamlLoader`] builds it.
fn check_yaml_size(text: &str, path: &Path) -> Result<(), EngineError> {
    if text.len() as u64 > MAX_CONFIG_BYTES {
        return Err(config_error(path, format!("{} bytes is too large for a config file", text.len())));
    }
    let mut size = YamlSize::default();
    Parser::new_from_str(text).load(&mut size, true).map_err(|e| config_error(path, e.to_string()))?;
    if size.nodes > MAX_YAML_NODES {
        return Err(config_error(
            path,
            format!("expands to {} nodes, more than a config has ({MAX_YAML_NODES})", size.nodes),
        ));
    }
    if size.max_depth > MAX_YAML_DEPTH {
        return Err(config_error(
            path,
            format!("nested {} deep, more than a config is ({MAX_YAML_DEPTH})", size.max_depth),
        ));
    }
    Ok(())
}

fn read_json(path: &Path) -> Result<Option<serde_json::Value>, EngineError> {
    read_optional(path)?
        .map(|text| serde_json::from_str(&text).map_err(|e| config_error(path, e.to_string())))
        .transpose()
}

/// A positive count from a JSON value (rejects 0, negatives, fractions).
fn json_count(path: &Path, key: &str, value: &serde_json::Value) -> Result<usize, EngineError> {
    value
        .as_u64()
        .filter(|&n| n > 0 && n <= 4096)
        .map(|n| n as usize)
        .ok_or_else(|| config_error(path, format!("{key} must be a positive integer, got {value}")))
}

impl ShippedConfig {
    /// The configs of a diffusers pipeline folder (the scheduler's prediction type is read with
    /// the noise schedule by the checkpoint loader).
    pub fn from_diffusers_folder(folder: &Path) -> Result<Self, EngineError> {
        let mut shipped = ShippedConfig::default();
        let unet_path = folder.join("unet").join("config.json");
        if let Some(unet) = read_json(&unet_path)? {
            // diffusers: `num_attention_heads = num_attention_heads or attention_head_dim`, and
            // both give head counts (per down block when a list).
            let heads =
                unet.get("num_attention_heads").filter(|v| !v.is_null()).map(|v| ("num_attention_heads", v)).or_else(
                    || unet.get("attention_head_dim").filter(|v| !v.is_null()).map(|v| ("attention_head_dim", v)),
                );
            shipped.unet_heads = match heads {
                None => None,
                Some((key, serde_json::Value::Array(list))) => Some(UnetHeads::PerLevel(
                    list.iter().map(|v| json_count(&unet_path, key, v)).collect::<Result<_, _>>()?,
                )),
                Some((key, value)) => Some(UnetHeads::Count(json_count(&unet_path, key, value)?)),
            };
        }
        for (slot, component) in ["text_encoder", "text_encoder_2"].into_iter().enumerate() {
            let path = folder.join(component).join("config.json");
            if let Some(config) = read_json(&path)?
                && let Some(value) = config.get("num_attention_heads")
            {
                shipped.text_heads[slot] = Some(json_count(&path, "num_attention_heads", value)?);
            }
        }
        let vae_path = folder.join("vae").join("config.json");
        if let Some(vae) = read_json(&vae_path)?
            && let Some(value) = vae.get("scaling_factor").filter(|v| !v.is_null())
        {
            let factor = value
                .as_f64()
                .filter(|f| f.is_finite() && *f > 0.0)
                .ok_or_else(|| config_error(&vae_path, format!("scaling_factor must be positive, got {value}")))?;
            shipped.vae_scale_factor = Some(factor);
        }
        Ok(shipped)
    }

    /// The A1111-style `<checkpoint>.yaml` beside a single file, if there is one.
    pub fn from_sidecar_yaml(checkpoint: &Path) -> Result<Self, EngineError> {
        let path = sidecar_yaml(checkpoint);
        match read_optional(&path)? {
            None => Ok(Self::default()),
            Some(text) => Self::from_yaml_text(&text, &path),
        }
    }

    /// Parses the text of an A1111 model config (`path` only names it in errors).
    pub fn from_yaml_text(text: &str, path: &Path) -> Result<Self, EngineError> {
        check_yaml_size(text, path)?;
        let docs = YamlLoader::load_from_str(text).map_err(|e| config_error(path, e.to_string()))?;
        let Some(doc) = docs.first() else {
            return Ok(Self::default());
        };
        let params = &doc["model"]["params"];
        let prediction = match params["parameterization"].as_str() {
            None => None,
            Some("v") => Some(PredictionType::V),
            Some("eps") => Some(PredictionType::Eps),
            Some(other) => return Err(config_error(path, format!("unsupported parameterization {other:?}"))),
        };
        let mut shipped = ShippedConfig { prediction, ..ShippedConfig::default() };
        if let Some(factor) = yaml_f64(&params["scale_factor"]) {
            if !(factor.is_finite() && factor > 0.0) {
                return Err(config_error(path, format!("scale_factor must be positive, got {factor}")));
            }
            shipped.vae_scale_factor = Some(factor);
        }
        let unet =
            if params["network_config"].is_badvalue() { &params["unet_config"] } else { &params["network_config"] };
        // The keys sit under `params` in A1111's files; flattened configs put them directly there.
        shipped.unet_heads = match ldm_unet_heads(&unet["params"], path)? {
            Some(heads) => Some(heads),
            None => ldm_unet_heads(unet, path)?,
        };
        let encoders: Vec<&Yaml> = match params["conditioner"]["params"]["emb_models"].as_vec() {
            // SDXL: the text embedders in order (size embedders have no arch and are skipped).
            Some(models) => models.iter().filter(|m| m["target"].as_str().is_some_and(is_text_embedder)).collect(),
            None => vec![&params["cond_stage_config"]],
        };
        for (slot, encoder) in encoders.into_iter().take(2).enumerate() {
            shipped.text_heads[slot] = text_encoder_heads(encoder, path)?;
        }
        Ok(shipped)
    }
}

/// `<checkpoint stem>.yaml` beside the file, as A1111 looks for it.
pub fn sidecar_yaml(checkpoint: &Path) -> PathBuf {
    checkpoint.with_extension("yaml")
}

fn is_text_embedder(target: &str) -> bool {
    target.contains("CLIPEmbedder")
}

fn yaml_f64(value: &Yaml) -> Option<f64> {
    value.as_f64().or_else(|| value.as_i64().map(|i| i as f64))
}

fn yaml_count(value: &Yaml, path: &Path, key: &str) -> Result<Option<usize>, EngineError> {
    if value.is_badvalue() || value.is_null() {
        return Ok(None);
    }
    match value.as_i64() {
        Some(n) if (1..=4096).contains(&n) => Ok(Some(n as usize)),
        _ => Err(config_error(path, format!("{key} must be a positive integer, got {value:?}"))),
    }
}

/// LDM's `UNetModel`: `num_head_channels` (≠ -1) fixes the head width, else `num_heads` the count.
fn ldm_unet_heads(params: &Yaml, path: &Path) -> Result<Option<UnetHeads>, EngineError> {
    let is_unset = |v: &Yaml| v.is_badvalue() || v.as_i64() == Some(-1);
    if !is_unset(&params["num_head_channels"]) {
        return Ok(yaml_count(&params["num_head_channels"], path, "num_head_channels")?.map(UnetHeads::HeadDim));
    }
    if !is_unset(&params["num_heads"]) {
        return Ok(yaml_count(&params["num_heads"], path, "num_heads")?.map(UnetHeads::Count));
    }
    Ok(None)
}

/// An encoder's `arch` mapping (beside or inside `params`) with `num_attention_heads` (or `heads`).
fn text_encoder_heads(encoder: &Yaml, path: &Path) -> Result<Option<usize>, EngineError> {
    for arch in [&encoder["arch"], &encoder["params"]["arch"]] {
        if arch.as_hash().is_none() {
            continue;
        }
        for key in ["num_attention_heads", "heads"] {
            if let Some(heads) = yaml_count(&arch[key], path, key)? {
                return Ok(Some(heads));
            }
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> ShippedConfig {
        ShippedConfig::from_yaml_text(text, Path::new("t.yaml")).unwrap()
    }

    #[test]
    fn a1111_sd1_and_sd2_yaml_keys() {
        let sd1 = parse(
            "model:\n  params:\n    scale_factor: 0.18215\n    unet_config:\n      params:\n        num_heads: 8\n    cond_stage_config:\n      target: ldm.modules.encoders.modules.FrozenCLIPEmbedder\n",
        );
        assert_eq!(sd1.unet_heads, Some(UnetHeads::Count(8)));
        assert_eq!(sd1.vae_scale_factor, Some(0.18215));
        assert_eq!(sd1.text_heads, [None, None]);
        assert_eq!(sd1.prediction, None);
        let sd2 = parse(
            "model:\n  params:\n    parameterization: \"v\"\n    unet_config:\n      params:\n        num_head_channels: 64 # 768-v\n    cond_stage_config:\n      params:\n        arch: ViT-H-14\n",
        );
        assert_eq!(sd2.unet_heads, Some(UnetHeads::HeadDim(64)));
        assert_eq!(sd2.prediction, Some(PredictionType::V));
        assert_eq!(sd2.text_heads, [None, None], "a named arch is the published one");
    }

    #[test]
    fn sdxl_embedders_and_arch_mappings() {
        let text = "model:\n  params:\n    network_config:\n      params:\n        num_head_channels: 16\n        num_heads: -1\n    conditioner:\n      params:\n        emb_models:\n          - target: sgm.modules.encoders.modules.FrozenCLIPEmbedder\n            params: {arch: {num_attention_heads: 3}}\n          - target: sgm.modules.encoders.modules.FrozenOpenCLIPEmbedder2\n            arch:\n              num_attention_heads: 5\n          - target: sgm.modules.encoders.modules.ConcatTimestepEmbedderND\n";
        let xl = parse(text);
        assert_eq!(xl.unet_heads, Some(UnetHeads::HeadDim(16)));
        assert_eq!(xl.text_heads, [Some(3), Some(5)]);
    }

    #[test]
    fn bad_values_are_errors_not_guesses() {
        for text in [
            "model:\n  params:\n    parameterization: x0\n",
            "model:\n  params:\n    unet_config:\n      params:\n        num_heads: 0\n",
            "model:\n  params:\n    cond_stage_config:\n      arch:\n        num_attention_heads: many\n",
            "model:\n  params:\n    scale_factor: -1\n",
            "model: [unclosed\n",
        ] {
            let err = ShippedConfig::from_yaml_text(text, Path::new("bad.yaml")).unwrap_err();
            assert!(err.to_string().contains("bad.yaml"), "{err}");
        }
        assert_eq!(parse(""), ShippedConfig::default());
    }

    /// Nested aliases ("billion laughs") and deep nesting are refused before the loader expands
    /// or builds them; anchors within reason still load.
    #[test]
    fn expanding_and_deep_yaml_is_refused() {
        let mut laughs = String::from("a: &a [x, x, x, x, x, x, x, x, x, x]\n");
        for (i, name) in ["b", "c", "d", "e", "f", "g", "h", "i"].iter().enumerate() {
            let prev = ["a", "b", "c", "d", "e", "f", "g", "h"][i];
            laughs.push_str(&format!("{name}: &{name} [*{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}]\n"));
        }
        assert!(laughs.len() < 2000);
        let err = ShippedConfig::from_yaml_text(&laughs, Path::new("laughs.yaml")).unwrap_err();
        assert!(err.to_string().contains("nodes"), "{err}");
        let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        let err = ShippedConfig::from_yaml_text(&deep, Path::new("deep.yaml")).unwrap_err();
        assert!(err.to_string().contains("deep"), "{err}");
        let shared =
            parse("defaults: &heads {num_heads: 8}\nmodel:\n  params:\n    unet_config:\n      params: *heads\n");
        assert_eq!(shared.unet_heads, Some(UnetHeads::Count(8)));
    }

    /// Fixed-budget mutation fuzzing of the YAML reader: no panic, and every refusal names the file.
    #[test]
    fn fuzzed_yaml_configs_never_panic() {
        use sdapi_protocol::fuzz::XorShift;
        let seeds = [
            "model:\n  params:\n    parameterization: \"v\"\n    scale_factor: 0.18215\n    unet_config:\n      params:\n        num_head_channels: 64\n    cond_stage_config:\n      params:\n        arch: ViT-H-14\n",
            "model:\n  params:\n    network_config:\n      params:\n        num_head_channels: 16\n    conditioner:\n      params:\n        emb_models:\n          - target: sgm.modules.encoders.modules.FrozenCLIPEmbedder\n            params: {arch: {num_attention_heads: 3}}\n",
            "a: &a [x, *a, {k: *a}]\nmodel: &m {params: *m}\n",
        ];
        let pieces =
            ["&a ", "*a", "[", "]", "{", "}", ": ", "\n  ", "- ", "-1", "1e309", "\"", "!!binary ", "? ", "|\n", "#"];
        let mut rng = XorShift(0x5eed_0a31);
        for _ in 0..5_000 {
            let mut text: Vec<char> = rng.pick(&seeds).chars().collect();
            for _ in 0..1 + rng.below(6) {
                let at = rng.below(text.len() + 1);
                match rng.below(3) {
                    0 => text.splice(at..at, rng.pick(&pieces).chars()).for_each(drop),
                    1 if at < text.len() => drop(text.drain(at..(at + 1 + rng.below(8)).min(text.len()))),
                    _ => text.insert(at, char::from(rng.below(128) as u8)),
                }
            }
            let text: String = text.into_iter().collect();
            if let Err(e) = ShippedConfig::from_yaml_text(&text, Path::new("fuzz.yaml")) {
                assert!(e.to_string().contains("fuzz.yaml"), "{e}");
            }
        }
    }
}
