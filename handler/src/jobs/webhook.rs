//! Completion callbacks (docs/jobs.md): signed as the Standard Webhooks specification says
//! (`webhook-id`, `webhook-timestamp`, `webhook-signature: v1,<base64 HMAC-SHA256>` of
//! `id.timestamp.body`), delivered at least once with backoff, only to destinations the
//! configuration allows.

use std::net::IpAddr;
use std::time::Duration;

use base64::Engine;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Bytes;
use sha2::{Digest, Sha256};

/// How webhooks are sent (`SDAPI_WEBHOOK_*`).
#[derive(Debug, Clone)]
pub struct WebhookSettings {
    /// The signing key: `whsec_<base64>` (the specification's form) or raw bytes. None: unsigned.
    pub secret: Option<Vec<u8>>,
    /// Loopback, private, link-local and other non-public addresses are refused unless this is set.
    pub allow_private: bool,
    /// Attempts per delivery (first try included).
    pub attempts: u32,
    /// First retry delay; doubled after every failed attempt.
    pub backoff: Duration,
    /// Time one attempt may take (connect, send, status).
    pub timeout: Duration,
}

impl Default for WebhookSettings {
    fn default() -> Self {
        Self {
            secret: None,
            allow_private: false,
            attempts: 5,
            backoff: Duration::from_secs(1),
            timeout: Duration::from_secs(10),
        }
    }
}

impl WebhookSettings {
    /// `whsec_`-prefixed secrets are base64 (Standard Webhooks); anything else is used as is.
    pub fn parse_secret(text: &str) -> Option<Vec<u8>> {
        let text = text.trim();
        if text.is_empty() {
            return None;
        }
        match text.strip_prefix("whsec_") {
            Some(b64) => base64::engine::general_purpose::STANDARD.decode(b64).ok(),
            None => Some(text.as_bytes().to_vec()),
        }
    }
}

/// HMAC-SHA256 (RFC 2104) over sha2's hash: the one MAC the specification needs.
pub fn hmac_sha256(key: &[u8], message: &[u8]) -> [u8; 32] {
    const BLOCK: usize = 64;
    let mut block = [0u8; BLOCK];
    if key.len() > BLOCK {
        block[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        block[..key.len()].copy_from_slice(key);
    }
    let pad = |byte: u8| block.map(|b| b ^ byte);
    let inner = Sha256::new().chain_update(pad(0x36)).chain_update(message).finalize();
    Sha256::new().chain_update(pad(0x5c)).chain_update(inner).finalize().into()
}

/// The `webhook-signature` value for a message.
pub fn signature(secret: &[u8], id: &str, timestamp: i64, body: &[u8]) -> String {
    let mut signed = format!("{id}.{timestamp}.").into_bytes();
    signed.extend_from_slice(body);
    format!("v1,{}", base64::engine::general_purpose::STANDARD.encode(hmac_sha256(secret, &signed)))
}

/// Why a destination is refused before anything is sent.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DestinationError {
    #[error("webhook URL {0:?} is not an http(s) URL with a host")]
    Malformed(String),
    #[error("webhook host {0} resolves to a non-public address ({1}); set SDAPI_WEBHOOK_ALLOW_PRIVATE to allow it")]
    NotPublic(String, IpAddr),
    #[error("webhook host {0} does not resolve")]
    Unresolved(String),
}

/// Addresses a webhook may not reach by default: loopback, private, link-local (cloud metadata),
/// unspecified, shared, multicast, documentation and unique-local ranges.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            !(v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || v4.is_documentation()
                || (a == 100 && (64..128).contains(&b))
                || a == 0)
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public(IpAddr::V4(v4));
            }
            let first = v6.segments()[0];
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (first & 0xfe00) == 0xfc00
                || (first & 0xffc0) == 0xfe80)
        }
    }
}

