//! Cold start: process start → `/internal/ping` answers → first txt2img image served, for the real
//! `sdapi` binary next to this one (same profile), on a free port, bundled tiny model.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use sdapi_engine::bench::{BenchError, Samples};
use serde_json::json;

use super::overhead::{bundled_models, tiny_request};
use super::report;

/// Kills the child even when a step fails.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> Result<u16, BenchError> {
    let l = TcpListener::bind("127.0.0.1:0").map_err(|e| BenchError::Io("bind".into(), e))?;
    Ok(l.local_addr().map_err(|e| BenchError::Io("bind".into(), e))?.port())
}

/// A one-shot HTTP/1.1 exchange (`Connection: close`); returns the status code and body.
fn http(port: u16, method: &str, path: &str, body: &str) -> std::io::Result<(u16, Vec<u8>)> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(600)))?;
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf)?;
    let status = std::str::from_utf8(buf.get(9..12).unwrap_or(b"000")).ok().and_then(|c| c.parse().ok()).unwrap_or(0);
    let body_at = buf.windows(4).position(|w| w == b"\r\n\r\n").map(|p| p + 4).unwrap_or(buf.len());
    Ok((status, buf[body_at..].to_vec()))
}

pub fn run(iters: usize) -> Result<(), BenchError> {
    let exe = std::env::current_exe().map_err(|e| BenchError::Io("current_exe".into(), e))?;
    let sdapi = exe.with_file_name("sdapi");
    if !sdapi.exists() {
        return Err(BenchError::Request(format!(
            "{} not built (cargo build --bin sdapi, same profile)",
            sdapi.display()
        )));
    }
    let (mut ping, mut first) = (Samples::default(), Samples::default());
    for _ in 0..iters {
        let port = free_port()?;
        let out = std::env::temp_dir().join(format!("sdapi-bench-cold-{port}"));
        let start = Instant::now();
        let _server = Server(
            Command::new(&sdapi)
                .env("SDAPI_LISTEN", format!("127.0.0.1:{port}"))
                .env("SDAPI_MODELS_DIR", bundled_models())
                .env("SDAPI_CHECKPOINT", "tiny-sd15")
                .env("SDAPI_OUTPUT_DIR", &out)
                .env("RUST_LOG", "warn")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .map_err(|e| BenchError::Io(sdapi.display().to_string(), e))?,
        );
        loop {
            if let Ok((200, _)) = http(port, "GET", "/internal/ping", "") {
                break;
            }
            if start.elapsed() > Duration::from_secs(60) {
                return Err(BenchError::Request("sdapi did not answer /internal/ping within 60 s".into()));
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        ping.push(start.elapsed().as_secs_f64() * 1e3);
        let (status, body) = http(port, "POST", "/sdapi/v1/txt2img", &tiny_request(20))
            .map_err(|e| BenchError::Io("txt2img".into(), e))?;
        let needle = b"\"images\"";
        if status != 200 || !body.windows(needle.len()).any(|w| w == needle) {
            return Err(BenchError::Request(format!("first txt2img: status {status}")));
        }
        first.push(start.elapsed().as_secs_f64() * 1e3);
        let _ = std::fs::remove_dir_all(&out);
    }
    let extra = json!({"model": "tiny-sd15", "size": 64, "steps": 20});
    report("coldstart_ping", extra.clone(), &ping);
    report("coldstart_first_image", extra, &first);
    Ok(())
}
