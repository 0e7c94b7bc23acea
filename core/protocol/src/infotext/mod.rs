//! Infotext: the "parameters" text A1111 writes into images, its parser, and the `info` JSON.

pub mod info_json;
pub mod parser;
mod png_info;
pub mod writer;

pub use info_json::InfoJson;
pub use parser::parse_generation_parameters;
pub use writer::{InfotextInput, create_infotext};

#[cfg(test)]
mod tests;
