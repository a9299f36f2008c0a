//! `cargo xtask bench-tls`: what the TLS uprobes cost a proxy per request.
//!
//! nginx terminates TLS on loopback (a certificate made for the run) and answers every
//! request itself; `wrk` keeps its connections alive, so each request is one `SSL_read` and
//! one `SSL_write` in nginx's worker. Rounds alternate three kinds: nothing attached (the
//! baseline), the probe's tracepoints following nginx (`tls: false`), and the probe with the
//! TLS uprobes on nginx's OpenSSL (`tls: true`, as `tracer capture` runs). For each, the
//! worker's own CPU per request (from `/proc/PID/schedstat`, in nanoseconds: uprobes run in
//! the traced task) and the throughput; the uprobes' cost is the difference between the last
//! two, measured in the same run.
//!
//! Where that time goes: the kernel counts the TLS programs' runs (BPF run-time statistics,
//! enabled for the run), which gives the uprobe hits per request, entry and return; and
//! what one hit costs this machine is measured in the same run on a function of this
//! program ([`crate::bench_tls_hit`]). Hits × cost per hit should account for the
//! difference; what the BPF programs themselves take is printed too.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context, Result};

use crate::bench::median;
use tracer::probe::{Probe, ProbeConfig};

#[derive(clap::Args)]
pub struct BenchArgs {
    /// Seconds of load per round.
    #[arg(long, default_value_t = 4)]
    seconds: u32,
    /// Rounds of each kind, alternated.
    #[arg(long, default_value_t = 5)]
    rounds: u32,
    /// wrk's connections.
    #[arg(long, default_value_t = 16)]
    connections: u32,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Nothing,
    Probe,
    ProbeTls,
}

impl Mode {
    const ALL: [Mode; 3] = [Mode::Nothing, Mode::Probe, Mode::ProbeTls];

    fn name(self) -> &'static str {
        match self {
            Mode::Nothing => "nginx alone (baseline)",
            Mode::Probe => "probe tracepoints on nginx",
            Mode::ProbeTls => "probe + TLS uprobes on nginx",
        }
    }
}

