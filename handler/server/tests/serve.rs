//! The plain server's connection handling: clients that never finish their request headers are
//! dropped after the header timeout while other clients are served, and shutdown lets in-flight
//! requests finish but does not wait past its grace period. No latency assertions (timeouts
//! below only keep a broken server from hanging the test).

use std::time::Duration;

use axum::Router;
use axum::routing::get;
use sdapi_server::serve::{ServeLimits, serve};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

fn app() -> Router {
    Router::new()
        .route("/internal/ping", get(|| async { "pong" }))
        .route(
            "/slow",
            get(|| async {
                tokio::time::sleep(Duration::from_millis(500)).await;
                "done"
            }),
        )
        .route(
            "/stuck",
            get(|| async {
                tokio::time::sleep(Duration::from_secs(3600)).await;
                "never"
            }),
        )
}

async fn start(
    limits: ServeLimits,
) -> (std::net::SocketAddr, tokio::sync::oneshot::Sender<()>, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(serve(listener, app(), limits, async {
        let _ = stopped.await;
    }));
    (addr, stop, server)
}

/// One request on a fresh connection; the whole response as text.
async fn request(addr: std::net::SocketAddr, path: &str) -> String {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(format!("GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").as_bytes()).await.unwrap();
    let mut out = String::new();
    tokio::time::timeout(Duration::from_secs(30), stream.read_to_string(&mut out)).await.expect("response").unwrap();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_open_connections_are_dropped_and_others_are_served() {
    let limits = ServeLimits { header_read: Duration::from_secs(1), shutdown_grace: Duration::from_secs(5) };
    let (addr, stop, server) = start(limits).await;
    let mut idle = Vec::new();
    for _ in 0..200 {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET /internal/ping HTTP/1.1\r\nHost: t\r\n").await.unwrap();
        idle.push(s);
    }
    assert!(request(addr, "/internal/ping").await.ends_with("pong"), "served while 200 connections idle");
    for mut s in idle {
        let mut buf = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(30), s.read_to_end(&mut buf)).await;
        let text = String::from_utf8_lossy(&buf);
        assert!(read.is_ok(), "an idle connection is still open");
        assert!(buf.is_empty() || text.starts_with("HTTP/1.1 408"), "unexpected answer: {text}");
    }
    let _ = stop.send(());
    tokio::time::timeout(Duration::from_secs(30), server).await.expect("server stops").unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_finishes_in_flight_requests_within_the_grace_period() {
    let limits = ServeLimits { header_read: Duration::from_secs(5), shutdown_grace: Duration::from_secs(10) };
    let (addr, stop, server) = start(limits).await;
    let slow = tokio::spawn(request(addr, "/slow"));
    tokio::time::sleep(Duration::from_millis(100)).await;
    let _ = stop.send(());
    assert!(slow.await.unwrap().ends_with("done"), "the in-flight request completes");
    tokio::time::timeout(Duration::from_secs(30), server).await.expect("server stops").unwrap();

    // A request that would never finish does not keep the process alive past the grace period.
    let limits = ServeLimits { header_read: Duration::from_secs(5), shutdown_grace: Duration::from_secs(1) };
    let (addr, stop, server) = start(limits).await;
    let _stuck = tokio::spawn(request(addr, "/stuck"));
    tokio::time::sleep(Duration::from_millis(100)).await;
    let _ = stop.send(());
    tokio::time::timeout(Duration::from_secs(30), server).await.expect("server stops after the grace period").unwrap();
}
