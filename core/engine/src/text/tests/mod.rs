//! Tests of the conditioning path. Expected values come from the A1111 parity fixtures or are
//! derived by hand where a comment says so.

mod conditioning;
mod embeddings;
mod fixtures;
mod model_conditioning;
mod tokenize;
