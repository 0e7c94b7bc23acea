//! Renaming of diffusers / transformers tensor names to the canonical LDM names.
//!
//! Block indices in LDM are flat (`input_blocks.4`), in diffusers nested
//! (`down_blocks.1.resnets.0`), so the UNet and VAE maps first count the blocks of the file.

use std::collections::BTreeMap;

/// Canonical prefixes of the three components inside an LDM single-file checkpoint.
pub const UNET_PREFIX: &str = "model.diffusion_model.";
pub const VAE_PREFIX: &str = "first_stage_model.";
pub const CLIP_PREFIX: &str = "cond_stage_model.transformer.text_model.";

/// `text_model.*` (transformers CLIPTextModel) → `cond_stage_model.transformer.text_model.*`.
pub fn clip_name(stored: &str) -> Option<String> {
    stored.strip_prefix("text_model.").map(|rest| format!("{CLIP_PREFIX}{rest}"))
}

/// Maps a diffusers `UNet2DConditionModel` tensor list to canonical names.
pub fn unet_names(stored: &[String]) -> Vec<(String, String)> {
    let layout = UnetLayout::scan(stored);
    stored
        .iter()
        .filter_map(|name| layout.rename(name).map(|canonical| (name.clone(), format!("{UNET_PREFIX}{canonical}"))))
        .collect()
}

/// Maps a diffusers `AutoencoderKL` tensor list to canonical names.
pub fn vae_names(stored: &[String]) -> Vec<(String, String)> {
    let up_levels = count_children(stored, "decoder.up_blocks.");
    stored
        .iter()
        .filter_map(|name| vae_rename(name, up_levels).map(|c| (name.clone(), format!("{VAE_PREFIX}{c}"))))
        .collect()
}

/// Number of distinct indices `i` in names of the form `{prefix}{i}.…`.
fn count_children(names: &[String], prefix: &str) -> usize {
    names
        .iter()
        .filter_map(|n| n.strip_prefix(prefix)?.split('.').next()?.parse::<usize>().ok())
        .max()
        .map_or(0, |m| m + 1)
}

/// Splits `"{index}.{rest}"`.
fn split_index(s: &str) -> Option<(usize, &str)> {
    let (index, rest) = s.split_once('.')?;
    Some((index.parse().ok()?, rest))
}

/// Per-level block counts of a diffusers UNet.
struct UnetLayout {
    /// Flat LDM index of each down level's first block, and its resnet count.
    down_start: Vec<usize>,
    down_resnets: Vec<usize>,
    /// Flat LDM index of each up level's first block, its resnet count, whether it has attention.
    up_start: Vec<usize>,
    up_resnets: Vec<usize>,
    up_has_attention: Vec<bool>,
}

impl UnetLayout {
    fn scan(names: &[String]) -> Self {
        let mut down: BTreeMap<usize, (usize, bool)> = BTreeMap::new(); // level -> (resnets, downsampler)
        let mut up: BTreeMap<usize, (usize, bool)> = BTreeMap::new(); // level -> (resnets, attention)
        for name in names {
            if let Some((level, rest)) = name.strip_prefix("down_blocks.").and_then(split_index) {
                let entry = down.entry(level).or_default();
                if let Some((j, _)) = rest.strip_prefix("resnets.").and_then(split_index) {
                    entry.0 = entry.0.max(j + 1);
                }
                if rest.starts_with("downsamplers.") {
                    entry.1 = true;
                }
            }
            if let Some((level, rest)) = name.strip_prefix("up_blocks.").and_then(split_index) {
                let entry = up.entry(level).or_default();
                if let Some((j, _)) = rest.strip_prefix("resnets.").and_then(split_index) {
                    entry.0 = entry.0.max(j + 1);
                }
                if rest.starts_with("attentions.") {
                    entry.1 = true;
                }
            }
        }
        let levels = down.keys().next_back().map_or(0, |m| m + 1);
        let mut layout = UnetLayout {
            down_start: vec![],
            down_resnets: vec![],
            up_start: vec![],
            up_resnets: vec![],
            up_has_attention: vec![],
        };
        let mut next = 1; // input_blocks.0 is conv_in
        for level in 0..levels {
            let (resnets, downsampler) = down.get(&level).copied().unwrap_or_default();
            layout.down_start.push(next);
            layout.down_resnets.push(resnets);
            next += resnets + usize::from(downsampler);
        }
        let up_levels = up.keys().next_back().map_or(0, |m| m + 1);
        let mut next = 0;
        for level in 0..up_levels {
            let (resnets, attention) = up.get(&level).copied().unwrap_or_default();
            layout.up_start.push(next);
            layout.up_resnets.push(resnets);
            layout.up_has_attention.push(attention);
            next += resnets;
        }
        layout
    }

