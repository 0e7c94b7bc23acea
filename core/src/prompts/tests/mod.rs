//! Tests of the prompts module.
