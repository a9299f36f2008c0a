//! **seed**: Caddy (Go `net/http`, the transport Traefik uses) → uwsgi's HTTP router without
//! `http-keepalive` — the field report's mistake. uwsgi answers with Content-Length and no
//! `Connection: close`, then closes; Go puts the connection back in its pool and reuses a
//! dying connection, so 502s appear at any concurrency above 1.
//!
//! **fixed**: the same with uwsgi's `--http-keepalive`: zero 502.

use std::collections::HashMap;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result};

use crate::load::{outcome_key, ClientResult, LoadProfile, Outcome, Pacing};
use crate::logs::caddy::{self, Kind};
use crate::scenario::{
    require_program, Expectation, Launcher, Scenario, PROXY_PORT, UPSTREAM_PORT,
};
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
    /// TLS with Caddy's own certificate (`tls internal`), HTTP/1.1 clients.
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
        if self.front == Front::Tls {
            return "caddy (tls internal) -> uwsgi without http-keepalive: the seed behind TLS";
        }
        if self.front == Front::Http2 {
            return "caddy (tls internal, HTTP/2 clients) -> uwsgi without http-keepalive: the seed over h2";
        }
        if self.fixed {
            "caddy -> uwsgi --http --http-keepalive: the seed with the fix applied, no 502"
        } else {
            "caddy -> uwsgi --http without http-keepalive: keep-alive race 502s (the field report)"
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

        // Behind TLS: Caddy's own certificate for the name the clients ask for, and no
        // attempt to install its root in the system's trust store.
        let (https, site, tls) = match self.front {
            Front::Plain => ("auto_https off", format!("http://:{PROXY_PORT}"), ""),
            Front::Tls | Front::Http2 => (
                "auto_https disable_redirects\n\tskip_install_trust",
                format!("https://{}:{PROXY_PORT}", crate::load_tls::SERVER_NAME),
                "\ttls internal\n",
            ),
        };
        let caddyfile = format!(
            "{{\n\tadmin off\n\t{https}\n\tlog default {{\n\t\toutput file {dir}/caddy-error.log\n\t\tformat json\n\t}}\n}}\n\
             {site} {{\n\tbind {front}\n{tls}\tlog {{\n\t\toutput file {dir}/caddy-access.log\n\t\tformat json\n\t}}\n\
             \treverse_proxy {up}:{UPSTREAM_PORT}\n}}\n",
            dir = dir.display(),
            front = h.proxy_front_ip,
            up = h.upstream_ip,
        );
        std::fs::write(dir.join("Caddyfile"), caddyfile)?;
        let mut caddy = Command::new(require_program("caddy", "caddy")?);
        caddy
            .args(["run", "--adapter", "caddyfile", "--config", "Caddyfile"])
            .env("HOME", &dir)
            .env("XDG_DATA_HOME", dir.join("caddy-data"))
            .env("XDG_CONFIG_HOME", dir.join("caddy-config"));
        l.spawn(&h.proxy_ns, "caddy", caddy)?;
        l.wait_listening(&h.proxy_ns, h.proxy_front_ip, PROXY_PORT)
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
        let mut access: HashMap<u64, caddy::CaddyEntry> = HashMap::new();
        let mut errors: HashMap<u64, caddy::CaddyEntry> = HashMap::new();
        for file in ["caddy-access.log", "caddy-error.log"] {
            // Behind TLS, Caddy writes the site's access log to its default log.
            if file == "caddy-access.log" && self.front != Front::Plain {
                continue;
            }
            let text = std::fs::read_to_string(dir.join(file))
                .with_context(|| format!("reading {file}"))?;
            for e in text.lines().filter_map(caddy::parse_line) {
                let Some(rid) = e.rid else { continue };
                match e.kind {
                    Kind::Access => access.insert(rid, e),
                    Kind::Error => errors.insert(rid, e),
                };
            }
        }
        Ok(results
            .iter()
            .filter(|r| !matches!(r.outcome, Outcome::Status(200..=299)))
            .map(|r| {
                let logged = access.get(&r.rid);
                let error = errors.get(&r.rid);
                let (cause, subcause) = match (error, logged) {
                    (Some(e), _) => match caddy::race_cause(&e.msg) {
                        Some((c, s)) => (c.to_owned(), Some(s.to_owned())),
                        None => ("unknown".to_owned(), None),
                    },
                    (None, Some(a)) if a.status.is_some_and(|s| s >= 500) => {
                        ("upstream_generated".to_owned(), None)
                    }
                    _ => ("unknown".to_owned(), None),
                };
                let evidence = match (error, logged) {
                    (Some(e), _) => e.line.clone(),
                    (None, Some(a)) => a.line.clone(),
                    (None, None) => "the proxy logged nothing for this request id".to_owned(),
                };
                TruthRow {
                    rid: r.rid,
                    client: outcome_key(&r.outcome),
                    proxy_status: logged
                        .and_then(|a| a.status)
                        .or(error.and_then(|e| e.status)),
                    cause,
                    subcause,
                    evidence,
                    capture_lost: false,
                }
            })
            .collect())
    }

    fn expect(&self) -> Expectation {
        Expectation {
            rate_502: if self.fixed { (0.0, 0.0) } else { (0.05, 1.0) },
            only_cause: None,
        }
    }

    fn client(&self) -> crate::load_tls::Client {
        match self.front {
            Front::Plain => crate::load_tls::Client::Plain,
            Front::Tls => crate::load_tls::Client::Tls { keep_alive: false },
            Front::Http2 => crate::load_tls::Client::Http2,
        }
    }
}