    fn rename(&self, name: &str) -> Option<String> {
        let simple = [
            ("conv_in.", "input_blocks.0.0."),
            ("time_embedding.linear_1.", "time_embed.0."),
            ("time_embedding.linear_2.", "time_embed.2."),
            // SDXL's `label_emb` (a Sequential inside a Sequential in sgm).
            ("add_embedding.linear_1.", "label_emb.0.0."),
            ("add_embedding.linear_2.", "label_emb.0.2."),
            ("conv_norm_out.", "out.0."),
            ("conv_out.", "out.2."),
            ("mid_block.resnets.0.", "middle_block.0."),
            ("mid_block.attentions.0.", "middle_block.1."),
            ("mid_block.resnets.1.", "middle_block.2."),
        ];
        for (from, to) in simple {
            if let Some(rest) = name.strip_prefix(from) {
                return Some(format!("{to}{}", unet_resnet_part(from, rest)));
            }
        }
        if let Some((level, rest)) = name.strip_prefix("down_blocks.").and_then(split_index) {
            let start = *self.down_start.get(level)?;
            if let Some((j, inner)) = rest.strip_prefix("resnets.").and_then(split_index) {
                return Some(format!("input_blocks.{}.0.{}", start + j, resnet_param(inner)));
            }
            if let Some((j, inner)) = rest.strip_prefix("attentions.").and_then(split_index) {
                return Some(format!("input_blocks.{}.1.{inner}", start + j));
            }
            if let Some(inner) = rest.strip_prefix("downsamplers.0.conv.") {
                let index = start + self.down_resnets.get(level)?;
                return Some(format!("input_blocks.{index}.0.op.{inner}"));
            }
        }
        if let Some((level, rest)) = name.strip_prefix("up_blocks.").and_then(split_index) {
            let start = *self.up_start.get(level)?;
            if let Some((j, inner)) = rest.strip_prefix("resnets.").and_then(split_index) {
                return Some(format!("output_blocks.{}.0.{}", start + j, resnet_param(inner)));
            }
            if let Some((j, inner)) = rest.strip_prefix("attentions.").and_then(split_index) {
                return Some(format!("output_blocks.{}.1.{inner}", start + j));
            }
            if let Some(inner) = rest.strip_prefix("upsamplers.0.conv.") {
                let index = start + self.up_resnets.get(level)? - 1;
                let layer = if *self.up_has_attention.get(level)? { 2 } else { 1 };
                return Some(format!("output_blocks.{index}.{layer}.conv.{inner}"));
            }
        }
        None
    }
}

/// Mid-block resnets need their parameter names translated; other simple prefixes do not.
fn unet_resnet_part(prefix: &str, rest: &str) -> String {
    if prefix.starts_with("mid_block.resnets.") { resnet_param(rest) } else { rest.to_string() }
}

/// diffusers `ResnetBlock2D` parameter → LDM `ResBlock` parameter.
fn resnet_param(inner: &str) -> String {
    let map = [
        ("norm1.", "in_layers.0."),
        ("conv1.", "in_layers.2."),
        ("time_emb_proj.", "emb_layers.1."),
        ("norm2.", "out_layers.0."),
        ("conv2.", "out_layers.3."),
        ("conv_shortcut.", "skip_connection."),
    ];
    for (from, to) in map {
        if let Some(rest) = inner.strip_prefix(from) {
            return format!("{to}{rest}");
        }
    }
    inner.to_string()
}

/// diffusers VAE name → LDM VAE name (without the `first_stage_model.` prefix).
fn vae_rename(name: &str, up_levels: usize) -> Option<String> {
    for side in ["encoder.", "decoder."] {
        let Some(rest) = name.strip_prefix(side) else {
            continue;
        };
        let mapped = if let Some(inner) = rest.strip_prefix("conv_norm_out.") {
            format!("norm_out.{inner}")
        } else if rest.starts_with("conv_in.") || rest.starts_with("conv_out.") {
            rest.to_string()
        } else if let Some(inner) = rest.strip_prefix("mid_block.resnets.0.") {
            format!("mid.block_1.{}", vae_resnet_param(inner))
        } else if let Some(inner) = rest.strip_prefix("mid_block.resnets.1.") {
            format!("mid.block_2.{}", vae_resnet_param(inner))
        } else if let Some(inner) = rest.strip_prefix("mid_block.attentions.0.") {
            format!("mid.attn_1.{}", vae_attention_param(inner)?)
        } else if let Some((level, inner)) = rest.strip_prefix("down_blocks.").and_then(split_index) {
            if let Some((j, param)) = inner.strip_prefix("resnets.").and_then(split_index) {
                format!("down.{level}.block.{j}.{}", vae_resnet_param(param))
            } else {
                format!("down.{level}.downsample.conv.{}", inner.strip_prefix("downsamplers.0.conv.")?)
            }
        } else if let Some((level, inner)) = rest.strip_prefix("up_blocks.").and_then(split_index) {
            // diffusers counts decoder levels from the lowest resolution, LDM from the highest.
            let ldm_level = up_levels.checked_sub(level + 1)?;
            if let Some((j, param)) = inner.strip_prefix("resnets.").and_then(split_index) {
                format!("up.{ldm_level}.block.{j}.{}", vae_resnet_param(param))
            } else {
                format!("up.{ldm_level}.upsample.conv.{}", inner.strip_prefix("upsamplers.0.conv.")?)
            }
        } else {
            return None;
        };
        return Some(format!("{side}{mapped}"));
    }
    if name.starts_with("quant_conv.") || name.starts_with("post_quant_conv.") {
        return Some(name.to_string());
    }
    None
}

