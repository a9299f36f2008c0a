//! `cargo xtask bench-analyze`: `tracer analyze` on a large capture, against `tshark`.
//!
//! The large capture is the seed fixture (both sides merged) replayed back to back many
//! times, each copy shifted in time so its connections follow the previous copy's. Printed:
//! packets/s and peak memory of `tracer analyze`, the same for `tshark -T fields` extracting
//! the HTTP status and TCP flags (on a prefix: tshark is slow), their ratio, and tracer's
//! peak memory at half the size — equal peaks show that memory follows the open
//! connections, not the file. Targets: ≥ 10× tshark, ≥ 1M packets/s on one core.

use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{bail, Context, Result};

#[derive(clap::Args)]
pub struct BenchArgs {
    /// Copies of the seed fixture in the large capture.
    #[arg(long, default_value_t = 200)]
    copies: u32,
    /// The fixture to replay (a directory under tests/fixtures).
    #[arg(long, default_value = "seed")]
    fixture: String,
    /// Keep the generated captures (their directory is printed), e.g. to profile.
    #[arg(long)]
    keep: bool,
    /// Copies in the prefix given to tshark.
    #[arg(long, default_value_t = 10)]
    tshark_copies: u32,
}

/// One pcap record: (timestamp ns, captured bytes, original length).
type Record = (i64, Vec<u8>, u32);

pub fn bench_analyze(args: &BenchArgs) -> Result<()> {
    let tracer = crate::build_tracer()?;
    let fixtures = crate::workspace_root()
        .join("tests/fixtures")
        .join(&args.fixture);
    let mut records = read_pcap(&fixtures.join("client.pcap"))?;
    records.extend(read_pcap(&fixtures.join("upstream.pcap"))?);
    records.sort_by_key(|r| r.0);
    let (first, last) = (
        records.first().map_or(0, |r| r.0),
        records.last().map_or(0, |r| r.0),
    );
    // Each copy starts 5 s after the previous one ended: every connection has closed.
    let period = last - first + 5_000_000_000;
    let dir = std::env::temp_dir().join(format!("tracer-bench-analyze-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let big = dir.join("big.pcap");
    let half = dir.join("half.pcap");
    let small = dir.join("small.pcap");
    let n_big = write_copies(&big, &records, period, args.copies)?;
    let n_half = write_copies(&half, &records, period, args.copies / 2)?;
    let n_small = write_copies(&small, &records, period, args.tshark_copies)?;

    let (t_secs, t_peak) = timed(
        Command::new(&tracer)
            .arg("analyze")
            .arg(&big)
            .args(["--format", "json"]),
    )?;
    let (_, t_half_peak) = timed(
        Command::new(&tracer)
            .arg("analyze")
            .arg(&half)
            .args(["--format", "json"]),
    )?;
    let tracer_pps = n_big as f64 / t_secs;
    println!(
        "bench-analyze: seed fixture x {} = {n_big} packets ({} MiB)",
        args.copies,
        file_mib(&big)
    );
    println!(
        "  tracer analyze: {t_secs:.2} s, {:.2}M packets/s, peak memory {} MiB",
        tracer_pps / 1e6,
        t_peak / 1024
    );
    println!(
        "  tracer analyze at half the size ({n_half} packets): peak memory {} MiB",
        t_half_peak / 1024
    );
    match crate::lab_program("tshark") {
        Some(tshark) => {
            let (s_secs, s_peak) = timed(Command::new(tshark).arg("-r").arg(&small).args([
                "-T",
                "fields",
                "-e",
                "tcp.flags",
                "-e",
                "http.response.code",
            ]))?;
            let tshark_pps = n_small as f64 / s_secs;
            println!("  tshark -T fields (http.response.code, tcp.flags) on {n_small} packets: {s_secs:.2} s, {:.0} packets/s, peak memory {} MiB", tshark_pps, s_peak / 1024);
            println!(
                "  ratio tracer/tshark (packets/s): {:.1}x (target >= 10x)",
                tracer_pps / tshark_pps
            );
        }
        None => println!("  tshark not installed: no baseline (apt-get install tshark)"),
    }
    println!(
        "  target >= 1M packets/s on one core: {}",
        if tracer_pps >= 1e6 { "met" } else { "NOT met" }
    );
    if args.keep {
        println!("  captures kept in {}", dir.display());
    } else {
        std::fs::remove_dir_all(&dir).ok();
    }
    Ok(())
}

fn file_mib(p: &Path) -> u64 {
    std::fs::metadata(p).map_or(0, |m| m.len() >> 20)
}

/// Runs `cmd` with its output discarded; returns wall seconds and its peak RSS in KiB.
fn timed(cmd: &mut Command) -> Result<(f64, u64)> {
    let start = Instant::now();
    let mut child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting the benchmark program")?;
    let pid = child.id();
    let mut peak = 0u64;
    loop {
        if let Some(st) = child.try_wait()? {
            if !st.success() {
                let mut err = String::new();
                if let Some(mut e) = child.stderr.take() {
                    let _ = std::io::Read::read_to_string(&mut e, &mut err);
                }
                bail!("benchmark program failed ({st}): {err}");
            }
            break;
        }
        peak = peak.max(crate::bench::peak_rss_kib(pid));
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    Ok((start.elapsed().as_secs_f64(), peak))
}

/// Reads a classic little-endian pcap (what tcpdump writes here).
fn read_pcap(path: &Path) -> Result<Vec<Record>> {
    let b = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let magic = b.get(..4).context("empty file")?;
    let nano = match magic {
        [0xd4, 0xc3, 0xb2, 0xa1] => false,
        [0x4d, 0x3c, 0xb2, 0xa1] => true,
        _ => bail!("{}: not a little-endian pcap file", path.display()),
    };
    let u32_at = |o: usize| -> Result<u32> {
        Ok(u32::from_le_bytes(
            b.get(o..o + 4).context("truncated")?.try_into()?,
        ))
    };
    let mut out = Vec::new();
    let mut o = 24;
    while o + 16 <= b.len() {
        let (sec, frac, cap, orig) = (
            u32_at(o)?,
            u32_at(o + 4)?,
            u32_at(o + 8)? as usize,
            u32_at(o + 12)?,
        );
        let data = b
            .get(o + 16..o + 16 + cap)
            .context("truncated record")?
            .to_vec();
        let ns = i64::from(sec) * 1_000_000_000 + i64::from(frac) * if nano { 1 } else { 1000 };
        out.push((ns, data, orig));
        o += 16 + cap;
    }
    Ok(out)
}

/// Writes `copies` copies of `records`, copy k shifted by k × `period`; returns packets.
fn write_copies(path: &PathBuf, records: &[Record], period: i64, copies: u32) -> Result<u64> {
    let mut w = BufWriter::with_capacity(1 << 20, std::fs::File::create(path)?);
    // nanosecond pcap, Ethernet, snaplen 65535
    w.write_all(&[
        0x4d, 0x3c, 0xb2, 0xa1, 2, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0, 0, 1, 0, 0, 0,
    ])?;
    let mut n = 0u64;
    for k in 0..i64::from(copies) {
        for (ts, data, orig) in records {
            let t = ts + k * period;
            w.write_all(&u32::try_from(t / 1_000_000_000)?.to_le_bytes())?;
            w.write_all(&u32::try_from(t % 1_000_000_000)?.to_le_bytes())?;
            w.write_all(&u32::try_from(data.len())?.to_le_bytes())?;
            w.write_all(&orig.to_le_bytes())?;
            w.write_all(data)?;
            n += 1;
        }
    }
    w.flush()?;
    Ok(n)
}
