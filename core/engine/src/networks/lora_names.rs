//! Where a LoRA key lands in the model (docs/a1111-behaviour.md §7.6): A1111 names every module by
//! its path with `.` → `_` (`diffusion_model_input_blocks_1_1_proj_in`,
//! `transformer_text_model_encoder_layers_0_self_attn_q_proj`, SDXL `0_…`/`1_…` per text encoder,
//! OpenCLIP `model_transformer_resblocks_N_attn…`), converts kohya's diffusers-style keys into
//! those names with fixed SD-1.5 block arithmetic, and falls back to plain prefix swaps.
//! [`LayerIndex`] builds the same names from this engine's canonical tensor names.

use std::collections::HashMap;

use crate::checkpoint::ModelFamily;
use crate::loader::diffusers_names::{CLIP_PREFIX, UNET_PREFIX};
use crate::loader::text_names::{SD2_TEXT_PREFIX, SDXL_CLIP_G_PREFIX, SDXL_CLIP_L_PREFIX};

/// One weight a LoRA can target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerTarget {
    /// Canonical name of the weight tensor (`….weight`).
    pub weight: String,
    /// Part of an OpenCLIP fused attention (SD 2.x text encoder, SDXL bigG): A1111 changes q, k,
    /// v and out of such a layer only when a network has all four. Holds the attention's name.
    pub fused_attention: Option<String>,
}

/// A1111's `network_layer_mapping` for a model: layer name → weight.
#[derive(Debug, Clone, Default)]
pub struct LayerIndex {
    pub layers: HashMap<String, LayerTarget>,
    /// A1111's `is_sd2`: the model has `model_transformer_resblocks` layers (SD 2.x only).
    pub is_sd2: bool,
}

impl LayerIndex {
    pub fn new<'a>(family: ModelFamily, canonical_names: impl Iterator<Item = &'a str>) -> Self {
        let mut layers = HashMap::new();
        for name in canonical_names {
            let Some(module) = name.strip_suffix(".weight") else { continue };
            if let Some((layer, fused)) = a1111_layer_name(family, module) {
                layers.insert(layer, LayerTarget { weight: name.to_string(), fused_attention: fused });
            }
        }
        Self { layers, is_sd2: family == ModelFamily::Sd2 }
    }

    /// A1111's lookup of one LoRA module key (the part before the first `.`): the converted name,
    /// then `lora_unet` → `diffusion_model`, or `lora_te1_text_model` → `0_transformer_text_model`
    /// → `transformer_text_model`. Returns the matched layer name and its target.
    pub fn resolve(&self, key: &str) -> Option<(String, &LayerTarget)> {
        let converted = convert_diffusers_name_to_compvis(key, self.is_sd2);
        let mut candidates = vec![converted];
        if key.contains("lora_unet") {
            candidates.push(key.replace("lora_unet", "diffusion_model"));
        } else if key.contains("lora_te1_text_model") {
            candidates.push(key.replace("lora_te1_text_model", "0_transformer_text_model"));
            candidates.push(key.replace("lora_te1_text_model", "transformer_text_model"));
        }
        candidates.into_iter().find_map(|c| self.layers.get(&c).map(|t| (c, t)))
    }
}

/// A1111's layer name of a canonical module path (without `.weight`), and for OpenCLIP attention
/// projections the name of their fused attention.
fn a1111_layer_name(family: ModelFamily, module: &str) -> Option<(String, Option<String>)> {
    let plain = |prefix: &str, rest: &str| Some((format!("{prefix}{}", rest.replace('.', "_")), None));
    if let Some(rest) = module.strip_prefix(UNET_PREFIX) {
        return plain("diffusion_model_", rest);
    }
    match family {
        ModelFamily::Sd1 => module.strip_prefix(CLIP_PREFIX).and_then(|rest| plain("transformer_text_model_", rest)),
        ModelFamily::Sd2 => module.strip_prefix(SD2_TEXT_PREFIX).and_then(|rest| open_clip_layer("", rest)),
        ModelFamily::Sdxl => {
            if let Some(rest) = module.strip_prefix(SDXL_CLIP_L_PREFIX) {
                plain("0_transformer_text_model_", rest)
            } else {
                module.strip_prefix(SDXL_CLIP_G_PREFIX).and_then(|rest| open_clip_layer("1_", rest))
            }
        }
    }
}

