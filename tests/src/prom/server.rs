//! A `prometheus` process with its own configuration and storage in a temporary directory.

use std::fmt::Write as _;
use std::fs::File;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use super::{PromApi, PromError};
use crate::prom::format_duration;

/// How long Prometheus may take to answer `/-/ready` (it replays no WAL here, but the machine
/// may be busy).
const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// How long it may take to exit after SIGTERM before it gets SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(5);
/// Attempts at a free port: another process may take the one found before Prometheus binds it.
const PORT_ATTEMPTS: usize = 3;

/// One `scrape_configs` entry.
#[derive(Debug, Clone)]
pub struct ScrapeJob {
    /// `job_name` (the `job` label of what it scrapes).
    pub name: String,
    /// `host:port` of each target (the `instance` label).
    pub targets: Vec<String>,
    /// The path scraped on each target.
    pub metrics_path: String,
}

impl ScrapeJob {
    /// A job scraping `/metrics` on `targets`.
    pub fn new(name: &str, targets: impl IntoIterator<Item = String>) -> ScrapeJob {
        ScrapeJob {
            name: name.to_owned(),
            targets: targets.into_iter().collect(),
            metrics_path: "/metrics".into(),
        }
    }
}

/// What a test Prometheus scrapes and evaluates.
#[derive(Debug, Clone)]
pub struct PrometheusConfig {
    /// `global.scrape_interval` (short in tests, so that rates exist within seconds).
    pub scrape_interval: Duration,
    /// `global.evaluation_interval` of the rule files.
    pub evaluation_interval: Duration,
    /// The scrape jobs.
    pub jobs: Vec<ScrapeJob>,
    /// Rule files to load (absolute paths, or relative to the working directory).
    pub rule_files: Vec<PathBuf>,
    /// Whether to scrape itself too, as job `prometheus`.
    pub scrape_self: bool,
}

impl Default for PrometheusConfig {
    fn default() -> Self {
        PrometheusConfig {
            scrape_interval: Duration::from_secs(1),
            evaluation_interval: Duration::from_secs(1),
            jobs: Vec::new(),
            rule_files: Vec::new(),
            scrape_self: false,
        }
    }
}

/// A running `prometheus`, stopped (SIGTERM, then SIGKILL) and its directory removed on drop.
pub struct Prometheus {
    child: Child,
    dir: PathBuf,
    api: PromApi,
    address: String,
}

/// A loopback port nobody listens on at the moment of asking.
pub fn free_port() -> Result<u16, PromError> {
    let listener = TcpListener::bind("127.0.0.1:0").map_err(PromError::io("binding a port"))?;
    Ok(listener
        .local_addr()
        .map_err(PromError::io("reading a bound port"))?
        .port())
}

/// Finds `program` on PATH (or in /usr/bin, /usr/sbin).
fn find(program: &'static str) -> Result<PathBuf, PromError> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/bin"), PathBuf::from("/usr/sbin")])
        .map(|dir| dir.join(program))
        .find(|candidate| candidate.is_file())
        .ok_or(PromError::Missing(program))
}

/// Runs `promtool` with `args` and returns what it printed and its exit status.
pub fn promtool(args: &[&str]) -> Result<Output, PromError> {
    Command::new(find("promtool")?)
        .args(args)
        .output()
        .map_err(PromError::io("running promtool"))
}

impl Prometheus {
    /// Whether the `prometheus` program is installed; the reason when it is not.
    pub fn available() -> Result<(), PromError> {
        find("prometheus").map(|_| ())
    }

