//! `tracer capture`: one-shot live diagnosis of a proxy — packets from its interfaces and,
//! when permitted, the kernel probe on its sockets; each verdict printed as soon as it is
//! proven, the same report as `tracer analyze` at the end, and an evidence bundle.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use tracer::bundle::BundleWriter;
use tracer::correlate::Endpoint;
use tracer::engine::{Config, Engine};
use tracer::kernel::{self, KernelEvent, Ledger};
use tracer::live::{default_filter, full_filter, LiveCapture, LiveOptions, LivePacket};
use tracer::probe::{ClockAlignment, Probe, ProbeConfig, Selector};
use tracer::report::{self, CaptureSummary};

use super::Format;

/// Packets are held this long (capture time) so that the interfaces' streams can be merged
/// in time order before the engine sees them.
const REORDER_NS: i64 = 20_000_000;
/// The kernel hands packets over in blocks at most this late (ms): far fewer wake-ups
/// than one per packet on a busy proxy, and shorter than [`REORDER_NS`], so the
/// interfaces' blocks still merge in time order.
const BATCH_MS: u32 = 10;
/// Destroyed sockets' kernel records are kept this long (a verdict can come up to a few
/// minutes after its connection closed), longer when a verdict names them.
const KERNEL_KEEP_NS: i64 = 600_000_000_000;
/// Kernel capture buffer per interface.
const BUFFER_BYTES: u32 = 64 << 20;
/// The same when the kernel selects the packets (the default), handing over a fraction.
const SPARSE_BUFFER_BYTES: u32 = 8 << 20;

#[derive(clap::Args)]
pub struct Args {
    /// Interface to capture on (repeat for several); default `any`: every interface of the
    /// network namespace.
    #[arg(short = 'i', long = "interface", value_name = "IF")]
    pub interfaces: Vec<String>,
    /// Capture inside this network namespace: a name from `ip netns list`, or a path such as
    /// /proc/PID/ns/net.
    #[arg(long, value_name = "NAME|PATH", conflicts_with = "pid")]
    pub netns: Option<String>,
    /// The proxy's process id: capture in its network namespace and follow its sockets.
    #[arg(long, value_name = "PID")]
    pub pid: Option<u32>,
    /// Stop after this long (`30s`, `5m`, `1h`); default: until Ctrl-C.
    #[arg(long, value_parser = parse_duration, value_name = "DURATION")]
    pub duration: Option<Duration>,
    /// Stop once this many client-facing 5xx have verdicts.
    #[arg(long, value_name = "N")]
    pub until: Option<usize>,
    /// Capture filter in tcpdump syntax, instead of the kernel's selection; every matching
    /// segment is copied (as with --all-data).
    #[arg(long, value_name = "EXPR", conflicts_with = "full")]
    pub filter: Option<String>,
    /// Copy every TCP segment with data or SYN/FIN/RST instead of the kernel's selection:
    /// every request is seen, at several times the cost on a busy proxy.
    #[arg(long)]
    pub all_data: bool,
    /// Copy every TCP segment, pure ACKs too (implies --all-data).
    #[arg(long)]
    pub full: bool,
    /// The default: let the kernel copy only what can explain a 5xx: control segments, each
    /// connection's first exchange, exchanges on a connection reused after --sparse-idle of
    /// quiet, 5xx response heads, and everything after a FIN or RST. Requests in the middle
    /// of busy keep-alive connections are not seen (their 5xx heads are).
    #[arg(long, conflicts_with_all = ["filter", "all_data", "full"])]
    pub sparse: bool,
    /// With the kernel's selection: quiet time after which a connection's next exchange is
    /// captured.
    #[arg(long, value_parser = parse_duration, value_name = "DURATION", default_value = "500ms")]
    pub sparse_idle: Duration,
    /// With the kernel's selection: how long a connection is copied whole after its SYN,
    /// its first data, a reuse or the reply to a kept request. Longer keeps more of long
    /// responses, at a cost that grows with it on busy connections; a 5xx response head
    /// always keeps the next 250 ms.
    #[arg(long, value_parser = parse_duration, value_name = "DURATION", default_value = "25ms")]
    pub sparse_hot: Duration,
    /// Only these TCP ports (repeatable), for the capture filter and the probe.
    #[arg(long = "port", value_name = "PORT")]
    pub ports: Vec<u16>,
    /// Bytes kept of each packet (enough for HTTP message heads).
    #[arg(long, default_value_t = 512)]
    pub snaplen: u32,
    /// Packets only: do not load the kernel probe.
    #[arg(long)]
    pub no_probe: bool,
    /// Write the evidence bundle here: capture.pcap, events.jsonl, evidence.pcap,
    /// report.json (`tracer analyze DIR` reads it again).
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// The proxy's address (IP or IP:PORT of its listener); inferred when absent.
    #[arg(long, value_name = "ADDR[:PORT]")]
    pub proxy: Option<Endpoint>,
    /// An upstream's address (IP or IP:PORT); inferred when absent.
    #[arg(long, value_name = "ADDR[:PORT]")]
    pub upstream: Option<Endpoint>,
    /// Report format at the end.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
    /// Show each verdict's evidence timeline.
    #[arg(short, long)]
    pub verbose: bool,
}

