//! `tracer agent` in the benchmarks: starting it the way a node runs it and waiting until
//! it follows the bench's proxy by itself; unrelated busy traffic in namespaces of its own
//! (`bench-capture --busy`); and the side-by-side summary of every kind and condition.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use tracer_lab::scenario::PROXY_PORT;

use crate::bench::{increase, median, paired, Condition, Kind, Proxy, Round, Stack};
use crate::exposition::metric_sum;

/// Which proxies the agent looks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum AgentNames {
    /// Only the bench's own proxies (by their process name).
    Bench,
    /// The agent's default names (nginx, caddy, haproxy, ...) and the bench's proxies.
    Default,
}

/// The arguments that make `tracer agent` look for `names`, given the bench's proxy. It
/// otherwise runs with its defaults, as deployed (it rescans `/proc` every 2 s, so it may
/// take that long to find the proxy).
pub(crate) fn agent_args(names: AgentNames, proxy: Proxy) -> Vec<String> {
    let mut args = Vec::new();
    if names == AgentNames::Bench {
        args.push("--only-names".to_owned());
    }
    args.extend(["--name".to_owned(), proxy.comm().to_owned()]);
    args
}

/// A running `tracer agent`, serving its endpoints on a loopback port of its own.
pub(crate) struct AgentRun {
    child: Child,
    err: PathBuf,
    addr: SocketAddr,
}

/// What a stopped agent reported.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct AgentEnd {
    pub(crate) packets_dropped: u64,
    pub(crate) events_lost: u64,
}

impl AgentRun {
    /// Starts `tracer agent --listen 127.0.0.1:PORT --verdicts off` with `extra`
    /// arguments; its standard error goes to `err`.
    pub(crate) fn start(tracer: &Path, extra: &[String], err: &Path) -> Result<Self> {
        let port = tracer_lab::prom::free_port()?;
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let child = Command::new(tracer)
            .arg("agent")
            .args(["--listen", &addr.to_string(), "--verdicts", "off"])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(err)?)
            .spawn()
            .context("starting tracer agent")?;
        Ok(Self {
            child,
            err: err.to_path_buf(),
            addr,
        })
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Where it serves its endpoints.
    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// What the agent wrote to its standard error so far.
    pub(crate) fn log(&self) -> String {
        std::fs::read_to_string(&self.err).unwrap_or_default()
    }

    /// How many times the agent said it started following a proxy, and stopped.
    pub(crate) fn follow_counts(&self) -> (usize, usize) {
        let log = self.log();
        let started = log
            .lines()
            .filter(|l| l.starts_with("tracer agent: following "))
            .count();
        let stopped = log
            .lines()
            .filter(|l| l.starts_with("tracer agent: stopped following "))
            .count();
        (started, stopped)
    }

    /// Waits until `/readyz` answers 200 and the agent said it follows each of `pids`
    /// (each the oldest process of a proxy, which names the agent's line for it).
    pub(crate) fn wait_following(&mut self, pids: &[u32], timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait()? {
                bail!("tracer agent exited ({status}):\n{}", self.log());
            }
            let log = self.log();
            let follows = |pid: &u32| {
                log.lines().any(|l| {
                    l.starts_with("tracer agent: following ") && l.contains(&format!("(pid {pid},"))
                })
            };
            let ready = http_get(self.addr, "/readyz").is_some_and(|(status, _)| status == 200);
            if ready && pids.iter().all(follows) {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "tracer agent did not report following pids {pids:?} within {timeout:?} (ready: {ready}):\n{log}"
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The agent's `/metrics` now.
    pub(crate) fn scrape(&self) -> Option<String> {
        http_get(self.addr, "/metrics")
            .filter(|(status, _)| *status == 200)
            .map(|(_, body)| body)
    }

    /// Reads its self-metrics, then stops it with SIGTERM (as Kubernetes does) and checks
    /// that it exits cleanly within a few seconds.
    pub(crate) fn stop(mut self) -> Result<AgentEnd> {
        let text = self.scrape().unwrap_or_default();
        let end = AgentEnd {
            packets_dropped: metric_sum(&text, "tracer_packets_dropped_total") as u64,
            events_lost: metric_sum(&text, "tracer_events_lost_total") as u64,
        };
        let pid = libc::pid_t::try_from(self.child.id()).context("the agent's pid")?;
        // SAFETY: kill(2) with the pid of our own child, not yet waited for, so it cannot
        // have been reused.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = self.child.try_wait()? {
                if !status.success() {
                    bail!(
                        "tracer agent ended with {status} after SIGTERM:\n{}",
                        self.log()
                    );
                }
                return Ok(end);
            }
            if Instant::now() > deadline {
                bail!(
                    "tracer agent did not stop within 10 s of SIGTERM:\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for AgentRun {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A GET over HTTP/1.1 on loopback: the status and the body (`Connection: close`, so the
/// body is whatever follows the head).
pub(crate) fn http_get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(1)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let status = text.split_whitespace().nth(1)?.parse().ok()?;
    let body = text.split_once("\r\n\r\n")?.1.to_owned();
    Some((status, body))
}

/// Unrelated traffic on the same machine, in namespaces of its own that nothing of the
/// bench's stack uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Busy {
    /// A plain HTTP server (nginx answering by itself, under the process name
    /// `busy-origin`), which the agent has no reason to follow.
    Unfollowed,
    /// A second proxy → nginx pair (its proxy under the bench's proxy's name), which the
    /// agent follows too.
    Followed,
}

impl Busy {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Busy::Unfollowed => "busy traffic, not followed",
            Busy::Followed => "busy traffic through a proxy the agent follows",
        }
    }

    pub(crate) fn about(self) -> &'static str {
        match self {
            Busy::Unfollowed => "client -> a plain server (`busy-origin`, not a proxy)",
            Busy::Followed => "client -> a second proxy -> nginx (the agent follows it)",
        }
    }
}

