//! One lab run of one scenario, start to finish, cleaned up on every exit path.

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::capture;
use crate::load::{outcome_counts, ClientResult, LoadProfile};
use crate::net::Net;
use crate::procs::Procs;
use crate::scenario::{require_program, Scenario, PROXY_PORT};
use crate::truth::{disagreements, TruthFile};

/// How long to let the last packets and log lines land before stopping the servers.
const SETTLE: Duration = Duration::from_millis(800);

/// Something to do once the servers run and before the load starts (e.g. wait until a
/// node agent follows the new proxy); an error aborts the run.
#[derive(Clone)]
pub struct BeforeLoad(pub std::sync::Arc<BeforeLoadFn>);

/// What [`BeforeLoad`] calls.
pub type BeforeLoadFn = dyn Fn(&crate::scenario::Hosts) -> Result<()> + Send + Sync;

impl std::fmt::Debug for BeforeLoad {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BeforeLoad(..)")
    }
}

/// Options of a run.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Called once the servers and captures run, before the load.
    pub before_load: Option<BeforeLoad>,
    /// Override the scenario's request count (smaller runs for fixtures).
    pub requests: Option<u32>,
    /// Run this `tracer` binary's `capture` live on the proxy's namespace during the load;
    /// its bundle goes to `<dir>/tracer/` and its JSON report to `<dir>/tracer-report.json`.
    pub tracer: Option<PathBuf>,
    /// More arguments for that `tracer capture` (e.g. `--all-data`).
    pub tracer_args: Vec<String>,
}

/// What a run produced; every file lives in `dir`.
#[derive(Debug)]
pub struct RunOutcome {
    pub dir: PathBuf,
    pub truth: TruthFile,
    pub results: Vec<ClientResult>,
    /// Where the ground truth disagrees with the client (must be empty).
    pub disagreements: Vec<String>,
    /// Where the run missed the scenario's expectation (must be empty).
    pub misses: Vec<String>,
    pub elapsed: Duration,
}

impl RunOutcome {
    /// `seed: 2000 requests in 9.1 s, 200=1843 502=157, 502 rate 7.85% (expected ≥ 5%): ok`
    pub fn summary(&self) -> String {
        let t = &self.truth;
        let counts: Vec<String> = t
            .client_counts
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        let verdict = if self.misses.is_empty() && self.disagreements.is_empty() {
            "ok"
        } else {
            "MISSED"
        };
        let drops = t.capture_client.lost() + t.capture_upstream.lost();
        format!(
            "{}: {} requests in {:.1} s, {}, 502 rate {:.2}%, capture drops {drops}: {verdict}",
            t.scenario,
            t.requests,
            self.elapsed.as_secs_f64(),
            counts.join(" "),
            t.rate("502") * 100.0,
        )
    }
}

/// Whether this process can build the lab (root or CAP_SYS_ADMIN + CAP_NET_ADMIN), and the
/// programs it needs; `Err` says in one sentence what is missing.
pub fn preflight() -> Result<()> {
    if !nix::unistd::geteuid().is_root() && !has_caps() {
        bail!("the lab needs root (CAP_SYS_ADMIN and CAP_NET_ADMIN) to create network namespaces: run it as root");
    }
    require_program("ip", "iproute2")?;
    require_program("tcpdump", "tcpdump")?;
    Ok(())
}

fn has_caps() -> bool {
    // CapEff bits: CAP_NET_ADMIN = 12, CAP_SYS_ADMIN = 21.
    let Ok(status) = std::fs::read_to_string("/proc/self/status") else {
        return false;
    };
    let eff = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|h| u64::from_str_radix(h.trim(), 16).ok())
        .unwrap_or(0);
    eff & (1 << 12) != 0 && eff & (1 << 21) != 0
}

/// Runs `scenario`, writing everything into `dir` (created, emptied first).
pub fn run(scenario: &dyn Scenario, dir: &Path, opts: &RunOptions) -> Result<RunOutcome> {
    preflight()?;
    let started = Instant::now();
    if dir.exists() {
        std::fs::remove_dir_all(dir).with_context(|| format!("emptying {}", dir.display()))?;
    }
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let dir = dir.canonicalize()?;
    let net = Net::create().context("building the lab network")?;
    let h = net.hosts().clone();
    let mut procs = Procs::new(h.clone(), dir.clone());

    scenario
        .start(&mut procs)
        .with_context(|| format!("starting scenario {}", scenario.name()))?;
    capture::start(
        &mut procs,
        &h.proxy_ns,
        &h.front_if,
        "tcpdump-client",
        &dir.join("client.pcap"),
    )?;
    capture::start(
        &mut procs,
        &h.proxy_ns,
        &h.back_if,
        "tcpdump-upstream",
        &dir.join("upstream.pcap"),
    )?;

    let mut tracer = match &opts.tracer {
        Some(bin) => Some(start_tracer(bin, &opts.tracer_args, &h, &dir)?),
        None => None,
    };

    if let Some(BeforeLoad(f)) = &opts.before_load {
        f(&h).context("before the load")?;
    }
    let mut profile: LoadProfile = scenario.load();
    if let Some(n) = opts.requests {
        profile.requests = n;
    }
    let target = SocketAddr::from((h.proxy_front_ip, PROXY_PORT));
    let results = crate::load_tls::run(&h.client_ns, target, &profile, scenario.client())?;
    write_results(&dir.join("client.jsonl"), &results)?;

    std::thread::sleep(SETTLE);
    if let Some(t) = &mut tracer {
        stop_tracer(t, &dir)?;
    }
    let capture_client = capture::stop(&mut procs, "tcpdump-client");
    let capture_upstream = capture::stop(&mut procs, "tcpdump-upstream");
    procs.stop_all(); // servers flush their logs on SIGTERM
    drop(procs);
    drop(net);

    let mut rows = scenario.ground_truth(&dir, &results)?;
    if capture_client.lost() > 0 {
        mark_lost(&dir.join("client.pcap"), &mut rows);
    }
    let truth = TruthFile {
        scenario: scenario.name().to_owned(),
        requests: results.len() as u64,
        client_counts: outcome_counts(&results),
        capture_client,
        capture_upstream,
        rows,
    };
    std::fs::write(dir.join("truth.json"), serde_json::to_vec_pretty(&truth)?)?;

    let disagreements = disagreements(&results, &truth.rows);
    let misses = misses(scenario, &truth);
    Ok(RunOutcome {
        dir,
        truth,
        results,
        disagreements,
        misses,
        elapsed: started.elapsed(),
    })
}

