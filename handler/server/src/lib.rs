//! sdapi-server: the composition root. The binaries join the handler's router (no model code) to
//! the engine's executor (the device side) behind the core's `ProcessingRunner`; this is the only
//! crate that depends on both the handler and the engine.

pub mod allocator;
pub mod serve;
