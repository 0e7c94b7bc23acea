//! CLIP tokenization and A1111's 75-token chunking (`sd_hijack_clip.tokenize_line`, §7.4).

use std::collections::HashMap;
use std::sync::OnceLock;

use instant_clip_tokenizer::{Token, Tokenizer};

use sdapi_protocol::choices::EmphasisMode;
use sdapi_protocol::prompt::{PromptError, WeightedText, parse_attention};

/// Tokens per chunk, without BOS/EOS.
pub const CHUNK_LENGTH: usize = 75;
/// Tokens per chunk as CLIP sees it: BOS + 75 + EOS.
pub const CHUNK_TOKENS: usize = CHUNK_LENGTH + 2;
/// CLIP's start-of-text id.
pub const BOS_ID: u32 = 49406;
/// CLIP's end-of-text id (the largest id of the vocabulary), also SD 1.x's padding.
pub const EOS_ID: u32 = 49407;

/// Settings of the chunking that vary by model or option.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ChunkingOptions {
    pub emphasis: EmphasisMode,
    /// `opts.comma_padding_backtrack` (0 disables it).
    pub comma_padding_backtrack: usize,
}

impl Default for ChunkingOptions {
    /// A1111's default options.
    fn default() -> Self {
        Self { emphasis: EmphasisMode::Original, comma_padding_backtrack: 20 }
    }
}

/// One chunk: `[BOS] + 75 tokens (EOS-padded) + [EOS]` and per-token emphasis weights.
#[derive(Debug, Clone, PartialEq)]
pub struct PromptChunk {
    pub tokens: [u32; CHUNK_TOKENS],
    pub multipliers: [f32; CHUNK_TOKENS],
    /// Embeddings placed in this chunk (A1111's `PromptChunkFix`).
    pub fixes: Vec<ChunkFix>,
}

impl PromptChunk {
    /// A1111's `empty_chunk()`: BOS then EOS everywhere, all weights 1.
    pub fn empty() -> Self {
        let mut tokens = [ClipTokenizer::EOS; CHUNK_TOKENS];
        tokens[0] = ClipTokenizer::BOS;
        Self { tokens, multipliers: [1.0; CHUNK_TOKENS], fixes: Vec::new() }
    }
}

/// An embedding's placeholder run in a chunk: its vectors replace the token embeddings from
/// `offset + 1` (after BOS) on. `embedding` indexes the [`EmbeddingVocab`] it was found with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkFix {
    pub offset: usize,
    pub embedding: usize,
}

/// A1111's placeholder token for embedding positions (the literal id 0).
pub const EMBEDDING_PLACEHOLDER: u32 = 0;

/// Textual-inversion embeddings as the tokenizer matches them: by the token ids of their names
/// (A1111's `ids_lookup`, longest name first).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EmbeddingVocab {
    by_first: HashMap<u32, Vec<(Vec<u32>, usize)>>,
    /// Vectors of each embedding, by index.
    vector_counts: Vec<usize>,
}

impl EmbeddingVocab {
    /// Registers embedding `index` under `name` with `vectors` vectors (1..=75).
    pub fn register(&mut self, tokenizer: &ClipTokenizer, name: &str, index: usize, vectors: usize) {
        let ids = tokenizer.encode(name);
        let Some(&first) = ids.first() else { return };
        if self.vector_counts.len() <= index {
            self.vector_counts.resize(index + 1, 0);
        }
        self.vector_counts[index] = vectors;
        let list = self.by_first.entry(first).or_default();
        list.retain(|(existing, _)| existing != &ids);
        list.push((ids, index));
        list.sort_by_key(|(ids, _)| std::cmp::Reverse(ids.len()));
    }

    pub fn is_empty(&self) -> bool {
        self.by_first.is_empty()
    }

    /// A1111's `find_embedding_at_position`: (embedding index, vector count, name length in tokens).
    fn find_at(&self, tokens: &[u32], position: usize) -> Option<(usize, usize, usize)> {
        let candidates = self.by_first.get(tokens.get(position)?)?;
        candidates.iter().find_map(|(ids, index)| {
            let matches = tokens.get(position..position + ids.len()) == Some(ids.as_slice());
            matches.then(|| (*index, self.vector_counts.get(*index).copied().unwrap_or(0), ids.len()))
        })
    }
}

/// The chunks of one prompt line.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenizedLine {
    pub chunks: Vec<PromptChunk>,
    /// A1111's token count (75 per full chunk plus the used part of the last one).
    pub token_count: usize,
}

