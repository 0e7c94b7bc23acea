//! Canonical names of the SD 2.x / SDXL text encoders, and the maps onto them.
//!
//! Every text tower is addressed in transformers `CLIPTextModel` naming (`text_model.encoder.
//! layers.N.self_attn.q_proj…`), because OpenCLIP's text transformer is the same network: pre-LN
//! residual blocks, causal mask, GELU MLP. Single files name OpenCLIP differently and fuse q, k, v
//! into one `in_proj`; those rows are exposed as separate q/k/v views without copying the rest.

use crate::loader::tensor_store::StoredView;

/// SD 2.x single-file OpenCLIP-H (`cond_stage_model.model.*`, OpenCLIP naming).
pub const SD2_OPEN_CLIP_FILE_PREFIX: &str = "cond_stage_model.model.";
/// Canonical SD 2.x text tower (transformers naming).
pub const SD2_TEXT_PREFIX: &str = "cond_stage_model.model.text_model.";
/// SDXL's first encoder, CLIP ViT-L (transformers naming in the file already).
pub const SDXL_CLIP_L_PREFIX: &str = "conditioner.embedders.0.transformer.text_model.";
/// SDXL single-file OpenCLIP-bigG (`conditioner.embedders.1.model.*`, OpenCLIP naming).
pub const SDXL_OPEN_CLIP_FILE_PREFIX: &str = "conditioner.embedders.1.model.";
/// Canonical SDXL second text tower (transformers naming).
pub const SDXL_CLIP_G_PREFIX: &str = "conditioner.embedders.1.model.text_model.";
/// Where the SDXL refiner's single-file checkpoints keep OpenCLIP-bigG (its only text encoder);
/// loaded under the base model's canonical bigG names.
pub const SDXL_REFINER_OPEN_CLIP_FILE_PREFIX: &str = "conditioner.embedders.0.model.";

/// Canonical pooled-output projection, (width, projection), used as `x @ P` (OpenCLIP layout).
pub const SDXL_TEXT_PROJECTION: &str = "conditioner.embedders.1.model.text_projection";

/// A `(stored, canonical, view)` triple for [`crate::loader::tensor_store::TensorStore::add_file_views`].
pub type NameView = (String, String, StoredView);

/// Maps the OpenCLIP tensors under `file_prefix` onto transformers names under `text_prefix`.
/// `text_projection` goes to `projection` when given; `logit_scale` is dropped.
pub fn open_clip_names(
    stored: &[(String, Vec<usize>)],
    file_prefix: &str,
    text_prefix: &str,
    projection: Option<&str>,
) -> Vec<NameView> {
    let mut out = Vec::new();
    for (name, shape) in stored {
        let Some(rest) = name.strip_prefix(file_prefix) else {
            continue;
        };
        let mut push = |canonical: String, view: StoredView| {
            out.push((name.clone(), canonical, view));
        };
        match rest {
            "token_embedding.weight" => {
                push(format!("{text_prefix}embeddings.token_embedding.weight"), StoredView::Whole)
            }
            "positional_embedding" => {
                push(format!("{text_prefix}embeddings.position_embedding.weight"), StoredView::Whole)
            }
            "text_projection" => {
                if let Some(p) = projection {
                    push(p.to_string(), StoredView::Whole);
                }
            }
            _ => {
                if let Some(param) = rest.strip_prefix("ln_final.") {
                    push(format!("{text_prefix}final_layer_norm.{param}"), StoredView::Whole);
                } else if let Some((layer, inner)) =
                    rest.strip_prefix("transformer.resblocks.").and_then(|r| r.split_once('.'))
                {
                    let layer_prefix = format!("{text_prefix}encoder.layers.{layer}.");
                    for (canonical, view) in resblock_param(inner, shape) {
                        push(format!("{layer_prefix}{canonical}"), view);
                    }
                }
            }
        }
    }
    out
}

/// One OpenCLIP `ResidualAttentionBlock` parameter → transformers `CLIPEncoderLayer` parameters
/// (three for the fused `in_proj`: q, k and v are its row thirds, in that order).
fn resblock_param(inner: &str, shape: &[usize]) -> Vec<(String, StoredView)> {
    let renames = [
        ("ln_1.", "layer_norm1."),
        ("ln_2.", "layer_norm2."),
        ("mlp.c_fc.", "mlp.fc1."),
        ("mlp.c_proj.", "mlp.fc2."),
        ("attn.out_proj.", "self_attn.out_proj."),
    ];
    for (from, to) in renames {
        if let Some(param) = inner.strip_prefix(from) {
            return vec![(format!("{to}{param}"), StoredView::Whole)];
        }
    }
    let param = match inner {
        "attn.in_proj_weight" => "weight",
        "attn.in_proj_bias" => "bias",
        _ => return Vec::new(),
    };
    let Some(width) = shape.first().map(|rows| rows / 3) else {
        return Vec::new();
    };
    ["q_proj", "k_proj", "v_proj"]
        .iter()
        .enumerate()
        .map(|(i, proj)| (format!("self_attn.{proj}.{param}"), StoredView::Rows { start: i * width, len: width }))
        .collect()
}

/// diffusers `text_encoder_2` (`CLIPTextModelWithProjection`): `text_model.*` as is, and the
/// projection Linear weight (proj, width) transposed to OpenCLIP's (width, proj).
pub fn diffusers_clip_g_names(stored: &[(String, Vec<usize>)]) -> Vec<NameView> {
    stored
        .iter()
        .filter_map(|(name, _)| {
            if name == "text_projection.weight" {
                return Some((name.clone(), SDXL_TEXT_PROJECTION.to_string(), StoredView::Transposed));
            }
            let rest = name.strip_prefix("text_model.")?;
            Some((name.clone(), format!("{SDXL_CLIP_G_PREFIX}{rest}"), StoredView::Whole))
        })
        .collect()
}

/// transformers `text_model.*` names moved under `prefix`.
pub fn transformers_clip_names(stored: &[(String, Vec<usize>)], prefix: &str) -> Vec<NameView> {
    stored
        .iter()
        .filter_map(|(name, _)| {
            let rest = name.strip_prefix("text_model.")?;
            Some((name.clone(), format!("{prefix}{rest}"), StoredView::Whole))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fused_in_proj_is_split_into_row_thirds() {
        let stored = vec![
            ("m.transformer.resblocks.3.attn.in_proj_weight".to_string(), vec![48, 16]),
            ("m.transformer.resblocks.3.attn.in_proj_bias".to_string(), vec![48]),
            ("m.transformer.resblocks.3.mlp.c_proj.bias".to_string(), vec![16]),
            ("m.text_projection".to_string(), vec![16, 12]),
            ("m.logit_scale".to_string(), vec![]),
        ];
        let names = open_clip_names(&stored, "m.", "t.", Some("proj"));
        let find = |c: &str| names.iter().find(|(_, n, _)| n == c).map(|(_, _, v)| *v);
        assert_eq!(find("t.encoder.layers.3.self_attn.k_proj.weight"), Some(StoredView::Rows { start: 16, len: 16 }));
        assert_eq!(find("t.encoder.layers.3.self_attn.v_proj.bias"), Some(StoredView::Rows { start: 32, len: 16 }));
        assert_eq!(find("t.encoder.layers.3.mlp.fc2.bias"), Some(StoredView::Whole));
        assert_eq!(find("proj"), Some(StoredView::Whole));
        assert_eq!(names.len(), 3 + 3 + 1 + 1, "logit_scale is dropped");
    }
}
