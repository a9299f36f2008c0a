//! `tracer agent` as the end-to-end tests run it: on a loopback port, its log and its
//! verdict lines in files of the test's directory, waited for through its own endpoints and
//! log; and the Prometheus that scrapes it waited for.

#![allow(dead_code, reason = "each test crate uses a part of it")]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use tracer_lab::prom::{free_port, PromApi};

/// A running `tracer agent`, killed on drop.
pub struct Agent {
    pub child: Child,
    /// Its standard error: what it follows and stops following.
    pub err: PathBuf,
    /// Its verdict lines.
    pub verdicts: PathBuf,
    /// `http://127.0.0.1:PORT`.
    pub url: String,
}

impl Agent {
    /// Starts the agent on a free loopback port, following every proxy on the machine;
    /// returns once it answers `/healthz`.
    pub fn start(bin: &Path, dir: &Path) -> Agent {
        let port = free_port().expect("a free port");
        Agent::start_with(bin, dir, port, &[])
    }

    /// Starts the agent on `127.0.0.1:port` with `extra` arguments (e.g. `--netns NAME`);
    /// its log and verdicts go to `dir`. Returns once it answers `/healthz`.
    pub fn start_with(bin: &Path, dir: &Path, port: u16, extra: &[&str]) -> Agent {
        let err = dir.join("agent.err");
        let verdicts = dir.join("verdicts.jsonl");
        let child = Command::new(bin)
            .args([
                "agent",
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--rescan",
                "200ms",
            ])
            .arg("--verdicts")
            .arg(&verdicts)
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&err).expect("creating the agent's log"))
            .spawn()
            .expect("starting tracer agent");
        let agent = Agent {
            child,
            err,
            verdicts,
            url: format!("http://127.0.0.1:{port}"),
        };
        agent.wait_for(
            "the agent to answer /healthz",
            Duration::from_secs(20),
            |a| a.get("/healthz").is_some_and(|b| b.starts_with("ok")),
        );
        agent
    }

    /// The body of `GET path`, or `None` when it does not answer 200.
    pub fn get(&self, path: &str) -> Option<String> {
        let mut res = ureq::get(&format!("{}{path}", self.url)).call().ok()?;
        res.body_mut().read_to_string().ok()
    }

    /// What it printed to standard error so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.err).unwrap_or_default()
    }

    /// Where its log ends now: lines after this mark are news (see [`log_since`]).
    pub fn log_mark(&self) -> usize {
        self.log().len()
    }

    /// Polls `done` every 100 ms; panics with the agent's log after `timeout`.
    pub fn wait_for(&self, what: &str, timeout: Duration, mut done: impl FnMut(&Agent) -> bool) {
        let deadline = Instant::now() + timeout;
        while !done(self) {
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; the agent's log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The verdict lines written so far.
    pub fn lines(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.verdicts)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// Whether its log after `mark` says it stopped following the proxy in network
    /// namespace `ino`.
    pub fn stopped_following(&self, ino: u64, mark: usize) -> bool {
        says_of(&log_since(&self.err, mark), STOPPED, ino)
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

const FOLLOWING: &str = "tracer agent: following ";
const STOPPED: &str = "tracer agent: stopped following ";

/// The log at `err` after byte `mark` (a line cut by the mark is skipped).
///
/// The kernel hands a freed network namespace's inode number to the next one it creates,
/// so a proxy's namespace can carry the number of an earlier proxy's: what the agent said
/// of that number before the mark was said of another proxy.
pub fn log_since(err: &Path, mark: usize) -> String {
    let log = std::fs::read(err).unwrap_or_default();
    let tail = log.get(mark..).unwrap_or_default();
    let tail = if mark == 0 || log.get(mark - 1) == Some(&b'\n') {
        tail
    } else {
        tail.iter()
            .position(|&b| b == b'\n')
            .map_or(&[][..], |i| &tail[i + 1..])
    };
    String::from_utf8_lossy(tail).into_owned()
}

/// Whether a line of `log` starts with `what` and names network namespace `ino`.
fn says_of(log: &str, what: &str, ino: u64) -> bool {
    let ns = format!("netns {ino})");
    log.lines().any(|l| l.starts_with(what) && l.contains(&ns))
}

/// Waits (up to 20 s) until the agent whose log is `err` and endpoints are at `url` is
/// ready and, in its log after `mark`, follows the proxy in network namespace `ino`: the
/// lab's load may start then.
pub fn wait_following(err: &Path, url: &str, ino: u64, mark: usize) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let log = log_since(err, mark);
        let ready = ureq::get(&format!("{url}/readyz")).call().is_ok();
        if ready && says_of(&log, FOLLOWING, ino) {
            return Ok(());
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "the agent did not follow the proxy in netns {ino} within 20 s: {log}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The inode of a named network namespace.
pub fn netns_inode(name: &str) -> anyhow::Result<u64> {
    use std::os::unix::fs::MetadataExt;
    Ok(std::fs::metadata(Path::new("/run/netns").join(name))?.ino())
}

/// Waits until Prometheus has scraped the agent at least twice after now.
pub fn wait_for_scrapes(api: &PromApi) {
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let newest = api
            .query("timestamp(tracer_build_info)", None)
            .ok()
            .and_then(|s| s.first().map(|s| s.value))
            .unwrap_or(0.0);
        if newest > since + 1.0 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "Prometheus did not scrape the agent"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}
