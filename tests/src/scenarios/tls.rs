//! The client side behind TLS, as most ingresses run: the same proxies and upstreams as
//! their plain scenarios, with the proxy terminating TLS for the clients. Packets on the
//! client side are encrypted; what the proxy answered is only visible in the plaintext it
//! hands OpenSSL (nginx, HAProxy) or Go's crypto/tls (Caddy: `seed-tls`, `seed-h2`).
//!
//! **nginx-node-tls**: `nginx-node` with `listen … ssl`, a fresh TLS connection per request.
//!
//! **haproxy-gunicorn-tls**: `haproxy-gunicorn` with `bind … ssl`, clients that keep their
//! connection. HAProxy does not answer 502 for a race on a client connection that has served
//! requests before: it closes it silently (for most of them without a log line), and the
//! client sees an empty reply — as much a client-facing error as a 502.
//!
//! Certificates are made for each run (`openssl req`), never kept.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::load::{ClientResult, LoadProfile, Outcome};
use crate::load_tls::{Client, SERVER_NAME};
use crate::scenario::{require_program, Expectation, Launcher, Scenario, UPSTREAM_PORT};
use crate::scenarios::{haproxy, haproxy_gunicorn, nginx, nginx_node, node};
use crate::truth::TruthRow;

/// A self-signed certificate for [`SERVER_NAME`] in `dir`: (certificate, key) PEM files.
pub fn make_certificate(dir: &Path) -> Result<(PathBuf, PathBuf)> {
    let openssl = require_program("openssl", "openssl")?;
    let (cert, key) = (dir.join("tls-cert.pem"), dir.join("tls-key.pem"));
    let out = Command::new(openssl)
        .args(["req", "-x509", "-newkey", "ec", "-pkeyopt"])
        .arg("ec_paramgen_curve:prime256v1")
        .args(["-nodes", "-days", "2", "-subj"])
        .arg(format!("/CN={SERVER_NAME}"))
        .arg("-addext")
        .arg(format!("subjectAltName=DNS:{SERVER_NAME}"))
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .context("running openssl req")?;
    if !out.status.success() {
        bail!(
            "openssl req failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok((cert, key))
}

pub struct NginxNodeTls;

impl Scenario for NginxNodeTls {
    fn name(&self) -> &'static str {
        "nginx-node-tls"
    }

    fn about(&self) -> &'static str {
        "nginx-node with nginx terminating TLS for the clients (OpenSSL)"
    }

    fn start(&self, l: &mut dyn Launcher) -> Result<()> {
        let (cert, key) = make_certificate(l.dir())?;
        node::start(l)?;
        let upstream = format!("{}:{UPSTREAM_PORT}", l.hosts().upstream_ip);
        nginx::start_with(
            l,
            &upstream,
            2 * nginx_node::CLIENTS,
            "",
            " ssl",
            &format!(
                "ssl_certificate {};\n    ssl_certificate_key {};",
                cert.display(),
                key.display()
            ),
        )
    }

    fn load(&self) -> LoadProfile {
        nginx_node::NginxNode.load()
    }

    fn ground_truth(&self, dir: &Path, results: &[ClientResult]) -> Result<Vec<TruthRow>> {
        nginx_node::NginxNode.ground_truth(dir, results)
    }

    fn expect(&self) -> Expectation {
        nginx_node::NginxNode.expect()
    }

    fn client(&self) -> Client {
        Client::Tls { keep_alive: false }
    }
}

pub struct HaproxyGunicornTls;

impl Scenario for HaproxyGunicornTls {
    fn name(&self) -> &'static str {
        "haproxy-gunicorn-tls"
    }

    fn about(&self) -> &'static str {
        "haproxy-gunicorn with HAProxy terminating TLS and kept-alive clients: 502s and silent closes"
    }

    fn start(&self, l: &mut dyn Launcher) -> Result<()> {
        let (cert, key) = make_certificate(l.dir())?;
        // HAProxy takes the certificate and its key in one file.
        let pem = l.dir().join("tls.pem");
        let mut both = std::fs::read(&cert)?;
        both.extend(std::fs::read(&key)?);
        std::fs::write(&pem, both)?;
        haproxy_gunicorn::start_with(l, &format!(" ssl crt {} alpn http/1.1", pem.display()))
    }

    fn load(&self) -> LoadProfile {
        haproxy_gunicorn::HaproxyGunicorn.load()
    }

    fn ground_truth(&self, dir: &Path, results: &[ClientResult]) -> Result<Vec<TruthRow>> {
        let log = haproxy::LOG;
        let text =
            std::fs::read_to_string(dir.join(log)).with_context(|| format!("reading {log}"))?;
        let upstream = closed_unanswered(&dir.join("upstream.pcap"), UPSTREAM_PORT)?;
        Ok(silent_closes(
            haproxy::ground_truth(&text, results),
            results,
            &upstream,
        ))
    }

    fn expect(&self) -> Expectation {
        Expectation {
            rate_502: (0.0, 0.6),
            only_cause: None,
        }
    }

    fn client(&self) -> Client {
        Client::Tls { keep_alive: true }
    }
}

