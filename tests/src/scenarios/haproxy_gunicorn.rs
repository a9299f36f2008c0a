//! **haproxy-gunicorn**: HAProxy with `http-reuse always` in front of gunicorn's gthread
//! worker with `--keep-alive 1`. gunicorn closes an expired keep-alive connection only when
//! its poll loop wakes, and it wakes for the next burst of requests: it serves the ones
//! already readable, then closes every other expired connection, under requests HAProxy is
//! sending on them. The POST is lost (termination state `SH`) and the client gets 502.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::Result;

use crate::load::{ClientResult, LoadProfile, Pacing};
use crate::scenario::{require_program, Expectation, Launcher, Scenario, UPSTREAM_PORT};
use crate::scenarios::haproxy;
use crate::truth::TruthRow;

/// The WSGI app, shipped with the lab.
const APP: &str = include_str!("../../lab/gunicorn/app.py");

/// gunicorn's `--keep-alive`, in seconds.
const KEEPALIVE_S: u32 = 1;
/// The app answers on this clock (see `app.py`): longer than a client's pause.
const TICK_MS: u32 = 1200;
/// Concurrent clients; gunicorn has more threads than this.
const CLIENTS: u32 = 48;

pub struct HaproxyGunicorn;

impl Scenario for HaproxyGunicorn {
    fn name(&self) -> &'static str {
        "haproxy-gunicorn"
    }

    fn about(&self) -> &'static str {
        "haproxy (http-reuse always) -> gunicorn gthread --keep-alive 1: keep-alive race 502s"
    }

    fn start(&self, l: &mut dyn Launcher) -> Result<()> {
        start_with(l, "")
    }

    fn load(&self) -> LoadProfile {
        LoadProfile {
            requests: 1800,
            concurrency: CLIENTS,
            // Around gunicorn's expiry: the pause after an answer is the connection's idle time.
            pacing: Pacing::Gap {
                min: Duration::from_millis(995),
                max: Duration::from_millis(1010),
            },
            max_duration: Duration::from_secs(55),
            client_timeout: Duration::from_secs(5),
            path: "/api/orders".into(),
            body_len: 120,
        }
    }

    fn ground_truth(&self, dir: &Path, results: &[ClientResult]) -> Result<Vec<TruthRow>> {
        haproxy::read_ground_truth(dir, results)
    }

    fn expect(&self) -> Expectation {
        Expectation {
            rate_502: (0.01, 0.6),
            only_cause: None,
        }
    }
}

/// Starts gunicorn, then HAProxy with `bind` appended to its `bind` line (` ssl crt …`).
pub fn start_with(l: &mut dyn Launcher, bind: &str) -> Result<()> {
    let h = l.hosts().clone();
    let dir = l.dir().to_path_buf();
    std::fs::write(dir.join("app.py"), APP)?;
    let mut gunicorn = Command::new(require_program("gunicorn", "gunicorn")?);
    gunicorn
        .args(["--bind", &format!("{}:{UPSTREAM_PORT}", h.upstream_ip)])
        .args(["--worker-class", "gthread", "--workers", "1"])
        .args(["--threads", &(2 * CLIENTS).to_string()])
        .args(["--keep-alive", &KEEPALIVE_S.to_string()])
        .args(["--graceful-timeout", "1", "--chdir"])
        .arg(&dir)
        .arg("app:application")
        .env("TICK_MS", TICK_MS.to_string());
    l.spawn(&h.upstream_ns, "gunicorn", gunicorn)?;
    l.wait_listening(&h.upstream_ns, h.upstream_ip, UPSTREAM_PORT)?;
    haproxy::start_with(l, &format!("{}:{UPSTREAM_PORT}", h.upstream_ip), bind)
}