/// OpenCLIP naming of a transformers-named text layer (`encoder.layers.N.self_attn.q_proj`):
/// `model_transformer_resblocks_N_attn_q_proj` (q/k/v/out are one fused attention).
fn open_clip_layer(prefix: &str, rest: &str) -> Option<(String, Option<String>)> {
    let (layer, inner) = rest.strip_prefix("encoder.layers.")?.split_once('.')?;
    let block = format!("{prefix}model_transformer_resblocks_{layer}_");
    let (name, fused) = match inner {
        "self_attn.q_proj" | "self_attn.k_proj" | "self_attn.v_proj" | "self_attn.out_proj" => {
            let proj = inner.trim_start_matches("self_attn.");
            (format!("{block}attn_{proj}"), Some(format!("{block}attn")))
        }
        "mlp.fc1" => (format!("{block}mlp_c_fc"), None),
        "mlp.fc2" => (format!("{block}mlp_c_proj"), None),
        "layer_norm1" => (format!("{block}ln_1"), None),
        "layer_norm2" => (format!("{block}ln_2"), None),
        _ => return None,
    };
    Some((name, fused))
}

/// `(\d+)` groups of a `_`-separated key: the number at the start of `s` and the rest after `_`.
fn number_then(s: &str) -> Option<(usize, &str)> {
    let digits = s.len() - s.trim_start_matches(|c: char| c.is_ascii_digit()).len();
    let n = s.get(..digits)?.parse().ok()?;
    Some((n, &s[digits..]))
}