    /// Writes the configuration into a fresh temporary directory, starts Prometheus on a free
    /// loopback port and waits until it is ready.
    pub fn start(config: &PrometheusConfig) -> Result<Prometheus, PromError> {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let binary = find("prometheus")?;
        let dir = std::env::temp_dir().join(format!(
            "tracer-prometheus-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)
            .map_err(PromError::io(format!("creating {}", dir.display())))?;
        let mut last = None;
        for _ in 0..PORT_ATTEMPTS {
            match Self::start_on(&binary, &dir, config, free_port()?) {
                Ok(p) => return Ok(p),
                Err((e, port_taken)) => {
                    if !port_taken {
                        let _ = std::fs::remove_dir_all(&dir);
                        return Err(e);
                    }
                    last = Some(e);
                }
            }
        }
        let _ = std::fs::remove_dir_all(&dir);
        Err(last.unwrap_or(PromError::Missing("prometheus")))
    }

    /// One attempt; the error says whether the port was taken (worth another attempt).
    fn start_on(
        binary: &Path,
        dir: &Path,
        config: &PrometheusConfig,
        port: u16,
    ) -> Result<Prometheus, (PromError, bool)> {
        let fail = |e: PromError| (e, false);
        let address = format!("127.0.0.1:{port}");
        let config_file = dir.join("prometheus.yml");
        std::fs::write(&config_file, render_config(config, &address)).map_err(|e| {
            fail(PromError::Io {
                what: format!("writing {}", config_file.display()),
                source: e,
            })
        })?;
        let log_path = dir.join("prometheus.log");
        let log = File::create(&log_path).map_err(|e| {
            fail(PromError::Io {
                what: format!("creating {}", log_path.display()),
                source: e,
            })
        })?;
        let log_err = log.try_clone().map_err(|e| {
            fail(PromError::Io {
                what: "duplicating the log file".into(),
                source: e,
            })
        })?;
        let data = dir.join(format!("data-{port}"));
        let child = Command::new(binary)
            .arg(format!("--config.file={}", config_file.display()))
            .arg(format!("--storage.tsdb.path={}", data.display()))
            .arg(format!("--web.listen-address={address}"))
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .spawn()
            .map_err(|e| {
                fail(PromError::Io {
                    what: format!("starting {}", binary.display()),
                    source: e,
                })
            })?;
        let mut prometheus = Prometheus {
            child,
            dir: dir.to_owned(),
            api: PromApi::new(format!("http://{address}")),
            address,
        };
        let started = Instant::now();
        loop {
            if prometheus.api.ready() {
                return Ok(prometheus);
            }
            let exited = matches!(prometheus.child.try_wait(), Ok(Some(_)));
            if exited || started.elapsed() > READY_TIMEOUT {
                let log = std::fs::read_to_string(&log_path).unwrap_or_default();
                let port_taken = log.contains("address already in use");
                prometheus.stop();
                let tail: Vec<&str> = log.lines().rev().take(15).collect();
                let tail: Vec<&str> = tail.into_iter().rev().collect();
                // The directory stays for the caller to retry in or remove.
                prometheus.dir = PathBuf::new();
                return Err((
                    PromError::NotReady {
                        waited: started.elapsed(),
                        log: tail.join("\n"),
                    },
                    port_taken,
                ));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The client for its API.
    pub fn api(&self) -> &PromApi {
        &self.api
    }

    /// `127.0.0.1:PORT`, where it listens (its `instance` label when it scrapes itself).
    pub fn address(&self) -> &str {
        &self.address
    }

    /// Its log so far (for a failing test's message).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("prometheus.log")).unwrap_or_default()
    }

    fn stop(&mut self) {
        if let Ok(Some(_)) = self.child.try_wait() {
            return;
        }
        if let Ok(pid) = i32::try_from(self.child.id()) {
            let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
        }
        let deadline = Instant::now() + STOP_GRACE;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        self.stop();
        if !self.dir.as_os_str().is_empty() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// A YAML string in single quotes (the only escape is a doubled quote).
fn quoted(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

fn render_config(config: &PrometheusConfig, own_address: &str) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "global:");
    let _ = writeln!(
        out,
        "  scrape_interval: {}",
        format_duration(config.scrape_interval)
    );
    let _ = writeln!(
        out,
        "  evaluation_interval: {}",
        format_duration(config.evaluation_interval)
    );
    let _ = writeln!(out, "rule_files:");
    for f in &config.rule_files {
        let _ = writeln!(out, "  - {}", quoted(&f.display().to_string()));
    }
    let _ = writeln!(out, "scrape_configs:");
    let own = ScrapeJob::new("prometheus", [own_address.to_owned()]);
    let jobs = config.jobs.iter().chain(config.scrape_self.then_some(&own));
    for job in jobs {
        let _ = writeln!(out, "  - job_name: {}", quoted(&job.name));
        let _ = writeln!(out, "    metrics_path: {}", quoted(&job.metrics_path));
        let _ = writeln!(out, "    static_configs:");
        let _ = writeln!(out, "      - targets:");
        for t in &job.targets {
            let _ = writeln!(out, "          - {}", quoted(t));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_configuration_names_every_job_target_and_rule_file() {
        let config = PrometheusConfig {
            jobs: vec![ScrapeJob::new(
                "tracer",
                ["127.0.0.1:1".to_owned(), "127.0.0.1:2".to_owned()],
            )],
            rule_files: vec![PathBuf::from("/x/it's.yml")],
            scrape_self: true,
            ..PrometheusConfig::default()
        };
        let yaml = render_config(&config, "127.0.0.1:9");
        assert!(yaml.contains("scrape_interval: 1s"), "{yaml}");
        assert!(yaml.contains("  - '/x/it''s.yml'"), "{yaml}");
        assert!(yaml.contains("job_name: 'tracer'"), "{yaml}");
        assert!(yaml.contains("- '127.0.0.1:2'"), "{yaml}");
        assert!(yaml.contains("job_name: 'prometheus'"), "{yaml}");
        assert!(yaml.contains("- '127.0.0.1:9'"), "{yaml}");
    }
}