fn vae_resnet_param(inner: &str) -> String {
    match inner.strip_prefix("conv_shortcut.") {
        Some(rest) => format!("nin_shortcut.{rest}"),
        None => inner.to_string(),
    }
}

/// Current (`to_q`) and legacy (`query`) diffusers attention names → LDM `AttnBlock` names.
fn vae_attention_param(inner: &str) -> Option<String> {
    let map = [
        ("group_norm.", "norm."),
        ("to_q.", "q."),
        ("query.", "q."),
        ("to_k.", "k."),
        ("key.", "k."),
        ("to_v.", "v."),
        ("value.", "v."),
        ("to_out.0.", "proj_out."),
        ("proj_attn.", "proj_out."),
    ];
    map.iter().find_map(|(from, to)| inner.strip_prefix(from).map(|rest| format!("{to}{rest}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn unet_blocks_are_flattened_like_ldm() {
        // Two levels, one resnet each (down) and two each (up), attention only in up level 1:
        // the LDM indices follow openaimodel's construction order.
        let stored = names(&[
            "down_blocks.0.resnets.0.norm1.weight",
            "down_blocks.0.attentions.0.proj_in.weight",
            "down_blocks.0.downsamplers.0.conv.weight",
            "down_blocks.1.resnets.0.conv_shortcut.weight",
            "up_blocks.0.resnets.1.time_emb_proj.bias",
            "up_blocks.0.upsamplers.0.conv.weight",
            "up_blocks.1.resnets.1.conv2.weight",
            "up_blocks.1.attentions.1.norm.weight",
            "mid_block.resnets.1.norm2.bias",
            "conv_out.bias",
        ]);
        let mapped: BTreeMap<String, String> = unet_names(&stored).into_iter().collect();
        let expect = |d: &str, l: &str| assert_eq!(mapped[d], format!("{UNET_PREFIX}{l}"), "{d}");
        expect("down_blocks.0.resnets.0.norm1.weight", "input_blocks.1.0.in_layers.0.weight");
        expect("down_blocks.0.attentions.0.proj_in.weight", "input_blocks.1.1.proj_in.weight");
        expect("down_blocks.0.downsamplers.0.conv.weight", "input_blocks.2.0.op.weight");
        expect("down_blocks.1.resnets.0.conv_shortcut.weight", "input_blocks.3.0.skip_connection.weight");
        expect("up_blocks.0.resnets.1.time_emb_proj.bias", "output_blocks.1.0.emb_layers.1.bias");
        expect("up_blocks.0.upsamplers.0.conv.weight", "output_blocks.1.1.conv.weight");
        expect("up_blocks.1.resnets.1.conv2.weight", "output_blocks.3.0.out_layers.3.weight");
        expect("up_blocks.1.attentions.1.norm.weight", "output_blocks.3.1.norm.weight");
        expect("mid_block.resnets.1.norm2.bias", "middle_block.2.out_layers.0.bias");
        expect("conv_out.bias", "out.2.bias");
    }

    #[test]
    fn vae_decoder_levels_are_reversed() {
        let stored = names(&[
            "decoder.up_blocks.0.resnets.2.norm1.weight",
            "decoder.up_blocks.0.upsamplers.0.conv.weight",
            "decoder.up_blocks.3.resnets.0.conv_shortcut.bias",
            "encoder.mid_block.attentions.0.query.weight",
            "encoder.conv_norm_out.bias",
        ]);
        let mapped: BTreeMap<String, String> = vae_names(&stored).into_iter().collect();
        let expect = |d: &str, l: &str| assert_eq!(mapped[d], format!("{VAE_PREFIX}{l}"), "{d}");
        expect("decoder.up_blocks.0.resnets.2.norm1.weight", "decoder.up.3.block.2.norm1.weight");
        expect("decoder.up_blocks.0.upsamplers.0.conv.weight", "decoder.up.3.upsample.conv.weight");
        expect("decoder.up_blocks.3.resnets.0.conv_shortcut.bias", "decoder.up.0.block.0.nin_shortcut.bias");
        expect("encoder.mid_block.attentions.0.query.weight", "encoder.mid.attn_1.q.weight");
        expect("encoder.conv_norm_out.bias", "encoder.norm_out.bias");
    }
}