/// A1111's `convert_diffusers_name_to_compvis` (kohya keys → A1111 layer names). Keys no rule
/// matches come back unchanged.
pub fn convert_diffusers_name_to_compvis(key: &str, is_sd2: bool) -> String {
    let resnet_suffix = |s: &str| -> String {
        match s {
            "conv1" => "in_layers_2",
            "conv2" => "out_layers_3",
            "norm1" => "in_layers_0",
            "norm2" => "out_layers_0",
            "time_emb_proj" => "emb_layers_1",
            "conv_shortcut" => "skip_connection",
            other => other,
        }
        .to_string()
    };
    // `(attentions|resnets)_(\d+)_(.+)` → (is attention, index, suffix)
    let block_part = |s: &str| -> Option<(bool, usize, String)> {
        let (is_attn, rest) =
            if let Some(r) = s.strip_prefix("attentions_") { (true, r) } else { (false, s.strip_prefix("resnets_")?) };
        let (index, rest) = number_then(rest)?;
        let suffix = rest.strip_prefix('_').filter(|r| !r.is_empty())?;
        Some((is_attn, index, if is_attn { suffix.to_string() } else { resnet_suffix(suffix) }))
    };
    if let Some(rest) = key.strip_prefix("lora_unet_conv_in") {
        return format!("diffusion_model_input_blocks_0_0{rest}");
    }
    if let Some(rest) = key.strip_prefix("lora_unet_conv_out") {
        return format!("diffusion_model_out_2{rest}");
    }
    if let Some((n, rest)) = key.strip_prefix("lora_unet_time_embedding_linear_").and_then(number_then) {
        return format!("diffusion_model_time_embed_{}{rest}", (n * 2).wrapping_sub(2) as isize);
    }
    if let Some((block, rest)) = key.strip_prefix("lora_unet_down_blocks_").and_then(number_then) {
        if let Some((is_attn, index, suffix)) = rest.strip_prefix('_').and_then(block_part) {
            return format!("diffusion_model_input_blocks_{}_{}_{suffix}", 1 + block * 3 + index, usize::from(is_attn));
        }
        if rest.starts_with("_downsamplers_0_conv") {
            return format!("diffusion_model_input_blocks_{}_0_op", 3 + block * 3);
        }
    }
    if let Some((is_attn, index, suffix)) = key.strip_prefix("lora_unet_mid_block_").and_then(block_part) {
        let block = if is_attn { 1 } else { index * 2 };
        return format!("diffusion_model_middle_block_{block}_{suffix}");
    }
    if let Some((block, rest)) = key.strip_prefix("lora_unet_up_blocks_").and_then(number_then) {
        if let Some((is_attn, index, suffix)) = rest.strip_prefix('_').and_then(block_part) {
            return format!("diffusion_model_output_blocks_{}_{}_{suffix}", block * 3 + index, usize::from(is_attn));
        }
        if rest.starts_with("_upsamplers_0_conv") {
            return format!("diffusion_model_output_blocks_{}_{}_conv", 2 + block * 3, if block > 0 { 2 } else { 1 });
        }
    }
    let text_layer = |rest: &str| -> Option<(usize, String)> {
        let (n, rest) = number_then(rest)?;
        let rest = rest.strip_prefix('_').filter(|r| !r.is_empty())?;
        Some((n, rest.to_string()))
    };
    let open_clip_rename = |rest: &str| -> String {
        if rest.contains("mlp_fc1") {
            rest.replace("mlp_fc1", "mlp_c_fc")
        } else if rest.contains("mlp_fc2") {
            rest.replace("mlp_fc2", "mlp_c_proj")
        } else {
            rest.replace("self_attn", "attn")
        }
    };
    if let Some((n, rest)) = key.strip_prefix("lora_te_text_model_encoder_layers_").and_then(text_layer) {
        return if is_sd2 {
            format!("model_transformer_resblocks_{n}_{}", open_clip_rename(&rest))
        } else {
            format!("transformer_text_model_encoder_layers_{n}_{rest}")
        };
    }
    if let Some((n, rest)) = key.strip_prefix("lora_te2_text_model_encoder_layers_").and_then(text_layer) {
        return format!("1_model_transformer_resblocks_{n}_{}", open_clip_rename(&rest));
    }
    key.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kohya_unet_names_use_sd15_block_arithmetic() {
        let c = |k| convert_diffusers_name_to_compvis(k, false);
        assert_eq!(c("lora_unet_down_blocks_0_attentions_0_proj_in"), "diffusion_model_input_blocks_1_1_proj_in");
        assert_eq!(c("lora_unet_down_blocks_2_resnets_1_conv1"), "diffusion_model_input_blocks_8_0_in_layers_2");
        assert_eq!(c("lora_unet_mid_block_attentions_0_proj_out"), "diffusion_model_middle_block_1_proj_out");
        assert_eq!(c("lora_unet_mid_block_resnets_1_time_emb_proj"), "diffusion_model_middle_block_2_emb_layers_1");
        assert_eq!(
            c("lora_unet_up_blocks_1_attentions_2_transformer_blocks_0_attn2_to_k"),
            "diffusion_model_output_blocks_5_1_transformer_blocks_0_attn2_to_k"
        );
        assert_eq!(c("lora_unet_down_blocks_1_downsamplers_0_conv"), "diffusion_model_input_blocks_6_0_op");
        assert_eq!(c("lora_unet_up_blocks_0_upsamplers_0_conv"), "diffusion_model_output_blocks_2_1_conv");
        assert_eq!(c("lora_unet_up_blocks_2_upsamplers_0_conv"), "diffusion_model_output_blocks_8_2_conv");
        assert_eq!(c("lora_unet_time_embedding_linear_2"), "diffusion_model_time_embed_2");
        assert_eq!(c("lora_unet_conv_in"), "diffusion_model_input_blocks_0_0");
        // LDM-style names (kohya SDXL) are not converted; the lookup's fallback handles them.
        assert_eq!(c("lora_unet_input_blocks_4_1_proj_in"), "lora_unet_input_blocks_4_1_proj_in");
    }

    #[test]
    fn text_encoder_names_per_family() {
        assert_eq!(
            convert_diffusers_name_to_compvis("lora_te_text_model_encoder_layers_3_self_attn_q_proj", false),
            "transformer_text_model_encoder_layers_3_self_attn_q_proj"
        );
        assert_eq!(
            convert_diffusers_name_to_compvis("lora_te_text_model_encoder_layers_3_mlp_fc2", true),
            "model_transformer_resblocks_3_mlp_c_proj"
        );
        assert_eq!(
            convert_diffusers_name_to_compvis("lora_te2_text_model_encoder_layers_0_self_attn_out_proj", false),
            "1_model_transformer_resblocks_0_attn_out_proj"
        );
    }

    #[test]
    fn layer_index_names_match_a1111_modules() {
        let names = [
            "cond_stage_model.model.text_model.encoder.layers.0.self_attn.k_proj.weight",
            "cond_stage_model.model.text_model.encoder.layers.0.mlp.fc1.weight",
            "model.diffusion_model.middle_block.1.proj_in.weight",
            "model.diffusion_model.middle_block.1.proj_in.bias",
        ];
        let index = LayerIndex::new(ModelFamily::Sd2, names.into_iter());
        assert!(index.is_sd2);
        let (layer, target) = index.resolve("lora_te_text_model_encoder_layers_0_self_attn_k_proj").unwrap();
        assert_eq!(layer, "model_transformer_resblocks_0_attn_k_proj");
        assert_eq!(target.fused_attention.as_deref(), Some("model_transformer_resblocks_0_attn"));
        assert_eq!(index.resolve("lora_te_text_model_encoder_layers_0_mlp_fc1").unwrap().1.weight, names[1]);
        assert_eq!(index.resolve("lora_unet_middle_block_1_proj_in").unwrap().1.weight, names[2]);
        assert_eq!(index.layers.len(), 3, "biases are not layers");

        let sdxl = LayerIndex::new(
            ModelFamily::Sdxl,
            ["conditioner.embedders.0.transformer.text_model.encoder.layers.1.self_attn.q_proj.weight"].into_iter(),
        );
        let (layer, _) = sdxl.resolve("lora_te1_text_model_encoder_layers_1_self_attn_q_proj").unwrap();
        assert_eq!(layer, "0_transformer_text_model_encoder_layers_1_self_attn_q_proj");
    }
}
