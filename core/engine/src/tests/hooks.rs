//! The hooks the network features build on: weight patches merged at load, and embedding vectors
//! in place of placeholder tokens.

use std::sync::Arc;

use candle_core::{DType, Device, IndexOp, Tensor};
use sdapi_protocol::choices::EmphasisMode;

use super::{max_abs_diff, model, single_file_path};
use crate::LoadedModel;
use crate::loader::tensor_store::WeightPatch;
use crate::text::{ChunkColumn, ClipTokenizer, EmbeddingFix, SdxlSizes, TextSide};

/// Adds a constant to one named tensor.
struct AddConstant {
    name: &'static str,
    value: f32,
}

impl WeightPatch for AddConstant {
    fn delta(&self, name: &str, shape: &[usize]) -> candle_core::Result<Option<Tensor>> {
        if name != self.name {
            return Ok(None);
        }
        Ok(Some(Tensor::full(self.value, shape, &Device::Cpu)?))
    }
}

#[test]
fn weight_patches_are_merged_into_the_tensors_they_name() {
    let patch: Arc<dyn WeightPatch> = Arc::new(AddConstant { name: "model.diffusion_model.out.2.bias", value: 1.0 });
    let patched = LoadedModel::load_patched(&single_file_path(), None, &[patch], &Device::Cpu, DType::F32).unwrap();
    let x = Tensor::randn(0f32, 1.0, (1, 4, 8, 8), &Device::Cpu).unwrap();
    let t = Tensor::new(&[500f32], &Device::Cpu).unwrap();
    let context = Tensor::randn(0f32, 1.0, (1, 77, 32), &Device::Cpu).unwrap();
    let plain = model().unet.forward(&x, &t, &context).unwrap();
    let shifted = patched.unet.forward(&x, &t, &context).unwrap();
    // The output convolution's bias moved by 1: every output value moves by exactly 1.
    let diff = (shifted - plain).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
    assert!(diff.iter().all(|d| (d - 1.0).abs() < 1e-5), "{:?}", &diff[..4]);
}

fn column(tokens: [u32; 77], embeddings: Vec<EmbeddingFix>) -> ChunkColumn {
    ChunkColumn { tokens: vec![tokens], multipliers: vec![[1.0; 77]], embeddings }
}

fn condition(column: &ChunkColumn) -> Tensor {
    model()
        .condition(
            std::slice::from_ref(column),
            EmphasisMode::Original,
            1,
            &SdxlSizes::for_request(64, 64),
            TextSide::Positive,
        )
        .unwrap()
        .crossattn
}

#[test]
fn embedding_vectors_replace_token_embeddings() {
    let line = ClipTokenizer::shared().tokenize_line("a red cube on a table", &Default::default()).unwrap();
    let tokens = line.chunks[0].tokens;
    let plain = condition(&column(tokens, vec![]));

    // Vectors equal to the embeddings of the tokens already there change nothing.
    let table = candle_core::safetensors::load(single_file_path(), &Device::Cpu).unwrap()
        ["cond_stage_model.transformer.text_model.embeddings.token_embedding.weight"]
        .clone();
    let own = table.index_select(&Tensor::new(&tokens[2..4], &Device::Cpu).unwrap(), 0).unwrap();
    let same = condition(&column(tokens, vec![EmbeddingFix { row: 0, position: 2, vectors: vec![own] }]));
    assert_eq!(max_abs_diff(&same, &plain), 0.0);

    // Other vectors at position 3 change position 3 and later (causal attention), never earlier.
    let other = Tensor::randn(0f32, 1.0, (2, 32), &Device::Cpu).unwrap();
    let changed = condition(&column(tokens, vec![EmbeddingFix { row: 0, position: 3, vectors: vec![other] }]));
    assert_eq!(max_abs_diff(&changed.i((.., ..3)).unwrap(), &plain.i((.., ..3)).unwrap()), 0.0);
    assert!(max_abs_diff(&changed.i((.., 3..)).unwrap(), &plain.i((.., 3..)).unwrap()) > 1e-3);

    // Vectors of the wrong width are an error, not a silent truncation.
    let wrong = Tensor::zeros((1, 7), DType::F32, &Device::Cpu).unwrap();
    let err = model().condition(
        &[column(tokens, vec![EmbeddingFix { row: 0, position: 1, vectors: vec![wrong] }])],
        EmphasisMode::Original,
        1,
        &SdxlSizes::for_request(64, 64),
        TextSide::Positive,
    );
    assert!(err.is_err());
}