pub fn run(args: &Args) -> ExitCode {
    match capture(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tracer capture: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// `30s`, `5m`, `1h`, `250ms`, or plain seconds.
fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = s.split_at(
        s.find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(s.len()),
    );
    let n: f64 = num
        .parse()
        .map_err(|_| format!("`{s}` is not a duration: use e.g. 30s, 5m, 1h"))?;
    let secs = match unit {
        "" | "s" => n,
        "ms" => n / 1000.0,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => return Err(format!("`{s}`: unknown unit `{unit}` (use ms, s, m or h)")),
    };
    Duration::try_from_secs_f64(secs).map_err(|_| format!("`{s}` is not a duration"))
}

/// The namespace file to enter, from `--netns` or `--pid`.
fn netns_path(args: &Args) -> Result<Option<PathBuf>> {
    if let Some(pid) = args.pid {
        let p = PathBuf::from(format!("/proc/{pid}/ns/net"));
        if !p.exists() {
            bail!("no process {pid} (or its network namespace is not readable: run as root)");
        }
        return Ok(Some(p));
    }
    let Some(ns) = &args.netns else {
        return Ok(None);
    };
    let named = Path::new("/run/netns").join(ns);
    let p = if !ns.contains('/') && named.exists() {
        named
    } else {
        PathBuf::from(ns)
    };
    if !p.exists() {
        bail!("network namespace `{ns}` not found: give a name from `ip netns list` or a path like /proc/PID/ns/net");
    }
    Ok(Some(p))
}

fn netns_inode(path: Option<&Path>) -> Option<u32> {
    use std::os::unix::fs::MetadataExt;
    let p = path.map_or_else(|| PathBuf::from("/proc/self/ns/net"), Path::to_path_buf);
    std::fs::metadata(p)
        .ok()
        .and_then(|m| u32::try_from(m.ino()).ok())
}

/// The loaded probe and its clock, its ring buffer drained by the capture loop itself just
/// before it hands packets to the engine. The kernel writes each event synchronously, so
/// every event up to the packets' release time is in the ring by then and verdicts find
/// their kernel evidence; and no thread wakes on a timer to read it (a reader thread
/// polling every 20 ms was half of tracer's wake-ups on a busy proxy).
struct ProbeSource {
    probe: Probe,
    clock: ClockAlignment,
    /// The last count of events the kernel could not queue.
    lost: u64,
}

impl ProbeSource {
    /// Every event waiting now, on the pcap clock.
    fn drain(&mut self) -> impl Iterator<Item = KernelEvent> + '_ {
        let clock = &self.clock;
        self.probe.drain().into_iter().map(|ev| KernelEvent {
            ts_ns: clock.to_unix_ns(ev.ktime_ns),
            event: ev,
        })
    }

    /// Events the kernel could not queue since load (a map read: call it now and then).
    fn lost(&mut self) -> u64 {
        if let Ok(n) = self.probe.lost() {
            self.lost = n;
        }
        self.lost
    }
}

