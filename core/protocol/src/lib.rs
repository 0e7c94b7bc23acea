//! sdapi-protocol: the A1111 v1.10.1 API as data, with no model code and no device.
//!
//! * [`api`]: request/response schemas with pydantic-v1 coercion, error shapes, options, flags and
//!   the listing items.
//! * [`choices`]: the sampler, scheduler, random-source and emphasis tables: every name a request
//!   or an option may carry, parsed once into enums.
//! * [`infotext`]: the infotext writer and parser, the `info` JSON and Python-style JSON.
//! * [`images`]: base64 image decoding/encoding, PNG/JPEG/WebP metadata, A1111's resize modes.
//! * [`prompt`]: prompt *syntax* — emphasis, prompt editing, `AND`, extra-network tags, comments.
//! * [`python_json`]: Python's `repr`, `str` and `json.dumps` for the values A1111 writes.
//!
//! Module dependencies point one way: `python_json`, `choices` and `prompt` are leaves; `api`
//! uses `python_json`; `images` and `infotext` build on `api`.

// `ApiError` is A1111's four-key error body (status, class, detail, body, message), returned on
// the cold path of a request; boxing it would add an allocation to every `?` for no gain.
#![allow(clippy::result_large_err)]
pub mod api;
pub mod choices;
pub mod fuzz;
pub mod images;
pub mod infotext;
pub mod prompt;
pub mod python_json;

#[cfg(test)]
mod fuzz_tests;

/// Version string written into infotexts (`Version:`) and the `info` JSON.
pub const VERSION: &str = concat!("sdapi-rs v", env!("CARGO_PKG_VERSION"));
