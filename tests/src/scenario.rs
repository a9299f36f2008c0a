//! What a scenario is: which servers to start, what load to send, how to read the proxy's
//! logs into ground truth, and what the run must show.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::load::{ClientResult, LoadProfile};
use crate::truth::TruthRow;

/// Addresses of the lab's three hosts. Everything lives in 198.18.0.0/15 (RFC 2544, set aside
/// for benchmarking), inside network namespaces this lab creates; nothing routes out.
#[derive(Debug, Clone)]
pub struct Hosts {
    /// Namespace names.
    pub client_ns: String,
    pub proxy_ns: String,
    pub upstream_ns: String,
    /// The client's address (client namespace).
    pub client_ip: Ipv4Addr,
    /// The proxy's client-facing address (proxy namespace); the proxy listens here.
    pub proxy_front_ip: Ipv4Addr,
    /// The proxy's upstream-facing address (proxy namespace).
    pub proxy_back_ip: Ipv4Addr,
    /// The upstream's address (upstream namespace).
    pub upstream_ip: Ipv4Addr,
    /// Interface names inside the proxy namespace (the capture points).
    pub front_if: String,
    pub back_if: String,
}

/// Port the proxy listens on (on `proxy_front_ip`).
pub const PROXY_PORT: u16 = 8080;
/// Port the upstream listens on (on `upstream_ip`).
pub const UPSTREAM_PORT: u16 = 9000;
/// A port on the upstream host where nothing listens (the `refused` contrast).
pub const CLOSED_PORT: u16 = 9009;

/// Where a scenario runs its servers: hands it the hosts, a run directory for its configs
/// and logs, and a way to start processes inside a namespace (they are stopped with SIGTERM,
/// then SIGKILL, when the run ends, so servers can flush their logs).
pub trait Launcher {
    fn hosts(&self) -> &Hosts;
    /// The run directory: write configs here; logs go here too.
    fn dir(&self) -> &Path;
    /// Start `cmd` inside namespace `ns`. Its stdout and stderr go to `<dir>/<name>.out` and
    /// `<dir>/<name>.err`.
    fn spawn(&mut self, ns: &str, name: &str, cmd: Command) -> anyhow::Result<()>;
    /// Wait until something accepts TCP connections on `ip:port` inside `ns`.
    fn wait_listening(&self, ns: &str, ip: Ipv4Addr, port: u16) -> anyhow::Result<()>;
}

/// What the run must show, checked by the lab's tests and printed by `cargo xtask lab`.
#[derive(Debug, Clone, PartialEq)]
pub struct Expectation {
    /// Inclusive bounds on the share of requests answered 502 (0.0..=1.0).
    pub rate_502: (f64, f64),
    /// For contrasts: every non-2xx response has this cause (and the share of non-2xx
    /// among all requests is 100%).
    pub only_cause: Option<&'static str>,
}

pub trait Scenario: Send + Sync {
    /// Short name used on the command line: `cargo xtask lab NAME`.
    fn name(&self) -> &'static str;
    /// One sentence: what runs and which cause it shows.
    fn about(&self) -> &'static str;
    /// Write configs into `l.dir()` and start the upstream, then the proxy; return once both
    /// accept connections (the refused contrast's upstream, of course, does not).
    fn start(&self, l: &mut dyn Launcher) -> anyhow::Result<()>;
    /// The load to send at `proxy_front_ip:PROXY_PORT`.
    fn load(&self) -> LoadProfile;
    /// After the servers were stopped: read the proxy's (and upstream's) logs in `dir` and
    /// join them with the client's results by request id, one row per non-2xx result.
    fn ground_truth(&self, dir: &Path, results: &[ClientResult]) -> anyhow::Result<Vec<TruthRow>>;
    fn expect(&self) -> Expectation;
    /// How the client talks to the proxy: plain HTTP/1.1 unless the scenario says (TLS,
    /// kept-alive connections, HTTP/2; see [`crate::load_tls`]).
    fn client(&self) -> crate::load_tls::Client {
        crate::load_tls::Client::Plain
    }
}

/// Where Debian keeps a program, or an error naming the package to install.
pub fn require_program(program: &str, package: &str) -> anyhow::Result<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in
        std::env::split_paths(&path).chain([PathBuf::from("/usr/sbin"), PathBuf::from("/sbin")])
    {
        let candidate = dir.join(program);
        if candidate.is_file() {
            return Ok(candidate);
        }
    }
    anyhow::bail!("`{program}` is not installed: run ./bootstrap.sh (or apt-get install {package})")
}
