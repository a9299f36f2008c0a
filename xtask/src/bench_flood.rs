//! `cargo xtask bench-flood`: `tracer analyze`'s peak memory under a flood of half-open
//! connections, for a growing flood.
//!
//! For each size N it writes a pcap of N SYN-only connections (every SYN from a new
//! client address and port to one server, none answered: a SYN flood or a connect storm
//! to a dead upstream) at a fixed rate, runs `tracer analyze` on it and prints the peak
//! resident memory (the kernel's own maximum, from `wait4`) and the connections evicted.
//! The baseline is the smallest flood of the same run: with a bounded connection table the
//! peak stays flat (ratio ≈ 1) however long the flood, where an unbounded one grows with
//! N. Target: 300k half-open connections in at most 256 MiB.

use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{bail, Context, Result};

#[derive(clap::Args)]
pub struct FloodArgs {
    /// Flood sizes (SYN-only connections), the first one the baseline.
    #[arg(long, value_delimiter = ',', default_values_t = [10_000u64, 100_000, 300_000, 1_000_000, 3_000_000])]
    sizes: Vec<u64>,
    /// SYNs per second in the generated captures.
    #[arg(long, default_value_t = 100_000)]
    rate: u64,
    /// Passed to `tracer analyze --max-connections` (default: tracer's own default).
    #[arg(long, value_name = "N")]
    max_connections: Option<u64>,
    /// Keep the generated captures (their directory is printed).
    #[arg(long)]
    keep: bool,
    /// Measure this `tracer` binary (e.g. an older build) instead of building the
    /// workspace's.
    #[arg(long, value_name = "PATH")]
    tracer: Option<PathBuf>,
}

/// The memory target: 300k half-open connections in at most this many MiB.
const TARGET_MIB: u64 = 256;
const TARGET_AT: u64 = 300_000;

