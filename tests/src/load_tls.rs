//! The lab's clients for proxies that terminate TLS: HTTP/1.1 over TLS (rustls, so the
//! client shares no library with the proxies it loads), on a fresh connection per request
//! or kept alive, and HTTP/2 through `curl`, multiplexed on one connection.
//!
//! Each request carries its id like the plain load's ([`crate::load`]); what the client saw
//! is the same [`ClientResult`]. On a kept-alive connection, a request answered by the
//! connection's close without a byte is `error: empty reply`, as curl says it: HAProxy's
//! silent close.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};

use crate::load::{parse_status, ClientResult, LoadProfile, Outcome, Pacing, STOP};

/// Which client a scenario loads its proxy with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Client {
    /// Plain HTTP/1.1, a fresh connection per request ([`crate::load`]).
    #[default]
    Plain,
    /// HTTP/1.1 over TLS; `keep_alive`: each worker keeps its connection for its requests
    /// (and reconnects when the proxy closes it), else a fresh one per request.
    Tls { keep_alive: bool },
    /// HTTP/2 over TLS with `curl --http2`: every request of the load on one connection,
    /// `concurrency` streams at a time.
    Http2,
}

impl Client {
    /// The client side is encrypted: its packets say nothing, only the proxy's plaintext.
    #[must_use]
    pub fn encrypted(self) -> bool {
        self != Client::Plain
    }
}

/// The host name the client asks for (the certificate's subject).
pub const SERVER_NAME: &str = "lab.tracer";

/// Accepts any certificate: the lab's proxies use certificates made for the run.
#[derive(Debug)]
struct AnyCertificate(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

fn tls_config() -> Result<Arc<rustls::ClientConfig>> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut c = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .context("TLS versions")?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
        .with_no_client_auth();
    c.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(c))
}

type Tls = rustls::StreamOwned<rustls::ClientConnection, TcpStream>;

fn connect(
    target: SocketAddr,
    config: &Arc<rustls::ClientConfig>,
    timeout: Duration,
) -> std::result::Result<Tls, Outcome> {
    let tcp = match TcpStream::connect_timeout(&target, timeout) {
        Ok(s) => s,
        Err(e) if e.kind() == std::io::ErrorKind::TimedOut => return Err(Outcome::Timeout),
        Err(e) => return Err(Outcome::Error(format!("connect: {e}"))),
    };
    let _ = tcp.set_nodelay(true);
    let name = rustls::pki_types::ServerName::try_from(SERVER_NAME)
        .map_err(|e| Outcome::Error(format!("name: {e}")))?;
    let conn = rustls::ClientConnection::new(config.clone(), name)
        .map_err(|e| Outcome::Error(format!("tls: {e}")))?;
    Ok(rustls::StreamOwned::new(conn, tcp))
}

/// The request for `rid`, keeping the connection alive or not.
fn request(profile: &LoadProfile, rid: u64, keep_alive: bool) -> Vec<u8> {
    let mut r = crate::load::request_bytes(profile, rid);
    if keep_alive {
        let text = String::from_utf8_lossy(&r).replace("Connection: close\r\n", "");
        r = text.into_bytes();
    }
    r
}

/// How far the response read so far reaches: `Some(total)` once the head is in and its
/// length known (Content-Length; a chunked body ends with its last chunk).
fn response_end(buf: &[u8]) -> Option<usize> {
    let head_end = buf.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let head = std::str::from_utf8(&buf[..head_end])
        .ok()?
        .to_ascii_lowercase();
    if let Some(v) = head.lines().find_map(|l| l.strip_prefix("content-length:")) {
        return Some(head_end + v.trim().parse::<usize>().ok()?);
    }
    if head.contains("transfer-encoding: chunked") {
        let body = &buf[head_end..];
        return body
            .windows(5)
            .position(|w| w == b"0\r\n\r\n")
            .map(|p| head_end + p + 5);
    }
    None
}

/// One request on `s`; `Err` when the connection cannot be used again.
fn exchange(
    s: &mut Tls,
    req: &[u8],
    started: Instant,
    timeout: Duration,
    keep_alive: bool,
) -> (Outcome, bool) {
    if let Err(e) = s.write_all(req).and_then(|()| s.flush()) {
        return (Outcome::Error(format!("write: {e}")), false);
    }
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 8192];
    loop {
        if keep_alive && response_end(&buf).is_some_and(|end| buf.len() >= end) {
            return (parse(&buf), true);
        }
        let left = timeout.saturating_sub(started.elapsed());
        if left.is_zero() {
            return (Outcome::Timeout, false);
        }
        let _ = s.sock.set_read_timeout(Some(left));
        match s.read(&mut chunk) {
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Ok(0) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return (Outcome::Timeout, false)
            }
            // A close without close_notify ends the response like a FIN does.
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => break,
            Err(e) if buf.is_empty() => return (Outcome::Error(format!("read: {e}")), false),
            Err(_) => break,
        }
    }
    (parse(&buf), false)
}