fn probe_config(args: &Args, netns: Option<&Path>) -> ProbeConfig {
    ProbeConfig {
        ports: args.ports.clone(),
        netns: netns_inode(netns),
        pid: args.pid,
        // Reuse after a short idle is what races; writes in CLOSE_WAIT are always reported.
        idle_threshold: Duration::from_millis(1),
        sparse_idle: args.sparse_idle,
        sparse_hot: args.sparse_hot,
        tls: true,
    }
}

/// Whether the kernel selects the packets (the default; `--all-data`, `--full` and
/// `--filter` copy every matching segment instead).
fn wants_sparse(args: &Args) -> bool {
    !(args.all_data || args.full || args.filter.is_some())
}

/// The kernel's selection unless told otherwise: from the probe's object when it loaded,
/// else loaded on its own. `None` (with a warning) falls back to the ordinary capture
/// filter.
fn start_selector(
    args: &Args,
    netns: Option<&Path>,
    probe: Option<&mut ProbeSource>,
) -> Option<Selector> {
    if !wants_sparse(args) {
        return None;
    }
    let loaded = match probe {
        Some(p) => p.probe.selector(),
        None => Selector::load(&probe_config(args, netns)),
    };
    match loaded {
        Ok(s) => Some(s),
        Err(e) => {
            eprintln!("warning: the kernel's packet selection did not load ({e}); copying every data segment instead (as --all-data)");
            None
        }
    }
}

/// Loads the probe unless told not to; without it, says which proofs are weaker.
fn start_probe(args: &Args, netns: Option<&Path>) -> Option<ProbeSource> {
    let weaker = "packets only: verdicts cannot name the proxy's process, and a keep-alive \
                  race cannot be shown as fin_unread (the proxy wrote with the FIN already \
                  in its kernel)";
    if args.no_probe {
        eprintln!("note: --no-probe: {weaker}");
        return None;
    }
    let config = probe_config(args, netns);
    let probe = match Probe::load(&config) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("warning: kernel probe not loaded: {e}");
            eprintln!("note: {weaker}");
            return None;
        }
    };
    for w in probe.warnings() {
        eprintln!("warning: {w}");
    }
    for t in probe.tls() {
        let tag = if t.error.is_some() { "warning" } else { "note" };
        eprintln!("{tag}: TLS: {t}");
    }
    for a in probe.attached().iter().filter(|a| a.error.is_some()) {
        eprintln!(
            "warning: tracepoint {} not attached: {}",
            a.tracepoint,
            a.error.as_deref().unwrap_or("")
        );
    }
    let Some(clock) = ClockAlignment::sample(64) else {
        eprintln!("warning: cannot align the kernel's clock with the capture's; probe not used");
        return None;
    };
    Some(ProbeSource {
        probe,
        clock,
        lost: 0,
    })
}

#[derive(Default)]
struct Progress {
    packets: u64,
    events: u64,
    errors: usize,
    verdicts: usize,
}

