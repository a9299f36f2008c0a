//! **seed**: Caddy (Go `net/http`, the transport Traefik uses) → uwsgi's HTTP router without
//! `http-keepalive` — the field report's mistake. uwsgi answers with Content-Length and no
//! `Connection: close`, then closes; Go puts the connection back in its pool and reuses a
//! dying connection, so 502s appear at any concurrency above 1.
//!
//! **fixed**: the same with uwsgi's `--http-keepalive`: zero 502.
//!
//! **seed-tls**: the seed with Caddy terminating TLS for the clients (`tls internal`), as
//! most ingresses do: the client leg of a capture is unreadable, the upstream leg plain.
//! Races that reached uwsgi show on the upstream leg; those Caddy never sent (`server
//! closed idle connection`) leave nothing readable there, only in the plaintext Caddy hands
//! Go's crypto/tls (the probe's uprobes).
//!
//! **seed-h2**: `seed-tls` with HTTP/2 clients (`curl --http2`), every request of the load
//! multiplexed on one connection: the 502s are in HPACK-encoded HEADERS frames.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::Result;

use crate::load::{ClientResult, LoadProfile, Pacing};
use crate::load_tls::Client;
use crate::scenario::{require_program, Expectation, Launcher, Scenario, UPSTREAM_PORT};
use crate::scenarios::caddy;
use crate::truth::TruthRow;

/// The WSGI app, shipped with the lab.
const APP: &str = include_str!("../../lab/uwsgi/app.py");

pub struct CaddyUwsgi {
    /// Run uwsgi with `--http-keepalive` (the fix).
    pub fixed: bool,
    /// How clients reach Caddy.
    pub front: Front,
}

/// Caddy's client side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Front {
    /// Plain HTTP/1.1 (the field report's lab).
    Plain,
    /// TLS with Caddy's own certificate (`tls internal`), HTTP/1.1 clients, a connection
    /// per request.
    Tls,
    /// TLS, HTTP/2 clients (`curl --http2`), every request on one connection.
    Http2,
}

impl Scenario for CaddyUwsgi {
    fn name(&self) -> &'static str {
        match (self.fixed, self.front) {
            (true, _) => "fixed",
            (false, Front::Plain) => "seed",
            (false, Front::Tls) => "seed-tls",
            (false, Front::Http2) => "seed-h2",
        }
    }

    fn about(&self) -> &'static str {
        match (self.fixed, self.front) {
            (true, _) => "caddy -> uwsgi --http --http-keepalive: the seed with the fix applied, no 502",
            (false, Front::Tls) => "the seed with Caddy terminating TLS for the clients (tls internal): the client leg is encrypted",
            (false, Front::Http2) => "the seed with Caddy terminating TLS for HTTP/2 clients: 502s in HPACK-encoded headers",
            (false, Front::Plain) => "caddy -> uwsgi --http without http-keepalive: keep-alive race 502s (the field report)",
        }
    }

    fn client(&self) -> Client {
        match self.front {
            Front::Plain => Client::Plain,
            Front::Tls => Client::Tls { keep_alive: false },
            Front::Http2 => Client::Http2,
        }
    }

    fn start(&self, l: &mut dyn Launcher) -> Result<()> {
        let h = l.hosts().clone();
        let dir = l.dir().to_path_buf();
        std::fs::write(dir.join("app.py"), APP)?;
        let mut uwsgi = Command::new(require_program("uwsgi", "uwsgi uwsgi-plugin-python3")?);
        uwsgi
            .args([
                "--plugin",
                "http,python3",
                "--master",
                "--processes",
                "2",
                "--threads",
                "4",
            ])
            .args(["--http", &format!("{}:{UPSTREAM_PORT}", h.upstream_ip)])
            .args([
                "--wsgi-file",
                "app.py",
                "--logto",
                "uwsgi.log",
                "--die-on-term",
            ]);
        if self.fixed {
            uwsgi.arg("--http-keepalive");
        }
        l.spawn(&h.upstream_ns, "uwsgi", uwsgi)?;
        l.wait_listening(&h.upstream_ns, h.upstream_ip, UPSTREAM_PORT)?;

        caddy::start(
            l,
            &format!("{}:{UPSTREAM_PORT}", h.upstream_ip),
            self.front != Front::Plain,
        )
    }

    fn load(&self) -> LoadProfile {
        LoadProfile {
            requests: 2000,
            concurrency: 8,
            pacing: Pacing::BackToBack,
            max_duration: Duration::from_secs(40),
            client_timeout: Duration::from_secs(5),
            path: "/account/users/login/".into(),
            body_len: 120,
        }
    }

    fn ground_truth(&self, dir: &Path, results: &[ClientResult]) -> Result<Vec<TruthRow>> {
        caddy::ground_truth(dir, results)
    }

    fn expect(&self) -> Expectation {
        Expectation {
            // Behind TLS each request costs the clients a handshake (or shares one
            // connection), and races are rarer.
            rate_502: match (self.fixed, self.front) {
                (true, _) => (0.0, 0.0),
                (false, Front::Plain) => (0.05, 1.0),
                (false, _) => (0.01, 1.0),
            },
            only_cause: None,
        }
    }
}