/// Busy traffic while it runs: its servers and a fixed-rate load on them, in chunks, so
/// that what the load achieved can be read while it goes on.
pub(crate) struct BusyTraffic {
    stop: Arc<AtomicBool>,
    load: Option<JoinHandle<Result<BusyTally>>>,
    kind: Busy,
    /// Last: the servers and namespaces go after the load.
    stack: Stack,
}

/// What the busy load achieved.
#[derive(Debug, Clone, Copy, Default)]
struct BusyTally {
    requests: f64,
    seconds: f64,
    errors: u64,
}

/// The busy load runs in chunks this long (and stops within one).
const BUSY_CHUNK_S: u32 = 4;

impl BusyTraffic {
    /// Starts the servers of `kind` in new namespaces under `dir` and a load of `rate`
    /// requests/s on them, for at most `seconds`.
    pub(crate) fn start(
        kind: Busy,
        dir: &Path,
        proxy: Proxy,
        rate: u32,
        seconds: u32,
    ) -> Result<Self> {
        let stack = match kind {
            Busy::Unfollowed => Stack::start_origin(dir, "busy-origin")?,
            Busy::Followed => Stack::start(dir, proxy)?,
        };
        let stop = Arc::new(AtomicBool::new(false));
        let load = {
            let (stop, ns) = (stop.clone(), stack.h.client_ns.clone());
            let target = format!("{}:{PROXY_PORT}", stack.h.proxy_front_ip);
            std::thread::Builder::new()
                .name("busy-load".into())
                .spawn(move || busy_load(&ns, &target, rate, seconds, &stop))?
        };
        // Let the load reach its rate before anything is measured.
        std::thread::sleep(Duration::from_millis(1000));
        Ok(Self {
            stop,
            load: Some(load),
            kind,
            stack,
        })
    }

    /// The busy proxy's oldest process, which the agent must follow (`followed` only).
    pub(crate) fn proxy_pid(&self) -> Option<u32> {
        match self.kind {
            Busy::Followed => self.stack.procs.pid("front"),
            Busy::Unfollowed => None,
        }
    }
}

impl Drop for BusyTraffic {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        match self.load.take().map(JoinHandle::join) {
            Some(Ok(Ok(t))) => eprintln!(
                "    busy load: {:.0} req/s over {:.0} s, {} errors",
                t.requests / t.seconds.max(1e-9),
                t.seconds,
                t.errors
            ),
            Some(Ok(Err(e))) => eprintln!("    busy load failed: {e:#}"),
            _ => eprintln!("    busy load: its thread panicked"),
        }
    }
}

/// `xtask rate-load` at `target` from namespace `ns`, chunk after chunk, until `stop` or
/// `seconds` have passed.
fn busy_load(
    ns: &str,
    target: &str,
    rate: u32,
    seconds: u32,
    stop: &AtomicBool,
) -> Result<BusyTally> {
    let started = Instant::now();
    let mut t = BusyTally::default();
    while !stop.load(Ordering::Relaxed) && started.elapsed().as_secs() < u64::from(seconds) {
        let out = Command::new("ip")
            .args(["netns", "exec", ns])
            .arg(std::env::current_exe().context("finding the xtask binary")?)
            .args(["rate-load", "--target", target])
            .args(["--rate", &rate.to_string(), "--connections", "16"])
            .args(["--seconds", &BUSY_CHUNK_S.to_string()])
            .output()
            .context("running the busy load")?;
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).with_context(|| {
            format!(
                "unexpected rate-load output: {}",
                String::from_utf8_lossy(&out.stderr)
            )
        })?;
        t.requests += v["requests"].as_f64().unwrap_or(0.0);
        t.errors += v["errors"].as_u64().unwrap_or(0);
        t.seconds += f64::from(BUSY_CHUNK_S);
    }
    Ok(t)
}

