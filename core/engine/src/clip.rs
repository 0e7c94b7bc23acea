//! CLIP text transformer (transformers `CLIPTextModel` semantics) with A1111's CLIP skip.
//!
//! Why not `candle-transformers`' CLIP: its forward builds the token embeddings from the ids
//! internally, so vectors cannot take the place of placeholder tokens (textual inversion,
//! [`TokenVectors`]), and A1111 reads hidden states that model does not hand out together (the
//! penultimate state without the final norm next to the last one, for SD 2.x/SDXL and SDXL's pooled
//! output). The weights use the same transformers names either way.

use candle_core::{DType, Device, Module, Result, Tensor};
use candle_nn::{Embedding, LayerNorm, Linear, VarBuilder};

use crate::attention::multi_head_attention;
use crate::config::{ClipActivation, ClipConfig};
use crate::linear;

struct EncoderLayer {
    layer_norm1: LayerNorm,
    q_proj: Linear,
    k_proj: Linear,
    v_proj: Linear,
    out_proj: Linear,
    layer_norm2: LayerNorm,
    fc1: Linear,
    fc2: Linear,
}

/// A projection with its weight stored the way [`linear::forward`] multiplies fastest.
fn linear_layer(inputs: usize, outputs: usize, vb: VarBuilder) -> Result<Linear> {
    linear::with_transposed_weight(candle_nn::linear(inputs, outputs, vb)?)
}

impl EncoderLayer {
    fn new(cfg: &ClipConfig, vb: VarBuilder) -> Result<Self> {
        let c = cfg.hidden_size;
        let attn = vb.pp("self_attn");
        Ok(Self {
            layer_norm1: candle_nn::layer_norm(c, cfg.layer_norm_eps, vb.pp("layer_norm1"))?,
            q_proj: linear_layer(c, c, attn.pp("q_proj"))?,
            k_proj: linear_layer(c, c, attn.pp("k_proj"))?,
            v_proj: linear_layer(c, c, attn.pp("v_proj"))?,
            out_proj: linear_layer(c, c, attn.pp("out_proj"))?,
            layer_norm2: candle_nn::layer_norm(c, cfg.layer_norm_eps, vb.pp("layer_norm2"))?,
            fc1: linear_layer(c, cfg.intermediate_size, vb.pp("mlp").pp("fc1"))?,
            fc2: linear_layer(cfg.intermediate_size, c, vb.pp("mlp").pp("fc2"))?,
        })
    }

    fn forward(&self, x: &Tensor, heads: usize, activation: ClipActivation, causal_mask: &Tensor) -> Result<Tensor> {
        let h = self.layer_norm1.forward(x)?;
        let attn = multi_head_attention(
            &linear::forward(&self.q_proj, &h)?,
            &linear::forward(&self.k_proj, &h)?,
            &linear::forward(&self.v_proj, &h)?,
            heads,
            Some(causal_mask),
        )?;
        let x = (x + linear::forward(&self.out_proj, &attn)?)?;
        let h = linear::forward(&self.fc1, &self.layer_norm2.forward(&x)?)?;
        let h = match activation {
            ClipActivation::QuickGelu => (&h * candle_nn::ops::sigmoid(&(&h * 1.702)?)?)?,
            ClipActivation::Gelu => h.gelu_erf()?,
        };
        x + linear::forward(&self.fc2, &h)?
    }
}

/// Vectors that take the place of token embeddings (textual inversion): `vectors` (k, C) go at
/// positions `position..position + k` of text `row`, cut at the end of the sequence (A1111's
/// `EmbeddingsWithFixes`, whose offset counts after BOS: position = offset + 1).
#[derive(Debug, Clone)]
pub struct TokenVectors {
    pub row: usize,
    pub position: usize,
    pub vectors: Tensor,
}

/// The text encoder: token + position embeddings, pre-LN layers with a causal mask, final LN.
pub struct ClipTextModel {
    config: ClipConfig,
    token_embedding: Embedding,
    position_embedding: Embedding,
    layers: Vec<EncoderLayer>,
    final_layer_norm: LayerNorm,
    device: Device,
}