/// The CLIP BPE tokenizer (the vocabulary of openai/clip-vit-large-patch14), built once.
///
/// Differences from A1111's `transformers.CLIPTokenizer` (ftfy + whitespace clean + lower):
/// * handled here: `<|startoftext|>`/`<|endoftext|>` in the text become BOS/EOS as in
///   transformers, and instant-clip's own markers `<start_of_text>`/`<end_of_text>` are
///   tokenized as plain text; curly quotes, Latin ligatures and full-width ASCII are folded
///   like ftfy does;
/// * not handled: the rest of `ftfy.fix_text` (mojibake repair, HTML entities, NFC), and the
///   small differences between Python's and Rust's Unicode tables. Plain prompts are identical.
pub struct ClipTokenizer {
    inner: Tokenizer,
    comma: u32,
}

impl ClipTokenizer {
    pub const BOS: u32 = BOS_ID;
    pub const EOS: u32 = EOS_ID;

    /// Builds the tokenizer (~50 ms); prefer [`ClipTokenizer::shared`].
    pub fn new() -> Self {
        let inner = Tokenizer::new();
        let mut comma = Vec::new();
        inner.encode(",", &mut comma);
        // ",</w>" is 267 in the CLIP vocabulary.
        let comma = comma.first().map_or(267, |t| u32::from(t.to_u16()));
        Self { inner, comma }
    }

    /// The process-wide instance.
    pub fn shared() -> &'static ClipTokenizer {
        static SHARED: OnceLock<ClipTokenizer> = OnceLock::new();
        SHARED.get_or_init(ClipTokenizer::new)
    }

    /// Id of `,</w>`, the token the comma back-off looks for.
    pub fn comma_token(&self) -> u32 {
        self.comma
    }

    /// Token ids of `text` without BOS/EOS (A1111: `add_special_tokens=False`).
    pub fn encode(&self, text: &str) -> Vec<u32> {
        let mut ids = Vec::new();
        for (segment, special) in split_special_tokens(text) {
            match special {
                Some(id) => ids.push(id),
                None => {
                    let mut tokens: Vec<Token> = Vec::new();
                    self.inner.encode(&prepare_segment(segment), &mut tokens);
                    ids.extend(tokens.into_iter().map(|t| u32::from(t.to_u16())));
                }
            }
        }
        ids
    }

    /// A1111's `tokenize_line` without embeddings.
    pub fn tokenize_line(&self, line: &str, options: &ChunkingOptions) -> Result<TokenizedLine, PromptError> {
        self.tokenize_line_with(line, options, None)
    }

    /// A1111's `tokenize_line`: emphasis parsing, fragments tokenized separately, packing into
    /// chunks of 75 with the comma back-off, BREAK closing a chunk, and embedding names replaced
    /// by placeholder runs (an embedding that does not fit the current chunk starts the next).
    pub fn tokenize_line_with(
        &self,
        line: &str,
        options: &ChunkingOptions,
        vocab: Option<&EmbeddingVocab>,
    ) -> Result<TokenizedLine, PromptError> {
        let parsed = match options.emphasis {
            EmphasisMode::None => vec![WeightedText { text: line.to_string(), weight: 1.0 }],
            _ => parse_attention(line)?,
        };
        let mut packer = ChunkPacker::new(options.comma_padding_backtrack, self.comma);
        for fragment in &parsed {
            if fragment.is_break() {
                packer.close_chunk(false);
                continue;
            }
            let weight = fragment.weight as f32;
            let tokens = self.encode(&fragment.text);
            let mut position = 0;
            while position < tokens.len() {
                let token = tokens[position];
                packer.before_token(token);
                match vocab.and_then(|v| v.find_at(&tokens, position)) {
                    Some((embedding, vectors, name_len)) => {
                        packer.push_embedding(embedding, vectors, weight);
                        position += name_len;
                    }
                    None => {
                        packer.push_token(token, weight);
                        position += 1;
                    }
                }
            }
        }
        Ok(packer.finish())
    }
}

impl Default for ClipTokenizer {
    fn default() -> Self {
        Self::new()
    }
}

/// The chunk being filled and the finished ones (the state of `tokenize_line`).
struct ChunkPacker {
    backtrack: usize,
    comma: u32,
    chunks: Vec<PromptChunk>,
    tokens: Vec<u32>,
    multipliers: Vec<f32>,
    fixes: Vec<ChunkFix>,
    /// Index in `tokens` of the last comma of the current chunk.
    last_comma: Option<usize>,
    token_count: usize,
}

impl ChunkPacker {
    fn new(backtrack: usize, comma: u32) -> Self {
        Self {
            backtrack,
            comma,
            chunks: Vec::new(),
            tokens: Vec::with_capacity(CHUNK_LENGTH),
            multipliers: Vec::with_capacity(CHUNK_LENGTH),
            fixes: Vec::new(),
            last_comma: None,
            token_count: 0,
        }
    }