/// Every kind side by side: its cost against the proxy alone in each condition, the agent
/// against `tcpdump` round by round, and each condition with busy traffic against the
/// quiet one.
pub(crate) fn summary(conditions: &[Option<Busy>], kinds: &[Option<Kind>], results: &[Condition]) {
    let label = |c: &Option<Busy>| c.map_or("quiet", Busy::name);
    let field = |v: &[Round], f: fn(&Round) -> f64| v.iter().map(f).collect::<Vec<f64>>();
    // Per condition and kind: each round's throughput against the baselines around it.
    let ratio = |c: usize, m: usize, f: fn(&Round) -> f64| {
        paired(
            &field(&results[c].rounds[m], f),
            &field(&results[c].rounds[0], f),
        )
    };
    let own_us = |c: usize, m: usize| {
        median(&field(&results[c].rounds[m], |r| {
            r.attached_s / r.requests.max(1.0) * 1e6
        }))
    };
    println!(
        "summary: each kind against the proxy alone in the same condition, median (95% interval) over rounds"
    );
    println!("  | attached | condition | saturation throughput | saturation p99 | fixed-load p99 | its process, CPU us per request |");
    println!("  |---|---|---|---|---|---|");
    for (m, kind) in kinds.iter().enumerate().skip(1) {
        for (c, cond) in conditions.iter().enumerate() {
            println!(
                "  | {} | {} | {} | {} | {} | {:.2} |",
                kind.map_or("", kind_name),
                label(cond),
                increase(&ratio(c, m, |r| r.rps)),
                increase(&ratio(c, m, |r| r.p99_ms)),
                increase(&ratio(c, m, |r| r.fixed_p99_ms)),
                own_us(c, m)
            );
        }
    }
    let index = |k: Kind| kinds.iter().position(|x| *x == Some(k));
    if let (Some(a), Some(t)) = (index(Kind::Agent), index(Kind::Tcpdump)) {
        println!(
            "tracer agent against tcpdump, round by round (each against its own baselines; above +0% the agent costs less; target >= -0%, aim: half tcpdump's loss):"
        );
        for (c, cond) in conditions.iter().enumerate() {
            let vs = |f: fn(&Round) -> f64| -> Vec<f64> {
                ratio(c, a, f)
                    .iter()
                    .zip(ratio(c, t, f))
                    .map(|(x, y)| x / y)
                    .collect()
            };
            let loss = |m: usize| (1.0 - median(&ratio(c, m, |r| r.rps))) * 100.0;
            println!(
                "  {}: saturation throughput {}, p99 {} (lower is better); median loss: agent {:.1}%, tcpdump {:.1}%",
                label(cond),
                increase(&vs(|r| r.rps)),
                increase(&vs(|r| r.p99_ms)),
                loss(a),
                loss(t)
            );
        }
    }
    if conditions.len() > 1 {
        println!(
            "busy against quiet, round by round (a kind's throughput ratio with the busy traffic / without; its own CPU per request of the bench's proxy):"
        );
        for (m, kind) in kinds.iter().enumerate().skip(1) {
            for (c, cond) in conditions.iter().enumerate().skip(1) {
                let vs: Vec<f64> = ratio(c, m, |r| r.rps)
                    .iter()
                    .zip(ratio(0, m, |r| r.rps))
                    .map(|(x, y)| x / y)
                    .collect();
                println!(
                    "  {} with {}: throughput {}; own CPU {:.2} us per request vs {:.2} quiet",
                    kind.map_or("", kind_name),
                    label(cond),
                    increase(&vs),
                    own_us(c, m),
                    own_us(0, m)
                );
            }
        }
    }
}

fn kind_name(k: Kind) -> &'static str {
    match k {
        Kind::Tcpdump => "tcpdump -w /dev/null",
        Kind::AllData => "tracer capture --all-data",
        Kind::Sparse => "tracer capture",
        Kind::Agent => "tracer agent",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bench_names_follow_only_the_bench_proxy() {
        assert_eq!(
            agent_args(AgentNames::Bench, Proxy::Nginx),
            ["--only-names", "--name", "bench-nginx"]
        );
        assert_eq!(
            agent_args(AgentNames::Default, Proxy::Caddy),
            ["--name", "bench-caddy"]
        );
    }
}
