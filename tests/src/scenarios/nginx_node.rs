//! **nginx-node**: nginx with an upstream keep-alive pool (`keepalive`, HTTP/1.1, no
//! `Connection` header) in front of a Node 20 HTTP server whose `server.keepAliveTimeout` is
//! shorter than nginx's (60 s by default). Node closes an idle socket about 1 s after its
//! `keepAliveTimeout` (measured here: 1.001–1.002 s for 1 ms); the load pauses for about
//! that long between requests, so some of nginx's requests cross Node's FIN on a reused
//! connection and the POST, which nginx does not retry, ends in 502.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::Result;

use crate::load::{ClientResult, LoadProfile, Pacing};
use crate::scenario::{require_program, Expectation, Launcher, Scenario, UPSTREAM_PORT};
use crate::scenarios::nginx::{self, Logs, UpstreamLoss};
use crate::truth::TruthRow;

/// The Node server, shipped with the lab.
const SERVER_JS: &str = include_str!("../../lab/node/server.js");

/// Node's `server.keepAliveTimeout`, in ms: it closes idle sockets 1 s later.
const KEEPALIVE_MS: u32 = 1;
/// Node answers on this clock (see `server.js`). Longer than a client's pause, so every
/// client answered on one tick comes back before the next and is answered on it: one burst
/// per tick, one upstream connection per request, all released in the same instant.
const TICK_MS: u32 = 1100;
/// Concurrent clients; nginx keeps at least this many idle upstream connections.
const CLIENTS: u32 = 48;

pub struct NginxNode;

impl Scenario for NginxNode {
    fn name(&self) -> &'static str {
        "nginx-node"
    }

    fn about(&self) -> &'static str {
        "nginx (upstream keepalive) -> node 20 with keepAliveTimeout 1 ms: keep-alive race 502s"
    }

    fn start(&self, l: &mut dyn Launcher) -> Result<()> {
        let upstream = start_node(l)?;
        nginx::start(l, &upstream, NGINX_KEEPALIVE, "")
    }

    fn load(&self) -> LoadProfile {
        load()
    }

    fn ground_truth(&self, dir: &Path, results: &[ClientResult]) -> Result<Vec<TruthRow>> {
        Ok(nginx::ground_truth(
            &Logs::read(dir)?,
            results,
            UpstreamLoss::KeepaliveRace,
        ))
    }

    fn expect(&self) -> Expectation {
        Expectation {
            rate_502: (0.01, 0.5),
            only_cause: None,
        }
    }
}

/// nginx's keep-alive pool size for this scenario's clients.
pub const NGINX_KEEPALIVE: u32 = 2 * CLIENTS;

/// Starts the Node upstream; returns its `host:port`.
pub fn start_node(l: &mut dyn Launcher) -> Result<String> {
    let h = l.hosts().clone();
    std::fs::write(l.dir().join("server.js"), SERVER_JS)?;
    let mut node = Command::new(require_program("node", "nodejs")?);
    node.arg("server.js")
        .arg(h.upstream_ip.to_string())
        .arg(UPSTREAM_PORT.to_string())
        .arg(KEEPALIVE_MS.to_string())
        .arg(TICK_MS.to_string());
    l.spawn(&h.upstream_ns, "node", node)?;
    l.wait_listening(&h.upstream_ns, h.upstream_ip, UPSTREAM_PORT)?;
    Ok(format!("{}:{UPSTREAM_PORT}", h.upstream_ip))
}

/// The load: clients pausing about as long as Node keeps an idle connection.
pub fn load() -> LoadProfile {
    LoadProfile {
        requests: 1800,
        concurrency: CLIENTS,
        // The pause after an answer is the idle time of the upstream connection that
        // carried it: centred on Node's close, 1 s + keepAliveTimeout.
        pacing: Pacing::Gap {
            min: Duration::from_micros(995_000),
            max: Duration::from_micros(1_005_000),
        },
        max_duration: Duration::from_secs(50),
        client_timeout: Duration::from_secs(5),
        path: "/api/orders".into(),
        body_len: 120,
    }
}
