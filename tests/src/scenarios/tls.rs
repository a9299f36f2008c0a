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

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::load::{ClientResult, LoadProfile, Outcome};
use crate::load_tls::{Client, SERVER_NAME};
use crate::scenario::{require_program, Expectation, Launcher, Scenario};
use crate::scenarios::{haproxy_gunicorn, nginx, nginx_node};
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
        let upstream = nginx_node::start_node(l)?;
        nginx::start_with(
            l,
            &upstream,
            nginx_node::NGINX_KEEPALIVE,
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
        nginx_node::load()
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
        haproxy_gunicorn::load()
    }

    fn ground_truth(&self, dir: &Path, results: &[ClientResult]) -> Result<Vec<TruthRow>> {
        let log = haproxy_gunicorn::LOG;
        let text =
            std::fs::read_to_string(dir.join(log)).with_context(|| format!("reading {log}"))?;
        Ok(silent_closes(
            haproxy_gunicorn::ground_truth(&text, results),
            results,
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
/// HAProxy logged as lost on the server side (`SD`, status -1) or did not log at all.
/// Unlogged, the logs alone cannot say which upstream failure it was; the row says so.
fn silent_closes(mut rows: Vec<TruthRow>, results: &[ClientResult]) -> Vec<TruthRow> {
    for r in &mut rows {
        let empty = results
            .iter()
            .any(|c| c.rid == r.rid && c.outcome == Outcome::Error("empty reply".into()));
        if !empty || r.cause != "unknown" {
            continue;
        }
        r.cause = "keepalive_race".into();
        r.evidence = format!(
            "the client got an empty reply on its kept-alive connection and {}",
            r.evidence
        );
    }
    rows
}
