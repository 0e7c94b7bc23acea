//! sdapi-core: everything of the A1111 `/sdapi/v1` service that is neither HTTP nor model code.
//!
//! Dependencies point one way: the handler → this crate → `sdapi-engine` (candle, private to the
//! runner's executor) and `sdapi-protocol` (A1111 schemas, infotext, prompt syntax, choice tables).
//! This crate does not re-export the engine: outside code reaches the device only through
//! [`runner::ProcessingRunner`].
//!
//! * [`processing`]: `process_images` — request → typed batch jobs → runner → images and infotexts.
//! * [`runner`]: the `ProcessingRunner` (one worker thread owning the device, FIFO queue, progress,
//!   interrupt/skip) and the typed [`runner::BatchJob`].
//! * [`models_dir`]: the A1111 models tree, hashed once per file version.
//! * [`store`]: output stores (local folder; S3 lives in the handler).

pub mod models_dir;
pub mod processing;
pub mod runner;
pub mod store;

pub use sdapi_protocol::VERSION;