/// HAProxy's silent close: an empty reply on a kept-alive client connection, for a request
/// HAProxy did not log. Its own logs being silent, the row rests on the upstream side's
/// capture as `tshark` reads it (never on tracer): the request went out on an upstream
/// connection that had carried a request before, and the upstream closed it without a
/// response — a keep-alive race.
fn silent_closes(
    mut rows: Vec<TruthRow>,
    results: &[ClientResult],
    upstream: &HashMap<u64, String>,
) -> Vec<TruthRow> {
    for r in &mut rows {
        let empty = results
            .iter()
            .any(|c| c.rid == r.rid && c.outcome == Outcome::Error("empty reply".into()));
        if !empty || r.cause != "unknown" {
            continue;
        }
        if let Some(fate) = upstream.get(&r.rid) {
            r.cause = "keepalive_race".into();
            r.evidence = format!(
                "the client got an empty reply on its kept-alive connection, {}; on the upstream side (tshark): {fate}",
                r.evidence
            );
        }
    }
    rows
}

/// From the upstream capture, read by `tshark`: each request id that went out on a reused
/// upstream connection which the upstream then closed (FIN or RST) without a response, with
/// a sentence saying so.
pub fn closed_unanswered(pcap: &Path, port: u16) -> Result<HashMap<u64, String>> {
    let tshark = require_program("tshark", "tshark")?;
    let out = Command::new(tshark)
        .arg("-r")
        .arg(pcap)
        .args(["-d", &format!("tcp.port=={port},http"), "-T", "fields"])
        .args([
            "-e",
            "tcp.stream",
            "-e",
            "tcp.srcport",
            "-e",
            "http.request.uri",
        ])
        .args([
            "-e",
            "http.response.code",
            "-e",
            "tcp.flags.fin",
            "-e",
            "tcp.flags.reset",
        ])
        .output()
        .context("running tshark")?;
    if !out.status.success() {
        bail!(
            "tshark failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(unanswered(&String::from_utf8_lossy(&out.stdout), port))
}

/// [`closed_unanswered`] over tshark's lines: `stream srcport uri code fin rst`.
fn unanswered(text: &str, port: u16) -> HashMap<u64, String> {
    #[derive(Default)]
    struct Stream {
        requests: u32,
        /// The request waiting for its response: (rid, requests before it).
        waiting: Option<(u64, u32)>,
    }
    let mut streams: HashMap<String, Stream> = HashMap::new();
    let mut found = HashMap::new();
    for line in text.lines() {
        let f: Vec<&str> = line.split('\t').collect();
        let get = |i: usize| f.get(i).copied().unwrap_or("");
        let s = streams.entry(get(0).to_owned()).or_default();
        let from_upstream = get(1) == port.to_string();
        if let Some(rid) = get(2)
            .split("rid=")
            .nth(1)
            .and_then(|r| r.split(['&', ',']).next()?.parse::<u64>().ok())
        {
            s.waiting = Some((rid, s.requests));
            s.requests += 1;
        }
        if !get(3).is_empty() && from_upstream {
            s.waiting = None;
        }
        let closes = get(4) == "1" || get(4) == "True" || get(5) == "1" || get(5) == "True";
        if closes && from_upstream {
            if let Some((rid, before)) = s.waiting.take() {
                if before > 0 {
                    found.insert(
                        rid,
                        format!(
                            "rid {rid} went out as request {} of its upstream connection (tcp.stream {}), which the upstream closed without a response",
                            before + 1,
                            get(0)
                        ),
                    );
                }
            }
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_on_a_reused_connection_closed_without_a_response_is_found() {
        let lines = "\
3\t40000\t/api/orders?rid=5\t\t0\t0
3\t9000\t\t200\t0\t0
3\t40000\t/api/orders?rid=9\t\t0\t0
3\t9000\t\t\t1\t0
4\t40002\t/api/orders?rid=10\t\t0\t0
4\t9000\t\t\t0\t1
";
        let f = unanswered(lines, 9000);
        assert_eq!(f.keys().copied().collect::<Vec<_>>(), [9]);
        assert!(f[&9].contains("request 2 of its upstream connection"));
    }
}
