//! sdapi-core: everything of the A1111 `/sdapi/v1` service that is neither HTTP nor model code.
//!
//! Dependencies point one way: `sdapi-handler` → this crate → `sdapi-protocol` (A1111 schemas,
//! infotext, prompt syntax, choice tables). This crate has no model code and does not depend on
//! `sdapi-engine`: the engine implements this crate's [`runner::BatchExecutor`], and only the
//! binaries (`sdapi-server`) put the two together, so the device is reached only through
//! [`runner::ProcessingRunner`].
//!
//! * [`processing`]: `process_images` — request → typed batch jobs → runner → images and infotexts.
//! * [`runner`]: the `ProcessingRunner` (one worker thread owning the device, FIFO queue, progress,
//!   interrupt/skip) and the typed [`runner::BatchJob`].
//! * [`models_dir`]: the A1111 models tree, hashed once per file version.
//! * [`store`]: output stores (local folder; S3 lives in the handler).

// `ApiError` is A1111's four-key error body (status, class, detail, body, message), returned on
// the cold path of a request; boxing it would add an allocation to every `?` for no gain.
#![allow(clippy::result_large_err)]
pub mod models_dir;
pub mod networks;
pub mod processing;
pub mod runner;
pub mod store;
pub mod styles;

pub use sdapi_protocol::VERSION;
