//! sdapi-handler: the axum router for every `/sdapi/v1` route, served by `lambda_http` on Lambda and
//! by a plain HTTP server elsewhere.

pub mod app;
pub mod auth;
pub mod batch;
pub mod config;
pub mod errors;
pub mod lambda;
pub mod routes;
pub mod storage;
