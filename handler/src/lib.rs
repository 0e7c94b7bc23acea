//! sdapi-handler: the axum router for every `/sdapi/v1` route, served by `lambda_http` on Lambda and
//! by a plain HTTP server elsewhere.

// `ApiError` is A1111's four-key error body (status, class, detail, body, message), returned on
// the cold path of a request; boxing it would add an allocation to every `?` for no gain.
#![allow(clippy::result_large_err)]
pub mod app;
pub mod auth;
pub mod batch;
pub mod config;
pub mod errors;
pub mod jobs;
pub mod lambda;
pub mod routes;
pub mod storage;
