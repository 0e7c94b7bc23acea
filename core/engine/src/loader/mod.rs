//! Tensor access under canonical names and the diffusers / OpenCLIP → canonical name maps.

pub mod diffusers_names;
pub mod tensor_store;
pub mod text_names;
