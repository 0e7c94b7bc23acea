use std::cell::RefCell;

use candle_core::{Device, Tensor};

use sdapi_protocol::choices::EmphasisMode;
use sdapi_protocol::prompt::ScheduleParams;

use crate::text::{
    ChunkedBatch, ChunkingOptions, ClipTokenizer, Conditioner, Conditioning, PromptChunk, TextConditioner, TextError,
    TextSide, apply_emphasis, reconstruct_cond_batch, reconstruct_multicond_batch,
};

const C: usize = 3;

/// Deterministic stand-in for the model: z[n, t, c] = f(id, t, c) per chunk position, chunks
/// concatenated on the token axis as the engine does; records every chunk position encoded.
struct FakeEncoder {
    calls: RefCell<Vec<Vec<[u32; 77]>>>,
}

impl FakeEncoder {
    fn new() -> Self {
        Self { calls: RefCell::new(Vec::new()) }
    }

    fn value(id: u32, t: usize, c: usize) -> f32 {
        ((id % 101) as f32) * 0.01 + (t as f32) * 0.003 - (c as f32) * 0.2 + 0.05
    }
}

impl FakeEncoder {
    fn encode_chunks(&self, tokens: &[[u32; 77]]) -> candle_core::Result<Tensor> {
        self.calls.borrow_mut().push(tokens.to_vec());
        let mut data = Vec::with_capacity(tokens.len() * 77 * C);
        for chunk in tokens {
            for (t, &id) in chunk.iter().enumerate() {
                for c in 0..C {
                    data.push(Self::value(id, t, c));
                }
            }
        }
        Tensor::from_vec(data, (tokens.len(), 77, C), &Device::Cpu)
    }
}

impl Conditioner for FakeEncoder {
    fn condition(&self, batch: &ChunkedBatch, _side: TextSide) -> Result<Conditioning, TextError> {
        let columns = batch
            .columns()
            .iter()
            .map(|column| self.encode_chunks(&column.tokens))
            .collect::<candle_core::Result<Vec<_>>>()?;
        Ok(Conditioning { crossattn: Tensor::cat(&columns, 1)?, vector: None })
    }
}

