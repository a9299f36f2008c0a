//! `cargo xtask bench-capture`: what attaching `tracer capture` costs a busy proxy.
//!
//! nginx → nginx with upstream keep-alive in the lab's namespaces, `wrk` from the client
//! namespace at a fixed concurrency. Rounds alternate between the proxy alone (the
//! baseline), with `tcpdump -w /dev/null` on both interfaces and tracer's filter (what the
//! kernel's copy to userspace alone costs, for reference), with `tracer capture
//! --no-probe` (packets only) and with `tracer capture` (packets and kernel probe); the
//! ratios of throughput and p99 latency to the baseline are printed, with tracer's CPU,
//! peak memory and kernel events per request. Targets: at most 3% throughput loss and 5%
//! p99 increase.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use tracer_lab::net::Net;
use tracer_lab::procs::Procs;
use tracer_lab::scenario::{Launcher, PROXY_PORT, UPSTREAM_PORT};

#[derive(clap::Args)]
pub struct BenchArgs {
    /// Seconds per round.
    #[arg(long, default_value_t = 8)]
    seconds: u32,
    /// Rounds of each kind (baseline, with tracer), alternated.
    #[arg(long, default_value_t = 2)]
    rounds: u32,
    /// wrk connections.
    #[arg(long, default_value_t = 32)]
    connections: u32,
}

#[derive(Debug, Clone, Copy, Default)]
struct Round {
    rps: f64,
    p99_ms: f64,
    requests: f64,
}

