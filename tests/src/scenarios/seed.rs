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
//! closed idle connection`) leave nothing readable there.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::Result;

use crate::load::{ClientResult, LoadProfile, Pacing};
use crate::scenario::{require_program, Expectation, Launcher, Scenario, UPSTREAM_PORT};
use crate::scenarios::caddy;
use crate::truth::TruthRow;

/// The WSGI app, shipped with the lab.
const APP: &str = include_str!("../../lab/uwsgi/app.py");

pub struct CaddyUwsgi {
    /// Run uwsgi with `--http-keepalive` (the fix).
    pub fixed: bool,
    /// Caddy terminates TLS for the clients (`tls internal`); the upstream leg stays plain.
    pub tls: bool,
}

impl Scenario for CaddyUwsgi {
    fn name(&self) -> &'static str {
        match (self.fixed, self.tls) {
            (true, _) => "fixed",
            (false, true) => "seed-tls",
            (false, false) => "seed",
        }
    }

    fn about(&self) -> &'static str {
        match (self.fixed, self.tls) {
            (true, _) => "caddy -> uwsgi --http --http-keepalive: the seed with the fix applied, no 502",
            (false, true) => "the seed with Caddy terminating TLS for the clients (tls internal): the client leg is encrypted",
            (false, false) => "caddy -> uwsgi --http without http-keepalive: keep-alive race 502s (the field report)",
        }
    }

    fn client_tls(&self) -> bool {
        self.tls
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

        caddy::start(l, &format!("{}:{UPSTREAM_PORT}", h.upstream_ip), self.tls)
    }

    fn load(&self) -> LoadProfile {
        LoadProfile {
            // Each HTTPS request is a curl process: fewer of them, in as little time.
            requests: if self.tls { 600 } else { 2000 },
            concurrency: 8,
            pacing: Pacing::BackToBack,
            max_duration: Duration::from_secs(if self.tls { 25 } else { 40 }),
            client_timeout: Duration::from_secs(5),
            path: "/account/users/login/".into(),
            body_len: 120,
            tls: self.tls,
        }
    }

    fn ground_truth(&self, dir: &Path, results: &[ClientResult]) -> Result<Vec<TruthRow>> {
        caddy::ground_truth(dir, results)
    }

    fn expect(&self) -> Expectation {
        Expectation {
            // Behind TLS the clients are slower (a curl each), and races rarer.
            rate_502: match (self.fixed, self.tls) {
                (true, _) => (0.0, 0.0),
                (false, true) => (0.01, 1.0),
                (false, false) => (0.05, 1.0),
            },
            only_cause: None,
        }
    }
}
