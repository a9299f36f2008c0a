//! A bounded, paced HTTP/1.1 load generator that runs inside the client namespace.
//! Every request is a POST carrying its id in the `X-Request-Id` header and the `rid` query.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// How requests are spaced.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Pacing {
    /// Each worker sends its next request as soon as the previous one ends.
    BackToBack,
    /// Each worker waits a uniformly random gap in `[min, max]` between requests — used to
    /// land requests on an upstream's real idle-close time.
    Gap { min: Duration, max: Duration },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoadProfile {
    /// Total requests (upper bound).
    pub requests: u32,
    /// Concurrent workers; each opens a fresh connection per request, like `ab`.
    pub concurrency: u32,
    pub pacing: Pacing,
    /// Hard stop for the whole load, whatever is left.
    pub max_duration: Duration,
    /// The client gives up on a request after this long (it closes the connection).
    pub client_timeout: Duration,
    /// Request path, before `?rid=N`.
    pub path: String,
    /// Size of the POST body in bytes.
    pub body_len: usize,
}

/// What happened to one request, from the client's side.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    /// A complete response with this status.
    Status(u16),
    /// The client gave up after `client_timeout` and closed the connection.
    Timeout,
    /// Connecting, writing or reading failed.
    Error(String),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientResult {
    pub rid: u64,
    pub method: String,
    pub path: String,
    /// Unix nanoseconds when the client started connecting, and when it had the answer.
    pub start_ns: i64,
    pub end_ns: i64,
    pub outcome: Outcome,
}

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// Set by the lab's Ctrl-C handler: workers finish the request in hand and stop.
pub static STOP: AtomicBool = AtomicBool::new(false);

/// Largest response the client keeps (it reads and discards the rest).
const MAX_RESPONSE: usize = 64 * 1024;