struct Nginx {
    child: Child,
    dir: PathBuf,
    port: u16,
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn start_nginx() -> Result<Nginx> {
    let dir = std::env::temp_dir().join(format!("tracer-bench-tls-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("tmp"))?;
    let out = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
        ])
        .args([
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=bench.tracer",
            "-keyout",
        ])
        .arg(dir.join("key.pem"))
        .arg("-out")
        .arg(dir.join("cert.pem"))
        .output()
        .context("running openssl req (apt-get install openssl)")?;
    if !out.status.success() {
        bail!("openssl req: {}", String::from_utf8_lossy(&out.stderr));
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let d = dir.display();
    let conf = format!(
        "worker_processes 1;\npid {d}/nginx.pid;\nerror_log {d}/error.log;\n\
         events {{ worker_connections 1024; }}\n\
         http {{\n  access_log off;\n  client_body_temp_path {d}/tmp;\n  proxy_temp_path {d}/tmp;\n\
         \x20 fastcgi_temp_path {d}/tmp;\n  uwsgi_temp_path {d}/tmp;\n  scgi_temp_path {d}/tmp;\n\
         \x20 keepalive_requests 1000000;\n\
         \x20 server {{\n    listen 127.0.0.1:{port} ssl;\n\
         \x20   ssl_certificate {d}/cert.pem;\n    ssl_certificate_key {d}/key.pem;\n\
         \x20   location / {{ return 200 \"ok\\n\"; }}\n  }}\n}}\n"
    );
    std::fs::write(dir.join("nginx.conf"), conf)?;
    let child = Command::new("nginx")
        .arg("-p")
        .arg(&dir)
        .arg("-c")
        .arg(dir.join("nginx.conf"))
        .args(["-g", "daemon off;"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting nginx (apt-get install nginx)")?;
    let n = Nginx { child, dir, port };
    for _ in 0..100 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok(n);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    bail!("nginx did not listen on 127.0.0.1:{port}")
}

/// nginx's worker: the child of its master.
fn worker_of(master: u32) -> Result<u32> {
    for _ in 0..100 {
        let children = std::fs::read_to_string(format!("/proc/{master}/task/{master}/children"))
            .unwrap_or_default();
        if let Some(w) = children
            .split_whitespace()
            .next()
            .and_then(|p| p.parse().ok())
        {
            return Ok(w);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    bail!("nginx {master} has no worker")
}

/// Nanoseconds on CPU of `pid` (its main thread: nginx's worker has one).
fn cpu_ns(pid: u32) -> Result<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/schedstat"))?;
    s.split_whitespace()
        .next()
        .and_then(|v| v.parse().ok())
        .context("reading schedstat")
}

/// One round of load: (requests per second, worker CPU ns per request, requests).
fn round(port: u16, worker: u32, args: &BenchArgs) -> Result<(f64, f64, f64)> {
    let before = cpu_ns(worker)?;
    let out = Command::new("wrk")
        .args(["-t1", "-c", &args.connections.to_string()])
        .args(["-d", &format!("{}s", args.seconds)])
        .arg(format!("https://127.0.0.1:{port}/"))
        .output()
        .context("running wrk (apt-get install wrk)")?;
    let after = cpu_ns(worker)?;
    let text = String::from_utf8_lossy(&out.stdout);
    // "  123456 requests in 4.00s, 12.34MB read"
    let requests: f64 = text
        .lines()
        .find(|l| l.contains(" requests in "))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .context("wrk printed no request count")?;
    if requests < 1.0 {
        bail!("wrk made no request: {text}");
    }
    Ok((
        requests / f64::from(args.seconds),
        (after - before) as f64 / requests,
        requests,
    ))
}

/// The TLS programs' (runs, ns) so far, entry and return.
fn tls_runs(p: &tracer::probe::Probe) -> [(u64, u64); 2] {
    let mut out = [(0, 0); 2];
    for (name, runs, time) in p.tls_program_stats() {
        let i = usize::from(name != tracer_common::tls::tls_names::ENTRY);
        out[i] = (runs, u64::try_from(time.as_nanos()).unwrap_or(u64::MAX));
    }
    out
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

pub fn bench_tls(args: &BenchArgs) -> Result<()> {
    let nginx = start_nginx()?;
    let master = nginx.child.id();
    let worker = worker_of(master)?;
    println!(
        "bench-tls: nginx (TLS, keep-alive, `return 200`) on 127.0.0.1:{}, wrk -c{} for {} s a round, {} rounds of each kind; load average {} at the start",
        nginx.port, args.connections, args.seconds, args.rounds, loadavg()
    );
    // Run-time statistics of BPF programs (the TLS programs' hits), while this is open.
    let _stats = aya::sys::enable_stats(aya::sys::Stats::RunTime)
        .map_err(|e| eprintln!("warning: BPF run-time statistics unavailable: {e}"))
        .ok();
    let tracefs = tracer::probe::ensure_tracefs().context("finding tracefs")?;
    let mut hit = Vec::new();
    let mut results: Vec<Vec<(f64, f64)>> = vec![Vec::new(); Mode::ALL.len()];
    // (entry hits, return hits, BPF ns) per request, of each TLS round
    let mut hits: Vec<(f64, f64, f64)> = Vec::new();
    for r in 0..args.rounds {
        for (i, mode) in Mode::ALL.iter().enumerate() {
            let probe = match mode {
                Mode::Nothing => None,
                Mode::Probe | Mode::ProbeTls => Some(
                    Probe::load(&ProbeConfig {
                        pid: Some(master),
                        ports: vec![nginx.port],
                        tls: *mode == Mode::ProbeTls,
                        ..ProbeConfig::default()
                    })
                    .context("loading the probe (run as root)")?,
                ),
            };
            if let Some(p) = &probe {
                if *mode == Mode::ProbeTls && !p.tls().iter().any(|t| t.probes > 0) {
                    bail!("no TLS uprobe attached to nginx: {:?}", p.tls());
                }
            }
            let mut probe = probe;
            let runs0 = probe.as_ref().map(tls_runs);
            let (rps, cpu, requests) = round(nginx.port, worker, args)?;
            let res = (rps, cpu);
            if let (Some(p), Some(r0)) = (&probe, runs0) {
                let r1 = tls_runs(p);
                if *mode == Mode::ProbeTls && r1[0].0 > r0[0].0 {
                    hits.push((
                        (r1[0].0 - r0[0].0) as f64 / requests,
                        (r1[1].0 - r0[1].0) as f64 / requests,
                        ((r1[0].1 - r0[0].1) + (r1[1].1 - r0[1].1)) as f64 / requests,
                    ));
                }
            }
            if let Some(p) = &mut probe {
                let _ = p.drain(); // what the kernel queued, read as a capture would
            }
            drop(probe);
            if *mode == Mode::Nothing {
                // one uprobe hit on this machine, now (between rounds, as loaded as they are)
                hit.push(crate::bench_tls_hit::uprobe_hit_us(tracefs.path(), 1)?);
            }
            eprintln!(
                "round {}: {:<32} {:>9.0} req/s {:>8.2} µs nginx CPU/request",
                r + 1,
                mode.name(),
                res.0,
                res.1 / 1e3
            );
            results[i].push(res);
        }
    }
    let med =
        |i: usize, f: fn(&(f64, f64)) -> f64| median(&results[i].iter().map(f).collect::<Vec<_>>());
    let base_cpu = med(0, |r| r.1);
    let base_rps = med(0, |r| r.0);
    println!(
        "{:<32} {:>10} {:>22} {:>12}",
        "kind (medians)", "req/s", "nginx CPU per request", "vs baseline"
    );
    for (i, mode) in Mode::ALL.iter().enumerate() {
        let cpu = med(i, |r| r.1);
        println!(
            "{:<32} {:>10.0} {:>19.2} µs {:>+11.1}%",
            mode.name(),
            med(i, |r| r.0),
            cpu / 1e3,
            (cpu / base_cpu - 1.0) * 100.0
        );
    }
    let uprobes = med(2, |r| r.1) - med(1, |r| r.1);
    println!(
        "TLS uprobes: {:+.2} µs of nginx CPU per request ({:+.1}% of nginx alone); throughput {:+.1}% against nginx alone",
        uprobes / 1e3,
        uprobes / base_cpu * 100.0,
        (med(2, |r| r.0) / base_rps - 1.0) * 100.0
    );
    let entry_us = median(&hit.iter().map(|h| h.0).collect::<Vec<_>>());
    let both_us = median(&hit.iter().map(|h| h.1).collect::<Vec<_>>());
    println!(
        "one uprobe hit on this machine: {entry_us:.2} µs (entry probe), {both_us:.2} µs (entry and return probe)"
    );
    if hits.is_empty() {
        println!("uprobe hits per request: not counted (no BPF run-time statistics)");
    } else {
        let entries = median(&hits.iter().map(|h| h.0).collect::<Vec<_>>());
        let returns = median(&hits.iter().map(|h| h.1).collect::<Vec<_>>());
        let bpf_ns = median(&hits.iter().map(|h| h.2).collect::<Vec<_>>());
        let expected = entries * entry_us + returns * (both_us - entry_us).max(0.0);
        println!(
            "uprobe hits per request: {entries:.2} entry, {returns:.2} return; their BPF programs {:.2} µs per request; hits × cost per hit = {expected:.2} µs of the {:.2} µs measured",
            bpf_ns / 1e3,
            uprobes / 1e3
        );
    }
    println!("load average {} at the end", loadavg());
    Ok(())
}