impl ClipTextModel {
    /// `vb` points at the `text_model` level (`…text_model.embeddings…`).
    pub fn new(config: ClipConfig, vb: VarBuilder) -> Result<Self> {
        let c = config.hidden_size;
        let emb = vb.pp("embeddings");
        let layers = (0..config.num_layers)
            .map(|i| EncoderLayer::new(&config, vb.pp("encoder").pp("layers").pp(i)))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            token_embedding: candle_nn::embedding(config.vocab_size, c, emb.pp("token_embedding"))?,
            position_embedding: candle_nn::embedding(config.max_positions, c, emb.pp("position_embedding"))?,
            final_layer_norm: candle_nn::layer_norm(c, config.layer_norm_eps, vb.pp("final_layer_norm"))?,
            layers,
            device: vb.device().clone(),
            config,
        })
    }

    pub fn config(&self) -> &ClipConfig {
        &self.config
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    /// `ids`: (n, T) u32 token ids, T ≤ max positions → (n, T, C).
    ///
    /// `clip_skip` is A1111's `CLIP_stop_at_last_layers`: 1 (or 0) is the normal last hidden
    /// state; N > 1 takes `hidden_states[-N]` (the output of layer L+1-N, where index 0 is the
    /// embeddings) and applies the final layer norm. Values beyond L+1 stop at the embeddings.
    pub fn forward(&self, ids: &Tensor, clip_skip: usize) -> Result<Tensor> {
        self.forward_with(ids, &[], clip_skip)
    }

    /// [`Self::forward`] with token embeddings replaced by `fixes`.
    pub fn forward_with(&self, ids: &Tensor, fixes: &[TokenVectors], clip_skip: usize) -> Result<Tensor> {
        let layers_to_run = (self.layers.len() + 1).saturating_sub(clip_skip.max(1));
        let x = self.run_layers(ids, fixes, layers_to_run, |_, _| Ok(()))?;
        self.final_layer_norm.forward(&x)
    }

    /// The two hidden states SD 2.x / SDXL read, both without the final layer norm:
    /// `hidden_states[-2]` (input of the last layer, "penultimate") and `hidden_states[-1]`.
    pub fn penultimate_and_last(&self, ids: &Tensor, fixes: &[TokenVectors]) -> Result<(Tensor, Tensor)> {
        let layers = self.layers.len();
        let mut penultimate = None;
        let last = self.run_layers(ids, fixes, layers, |i, x| {
            if i + 1 == layers {
                penultimate = Some(x.clone());
            }
            Ok(())
        })?;
        // Zero layers: the embeddings are both "penultimate" and last.
        Ok((penultimate.unwrap_or_else(|| last.clone()), last))
    }

    /// The final layer norm (OpenCLIP's `ln_final`).
    pub fn final_layer_norm(&self, x: &Tensor) -> Result<Tensor> {
        self.final_layer_norm.forward(x)
    }

    /// Embeddings then the first `count` layers; `before_layer(i, x)` sees the input of layer i.
    fn run_layers(
        &self,
        ids: &Tensor,
        fixes: &[TokenVectors],
        count: usize,
        mut before_layer: impl FnMut(usize, &Tensor) -> Result<()>,
    ) -> Result<Tensor> {
        let (rows, seq_len) = ids.dims2()?;
        let positions = Tensor::arange(0u32, seq_len as u32, &self.device)?;
        let mut x = self.token_embedding.forward(ids)?;
        for fix in fixes {
            let (k, width) = fix.vectors.dims2()?;
            let len = k.min(seq_len.saturating_sub(fix.position));
            if fix.row >= rows || len == 0 || width != self.config.hidden_size {
                candle_core::bail!(
                    "embedding vectors ({k}, {width}) do not fit text {} at position {} of ({rows}, {seq_len}, {})",
                    fix.row,
                    fix.position,
                    self.config.hidden_size
                );
            }
            let src = fix.vectors.narrow(0, 0, len)?.to_dtype(x.dtype())?.to_device(x.device())?.unsqueeze(0)?;
            x = x.slice_assign(&[fix.row..fix.row + 1, fix.position..fix.position + len, 0..width], &src)?;
        }
        let mut x = x.broadcast_add(&self.position_embedding.forward(&positions)?)?;
        let mask = causal_mask(seq_len, &self.device)?;
        for (i, layer) in self.layers.iter().take(count).enumerate() {
            before_layer(i, &x)?;
            x = layer.forward(&x, self.config.num_heads, self.config.activation, &mask)?;
        }
        Ok(x)
    }
}

/// (T, T) additive mask: 0 on and below the diagonal, -inf above (a token sees only its past).
fn causal_mask(len: usize, device: &Device) -> Result<Tensor> {
    let values: Vec<f32> =
        (0..len).flat_map(|i| (0..len).map(move |j| if j > i { f32::NEG_INFINITY } else { 0.0 })).collect();
    Tensor::from_vec(values, (len, len), device)?.to_dtype(DType::F32)
}