/// Starts `tracer capture` on the proxy's namespace; returns once it captures and its probe
/// is attached.
fn start_tracer(
    bin: &Path,
    extra: &[String],
    h: &crate::scenario::Hosts,
    dir: &Path,
) -> Result<std::process::Child> {
    let err = dir.join("tracer.err");
    let mut child = Command::new(bin)
        .arg("capture")
        .args([
            "--netns",
            &h.proxy_ns,
            "-i",
            &h.front_if,
            "-i",
            &h.back_if,
            "--format",
            "json",
            "--out",
        ])
        .arg(dir.join("tracer"))
        .args(extra)
        .stdin(std::process::Stdio::null())
        .stdout(std::fs::File::create(dir.join("tracer-report.json"))?)
        .stderr(std::fs::File::create(&err)?)
        .spawn()
        .with_context(|| format!("starting {}", bin.display()))?;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if std::fs::read_to_string(&err).is_ok_and(|s| s.contains("Ctrl-C to stop")) {
            std::thread::sleep(Duration::from_millis(300));
            return Ok(child);
        }
        if let Some(status) = child.try_wait()? {
            bail!(
                "tracer capture exited ({status}): {}",
                std::fs::read_to_string(&err).unwrap_or_default().trim()
            );
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            bail!("tracer capture did not start within 20 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Ctrl-C for `tracer capture`, then wait for its report.
fn stop_tracer(child: &mut std::process::Child, dir: &Path) -> Result<()> {
    let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).unwrap_or(i32::MAX));
    let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(status) = child.try_wait()? {
            if !status.success() {
                bail!(
                    "tracer capture failed ({status}): {}",
                    std::fs::read_to_string(dir.join("tracer.err"))
                        .unwrap_or_default()
                        .trim()
                );
            }
            return Ok(());
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            bail!("tracer capture did not finish within 60 s of Ctrl-C");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn misses(scenario: &dyn Scenario, t: &TruthFile) -> Vec<String> {
    let e = scenario.expect();
    let mut m = Vec::new();
    let rate = t.rate("502");
    if rate < e.rate_502.0 || rate > e.rate_502.1 {
        m.push(format!(
            "502 rate {:.2}% outside the expected {:.2}%..={:.2}%",
            rate * 100.0,
            e.rate_502.0 * 100.0,
            e.rate_502.1 * 100.0
        ));
    }
    if let Some(cause) = e.only_cause {
        if t.rows.len() as u64 != t.requests {
            m.push(format!(
                "{} of {} requests failed; this contrast expects all of them",
                t.rows.len(),
                t.requests
            ));
        }
        for r in t.rows.iter().filter(|r| r.cause != cause) {
            m.push(format!(
                "rid {}: cause {} where {cause} was expected",
                r.rid, r.cause
            ));
        }
    }
    if t.requests == 0 {
        m.push("no request was sent".to_owned());
    }
    m
}

fn write_results(path: &Path, results: &[ClientResult]) -> Result<()> {
    let mut f = std::io::BufWriter::new(std::fs::File::create(path)?);
    for r in results {
        serde_json::to_writer(&mut f, r)?;
        f.write_all(b"\n")?;
    }
    f.flush()?;
    Ok(())
}

/// tcpdump dropped packets: rows whose request is not in the client-facing capture lost
/// their evidence. Uses tshark (independent of tracer) to list the request ids present.
fn mark_lost(pcap: &Path, rows: &mut [crate::truth::TruthRow]) {
    let Ok(tshark) = require_program("tshark", "tshark") else {
        for r in rows.iter_mut() {
            r.capture_lost = true; // cannot tell which: say so for all
        }
        return;
    };
    let out = Command::new(tshark)
        .arg("-r")
        .arg(pcap)
        .args([
            "-Y",
            "http.request",
            "-T",
            "fields",
            "-e",
            "http.request.uri",
        ])
        .output();
    let present: std::collections::HashSet<u64> = out
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .filter_map(|l| {
                    l.split("rid=")
                        .nth(1)?
                        .split('&')
                        .next()?
                        .trim()
                        .parse()
                        .ok()
                })
                .collect()
        })
        .unwrap_or_default();
    for r in rows.iter_mut() {
        if !present.contains(&r.rid) {
            r.capture_lost = true;
        }
    }
}