fn texts(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

/// "Original" against a plain-loop computation in f64: mean before, multiply, mean after, ratio.
#[test]
fn original_emphasis_restores_the_mean() {
    let (n, t) = (2, 77);
    let z: Vec<f32> = (0..n * t * C).map(|i| ((i * 37 % 101) as f32) * 0.013 - 0.4).collect();
    let m: Vec<f32> = (0..n * t)
        .map(|i| {
            if i % 7 == 3 {
                1.3
            } else if i % 11 == 5 {
                0.9
            } else {
                1.0
            }
        })
        .collect();
    let zt = Tensor::from_vec(z.clone(), (n, t, C), &Device::Cpu).expect("z");
    let mt = Tensor::from_vec(m.clone(), (n, t), &Device::Cpu).expect("m");
    let ours = apply_emphasis(&zt, &mt, EmphasisMode::Original).expect("emphasis");
    let ours: Vec<f32> = ours.flatten_all().expect("flat").to_vec1().expect("vec");

    let mean_before = z.iter().map(|&v| f64::from(v)).sum::<f64>() / z.len() as f64;
    let weighted: Vec<f64> = z.iter().enumerate().map(|(i, &v)| f64::from(v) * f64::from(m[i / C])).collect();
    let mean_after = weighted.iter().sum::<f64>() / weighted.len() as f64;
    let max_err = weighted
        .iter()
        .zip(&ours)
        .map(|(w, o)| (w * mean_before / mean_after - f64::from(*o)).abs())
        .fold(0.0, f64::max);
    assert!(max_err < 1e-6, "max error {max_err}");
    // The weights really changed something (the test would catch a no-op).
    assert!(weighted.iter().zip(&z).any(|(w, &v)| (w - f64::from(v)).abs() > 1e-3));

    let no_norm = apply_emphasis(&zt, &mt, EmphasisMode::NoNorm).expect("no norm");
    let no_norm: Vec<f32> = no_norm.flatten_all().expect("flat").to_vec1().expect("vec");
    let max_err = weighted.iter().zip(&no_norm).map(|(w, o)| (w - f64::from(*o)).abs()).fold(0.0, f64::max);
    assert!(max_err < 1e-6);
    let ignored = apply_emphasis(&zt, &mt, EmphasisMode::Ignore).expect("ignore");
    assert_eq!(ignored.flatten_all().expect("flat").to_vec1::<f32>().expect("vec"), z);
}

/// Two texts of 2 and 1 chunks: two encoder calls of two chunks each, the shorter text padded
/// with an empty chunk, chunks concatenated on the token axis.
#[test]
fn encode_texts_batches_chunk_positions() {
    let enc = FakeEncoder::new();
    let opts = ChunkingOptions { emphasis: EmphasisMode::Ignore, ..Default::default() };
    let cond = TextConditioner::new(&enc, opts);
    let long = "a ".repeat(80);
    let z = cond.encode_texts(&texts(&[&long, "a"])).expect("encode");
    assert_eq!(z.dims(), &[2, 154, C]);
    let calls = enc.calls.borrow();
    assert_eq!(calls.len(), 2);
    assert!(calls.iter().all(|c| c.len() == 2));
    assert_eq!(calls[1][1], PromptChunk::empty().tokens);
    // Row 1, token 77 + 1 comes from the empty chunk: id EOS at position 1.
    let v = z.get(1).expect("row").get(78).expect("tok").to_vec1::<f32>().expect("vec");
    assert_eq!(v[0], FakeEncoder::value(ClipTokenizer::EOS, 1, 0));
}

/// Hand-derived: "x [y:z:2]" with 4 steps has entries (2, "x y") and (4, "x z"), encoded in one
/// call; steps 0..=2 use the first, 3..=4 the second, beyond the end falls back to the first.
#[test]
fn learned_conditioning_and_reconstruct() {
    let enc = FakeEncoder::new();
    let cond = TextConditioner::new(&enc, ChunkingOptions::default());
    let prompts = texts(&["x [y:z:2]", "x [y:z:2]"]);
    let learned = cond.learned_conditioning(&prompts, &ScheduleParams::new(4)).expect("learned");
    assert_eq!(enc.calls.borrow().len(), 1, "duplicates share one encoder call");
    assert_eq!(enc.calls.borrow()[0].len(), 2, "both schedule texts in one batch");
    assert_eq!(learned[0].iter().map(|e| e.end_at_step).collect::<Vec<_>>(), vec![2, 4]);

    let direct = cond.encode_texts(&texts(&["x y", "x z"])).expect("direct");
    let pick = |step| reconstruct_cond_batch(&learned, step).expect("reconstruct");
    for (step, row) in [(0, 0), (2, 0), (3, 1), (4, 1), (9, 0)] {
        let got = pick(step);
        assert_eq!(got.dims(), &[2, 77, C]);
        let want = direct.get(row).expect("row");
        let diff = (got.get(1).expect("img") - &want).expect("sub").abs().expect("abs").max_all().expect("max");
        assert_eq!(diff.to_scalar::<f32>().expect("scalar"), 0.0, "step {step}");
    }
}

/// AND with weights over a batch of two: conds_list rows and weights as CFGDenoiser reads
/// them; a shorter sub-prompt is padded by repeating its last token vector.
#[test]
fn multicond_reconstruct_layout_and_padding() {
    let enc = FakeEncoder::new();
    let cond = TextConditioner::new(&enc, ChunkingOptions::default());
    let long = "a ".repeat(80);
    let prompt = format!("b AND {long}:0.5");
    let multi =
        cond.multicond_learned_conditioning(&texts(&[&prompt, &prompt]), &ScheduleParams::new(8)).expect("multi");
    let (conds_list, tensor) = reconstruct_multicond_batch(&multi, 0).expect("reconstruct");
    assert_eq!(conds_list, vec![vec![(0, 1.0), (1, 0.5)], vec![(2, 1.0), (3, 0.5)]]);
    assert_eq!(tensor.dims(), &[4, 154, C]);
    let short = tensor.get(0).expect("short");
    let last = short.get(76).expect("last").to_vec1::<f32>().expect("vec");
    for t in 77..154 {
        assert_eq!(short.get(t).expect("pad").to_vec1::<f32>().expect("vec"), last);
    }
    // Different lengths in a plain (negative-prompt) batch are an error, as in A1111.
    let learned = cond.learned_conditioning(&texts(&["b", &long]), &ScheduleParams::new(8)).expect("learned");
    assert!(reconstruct_cond_batch(&learned, 0).is_err());
}

/// A prompt over the chunk bound is refused before the encoder runs.
#[test]
fn too_many_chunks_are_refused_before_encoding() {
    let enc = FakeEncoder::new();
    let cond = TextConditioner::new(&enc, ChunkingOptions::default()).with_max_chunks(4);
    let err = cond.encode_texts(&texts(&[&"a BREAK ".repeat(5)])).unwrap_err();
    assert!(matches!(err, TextError::TooManyChunks { chunks: 5, limit: 4 }), "{err}");
    assert!(enc.calls.borrow().is_empty());
    assert!(cond.encode_texts(&texts(&[&"a BREAK ".repeat(3)])).is_ok());
}
