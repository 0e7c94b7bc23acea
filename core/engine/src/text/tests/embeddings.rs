//! Textual-inversion placeholders in the tokenizer (A1111's `tokenize_line` with an embedding
//! database): positions, weights, chunk moves, longest match, and `TI hashes`.

use candle_core::{Device, Tensor};

use crate::text::{
    BOS_ID, ChunkingOptions, ClipTokenizer, EMBEDDING_PLACEHOLDER, EOS_ID, EmbeddingTable, TableEntry, TiHashes,
};

fn entry(name: &str, vectors: usize, hash: &str) -> TableEntry {
    let v = Tensor::ones((vectors, 4), candle_core::DType::F32, &Device::Cpu).unwrap();
    TableEntry { name: name.into(), short_hash: hash.into(), vectors: vec![v] }
}

fn table(entries: Vec<TableEntry>) -> EmbeddingTable {
    EmbeddingTable::new(ClipTokenizer::shared(), entries)
}

#[test]
fn an_embedding_name_becomes_placeholders_with_its_fragment_weight() {
    let tok = ClipTokenizer::shared();
    let t = table(vec![entry("tiny-emb", 2, "h")]);
    let line = tok.tokenize_line_with("a (tiny-emb:1.3) cube", &ChunkingOptions::default(), Some(&t.vocab)).unwrap();
    let chunk = &line.chunks[0];
    let a = tok.encode("a");
    // BOS, "a", two placeholders, "cube", EOS…
    assert_eq!(chunk.tokens[0], BOS_ID);
    assert_eq!(chunk.tokens[1], a[0]);
    assert_eq!(&chunk.tokens[2..4], &[EMBEDDING_PLACEHOLDER, EMBEDDING_PLACEHOLDER]);
    assert_eq!(chunk.tokens[4], tok.encode("cube")[0]);
    assert_eq!(chunk.tokens[5], EOS_ID);
    assert_eq!(&chunk.multipliers[2..4], &[1.3, 1.3]);
    assert_eq!(chunk.fixes.len(), 1);
    assert_eq!((chunk.fixes[0].offset, chunk.fixes[0].embedding), (1, 0));
    assert_eq!(line.token_count, 4);
    // The vectors go after BOS: position = offset + 1.
    let fixes = t.fixes(&line.chunks);
    assert_eq!((fixes[0].row, fixes[0].position), (0, 2));
}

#[test]
fn an_embedding_that_does_not_fit_starts_the_next_chunk() {
    let tok = ClipTokenizer::shared();
    let t = table(vec![entry("tiny-emb", 3, "h")]);
    // 73 single-token words leave 2 free positions: the 3-vector embedding moves on whole.
    let filler = vec!["cat"; 73].join(" ");
    let options = ChunkingOptions { comma_padding_backtrack: 0, ..Default::default() };
    let line = tok.tokenize_line_with(&format!("{filler} tiny-emb"), &options, Some(&t.vocab)).unwrap();
    assert_eq!(line.chunks.len(), 2);
    assert!(line.chunks[0].fixes.is_empty());
    assert_eq!(&line.chunks[0].tokens[74..], &[EOS_ID, EOS_ID, EOS_ID], "the first chunk is padded");
    assert_eq!(line.chunks[1].fixes[0].offset, 0);
    assert_eq!(&line.chunks[1].tokens[1..4], &[EMBEDDING_PLACEHOLDER; 3]);
}

#[test]
fn the_longest_registered_name_wins() {
    let tok = ClipTokenizer::shared();
    let t = table(vec![entry("style", 1, "a"), entry("style-two", 2, "b")]);
    let line = tok.tokenize_line_with("style-two style", &ChunkingOptions::default(), Some(&t.vocab)).unwrap();
    let fixes: Vec<_> = line.chunks[0].fixes.iter().map(|f| (f.offset, f.embedding)).collect();
    assert_eq!(fixes, vec![(0, 1), (2, 0)]);
}

#[test]
fn ti_hashes_prepend_per_encoder_call() {
    let tok = ClipTokenizer::shared();
    let t = table(vec![entry("a:b,c", 1, "111"), entry("other", 1, "222")]);
    let hashes = TiHashes::default();
    let options = ChunkingOptions::default();
    let negative = tok.tokenize_line_with("other", &options, Some(&t.vocab)).unwrap();
    hashes.record(&t, negative.chunks.iter(), 1);
    let positive = tok.tokenize_line_with("a:b,c and other and a:b,c", &options, Some(&t.vocab)).unwrap();
    hashes.record(&t, positive.chunks.iter(), 1);
    // Names lose ':' and ','; each used once per call, in first-use order; new calls go first.
    assert_eq!(hashes.value().as_deref(), Some("abc: 111, other: 222, other: 222"));
    let sdxl = TiHashes::default();
    sdxl.record(&t, negative.chunks.iter(), 2);
    assert_eq!(sdxl.value().as_deref(), Some("other: 222, other: 222"), "SDXL's two encoders each add theirs");
}