pub fn bench_capture(args: &BenchArgs) -> Result<()> {
    tracer_lab::run::preflight()?;
    let wrk = tracer_lab::scenario::require_program("wrk", "wrk")?;
    let tracer = crate::build_tracer()?;
    let dir = std::env::temp_dir().join(format!("tracer-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let net = Net::create()?;
    let h = net.hosts().clone();
    let mut procs = Procs::new(h.clone(), dir.clone());
    start_nginx(
        &mut procs,
        &h.upstream_ns,
        "backend",
        &backend_conf(&dir, &h),
    )?;
    procs.wait_listening(&h.upstream_ns, h.upstream_ip, UPSTREAM_PORT)?;
    start_nginx(&mut procs, &h.proxy_ns, "front", &front_conf(&dir, &h))?;
    procs.wait_listening(&h.proxy_ns, h.proxy_front_ip, PROXY_PORT)?;
    let url = format!("http://{}:{PROXY_PORT}/", h.proxy_front_ip);

    // Warm up the keep-alive pools and caches.
    run_wrk(&wrk, &h.client_ns, &url, 2, args.connections)?;
    // Three kinds of round, alternated: the proxy alone, with `tracer capture --no-probe`
    // (packets only), with `tracer capture` (packets and kernel probe).
    let modes: [(&str, &[&str]); 4] = [
        ("proxy alone", &[]),
        ("reference: tcpdump -w /dev/null, same filter", &[]),
        ("control only no probe", &["--no-probe", "--filter", "tcp[tcpflags] & (tcp-syn|tcp-fin|tcp-rst) != 0"]),
        ("control + probe", &["--filter", "tcp[tcpflags] & (tcp-syn|tcp-fin|tcp-rst) != 0"]),
    ];
    let mut rounds: Vec<Vec<Round>> = vec![Vec::new(); modes.len()];
    let mut cost: Vec<(f64, u64, u64)> = vec![(0.0, 0, 0); modes.len()];
    for round in 0..args.rounds {
        for (m, (name, extra)) in modes.iter().enumerate() {
            let r = if m == 0 {
                run_wrk(&wrk, &h.client_ns, &url, args.seconds, args.connections)?
            } else if m == 1 {
                // What copying the same packets to userspace costs without any analysis.
                for (i, ifname) in [&h.front_if, &h.back_if].into_iter().enumerate() {
                    let mut td =
                        Command::new(tracer_lab::scenario::require_program("tcpdump", "tcpdump")?);
                    td.args([
                        "-i",
                        ifname,
                        "-n",
                        "-s",
                        "512",
                        "-B",
                        "65536",
                        "-w",
                        "/dev/null",
                    ])
                    .arg(tracer::live::default_filter(&[]));
                    procs.spawn(&h.proxy_ns, &format!("tcpdump-ref-{i}"), td)?;
                }
                std::thread::sleep(Duration::from_millis(1500));
                let r = run_wrk(&wrk, &h.client_ns, &url, args.seconds, args.connections)?;
                procs.stop("tcpdump-ref-0");
                procs.stop("tcpdump-ref-1");
                r
            } else {
                let err = dir.join(format!("tracer-{round}-{m}.err"));
                let mut t = start_tracer(&tracer, &h, args.seconds + 3, extra, &err)?;
                std::thread::sleep(Duration::from_millis(1500)); // probe attached, captures open
                let r = run_wrk(&wrk, &h.client_ns, &url, args.seconds, args.connections)?;
                let (c, p) = usage(t.id());
                let _ = t.wait();
                cost[m].0 += c;
                cost[m].1 = cost[m].1.max(p);
                cost[m].2 += kernel_events(&err);
                r
            };
            eprintln!(
                "round {round}: {name}: {:.0} req/s, p99 {:.2} ms",
                r.rps, r.p99_ms
            );
            rounds[m].push(r);
        }
    }
    drop(procs);
    drop(net);
    let _ = std::fs::remove_dir_all(&dir);

    let mean = |v: &[Round], f: fn(&Round) -> f64| v.iter().map(f).sum::<f64>() / v.len() as f64;
    let (b_rps, b_p99) = (mean(&rounds[0], |r| r.rps), mean(&rounds[0], |r| r.p99_ms));
    println!(
        "bench-capture: nginx -> nginx, wrk -c{} x {} s, {} rounds of each",
        args.connections, args.seconds, args.rounds
    );
    println!("  baseline (proxy alone): {b_rps:.0} req/s, p99 {b_p99:.2} ms");
    for (m, (name, _)) in modes.iter().enumerate().skip(1) {
        let (rps, p99) = (mean(&rounds[m], |r| r.rps), mean(&rounds[m], |r| r.p99_ms));
        let requests: f64 = rounds[m].iter().map(|r| r.requests).sum();
        let (cpu, peak, events) = cost[m];
        let per_round = cpu / f64::from(args.rounds);
        if m == 1 {
            println!("  {name}: {rps:.0} req/s, p99 {p99:.2} ms");
        } else {
            println!("  with tracer capture, {name}: {rps:.0} req/s, p99 {p99:.2} ms");
        }
        println!(
            "    throughput ratio {:.3} (loss {:.1}%, target <= 3%), p99 ratio {:.3} (increase {:.1}%, target <= 5%)",
            rps / b_rps,
            (1.0 - rps / b_rps) * 100.0,
            p99 / b_p99,
            (p99 / b_p99 - 1.0) * 100.0
        );
        if m == 1 {
            continue;
        }
        println!(
            "    tracer: {per_round:.2} CPU s per round ({:.1}% of one core), peak memory {} MiB, kernel events per request {:.3}",
            per_round / f64::from(args.seconds + 3) * 100.0,
            peak / 1024,
            events as f64 / requests.max(1.0)
        );
    }
    Ok(())
}

fn backend_conf(dir: &Path, h: &tracer_lab::scenario::Hosts) -> String {
    format!(
        "worker_processes 1;\npid {d}/backend.pid;\nerror_log {d}/backend-error.log;\nevents {{ worker_connections 4096; }}\n\
         http {{\n access_log off;\n client_body_temp_path {d}/tmp-b;\n proxy_temp_path {d}/tmp-b;\n\
         keepalive_requests 100000;\n server {{\n  listen {ip}:{UPSTREAM_PORT};\n  location / {{ return 200 \"ok\\n\"; }}\n }}\n}}\n",
        d = dir.display(),
        ip = h.upstream_ip
    )
}

fn front_conf(dir: &Path, h: &tracer_lab::scenario::Hosts) -> String {
    format!(
        "worker_processes 1;\npid {d}/front.pid;\nerror_log {d}/front-error.log;\nevents {{ worker_connections 4096; }}\n\
         http {{\n access_log off;\n client_body_temp_path {d}/tmp-f;\n proxy_temp_path {d}/tmp-f;\n\
         upstream app {{ server {up}:{UPSTREAM_PORT}; keepalive 64; keepalive_requests 100000; }}\n\
         server {{\n  listen {ip}:{PROXY_PORT};\n  keepalive_requests 100000;\n  location / {{\n   proxy_pass http://app;\n   proxy_http_version 1.1;\n   proxy_set_header Connection \"\";\n  }}\n }}\n}}\n",
        d = dir.display(),
        up = h.upstream_ip,
        ip = h.proxy_front_ip
    )
}

fn start_nginx(procs: &mut Procs, ns: &str, name: &str, conf: &str) -> Result<()> {
    let path = procs.dir().join(format!("{name}.conf"));
    std::fs::write(&path, conf)?;
    let mut cmd = Command::new(tracer_lab::scenario::require_program("nginx", "nginx")?);
    cmd.arg("-p")
        .arg(procs.dir())
        .arg("-c")
        .arg(&path)
        .args(["-g", "daemon off;"]);
    procs.spawn(ns, name, cmd)
}

fn start_tracer(
    tracer: &Path,
    h: &tracer_lab::scenario::Hosts,
    seconds: u32,
    extra: &[&str],
    err: &Path,
) -> Result<Child> {
    Command::new(tracer)
        .arg("capture")
        .args(["--netns", &h.proxy_ns, "-i", &h.front_if, "-i", &h.back_if])
        .args(["--duration", &format!("{seconds}s")])
        .args(extra)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(err)?)
        .spawn()
        .context("starting tracer capture")
}

/// The kernel events `tracer capture` reported in its closing line on stderr.
fn kernel_events(err: &Path) -> u64 {
    std::fs::read_to_string(err)
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            l.strip_prefix("tracer capture: done: ")?
                .split(", ")
                .find_map(|p| p.strip_suffix(" kernel events")?.parse().ok())
        })
        .unwrap_or(0)
}

