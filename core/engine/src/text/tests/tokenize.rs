use sdapi_protocol::choices::EmphasisMode;

use crate::text::encoders::open_clip_ids;
use crate::text::tokenize::{ChunkingOptions, ClipTokenizer, PromptChunk};

const A: u32 = 320; // "a</w>", from the fixture token ids of "a red cube on a table"
const EOS: u32 = ClipTokenizer::EOS;
const BOS: u32 = ClipTokenizer::BOS;

fn tok() -> &'static ClipTokenizer {
    ClipTokenizer::shared()
}

fn chunks(line: &str, options: &ChunkingOptions) -> Vec<PromptChunk> {
    tok().tokenize_line(line, options).expect("tokenize").chunks
}

/// Text tokens of a chunk (between BOS and the first EOS).
fn body(chunk: &PromptChunk) -> Vec<u32> {
    chunk.tokens[1..].iter().copied().take_while(|&t| t != EOS).collect()
}

#[test]
fn encodes_like_transformers() {
    // Ids from the fixture t2i_prompt_edit_and (A1111's CLIPTokenizer).
    assert_eq!(tok().encode("a red cube on a table"), vec![320, 736, 11353, 525, 320, 2175]);
    assert_eq!(tok().encode("A RED"), vec![320, 736]);
    assert_eq!(tok().comma_token(), 267);
    // transformers turns its special-token strings into the special ids.
    assert_eq!(tok().encode("a<|endoftext|>a"), vec![A, EOS, A]);
    // instant-clip's own marker strings are ordinary text for transformers.
    assert!(!tok().encode("<start_of_text>").contains(&BOS));
    // ftfy folds curly quotes.
    assert_eq!(tok().encode("\u{201c}a\u{201d}"), tok().encode("\"a\""));
}

#[test]
fn empty_prompt_is_one_empty_chunk() {
    let line = tok().tokenize_line("", &ChunkingOptions::default()).expect("tokenize");
    assert_eq!(line.chunks, vec![PromptChunk::empty()]);
    assert_eq!(line.token_count, 0);
    assert_eq!(line.chunks[0].tokens[0], BOS);
    assert!(line.chunks[0].tokens[1..].iter().all(|&t| t == EOS));
}

/// Hand-derived: 80 "a" tokens fill 75 in chunk 1 and 5 in chunk 2 (no commas).
#[test]
fn splits_at_75_tokens() {
    let line = tok().tokenize_line(&"a ".repeat(80), &ChunkingOptions::default()).expect("tokenize");
    assert_eq!(line.chunks.len(), 2);
    assert_eq!(body(&line.chunks[0]), vec![A; 75]);
    assert_eq!(line.chunks[0].tokens[76], EOS);
    assert_eq!(body(&line.chunks[1]), vec![A; 5]);
    assert_eq!(line.token_count, 80);
}

/// Hand-derived from `tokenize_line`: 70 "a", ",", 10 "b". The 76th token finds the chunk full
/// with the last comma at index 70, 75 - 70 = 5 <= 20: the 4 "b" after it move on.
#[test]
fn comma_backoff_moves_tail_to_next_chunk() {
    let b = tok().encode("b")[0];
    let prompt = format!("{}, {}", "a ".repeat(70), "b ".repeat(10));
    let c = chunks(&prompt, &ChunkingOptions::default());
    assert_eq!(c.len(), 2);
    let mut first = vec![A; 70];
    first.push(267);
    assert_eq!(body(&c[0]), first);
    assert_eq!(body(&c[1]), vec![b; 10]);

    // Back-off disabled: plain cut at 75.
    let off = ChunkingOptions { comma_padding_backtrack: 0, ..ChunkingOptions::default() };
    let c = chunks(&prompt, &off);
    assert_eq!(body(&c[0]).len(), 75);
    assert_eq!(body(&c[1]), vec![b; 6]);

    // Comma 25 tokens back (> 20): no back-off.
    let far = format!("{}, {}", "a ".repeat(50), "b ".repeat(30));
    let c = chunks(&far, &ChunkingOptions::default());
    assert_eq!(body(&c[0]).len(), 75);
}

/// Hand-derived: a comma arriving when the chunk is full opens the next chunk.
#[test]
fn comma_as_76th_token_starts_next_chunk() {
    let c = chunks(&format!("{}, a", "a ".repeat(75)), &ChunkingOptions::default());
    assert_eq!(body(&c[0]), vec![A; 75]);
    assert_eq!(body(&c[1]), vec![267, A]);
}

#[test]
fn break_closes_a_chunk() {
    let c = chunks("a BREAK a a", &ChunkingOptions::default());
    assert_eq!(c.len(), 2);
    assert_eq!(body(&c[0]), vec![A]);
    assert_eq!(body(&c[1]), vec![A, A]);
    // A lone BREAK closes one (empty) chunk and nothing follows.
    let line = tok().tokenize_line("BREAK", &ChunkingOptions::default()).expect("tokenize");
    assert_eq!(line.chunks.len(), 1);
    assert_eq!(line.token_count, 75);
    // With emphasis "None" BREAK is ordinary text.
    let none = ChunkingOptions { emphasis: EmphasisMode::None, ..ChunkingOptions::default() };
    assert_eq!(chunks("a BREAK a", &none).len(), 1);
}

#[test]
fn multipliers_follow_emphasis() {
    let c = chunks("(red:1.3) cube, [blue] sphere", &ChunkingOptions::default());
    let m = &c[0].multipliers;
    assert_eq!(m[0], 1.0);
    assert_eq!(m[1], 1.3);
    assert_eq!(m[2], 1.0);
    assert_eq!(m[4], (1.0f64 / 1.1) as f32);
    assert!(m[6..].iter().all(|&w| w == 1.0));
    // "None": brackets are text, all weights 1.
    let none = ChunkingOptions { emphasis: EmphasisMode::None, ..ChunkingOptions::default() };
    let c = chunks("(red:1.3)", &none);
    assert!(body(&c[0]).len() > 1);
    assert!(c[0].multipliers.iter().all(|&w| w == 1.0));
}

#[test]
fn open_clip_padding_after_first_eos() {
    let c = chunks("a", &ChunkingOptions::default());
    let ids = open_clip_ids(&c[0].tokens);
    assert_eq!(&ids[..4], &[BOS, A, EOS, 0]);
    assert!(ids[3..].iter().all(|&t| t == 0));
    // SD 1.x keeps the tokenizer's EOS padding.
    assert!(c[0].tokens[3..].iter().all(|&t| t == EOS));
}