fn parse(buf: &[u8]) -> Outcome {
    match parse_status(buf) {
        Some(code) => Outcome::Status(code),
        None if buf.is_empty() => Outcome::Error("empty reply".into()),
        None => Outcome::Error("malformed status line".into()),
    }
}

fn unix_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
}

/// Sends `profile` over TLS from namespace `ns`, like [`crate::load::run`].
pub fn run(
    ns: &str,
    target: SocketAddr,
    profile: &LoadProfile,
    client: Client,
) -> Result<Vec<ClientResult>> {
    match client {
        Client::Plain => crate::load::run(ns, target, profile),
        Client::Tls { keep_alive } => run_tls(ns, target, profile, keep_alive),
        Client::Http2 => crate::load_h2::run(ns, target, profile),
    }
}

fn run_tls(
    ns: &str,
    target: SocketAddr,
    profile: &LoadProfile,
    keep_alive: bool,
) -> Result<Vec<ClientResult>> {
    let config = tls_config()?;
    let next = Arc::new(AtomicU32::new(1));
    let results = Arc::new(Mutex::new(Vec::with_capacity(profile.requests as usize)));
    let deadline = Instant::now() + profile.max_duration;
    let mut workers = Vec::new();
    for w in 0..profile.concurrency.max(1) {
        let (ns, next, results, profile, config) = (
            ns.to_owned(),
            next.clone(),
            results.clone(),
            profile.clone(),
            config.clone(),
        );
        workers.push(
            std::thread::Builder::new()
                .name(format!("tls-load-{w}"))
                .spawn(move || -> Result<()> {
                    crate::net::enter_netns(&ns)?;
                    let mut seed = 0x9E37_79B9_7F4A_7C15
                        ^ (u64::from(w) + 1).wrapping_mul(0xBF58_476D_1CE4_E5B9);
                    let mut conn: Option<Tls> = None;
                    let mut first = true;
                    loop {
                        if STOP.load(Ordering::Relaxed) || Instant::now() >= deadline {
                            return Ok(());
                        }
                        if !first {
                            if let Pacing::Gap { min, max } = profile.pacing {
                                seed ^= seed << 13;
                                seed ^= seed >> 7;
                                seed ^= seed << 17;
                                let span = max.saturating_sub(min).as_nanos() as u64;
                                let gap = min
                                    + Duration::from_nanos(if span == 0 { 0 } else { seed % span });
                                std::thread::sleep(
                                    gap.min(deadline.saturating_duration_since(Instant::now())),
                                );
                            }
                        }
                        first = false;
                        let rid = next.fetch_add(1, Ordering::Relaxed);
                        if rid > profile.requests {
                            return Ok(());
                        }
                        let rid = u64::from(rid);
                        let start_ns = unix_ns();
                        let started = Instant::now();
                        let s = match conn.take() {
                            Some(s) => Ok(s),
                            None => connect(target, &config, profile.client_timeout),
                        };
                        let outcome = match s {
                            Err(o) => o,
                            Ok(mut s) => {
                                let (o, reusable) = exchange(
                                    &mut s,
                                    &request(&profile, rid, keep_alive),
                                    started,
                                    profile.client_timeout,
                                    keep_alive,
                                );
                                if keep_alive && reusable {
                                    conn = Some(s);
                                }
                                o
                            }
                        };
                        results
                            .lock()
                            .map_err(|_| anyhow::anyhow!("results lock poisoned"))?
                            .push(ClientResult {
                                rid,
                                method: "POST".into(),
                                path: profile.path.clone(),
                                start_ns,
                                end_ns: unix_ns(),
                                outcome,
                            });
                    }
                })?,
        );
    }
    for w in workers {
        w.join()
            .map_err(|_| anyhow::anyhow!("a load worker panicked"))??;
    }
    let mut out = std::mem::take(
        &mut *results
            .lock()
            .map_err(|_| anyhow::anyhow!("results lock poisoned"))?,
    );
    out.sort_by_key(|r| r.rid);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_response_ends_at_its_content_length_or_last_chunk() {
        let r = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello";
        assert_eq!(response_end(r), Some(r.len()));
        assert_eq!(response_end(&r[..20]), None);
        let c = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n";
        assert_eq!(response_end(c), Some(c.len()));
    }

    #[test]
    fn a_kept_alive_request_has_no_connection_close() {
        let p = LoadProfile {
            requests: 1,
            concurrency: 1,
            pacing: Pacing::BackToBack,
            max_duration: Duration::from_secs(1),
            client_timeout: Duration::from_secs(1),
            path: "/x".into(),
            body_len: 40,
        };
        let r = String::from_utf8(request(&p, 3, true)).unwrap();
        assert!(!r.contains("Connection: close") && r.contains("X-Request-Id: 3"));
        assert!(String::from_utf8(request(&p, 3, false))
            .unwrap()
            .contains("Connection: close"));
    }
}
