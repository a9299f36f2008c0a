//! The keep-alive upstream the race scenarios share: a Node 20 HTTP server
//! (`lab/node/server.js`) whose `server.keepAliveTimeout` is short, answering on a clock
//! so that bursts of requests start their idle timers together.
//!
//! Node closes an idle socket about 1 s after `keepAliveTimeout` (measured: 1.001–1.002 s
//! for 1 ms) and says `Keep-Alive: timeout=0` for it. When the proxy's request lands in
//! the socket's receive buffer just as that timer fires, Node destroys a socket with unread
//! data and the kernel sends RST instead of FIN: the race `closed_unread`.

use std::process::Command;
use std::time::Duration;

use anyhow::Result;

use crate::load::{LoadProfile, Pacing};
use crate::scenario::{require_program, Launcher, UPSTREAM_PORT};

/// The Node server, shipped with the lab.
const SERVER_JS: &str = include_str!("../../lab/node/server.js");

/// Node's `server.keepAliveTimeout`, in ms: it closes idle sockets 1 s later.
pub const KEEPALIVE_MS: u32 = 1;
/// Node answers on this clock (see `server.js`). Longer than a client's pause, so every
/// client answered on one tick comes back before the next and is answered on it: one burst
/// per tick, one upstream connection per request, all released in the same instant.
pub const TICK_MS: u32 = 1100;

/// Starts Node in the upstream namespace; returns once it listens.
pub fn start(l: &mut dyn Launcher) -> Result<()> {
    let h = l.hosts().clone();
    std::fs::write(l.dir().join("server.js"), SERVER_JS)?;
    let mut node = Command::new(require_program("node", "nodejs")?);
    node.arg("server.js")
        .arg(h.upstream_ip.to_string())
        .arg(UPSTREAM_PORT.to_string())
        .arg(KEEPALIVE_MS.to_string())
        .arg(TICK_MS.to_string());
    l.spawn(&h.upstream_ns, "node", node)?;
    l.wait_listening(&h.upstream_ns, h.upstream_ip, UPSTREAM_PORT)
}

/// `requests` POSTs from `clients` workers, each pausing about Node's idle-close time
/// after its answer: the pause is the idle time of the upstream connection that carried
/// it, so the next request lands on Node's timer.
pub fn race_load(requests: u32, clients: u32, max_duration: Duration) -> LoadProfile {
    LoadProfile {
        requests,
        concurrency: clients,
        pacing: Pacing::Gap {
            min: Duration::from_micros(995_000),
            max: Duration::from_micros(1_005_000),
        },
        max_duration,
        client_timeout: Duration::from_secs(5),
        path: "/api/orders".into(),
        body_len: 120,
    }
}