fn run_wrk(wrk: &Path, ns: &str, url: &str, seconds: u32, connections: u32) -> Result<Round> {
    let out = Command::new("ip")
        .args(["netns", "exec", ns])
        .arg(wrk)
        .args([
            "-t2",
            &format!("-c{connections}"),
            &format!("-d{seconds}s"),
            "--latency",
            url,
        ])
        .output()
        .context("running wrk")?;
    let text = String::from_utf8_lossy(&out.stdout);
    parse_wrk(&text).with_context(|| {
        format!(
            "unexpected wrk output:\n{text}{}",
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// Requests/sec, the 99% latency and the request count from `wrk --latency`.
fn parse_wrk(text: &str) -> Result<Round> {
    let mut r = Round::default();
    for line in text.lines().map(str::trim) {
        if let Some(v) = line.strip_prefix("Requests/sec:") {
            r.rps = v.trim().parse()?;
        } else if let Some(v) = line.strip_prefix("99%") {
            r.p99_ms = latency_ms(v.trim())?;
        } else if line.contains("requests in") {
            r.requests = line.split_whitespace().next().unwrap_or("0").parse()?;
        }
    }
    if r.rps == 0.0 || r.p99_ms == 0.0 {
        bail!("no throughput or p99 in wrk's output");
    }
    Ok(r)
}

fn latency_ms(v: &str) -> Result<f64> {
    let (num, unit) = v.split_at(v.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(v.len()));
    let n: f64 = num.parse()?;
    Ok(match unit {
        "us" => n / 1000.0,
        "ms" => n,
        "s" => n * 1000.0,
        "m" => n * 60_000.0,
        _ => bail!("unknown latency unit in {v}"),
    })
}

/// CPU seconds (user + system) and peak resident memory (KiB) of a running process.
fn usage(pid: u32) -> (f64, u64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, r)| r.split_whitespace().collect())
        .unwrap_or_default();
    let cpu = [11, 12]
        .iter()
        .filter_map(|&i| fields.get(i)?.parse::<f64>().ok())
        .sum::<f64>()
        / CLK_TCK;
    (cpu, peak_rss_kib(pid))
}

/// VmHWM (peak resident set) of a live process, KiB; 0 once it is gone.
pub fn peak_rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))?
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
        .unwrap_or(0)
}

/// Clock ticks per second of /proc/PID/stat times (USER_HZ: 100 on Linux x86_64 and arm64).
const CLK_TCK: f64 = 100.0;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrk_latency_output_is_parsed() {
        let out = "Running 8s test @ http://198.18.1.2:8080/\n  2 threads and 32 connections\n\
                   Latency Distribution\n     50%  600.00us\n     75%    0.90ms\n     90%    1.20ms\n     99%    3.50ms\n\
                   180000 requests in 8.00s, 30.00MB read\nRequests/sec:  22500.00\nTransfer/sec:      3.75MB\n";
        let r = parse_wrk(out).unwrap();
        assert!((r.rps - 22500.0).abs() < 1e-9);
        assert!((r.p99_ms - 3.5).abs() < 1e-9);
        assert!((r.requests - 180_000.0).abs() < 1e-9);
        assert!((latency_ms("850.00us").unwrap() - 0.85).abs() < 1e-9);
    }
}