    /// The comma bookkeeping and chunk break A1111 does for every token position, whether an
    /// embedding starts there or not.
    fn before_token(&mut self, token: u32) {
        if token == self.comma {
            self.last_comma = Some(self.tokens.len());
        } else if let Some(comma) = self.last_comma {
            // A full chunk with a comma near its end: move what follows the comma on. Embedding
            // fixes stay with the closed chunk, as in A1111.
            let full = self.tokens.len() == CHUNK_LENGTH;
            if self.backtrack != 0 && full && self.tokens.len() - comma <= self.backtrack {
                let moved_tokens = self.tokens.split_off(comma + 1);
                let moved_multipliers = self.multipliers.split_off(comma + 1);
                self.close_chunk(false);
                self.tokens = moved_tokens;
                self.multipliers = moved_multipliers;
            }
        }
        if self.tokens.len() == CHUNK_LENGTH {
            self.close_chunk(false);
        }
    }

    fn push_token(&mut self, token: u32, weight: f32) {
        self.tokens.push(token);
        self.multipliers.push(weight);
    }

    /// `vectors` placeholder tokens for an embedding (at most 75: longer ones are not loaded).
    fn push_embedding(&mut self, embedding: usize, vectors: usize, weight: f32) {
        let vectors = vectors.min(CHUNK_LENGTH);
        if self.tokens.len() + vectors > CHUNK_LENGTH {
            self.close_chunk(false);
        }
        self.fixes.push(ChunkFix { offset: self.tokens.len(), embedding });
        self.tokens.extend(std::iter::repeat_n(EMBEDDING_PLACEHOLDER, vectors));
        self.multipliers.extend(std::iter::repeat_n(weight, vectors));
    }

    /// A1111's `next_chunk(is_last)`: pad, add BOS/EOS, start a new chunk.
    fn close_chunk(&mut self, is_last: bool) {
        self.token_count += if is_last { self.tokens.len() } else { CHUNK_LENGTH };
        let mut chunk = PromptChunk::empty();
        let used = self.tokens.len().min(CHUNK_LENGTH);
        chunk.tokens[1..1 + used].copy_from_slice(&self.tokens[..used]);
        chunk.multipliers[1..1 + used].copy_from_slice(&self.multipliers[..used]);
        chunk.fixes = std::mem::take(&mut self.fixes);
        self.chunks.push(chunk);
        self.tokens.clear();
        self.multipliers.clear();
        self.last_comma = None;
    }

    fn finish(mut self) -> TokenizedLine {
        if !self.tokens.is_empty() || self.chunks.is_empty() {
            self.close_chunk(true);
        }
        TokenizedLine { chunks: self.chunks, token_count: self.token_count }
    }
}

const SPECIAL_TOKENS: [(&str, u32); 2] =
    [("<|startoftext|>", ClipTokenizer::BOS), ("<|endoftext|>", ClipTokenizer::EOS)];

/// Splits out the special-token strings transformers recognises inside the text.
fn split_special_tokens(text: &str) -> Vec<(&str, Option<u32>)> {
    let mut out = Vec::new();
    let mut rest = text;
    loop {
        let next = SPECIAL_TOKENS
            .iter()
            .filter_map(|(s, id)| rest.find(s).map(|at| (at, *s, *id)))
            .min_by_key(|(at, _, _)| *at);
        match next {
            Some((at, s, id)) => {
                if at > 0 {
                    out.push((&rest[..at], None));
                }
                out.push((s, Some(id)));
                rest = &rest[at + s.len()..];
            }
            None => {
                if !rest.is_empty() {
                    out.push((rest, None));
                }
                return out;
            }
        }
    }
}

/// ftfy-like folding, lowercasing, and defusing instant-clip's marker strings (spaces between
/// the pieces give the same word split as CLIP's regex, so the same tokens).
fn prepare_segment(segment: &str) -> String {
    let folded: String = segment.chars().flat_map(fold_char).collect();
    folded
        .to_lowercase()
        .replace("<start_of_text>", "< start _ of _ text >")
        .replace("<end_of_text>", "< end _ of _ text >")
}

/// The character folds of ftfy's default `fix_text` that matter for prompts.
fn fold_char(c: char) -> Vec<char> {
    match c {
        '\u{2018}' | '\u{2019}' | '\u{201a}' | '\u{201b}' => vec!['\''],
        '\u{201c}' | '\u{201d}' | '\u{201e}' | '\u{201f}' => vec!['"'],
        '\u{fb00}' => vec!['f', 'f'],
        '\u{fb01}' => vec!['f', 'i'],
        '\u{fb02}' => vec!['f', 'l'],
        '\u{fb03}' => vec!['f', 'f', 'i'],
        '\u{fb04}' => vec!['f', 'f', 'l'],
        '\u{fb06}' => vec!['s', 't'],
        '\u{3000}' => vec![' '],
        '\u{ff01}'..='\u{ff5e}' => vec![char::from_u32(c as u32 - 0xfee0).unwrap_or(c)],
        _ => vec![c],
    }
}
