//! **haproxy-node**: HAProxy with `http-reuse always` in front of the Node 20 server with
//! `keepAliveTimeout` 1 ms (see [`super::node`]). The load's pauses land HAProxy's requests
//! on Node's idle timer: mostly the request is already in Node's receive buffer when the
//! timer destroys the socket, so Node's kernel answers with RST and no FIN (HAProxy logs
//! `SH--`, the client gets 502) — the race `closed_unread` that needs no FIN to prove it.

use std::path::Path;
use std::time::Duration;

use anyhow::Result;

use crate::load::{ClientResult, LoadProfile};
use crate::scenario::{Expectation, Launcher, Scenario, UPSTREAM_PORT};
use crate::scenarios::{haproxy, node};
use crate::truth::TruthRow;

/// Concurrent clients.
const CLIENTS: u32 = 32;

pub struct HaproxyNode;

impl Scenario for HaproxyNode {
    fn name(&self) -> &'static str {
        "haproxy-node"
    }

    fn about(&self) -> &'static str {
        "haproxy (http-reuse always) -> node 20 keepAliveTimeout 1 ms: races where node resets with the request unread"
    }

    fn start(&self, l: &mut dyn Launcher) -> Result<()> {
        node::start(l)?;
        let upstream = format!("{}:{UPSTREAM_PORT}", l.hosts().upstream_ip);
        haproxy::start(l, &upstream)
    }

    fn load(&self) -> LoadProfile {
        node::race_load(320, CLIENTS, Duration::from_secs(20))
    }

    fn ground_truth(&self, dir: &Path, results: &[ClientResult]) -> Result<Vec<TruthRow>> {
        haproxy::read_ground_truth(dir, results)
    }

    fn expect(&self) -> Expectation {
        Expectation {
            rate_502: (0.005, 0.6),
            only_cause: None,
        }
    }
}
