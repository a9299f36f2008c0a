//! **nginx-node**: nginx with an upstream keep-alive pool (`keepalive`, HTTP/1.1, no
//! `Connection` header) in front of a Node 20 HTTP server whose `server.keepAliveTimeout` is
//! shorter than nginx's (60 s by default). Node closes an idle socket about 1 s after its
//! `keepAliveTimeout` (measured here: 1.001–1.002 s for 1 ms); the load pauses for about
//! that long between requests, so some of nginx's requests cross Node's FIN on a reused
//! connection and the POST, which nginx does not retry, ends in 502.

use std::path::Path;
use std::time::Duration;

use anyhow::Result;

use crate::load::{ClientResult, LoadProfile};
use crate::scenario::{Expectation, Launcher, Scenario, UPSTREAM_PORT};
use crate::scenarios::nginx::{self, Logs, UpstreamLoss};
use crate::scenarios::node;
use crate::truth::TruthRow;

/// Concurrent clients; nginx keeps at least this many idle upstream connections.
pub const CLIENTS: u32 = 48;

pub struct NginxNode;

impl Scenario for NginxNode {
    fn name(&self) -> &'static str {
        "nginx-node"
    }

    fn about(&self) -> &'static str {
        "nginx (upstream keepalive) -> node 20 with keepAliveTimeout 1 ms: keep-alive race 502s"
    }

    fn start(&self, l: &mut dyn Launcher) -> Result<()> {
        node::start(l)?;
        let upstream = format!("{}:{UPSTREAM_PORT}", l.hosts().upstream_ip);
        nginx::start(l, &upstream, 2 * CLIENTS, "")
    }

    fn load(&self) -> LoadProfile {
        node::race_load(1800, CLIENTS, Duration::from_secs(50))
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
