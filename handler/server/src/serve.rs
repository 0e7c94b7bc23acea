//! The plain HTTP server (off Lambda): axum's router on hyper connections with a header-read
//! timeout (a client that opens a connection and never finishes its request headers is dropped,
//! so half-open connections cannot pile up) and a bounded graceful shutdown (in-flight requests
//! get `grace` to finish, then the process exits whatever is still running).

use std::future::Future;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;

/// hyper's read buffer per connection: request heads up to this size reach the router, whose
/// `SDAPI_MAX_HEADER_KB` check answers in A1111's error shape; larger ones get hyper's bare 431.
pub const HEAD_BUFFER_BYTES: usize = 2 << 20;

/// Timeouts of the plain server.
#[derive(Debug, Clone, Copy)]
pub struct ServeLimits {
    /// Time a client has to send its request headers (`SDAPI_HEADER_TIMEOUT_S`).
    pub header_read: Duration,
    /// Time in-flight requests get after the shutdown signal (`SDAPI_SHUTDOWN_GRACE_S`).
    pub shutdown_grace: Duration,
}

impl Default for ServeLimits {
    fn default() -> Self {
        Self { header_read: Duration::from_secs(30), shutdown_grace: Duration::from_secs(30) }
    }
}

/// Serves `router` on `listener` until `shutdown` resolves.
pub async fn serve(listener: TcpListener, router: Router, limits: ServeLimits, shutdown: impl Future<Output = ()>) {
    let graceful = GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let mut builder = hyper::server::conn::http1::Builder::new();
        builder.timer(TokioTimer::new()).header_read_timeout(limits.header_read).max_buf_size(HEAD_BUFFER_BYTES);
        let connection = builder.serve_connection(TokioIo::new(stream), TowerToHyperService::new(router.clone()));
        let watched = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(e) = watched.await {
                tracing::debug!("connection ended: {e}");
            }
        });
    }
    drop(listener);
    tokio::select! {
        () = graceful.shutdown() => tracing::info!("all connections closed"),
        () = tokio::time::sleep(limits.shutdown_grace) => {
            tracing::warn!(grace_s = limits.shutdown_grace.as_secs(), "shutdown grace period over; exiting with requests in flight")
        }
    }
}
