//! Infotext: the "parameters" text A1111 writes into images, its parser, and the `info` JSON.

pub mod python_json;