/// Splits an http(s) URL into (https, host, port).
fn parse_url(url: &str) -> Result<(bool, String, u16), DestinationError> {
    let malformed = || DestinationError::Malformed(url.chars().take(200).collect());
    let (https, rest) = if let Some(r) = url.strip_prefix("https://") {
        (true, r)
    } else if let Some(r) = url.strip_prefix("http://") {
        (false, r)
    } else {
        return Err(malformed());
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    if authority.is_empty() || authority.contains('@') {
        return Err(malformed());
    }
    let default_port = if https { 443 } else { 80 };
    let (host, port) = match authority.strip_prefix('[') {
        // [v6]:port
        Some(bracketed) => {
            let (host, after) = bracketed.split_once(']').ok_or_else(malformed)?;
            match after.strip_prefix(':') {
                Some(p) => (host, p.parse::<u16>().map_err(|_| malformed())?),
                None if after.is_empty() => (host, default_port),
                None => return Err(malformed()),
            }
        }
        None => match authority.rsplit_once(':') {
            Some((h, p)) => (h, p.parse::<u16>().map_err(|_| malformed())?),
            None => (authority, default_port),
        },
    };
    let host = host.to_string();
    if host.is_empty() {
        return Err(malformed());
    }
    Ok((https, host, port))
}

/// Checks a destination: a well-formed http(s) URL whose every address is public (unless allowed).
pub async fn check_destination(url: &str, allow_private: bool) -> Result<(), DestinationError> {
    let (_, host, port) = parse_url(url)?;
    let addrs: Vec<IpAddr> = match host.parse::<IpAddr>() {
        Ok(ip) => vec![ip],
        Err(_) => tokio::net::lookup_host((host.as_str(), port))
            .await
            .map_err(|_| DestinationError::Unresolved(host.clone()))?
            .map(|a| a.ip())
            .collect(),
    };
    if addrs.is_empty() {
        return Err(DestinationError::Unresolved(host));
    }
    if !allow_private && let Some(ip) = addrs.into_iter().find(|ip| !is_public(*ip)) {
        return Err(DestinationError::NotPublic(host, ip));
    }
    Ok(())
}

/// The connector's name resolver: only public addresses (unless allowed) are ever connected to,
/// so a name that resolves differently at delivery time than at the check cannot reach a private
/// address (DNS rebinding). IP literals are checked by [`check_destination`].
#[derive(Clone)]
struct PublicAddresses {
    allow_private: bool,
}

type ResolveFuture = std::pin::Pin<
    Box<dyn std::future::Future<Output = std::io::Result<std::vec::IntoIter<std::net::SocketAddr>>> + Send>,
>;

impl tower::Service<hyper_util::client::legacy::connect::dns::Name> for PublicAddresses {
    type Response = std::vec::IntoIter<std::net::SocketAddr>;
    type Error = std::io::Error;
    type Future = ResolveFuture;

    fn poll_ready(&mut self, _: &mut std::task::Context<'_>) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, name: hyper_util::client::legacy::connect::dns::Name) -> Self::Future {
        let (host, allow_private) = (name.as_str().to_string(), self.allow_private);
        Box::pin(async move {
            let addrs: Vec<std::net::SocketAddr> = tokio::net::lookup_host((host.as_str(), 0))
                .await?
                .filter(|a| allow_private || is_public(a.ip()))
                .collect();
            if addrs.is_empty() {
                return Err(std::io::Error::other(format!("{host} resolves to no public address")));
            }
            Ok(addrs.into_iter())
        })
    }
}

/// One signed POST; Ok when the receiver answered 2xx.
async fn attempt(settings: &WebhookSettings, url: &str, id: &str, body: &Bytes) -> Result<(), String> {
    let timestamp = chrono::Utc::now().timestamp();
    let mut request = hyper::Request::post(url)
        .header("content-type", "application/json")
        .header("user-agent", concat!("sdapi-rs/", env!("CARGO_PKG_VERSION")))
        .header("webhook-id", id)
        .header("webhook-timestamp", timestamp.to_string());
    if let Some(secret) = &settings.secret {
        request = request.header("webhook-signature", signature(secret, id, timestamp, body));
    }
    let request = request.body(Full::new(body.clone())).map_err(|e| e.to_string())?;
    let mut http = hyper_util::client::legacy::connect::HttpConnector::new_with_resolver(PublicAddresses {
        allow_private: settings.allow_private,
    });
    http.enforce_http(false);
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_native_roots()
        .map_err(|e| e.to_string())?
        .https_or_http()
        .enable_http1()
        .wrap_connector(http);
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new()).build(https);
    let call = async {
        let response = client.request(request).await.map_err(|e| e.to_string())?;
        let status = response.status();
        // Read (a bounded amount of) the answer so the connection completes cleanly.
        let _ = Limited::new(response.into_body(), 64 * 1024).collect().await;
        if status.is_success() { Ok(()) } else { Err(format!("receiver answered {status}")) }
    };
    tokio::time::timeout(settings.timeout, call).await.map_err(|_| "timed out".to_string())?
}

