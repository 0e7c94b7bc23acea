//! Tensor access under canonical names and the diffusers → LDM name map.

pub mod diffusers_names;
pub mod tensor_store;