/// Sends `profile` at `target` from inside namespace `ns`; returns one result per request
/// sent, sorted by request id. Bounded by `profile.requests` and `profile.max_duration`.
pub fn run(
    ns: &str,
    target: SocketAddr,
    profile: &LoadProfile,
) -> anyhow::Result<Vec<ClientResult>> {
    let next = Arc::new(AtomicU32::new(1));
    let results = Arc::new(Mutex::new(Vec::with_capacity(profile.requests as usize)));
    let deadline = Instant::now() + profile.max_duration;
    let mut workers = Vec::new();
    for w in 0..profile.concurrency.max(1) {
        let (ns, next, results, profile) = (
            ns.to_owned(),
            next.clone(),
            results.clone(),
            profile.clone(),
        );
        workers.push(
            std::thread::Builder::new()
                .name(format!("load-{w}"))
                .spawn(move || -> anyhow::Result<()> {
                    crate::net::enter_netns(&ns)?;
                    let mut rng = XorShift(
                        0x9E37_79B9_7F4A_7C15
                            ^ (u64::from(w) + 1).wrapping_mul(0xBF58_476D_1CE4_E5B9),
                    );
                    let mut first = true;
                    loop {
                        if STOP.load(Ordering::Relaxed) || Instant::now() >= deadline {
                            return Ok(());
                        }
                        if !first {
                            if let Pacing::Gap { min, max } = profile.pacing {
                                let span = max.saturating_sub(min).as_nanos() as u64;
                                let gap = min
                                    + Duration::from_nanos(if span == 0 {
                                        0
                                    } else {
                                        rng.next() % span
                                    });
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
                        let r = one_request(target, &profile, u64::from(rid));
                        results
                            .lock()
                            .map_err(|_| anyhow::anyhow!("results lock poisoned"))?
                            .push(r);
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

/// The request the client sends for `rid`.
pub fn request_bytes(profile: &LoadProfile, rid: u64) -> Vec<u8> {
    let body: String = format!(
        "{{\"rid\":{rid},\"pad\":\"{}\"}}",
        "x".repeat(profile.body_len.saturating_sub(20))
    );
    let mut req = format!(
        "POST {path}?rid={rid} HTTP/1.1\r\nHost: lab.tracer\r\nUser-Agent: tracer-lab\r\nX-Request-Id: {rid}\r\n\
         Content-Type: application/json\r\nContent-Length: {len}\r\nConnection: close\r\n\r\n",
        path = profile.path,
        len = body.len()
    )
    .into_bytes();
    req.extend_from_slice(body.as_bytes());
    req
}

fn one_request(target: SocketAddr, profile: &LoadProfile, rid: u64) -> ClientResult {
    let start_ns = unix_ns();
    let started = Instant::now();
    let outcome = exchange(target, profile, rid, started);
    ClientResult {
        rid,
        method: "POST".into(),
        path: profile.path.clone(),
        start_ns,
        end_ns: unix_ns(),
        outcome,
    }
}

fn exchange(target: SocketAddr, profile: &LoadProfile, rid: u64, started: Instant) -> Outcome {
    let timeout = profile.client_timeout;
    let mut s = match TcpStream::connect_timeout(&target, timeout) {
        Ok(s) => s,
        Err(e) if e.kind() == std::io::ErrorKind::TimedOut => return Outcome::Timeout,
        Err(e) => return Outcome::Error(format!("connect: {e}")),
    };
    let _ = s.set_nodelay(true);
    if let Err(e) = s.write_all(&request_bytes(profile, rid)) {
        return Outcome::Error(format!("write: {e}"));
    }
    // `Connection: close`: the response ends when the proxy closes.
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 8192];
    loop {
        let left = timeout.saturating_sub(started.elapsed());
        if left.is_zero() {
            return Outcome::Timeout; // dropping `s` closes the connection: the client gave up
        }
        let _ = s.set_read_timeout(Some(left));
        match s.read(&mut chunk) {
            // a signal to the test process (a handler elsewhere in it) is not the proxy's doing
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Ok(0) => break,
            Ok(n) => {
                if buf.len() < MAX_RESPONSE {
                    buf.extend_from_slice(&chunk[..n]);
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return Outcome::Timeout;
            }
            Err(e) if buf.is_empty() => return Outcome::Error(format!("read: {e}")),
            Err(_) => break,
        }
    }
    match parse_status(&buf) {
        Some(code) => Outcome::Status(code),
        None if buf.is_empty() => Outcome::Error("empty reply".into()),
        None => Outcome::Error("malformed status line".into()),
    }
}

/// The status code of an HTTP/1.x response's status line.
pub fn parse_status(buf: &[u8]) -> Option<u16> {
    let line_end = buf.iter().position(|&b| b == b'\n')?;
    let line = std::str::from_utf8(buf.get(..line_end)?).ok()?;
    let mut parts = line.split_whitespace();
    let version = parts.next()?;
    if !version.starts_with("HTTP/1.") {
        return None;
    }
    parts
        .next()?
        .parse()
        .ok()
        .filter(|c| (100..600).contains(c))
}

fn unix_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
}

/// A tiny deterministic generator for pacing jitter (no need for a crate).
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
}

/// Counts of what the client saw, keyed `"200"`, `"502"`, `"timeout"`, `"error"`.
pub fn outcome_counts(results: &[ClientResult]) -> std::collections::BTreeMap<String, u64> {
    let mut m = std::collections::BTreeMap::new();
    for r in results {
        *m.entry(outcome_key(&r.outcome)).or_insert(0) += 1;
    }
    m
}

/// `"502"`, `"timeout"` or `"error"`.
pub fn outcome_key(o: &Outcome) -> String {
    match o {
        Outcome::Status(s) => s.to_string(),
        Outcome::Timeout => "timeout".into(),
        Outcome::Error(_) => "error".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_line_gives_the_code() {
        assert_eq!(parse_status(b"HTTP/1.1 502 Bad Gateway\r\n\r\n"), Some(502));
        assert_eq!(parse_status(b"HTTP/1.0 200 OK\r\n"), Some(200));
    }

    #[test]
    fn garbage_has_no_status() {
        assert_eq!(parse_status(b"SSH-2.0-OpenSSH\r\n"), None);
        assert_eq!(parse_status(b"HTTP/1.1 99999 x\r\n"), None);
        assert_eq!(parse_status(b"HTTP/1.1 200"), None);
    }

    #[test]
    fn request_carries_its_id_in_header_and_query() {
        let p = LoadProfile {
            requests: 1,
            concurrency: 1,
            pacing: Pacing::BackToBack,
            max_duration: Duration::from_secs(1),
            client_timeout: Duration::from_secs(1),
            path: "/login".into(),
            body_len: 64,
        };
        let r = String::from_utf8(request_bytes(&p, 42)).unwrap();
        assert!(r.starts_with("POST /login?rid=42 HTTP/1.1\r\n"));
        assert!(r.contains("\r\nX-Request-Id: 42\r\n"));
        let (head, body) = r.split_once("\r\n\r\n").unwrap();
        assert!(head.contains(&format!("Content-Length: {}", body.len())));
    }
}