#[allow(
    clippy::too_many_lines,
    reason = "one loop: sources in, verdicts out; split it and the data flow hides"
)]
fn capture(args: &Args) -> Result<()> {
    let netns = netns_path(args)?;
    let interfaces = if args.interfaces.is_empty() {
        vec!["any".to_owned()]
    } else {
        args.interfaces.clone()
    };
    let filter = args.filter.clone().unwrap_or_else(|| {
        if args.full {
            full_filter(&args.ports)
        } else {
            default_filter(&args.ports)
        }
    });
    let mut probe = start_probe(args, netns.as_deref());
    let selector = start_selector(args, netns.as_deref(), probe.as_mut());
    let sparse = selector.is_some();
    let mut live = LiveCapture::start(&LiveOptions {
        interfaces: interfaces.clone(),
        netns: netns.clone(),
        snaplen: args.snaplen,
        buffer_bytes: if sparse {
            SPARSE_BUFFER_BYTES
        } else {
            BUFFER_BYTES
        },
        filter,
        selector,
        keep_frames: args.out.is_some(),
        batch_ms: Some(BATCH_MS),
    })
    .context("cannot start the capture")?;
    let mut bundle = args.out.as_deref().map(BundleWriter::create).transpose()?;
    if let (Some(b), true) = (&bundle, sparse) {
        b.mark_sparse()?;
    }
    let stop = Arc::new(AtomicBool::new(false));
    {
        let stop = stop.clone();
        let _ = ctrlc::set_handler(move || stop.store(true, Ordering::Relaxed));
    }
    eprintln!(
        "tracer capture: {} in {}{}; Ctrl-C to stop",
        interfaces.join(", "),
        netns.as_ref().map_or_else(
            || "this network namespace".to_owned(),
            |p| p.display().to_string()
        ),
        if probe.is_some() {
            ", kernel probe attached"
        } else {
            ""
        }
    );
    if sparse {
        eprintln!(
            "tracer capture: sparse: the kernel keeps control segments, new connections' first \
             exchange, reuses after {:?} quiet, 5xx heads and closing connections",
            args.sparse_idle
        );
    }

    let started = Instant::now();
    let tty = std::io::stderr().is_terminal();
    let mut last_progress = Instant::now();
    let mut engine = Engine::new(Config {
        proxy: args.proxy,
        upstream: args.upstream,
        sparse,
    });
    let mut ledger = Ledger::new();
    let mut pinned = std::collections::HashSet::new();
    let mut last_evict = Instant::now();
    let mut held: Vec<LivePacket> = Vec::new();
    let mut newest = i64::MIN;
    let mut p = Progress::default();
    loop {
        let ending = stop.load(Ordering::Relaxed)
            || args.duration.is_some_and(|d| started.elapsed() >= d)
            || args.until.is_some_and(|n| p.errors >= n);
        // Packets: wait a little for the first, then take what is there.
        if let Ok(first) = live.packets().recv_timeout(Duration::from_millis(50)) {
            newest = newest.max(first.segment.ts_ns);
            held.push(first);
            while let Ok(next) = live.packets().try_recv() {
                newest = newest.max(next.segment.ts_ns);
                held.push(next);
                if held.len() >= 65_536 {
                    break;
                }
            }
        }
        // Kernel events first: a verdict made below may need them.
        if let Some(pr) = &mut probe {
            take_events(pr, &mut bundle, &mut ledger, &mut engine, &mut p)?;
        }
        // Release packets old enough that no other interface can still deliver earlier ones.
        held.sort_by_key(|lp| lp.segment.ts_ns);
        let cut = if ending {
            held.len()
        } else {
            held.partition_point(|lp| lp.segment.ts_ns <= newest - REORDER_NS)
        };
        for lp in held.drain(..cut) {
            if let (Some(b), Some(raw)) = (&mut bundle, &lp.raw) {
                b.packet(raw)?;
            }
            engine.push(&lp.segment);
            p.packets += 1;
        }
        for v in engine.new_verdicts() {
            if let Some(u) = &v.upstream {
                pinned.insert((u.proxy, u.server));
            }
            let mut shown = v.clone();
            kernel::enrich(&mut shown, &ledger);
            if shown.downstream.is_some() && shown.status.is_some_and(|s| s >= 500) {
                p.errors += 1;
            }
            p.verdicts += 1;
            if tty {
                eprint!("\r\x1b[K");
            }
            let line = report::text::verdict(&shown, args.verbose);
            // stdout carries the report; in JSON it must stay one JSON document.
            match args.format {
                Format::Text => print!("{line}"),
                Format::Json => eprint!("{line}"),
            }
        }
        if last_evict.elapsed() >= Duration::from_secs(10) {
            last_evict = Instant::now();
            ledger.evict(newest, KERNEL_KEEP_NS, &pinned);
        }
        if tty && last_progress.elapsed() >= Duration::from_secs(1) {
            last_progress = Instant::now();
            let drops: u64 = live
                .stats()
                .iter()
                .map(|s| s.dropped + s.if_dropped + s.backlog_dropped)
                .sum();
            let lost = probe.as_mut().map_or(0, ProbeSource::lost);
            eprint!(
                "\r\x1b[K{:>6.1}s  {} packets, {} connections, {} kernel events, {} verdicts, capture drops {drops}, probe lost {lost}",
                started.elapsed().as_secs_f64(),
                p.packets,
                engine.open_connections(),
                p.events,
                p.verdicts,
            );
        }
        if ending && held.is_empty() {
            break;
        }
    }
    if tty {
        eprint!("\r\x1b[K");
    }
    live.stop();
    let stats = live.stats();
    // The events of the last moments, for the verdicts `finish` still makes.
    if let Some(pr) = &mut probe {
        take_events(pr, &mut bundle, &mut ledger, &mut engine, &mut p)?;
    }
    let probe_lost = probe.as_mut().map_or(0, ProbeSource::lost);
    let mut analysis = engine.finish();
    for v in &mut analysis.verdicts {
        kernel::enrich(v, &ledger);
    }
    let dropped: u64 = stats
        .iter()
        .map(|s| s.dropped + s.if_dropped + s.backlog_dropped)
        .sum();
    let capture = CaptureSummary {
        packets: p.packets,
        dropped_or_missing: analysis.flow.gaps + dropped,
        sparse,
    };
    for s in &stats {
        if s.dropped + s.if_dropped + s.backlog_dropped > 0 {
            eprintln!(
                "warning: {}: {} packets dropped by the kernel, {} by the interface, {} while tracer was behind",
                s.interface, s.dropped, s.if_dropped, s.backlog_dropped
            );
        }
    }
    eprintln!(
        "tracer capture: done: {} packets, {} kernel events, {probe_lost} kernel events lost",
        p.packets, p.events
    );
    if probe_lost > 0 {
        eprintln!("warning: the kernel probe lost {probe_lost} events (ring buffer full): kernel evidence may be incomplete");
    }
    super::print_report(&analysis, capture, args.format, args.verbose)?;
    if let Some(b) = bundle {
        let dir = b.finish(
            &analysis.verdicts,
            &report::json::render(&analysis, capture),
        )?;
        eprintln!(
            "evidence bundle: {} (tracer analyze {} reads it again)",
            dir.display(),
            dir.display()
        );
    }
    Ok(())
}

