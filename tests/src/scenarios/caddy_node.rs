//! **caddy-node**: Caddy (Go `net/http`, the transport Traefik uses) in front of the Node
//! 20 server with `keepAliveTimeout` 1 ms (see [`super::node`]). The load's pauses land
//! Caddy's requests on Node's idle timer. Go reads every pooled connection all the time, so
//! a FIN that arrives first takes the connection out of the pool (or ends a request that
//! never went out: `server closed idle connection`); a request already in Node's buffer
//! when the timer fires is answered with RST and no FIN (`read: connection reset by peer`,
//! the race `closed_unread`).

use std::path::Path;
use std::time::Duration;

use anyhow::Result;

use crate::load::{ClientResult, LoadProfile};
use crate::scenario::{Expectation, Launcher, Scenario, UPSTREAM_PORT};
use crate::scenarios::{caddy, node};
use crate::truth::TruthRow;

/// Concurrent clients.
const CLIENTS: u32 = 32;

pub struct CaddyNode;

impl Scenario for CaddyNode {
    fn name(&self) -> &'static str {
        "caddy-node"
    }

    fn about(&self) -> &'static str {
        "caddy -> node 20 keepAliveTimeout 1 ms: races where node resets with the request unread"
    }

    fn start(&self, l: &mut dyn Launcher) -> Result<()> {
        node::start(l)?;
        let upstream = format!("{}:{UPSTREAM_PORT}", l.hosts().upstream_ip);
        caddy::start(l, &upstream, false)
    }

    fn load(&self) -> LoadProfile {
        node::race_load(320, CLIENTS, Duration::from_secs(20))
    }

    fn ground_truth(&self, dir: &Path, results: &[ClientResult]) -> Result<Vec<TruthRow>> {
        caddy::ground_truth(dir, results)
    }

    fn expect(&self) -> Expectation {
        Expectation {
            rate_502: (0.005, 0.6),
            only_cause: None,
        }
    }
}