pub fn bench_flood(args: &FloodArgs) -> Result<()> {
    if args.sizes.is_empty() || args.rate == 0 {
        bail!("give at least one size and a rate above 0");
    }
    let tracer = match &args.tracer {
        Some(t) => t.clone(),
        None => crate::build_tracer()?,
    };
    let dir = std::env::temp_dir().join(format!("tracer-bench-flood-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    println!(
        "bench-flood: tracer analyze on N SYN-only connections at {} SYN/s, max connections {}",
        args.rate,
        args.max_connections
            .map_or_else(|| "tracer's default".to_owned(), |n| n.to_string())
    );
    println!(
        "  {:>9}  {:>9}  {:>8}  {:>10}  {:>9}  {:>7}",
        "N", "peak MiB", "vs base", "evicted", "seconds", "B/conn"
    );
    let mut base: Option<u64> = None;
    let mut at_target: Option<u64> = None;
    for &n in &args.sizes {
        let pcap = dir.join(format!("flood-{n}.pcap"));
        write_flood(&pcap, n, args.rate)?;
        let mut cmd = Command::new(&tracer);
        cmd.arg("analyze").arg(&pcap).args(["--format", "json"]);
        if let Some(m) = args.max_connections {
            cmd.args(["--max-connections", &m.to_string()]);
        }
        let run = run_measured(&mut cmd)?;
        std::fs::remove_file(&pcap).ok();
        let evicted = serde_json::from_slice::<serde_json::Value>(&run.stdout)
            .ok()
            .and_then(|j| j["capture"]["evicted_connections"].as_u64())
            .unwrap_or(0);
        let b = *base.get_or_insert(run.peak_kib);
        if n == TARGET_AT {
            at_target = Some(run.peak_kib);
        }
        let per_conn = (run.peak_kib.saturating_sub(b) * 1024)
            .checked_div(n.saturating_sub(args.sizes[0]))
            .unwrap_or(0);
        println!(
            "  {n:>9}  {:>9}  {:>7.2}x  {evicted:>10}  {:>9.2}  {per_conn:>7}",
            run.peak_kib / 1024,
            run.peak_kib as f64 / b as f64,
            run.secs
        );
    }
    println!(
        "  baseline: the first flood ({} connections); B/conn: peak growth over it per added connection",
        args.sizes[0]
    );
    match at_target {
        Some(kib) => println!(
            "  target: {TARGET_AT} half-open connections in <= {TARGET_MIB} MiB: {} ({} MiB)",
            if kib / 1024 <= TARGET_MIB {
                "met"
            } else {
                "NOT met"
            },
            kib / 1024
        ),
        None => println!("  target: not measured (add {TARGET_AT} to --sizes)"),
    }
    if args.keep {
        println!("  directory kept: {}", dir.display());
    } else {
        std::fs::remove_dir_all(&dir).ok();
    }
    Ok(())
}

struct Measured {
    secs: f64,
    peak_kib: u64,
    stdout: Vec<u8>,
}

/// Runs `cmd` to its end; its wall time, its peak resident memory (`ru_maxrss` from
/// `wait4`, the kernel's own high-water mark) and its standard output.
fn run_measured(cmd: &mut Command) -> Result<Measured> {
    let start = Instant::now();
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting tracer")?;
    let mut stdout = Vec::new();
    let mut stderr = String::new();
    // Read both pipes before waiting so that a full pipe cannot stall the child.
    let err_pipe = child.stderr.take();
    let err_reader = std::thread::spawn(move || {
        let mut s = String::new();
        if let Some(mut e) = err_pipe {
            let _ = std::io::Read::read_to_string(&mut e, &mut s);
        }
        s
    });
    if let Some(mut o) = child.stdout.take() {
        std::io::Read::read_to_end(&mut o, &mut stdout)?;
    }
    if let Ok(s) = err_reader.join() {
        stderr = s;
    }
    let pid = libc::pid_t::try_from(child.id()).context("child pid")?;
    let mut status = 0;
    // SAFETY: an all-zero `rusage` is a valid value of this plain C struct.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `pid` is our own child, not yet reaped (std's `Child` only reaps in `wait`,
    // which is never called); `status` and `usage` are valid for writes.
    let r = unsafe { libc::wait4(pid, &raw mut status, 0, &raw mut usage) };
    if r != pid {
        bail!("wait4 on tracer: {}", std::io::Error::last_os_error());
    }
    let secs = start.elapsed().as_secs_f64();
    if !libc::WIFEXITED(status) || libc::WEXITSTATUS(status) != 0 {
        bail!("tracer analyze failed (wait status {status}): {stderr}");
    }
    Ok(Measured {
        secs,
        peak_kib: u64::try_from(usage.ru_maxrss).unwrap_or(0),
        stdout,
    })
}

/// Writes a nanosecond Ethernet pcap of `n` SYNs, each opening a connection of its own:
/// client 10.a.b.c:port (a new address every 50,000 ports) to 10.255.0.1:80, `rate` per
/// second.
fn write_flood(path: &Path, n: u64, rate: u64) -> Result<PathBuf> {
    let mut w = BufWriter::with_capacity(1 << 20, std::fs::File::create(path)?);
    w.write_all(&[
        0x4d, 0x3c, 0xb2, 0xa1, 2, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0, 0, 1, 0, 0, 0,
    ])?;
    let start_ns: u64 = 1_800_000_000_000_000_000;
    let gap_ns = 1_000_000_000 / rate;
    let mut frame = syn_frame();
    for i in 0..n {
        let ts = start_ns + i * gap_ns;
        let host = u32::try_from(i / 50_000 + 1).context("flood too large")?;
        let port = u16::try_from(10_000 + i % 50_000).context("port")?;
        frame[26..30].copy_from_slice(&(0x0a00_0000 | host).to_be_bytes());
        frame[34..36].copy_from_slice(&port.to_be_bytes());
        w.write_all(&u32::try_from(ts / 1_000_000_000)?.to_le_bytes())?;
        w.write_all(&u32::try_from(ts % 1_000_000_000)?.to_le_bytes())?;
        let len = u32::try_from(frame.len())?.to_le_bytes();
        w.write_all(&len)?;
        w.write_all(&len)?;
        w.write_all(&frame)?;
    }
    w.flush()?;
    Ok(path.to_path_buf())
}

/// Ethernet + IPv4 + TCP SYN to 10.255.0.1:80 (source address and port filled per packet).
fn syn_frame() -> [u8; 54] {
    [
        2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1, 0x08, 0x00, // Ethernet
        0x45, 0, 0, 40, 0, 1, 0x40, 0, 64, 6, 0, 0, 10, 0, 0, 1, 10, 255, 0, 1, // IPv4
        0x9c, 0x40, 0, 80, 0, 0, 0, 1, 0, 0, 0, 0, 0x50, 0x02, 0xff, 0xff, 0, 0, 0, 0, // TCP
    ]
}
