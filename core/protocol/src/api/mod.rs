//! The A1111 `/sdapi/v1` data layer: request models with pydantic-v1 coercion, error bodies,
//! options, listing items and sampler/scheduler resolution.

pub mod errors;
pub mod lax;
pub mod request;

pub use errors::{ApiError, LaxError, ValidationError, ValidationErrors};
pub use request::{Img2ImgRequest, Txt2ImgRequest};
pub mod cmd_flags;
pub mod items;
pub mod options;
pub mod sampler_resolution;

pub use options::Options;
pub use sampler_resolution::{resolve_request_sampler, resolve_sampler_and_scheduler};
pub mod responses;
