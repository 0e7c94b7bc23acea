//! sdapi-core: everything of the A1111 `/sdapi/v1` service that is not HTTP.
//!
//! Dependencies point one way: `processing` → `runner` → `engine`/`sampling`; `api` (schemas),
//! `infotext` and `images` are leaves anyone may use. The engine knows nothing of JSON or HTTP.

pub mod api;
pub mod images;
pub mod infotext;
pub mod processing;
pub mod prompts;
pub mod rng;
pub mod runner;
pub mod sampling;
pub mod store;

/// Version string written into infotexts (`Version:`) and the `info` JSON.
pub const VERSION: &str = concat!("sdapi-rs v", env!("CARGO_PKG_VERSION"));
