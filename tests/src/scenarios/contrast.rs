//! The contrasts: nginx in front of an upstream that fails in one known way on every
//! request, so that each cause of the taxonomy has a run where it is the only one.
//!
//! | name | the upstream | the client sees | cause |
//! |---|---|---|---|
//! | `refused` | nothing listens on the port nginx proxies to | 502 | `upstream_refused` |
//! | `crash` | writes part of a response head, then resets | 502 | `upstream_reset` |
//! | `timeout` | answers after 3 s; `proxy_read_timeout 1s` | 504 | `proxy_timeout` |
//! | `client-abort` | answers after 3 s; the client gives up at 0.5 s | its timeout (nginx: 499) | `client_abort` |
//! | `upstream-500`, `upstream-502` | answers 500 / 502 itself | 500 / 502 | `upstream_generated` |

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::Result;

use crate::load::{ClientResult, LoadProfile, Pacing};
use crate::scenario::{
    require_program, Expectation, Launcher, Scenario, CLOSED_PORT, UPSTREAM_PORT,
};
use crate::scenarios::nginx::{self, Logs, UpstreamLoss};
use crate::truth::TruthRow;

/// The failing upstream, shipped with the lab.
const CONTRAST_JS: &str = include_str!("../../lab/node/contrast.js");

/// How long the slow path takes; above both `proxy_read_timeout` and the client's patience.
const SLOW_MS: u32 = 3000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Refused,
    Crash,
    Timeout,
    ClientAbort,
    Upstream500,
    Upstream502,
}

pub struct Contrast(pub Kind);

impl Contrast {
    /// The request path the load uses (it selects the upstream's failure).
    fn path(&self) -> String {
        match self.0 {
            Kind::Refused => "/api/orders".into(),
            Kind::Crash => "/crash".into(),
            Kind::Timeout | Kind::ClientAbort => format!("/slow/{SLOW_MS}"),
            Kind::Upstream500 => "/status/500".into(),
            Kind::Upstream502 => "/status/502".into(),
        }
    }

    /// The cause every failed request must have.
    fn cause(&self) -> &'static str {
        match self.0 {
            Kind::Refused => "upstream_refused",
            Kind::Crash => "upstream_reset",
            Kind::Timeout => "proxy_timeout",
            Kind::ClientAbort => "client_abort",
            Kind::Upstream500 | Kind::Upstream502 => "upstream_generated",
        }
    }
}

impl Scenario for Contrast {
    fn name(&self) -> &'static str {
        match self.0 {
            Kind::Refused => "refused",
            Kind::Crash => "crash",
            Kind::Timeout => "timeout",
            Kind::ClientAbort => "client-abort",
            Kind::Upstream500 => "upstream-500",
            Kind::Upstream502 => "upstream-502",
        }
    }

    fn about(&self) -> &'static str {
        match self.0 {
            Kind::Refused => "nginx -> a closed port: every request 502, upstream_refused",
            Kind::Crash => {
                "nginx -> node writing half a response head then RST: 502, upstream_reset"
            }
            Kind::Timeout => {
                "nginx (proxy_read_timeout 1s) -> node answering in 3 s: 504, proxy_timeout"
            }
            Kind::ClientAbort => {
                "client gives up at 0.5 s, node answers in 3 s: nginx 499, client_abort"
            }
            Kind::Upstream500 => "nginx -> node answering 500 itself: upstream_generated",
            Kind::Upstream502 => "nginx -> node answering 502 itself: upstream_generated",
        }
    }

    fn start(&self, l: &mut dyn Launcher) -> Result<()> {
        let h = l.hosts().clone();
        let port = if self.0 == Kind::Refused {
            CLOSED_PORT
        } else {
            std::fs::write(l.dir().join("contrast.js"), CONTRAST_JS)?;
            let mut node = Command::new(require_program("node", "nodejs")?);
            node.arg("contrast.js")
                .arg(h.upstream_ip.to_string())
                .arg(UPSTREAM_PORT.to_string());
            l.spawn(&h.upstream_ns, "node", node)?;
            l.wait_listening(&h.upstream_ns, h.upstream_ip, UPSTREAM_PORT)?;
            UPSTREAM_PORT
        };
        let extra = if self.0 == Kind::Timeout {
            "proxy_read_timeout 1s;"
        } else {
            ""
        };
        // max_fails=0: nginx never marks the server down, so every request really tries it.
        let upstream = format!("{}:{port} max_fails=0", h.upstream_ip);
        nginx::start(l, &upstream, 16, extra)
    }

    fn load(&self) -> LoadProfile {
        LoadProfile {
            requests: 100,
            concurrency: 20,
            pacing: Pacing::Gap {
                min: Duration::from_millis(5),
                max: Duration::from_millis(20),
            },
            max_duration: Duration::from_secs(30),
            client_timeout: if self.0 == Kind::ClientAbort {
                Duration::from_millis(500)
            } else {
                Duration::from_secs(5)
            },
            path: self.path(),
            body_len: 120,
        }
    }

    fn ground_truth(&self, dir: &Path, results: &[ClientResult]) -> Result<Vec<TruthRow>> {
        Ok(nginx::ground_truth(
            &Logs::read(dir)?,
            results,
            UpstreamLoss::Crash,
        ))
    }

    fn expect(&self) -> Expectation {
        let all_502 = matches!(self.0, Kind::Refused | Kind::Crash | Kind::Upstream502);
        Expectation {
            rate_502: if all_502 { (1.0, 1.0) } else { (0.0, 0.0) },
            only_cause: Some(self.cause()),
        }
    }
}
