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

/// One round of load: (requests per second, worker CPU ns per request).
fn round(port: u16, worker: u32, args: &BenchArgs) -> Result<(f64, f64)> {
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
    ))
}

pub fn bench_tls(args: &BenchArgs) -> Result<()> {
    let nginx = start_nginx()?;
    let master = nginx.child.id();
    let worker = worker_of(master)?;
    println!(
        "bench-tls: nginx (TLS, keep-alive, `return 200`) on 127.0.0.1:{}, wrk -c{} for {} s a round, {} rounds of each kind",
        nginx.port, args.connections, args.seconds, args.rounds
    );
    let mut results: Vec<Vec<(f64, f64)>> = vec![Vec::new(); Mode::ALL.len()];
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
            let res = round(nginx.port, worker, args)?;
            if let Some(p) = &mut probe {
                let _ = p.drain(); // what the kernel queued, read as a capture would
            }
            drop(probe);
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
    Ok(())
}