/// Delivers `body` to `url` with the stable message id `id`, retrying with exponential backoff;
/// returns the number of attempts made and the last error if none succeeded.
pub async fn deliver(settings: &WebhookSettings, url: &str, id: &str, body: Vec<u8>) -> (u32, Option<String>) {
    if let Err(e) = check_destination(url, settings.allow_private).await {
        return (0, Some(e.to_string()));
    }
    let body = Bytes::from(body);
    let mut delay = settings.backoff;
    let mut last = None;
    for n in 1..=settings.attempts.max(1) {
        match attempt(settings, url, id, &body).await {
            Ok(()) => return (n, None),
            Err(e) => {
                tracing::warn!(webhook = %id, attempt = n, "webhook delivery failed: {e}");
                last = Some(e);
            }
        }
        if n < settings.attempts {
            tokio::time::sleep(delay).await;
            delay = delay.saturating_mul(2);
        }
    }
    (settings.attempts.max(1), last)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hmac_matches_rfc_4231() {
        // Test case 2 of RFC 4231.
        let mac = hmac_sha256(b"Jefe", b"what do ya want for nothing?");
        let hex: String = mac.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(hex, "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
        // Test case 6: a key longer than the block is hashed first.
        let mac = hmac_sha256(&[0xaa; 131], b"Test Using Larger Than Block-Size Key - Hash Key First");
        let hex: String = mac.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(hex, "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54");
    }

    #[test]
    fn signature_follows_standard_webhooks() {
        // The specification's own example (standard-webhooks, "Verifying webhooks").
        let secret = WebhookSettings::parse_secret("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let sig = signature(&secret, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, br#"{"test": 2432232314}"#);
        assert_eq!(sig, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }

    #[test]
    fn non_public_addresses_are_recognised() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "0.0.0.0",
            "100.64.0.1",
            "::1",
            "fe80::1",
            "fd00::1",
            "::ffff:127.0.0.1",
        ] {
            assert!(!is_public(ip.parse().unwrap()), "{ip}");
        }
        for ip in ["8.8.8.8", "1.1.1.1", "2606:4700:4700::1111"] {
            assert!(is_public(ip.parse().unwrap()), "{ip}");
        }
    }

    #[tokio::test]
    async fn loopback_destinations_are_refused_unless_allowed() {
        let err = check_destination("http://127.0.0.1:9/hook", false).await.unwrap_err();
        assert!(matches!(err, DestinationError::NotPublic(_, _)), "{err}");
        assert!(check_destination("http://127.0.0.1:9/hook", true).await.is_ok());
        assert!(check_destination("http://[::1]:9/hook", false).await.is_err());
        assert!(matches!(check_destination("ftp://example.com/", true).await, Err(DestinationError::Malformed(_))));
        assert!(matches!(check_destination("http://user@127.0.0.1/", true).await, Err(DestinationError::Malformed(_))));
    }

    /// Names are filtered again when connecting: "localhost" has no public address.
    #[tokio::test]
    async fn the_connector_never_resolves_to_a_private_address() {
        let mut resolver = PublicAddresses { allow_private: false };
        let name: hyper_util::client::legacy::connect::dns::Name = "localhost".parse().unwrap();
        assert!(tower::Service::call(&mut resolver, name.clone()).await.is_err());
        let mut allowing = PublicAddresses { allow_private: true };
        assert!(tower::Service::call(&mut allowing, name).await.unwrap().all(|a| a.ip().is_loopback()));
    }

    #[test]
    fn urls_split_into_scheme_host_and_port() {
        assert_eq!(parse_url("https://example.com/a?b").unwrap(), (true, "example.com".into(), 443));
        assert_eq!(parse_url("http://10.0.0.1:8080").unwrap(), (false, "10.0.0.1".into(), 8080));
        assert_eq!(parse_url("http://[::1]:81/x").unwrap(), (false, "::1".into(), 81));
        assert_eq!(parse_url("http://[::1]/x").unwrap(), (false, "::1".into(), 80));
    }
}