/// Moves the probe's waiting events into the ledger (and the bundle), telling the engine
/// of the writes after an idle gap.
fn take_events(
    pr: &mut ProbeSource,
    bundle: &mut Option<BundleWriter>,
    ledger: &mut Ledger,
    engine: &mut Engine,
    p: &mut Progress,
) -> Result<()> {
    for ke in pr.drain() {
        if let Some(b) = bundle {
            b.event(&ke)?;
        }
        p.events += 1;
        if engine.kernel_plaintext(&ke) {
            continue;
        }
        if let Some(idle) = ledger.push(ke) {
            engine.kernel_send_idle(idle);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_take_units() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("2"), Ok(Duration::from_secs(2)));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("3d").is_err());
    }

    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        args: Args,
    }

    fn parse(argv: &[&str]) -> Result<Args, clap::Error> {
        use clap::Parser;
        Cli::try_parse_from(std::iter::once("capture").chain(argv.iter().copied())).map(|c| c.args)
    }

    #[test]
    fn the_kernel_selects_unless_told_to_copy_everything() {
        assert!(wants_sparse(&parse(&[]).unwrap()));
        assert!(wants_sparse(&parse(&["--sparse"]).unwrap()));
        assert!(!wants_sparse(&parse(&["--all-data"]).unwrap()));
        assert!(!wants_sparse(&parse(&["--full"]).unwrap()));
        assert!(!wants_sparse(&parse(&["--filter", "tcp port 80"]).unwrap()));
        for both in [
            &["--sparse", "--all-data"][..],
            &["--sparse", "--full"],
            &["--sparse", "--filter", "tcp"],
        ] {
            assert!(parse(both).is_err(), "{both:?}");
        }
    }
}
