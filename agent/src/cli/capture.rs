//! `tracer capture`: one-shot live diagnosis of a proxy — packets from its interfaces and,
//! when permitted, the kernel probe on its sockets; each verdict printed as soon as it is
//! proven, the same report as `tracer analyze` at the end, and an evidence bundle.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use anyhow::{bail, Result};
use tracer::bundle::BundleWriter;
use tracer::correlate::Endpoint;
use tracer::pod::{Node, Pod, PodError, PodRef};
use tracer::report::{self, CaptureSummary};
use tracer::session::{CopyMode, LiveSession, SessionOptions};

use super::Format;

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
    /// The proxy's Kubernetes pod, found on this node (no API server needed): capture in its
    /// network namespace and follow its sockets (a hostNetwork pod: in the host's, its
    /// process's sockets). The report names the pod, its containers and processes.
    #[arg(long, value_name = "[NAMESPACE/]NAME", conflicts_with_all = ["pid", "netns"])]
    pub pod: Option<String>,
    /// Where the kubelet keeps pod logs, which name this node's pods (with --pod).
    #[arg(long, value_name = "DIR", default_value = "/var/log/pods")]
    pub pods_dir: PathBuf,
    /// Stop after this long (`30s`, `5m`, `1h`); default: until Ctrl-C, SIGTERM or SIGHUP,
    /// which all end the capture the same way (report printed, bundle finished).
    #[arg(long, value_parser = parse_duration, value_name = "DURATION")]
    pub duration: Option<Duration>,
    /// Stop once this many client-facing 5xx have verdicts (1 or more).
    #[arg(long, value_name = "N", value_parser = parse_count)]
    pub until: Option<usize>,
    /// Capture filter in tcpdump syntax, instead of the kernel's selection; every matching
    /// segment is copied (as with --all-data).
    #[arg(long, value_name = "EXPR", conflicts_with = "full")]
    pub filter: Option<String>,
    #[command(flatten)]
    pub following: super::follow::Following,
    /// Copy every TCP segment, pure ACKs too (implies --all-data).
    #[arg(long)]
    pub full: bool,
    /// The default: let the kernel copy only what can explain a 5xx: control segments, each
    /// connection's first exchange, exchanges on a connection reused after --sparse-idle of
    /// quiet, 5xx response heads, and everything after a FIN or RST. Requests in the middle
    /// of busy keep-alive connections are not seen (their 5xx heads are).
    #[arg(long, conflicts_with_all = ["filter", "all_data", "full"])]
    pub sparse: bool,
    /// Do not attach uprobes to the proxy's TLS library (OpenSSL, Go's crypto/tls): the
    /// responses it encrypts for its clients are then not seen (see docs/tls.md for what the
    /// uprobes cost a busy TLS proxy).
    #[arg(long)]
    pub no_tls: bool,
    /// Also write the report as one self-contained HTML page (summary, timelines of
    /// examples, idle-time distributions) to FILE at the end.
    #[arg(long, value_name = "FILE")]
    pub html: Option<PathBuf>,
    /// Write the evidence bundle here: capture.pcap, events.jsonl, evidence.pcapng,
    /// report.json, report.html (`tracer analyze DIR` reads it again). The captures keep full packets by
    /// design (headers, cookies, query strings): a new directory is made 0700, the files
    /// 0600; packets reach the disk every second, so a kill loses at most the last one.
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// With --out: write into a directory that already holds files (tracer's own files
    /// there are replaced, nothing else is touched).
    #[arg(long, requires = "out")]
    pub force: bool,
    /// The proxy's address (IP or IP:PORT of its listener); inferred when absent.
    #[arg(long, value_name = "ADDR[:PORT]")]
    pub proxy: Option<Endpoint>,
    /// An upstream's address (IP or IP:PORT); inferred when absent.
    #[arg(long, value_name = "ADDR[:PORT]")]
    pub upstream: Option<Endpoint>,
    /// Report format at the end.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
    /// Show each listed verdict's evidence timeline.
    #[arg(short, long)]
    pub verbose: bool,
    #[command(flatten)]
    pub listing: super::Listing,
    /// Show query values (`?token=…`) and user information of request targets in the
    /// reports; by default they read `<redacted>`, as they often carry secrets.
    #[arg(long)]
    pub show_query: bool,
}

impl Args {
    /// How the reports are written.
    fn report_options(&self) -> report::Options {
        report::Options {
            verbose: self.verbose,
            show_query: self.show_query,
            limit: self.listing.limit(),
        }
    }

    /// Where the packets come from, as the text report names it.
    fn read(&self) -> Vec<String> {
        let mut where_ = if self.interfaces.is_empty() {
            vec!["interface any".to_owned()]
        } else {
            self.interfaces
                .iter()
                .map(|i| format!("interface {i}"))
                .collect()
        };
        if let Some(n) = &self.netns {
            where_.push(format!("network namespace {n}"));
        }
        if let Some(p) = self.pid {
            where_.push(format!("pid {p}"));
        }
        if let Some(p) = &self.pod {
            where_.push(format!("pod {p}"));
        }
        where_
    }
}

/// The shortest `--snaplen` that still shows an HTTP status line behind the longest headers
/// tracer decodes: Ethernet with two VLAN tags (22), IPv6 (40), TCP with every option (60),
/// `HTTP/1.1 502` (12).
const MIN_SNAPLEN: u32 = 22 + 40 + 60 + 12;

pub fn run(args: &Args) -> ExitCode {
    match capture(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            note!("tracer capture: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// `--snaplen`: from [`MIN_SNAPLEN`] to what a pcap file holds.
pub fn parse_snaplen(s: &str) -> Result<u32, String> {
    let n: u32 = s
        .trim()
        .parse()
        .map_err(|_| format!("`{s}` is not a number of bytes"))?;
    if n < MIN_SNAPLEN {
        return Err(format!(
            "{n} bytes cannot hold an HTTP status line: behind the link, IP and TCP headers \
             it needs at least {MIN_SNAPLEN} (the default 512 also keeps the headers tracer \
             reads)"
        ));
    }
    if n > tracer::capture::WRITE_SNAPLEN {
        return Err(format!(
            "{n} bytes is more than a pcap file holds per packet ({})",
            tracer::capture::WRITE_SNAPLEN
        ));
    }
    Ok(n)
}

/// `--until`: 1 or more (0 would stop before anything was seen).
fn parse_count(s: &str) -> Result<usize, String> {
    match s.trim().parse::<usize>() {
        Ok(0) => Err("0 would stop before anything was captured: give 1 or more".into()),
        Ok(n) => Ok(n),
        Err(_) => Err(format!("`{s}` is not a count")),
    }
}

/// A duration that is not zero (a zero `--duration` would stop before anything was seen,
/// a zero selection window would keep nothing whole).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let d = parse_any_duration(s)?;
    if d.is_zero() {
        return Err(format!(
            "`{s}` is zero: give a duration such as 30s, 5m, 1h"
        ));
    }
    Ok(d)
}

/// `30s`, `5m`, `1h`, `250ms`, or plain seconds.
fn parse_any_duration(s: &str) -> Result<Duration, String> {
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

/// What to capture in and follow: from `--pod`, else `--pid` or `--netns`.
struct Target {
    netns: Option<PathBuf>,
    /// The one process whose sockets the probe follows.
    pid: Option<u32>,
    pod: Option<Pod>,
}

fn target(args: &Args) -> Result<Target> {
    let Some(wanted) = &args.pod else {
        return Ok(Target {
            netns: netns_path(args)?,
            pid: args.pid,
            pod: None,
        });
    };
    let wanted = PodRef::parse(wanted).map_err(PodError::BadName)?;
    let pod = Node::with_pods_dir(&args.pods_dir).resolve(&wanted)?;
    let follow = pod.follow();
    note!("tracer capture: {}", pod.describe());
    if let Some(note) = &follow.note {
        note!("note: {note}");
    }
    Ok(Target {
        netns: Some(follow.netns_path),
        pid: follow.pid,
        pod: Some(pod),
    })
}

/// The JSON report with the pod added as its last field, `pod`.
fn with_pod(report: String, pod: Option<&Pod>) -> Result<String> {
    let Some(pod) = pod else {
        return Ok(report);
    };
    let body = report
        .trim_end()
        .strip_suffix('}')
        .context("the JSON report is not an object")?
        .trim_end();
    let pod = serde_json::to_string_pretty(pod)?.replace('\n', "\n  ");
    Ok(format!("{body},\n  \"pod\": {pod}\n}}"))
}

/// The report on stdout; with `--pod`, the pod first (text) or as the field `pod` (JSON).
fn print_report(
    args: &Args,
    pod: Option<&Pod>,
    analysis: &tracer::engine::Analysis,
    capture: CaptureSummary,
) -> Result<()> {
    use std::io::Write as _;
    let opts = args.report_options();
    match (pod, args.format) {
        (None, _) => super::print_report(analysis, capture, args.format, opts, &args.read())?,
        (Some(pod), Format::Text) => {
            writeln!(std::io::stdout(), "{}", pod.describe())?;
            super::print_report(analysis, capture, args.format, opts, &args.read())?;
        }
        (Some(pod), Format::Json) => writeln!(
            std::io::stdout(),
            "{}",
            with_pod(
                report::json::render_with(analysis, capture, opts),
                Some(pod)
            )?
        )?,
    }
    Ok(())
}

/// Which packets the kernel copies, from the flags.
fn copy_mode(args: &Args) -> CopyMode {
    if let Some(f) = &args.filter {
        CopyMode::Filter(f.clone())
    } else if args.full {
        CopyMode::Full
    } else {
        args.following.copy_mode()
    }
}

/// Whether the kernel selects the packets (the default; `--all-data`, `--full` and
/// `--filter` copy every matching segment instead).
#[cfg(test)]
fn wants_sparse(args: &Args) -> bool {
    matches!(copy_mode(args), CopyMode::Sparse { .. })
}

fn capture(args: &Args) -> Result<()> {
    // Ctrl-C, SIGTERM (timeout, systemd, Docker, Kubernetes) and SIGHUP (a dropped SSH
    // session) all end the capture the same way: the report and the bundle are finished.
    let stop = Arc::new(AtomicBool::new(false));
    {
        let stop = stop.clone();
        if let Err(e) = ctrlc::set_handler(move || stop.store(true, Ordering::Relaxed)) {
            note!("warning: cannot handle Ctrl-C, SIGTERM and SIGHUP ({e}): they will end tracer without its report");
        }
    }
    if let Some(out) = &args.out {
        tracer::bundle::check_dir(out, args.force)?;
    }
    let target = target(args)?;
    let netns = target.netns.clone();
    let interfaces = if args.interfaces.is_empty() {
        vec!["any".to_owned()]
    } else {
        args.interfaces.clone()
    };
    let bundle = args
        .out
        .as_deref()
        .map(|dir| BundleWriter::create(dir, args.force))
        .transpose()?;
    let (mut session, notices) = LiveSession::start(SessionOptions {
        interfaces: interfaces.clone(),
        netns: netns.clone(),
        pid: target.pid,
        ports: args.following.ports.clone(),
        snaplen: args.following.snaplen,
        copy: copy_mode(args),
        probe: !args.following.no_probe,
        proxy: args.proxy,
        upstream: args.upstream,
        bundle,
        keep_verdicts: true,
        max_connections: args.following.max_connections,
        tls: !args.no_tls,
    })?;
    for n in &notices {
        note!("{n}");
    }
    note!(
        "tracer capture: {} in {}{}; Ctrl-C to stop",
        interfaces.join(", "),
        netns.as_ref().map_or_else(
            || "this network namespace".to_owned(),
            |p| p.display().to_string()
        ),
        if session.has_probe() {
            ", kernel probe attached"
        } else {
            ""
        }
    );
    if session.is_sparse() {
        note!(
            "tracer capture: sparse: the kernel keeps control segments, new connections' first \
             exchange, reuses after {:?} quiet, 5xx heads and closing connections",
            args.following.sparse_idle
        );
    }

    let started = Instant::now();
    let tty = std::io::stderr().is_terminal();
    let mut last_progress = Instant::now();
    let mut errors = 0usize;
    loop {
        let ending = stop.load(Ordering::Relaxed)
            || args.duration.is_some_and(|d| started.elapsed() >= d)
            || args.until.is_some_and(|n| errors >= n);
        if ending {
            break;
        }
        for v in session.step(Duration::from_millis(50))? {
            if v.downstream.is_some() && v.status.is_some_and(|s| s >= 500) {
                errors += 1;
            }
            if tty {
                note_raw!("\r\x1b[K");
            }
            let line = report::text::verdict_with(&v, args.report_options());
            // stdout carries the report; in JSON it must stay one JSON document.
            match args.format {
                Format::Text => {
                    use std::io::Write as _;
                    let _ = write!(std::io::stdout(), "{line}");
                }
                Format::Json => note_raw!("{line}"),
            }
        }
        if tty && last_progress.elapsed() >= Duration::from_secs(1) {
            last_progress = Instant::now();
            let s = session.stats();
            note_raw!(
                "\r\x1b[K{:>6.1}s  {} packets, {} connections, {} kernel events, {} verdicts, capture drops {}, probe lost {}",
                started.elapsed().as_secs_f64(),
                s.packets,
                s.connections,
                s.events,
                s.verdicts,
                s.packets_dropped,
                s.events_lost,
            );
        }
    }
    if tty {
        note_raw!("\r\x1b[K");
    }
    let end = session.finish()?;
    for s in &end.interfaces {
        if s.dropped + s.if_dropped + s.backlog_dropped > 0 {
            note!(
                "warning: {}: {} packets dropped by the kernel, {} by the interface, {} while tracer was behind",
                s.interface, s.dropped, s.if_dropped, s.backlog_dropped
            );
        }
    }
    let lost = end.stats.events_lost;
    note!(
        "tracer capture: done: {} packets, {} kernel events, {lost} kernel events lost",
        end.stats.packets,
        end.stats.events
    );
    if lost > 0 {
        note!("warning: the kernel probe lost {lost} events (ring buffer full): kernel evidence may be incomplete");
    }
    // The bundle is finished even when the report cannot be printed (its terminal gone).
    let printed = print_report(args, target.pod.as_ref(), &end.analysis, end.capture);
    let html = if args.html.is_some() || end.bundle.is_some() {
        report::html::render(
            &end.analysis,
            end.capture,
            args.report_options(),
            &args.read(),
        )
    } else {
        String::new()
    };
    if let Some(b) = end.bundle {
        let dir = b.finish(
            &end.analysis.verdicts,
            &with_pod(
                report::json::render_with(&end.analysis, end.capture, args.report_options()),
                target.pod.as_ref(),
            )?,
            &html,
        )?;
        note!(
            "evidence bundle: {} (tracer analyze {} reads it again)",
            dir.display(),
            dir.display()
        );
    }
    if let Some(path) = &args.html {
        super::write_html(path, &html)?;
    }
    printed.context("cannot print the report")
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

    #[test]
    fn zero_stops_nothing_and_is_refused() {
        for zero in ["0", "0s", "0ms", "0.0m"] {
            assert!(parse_duration(zero).unwrap_err().contains("zero"), "{zero}");
        }
        assert!(parse_count("0").is_err());
        assert_eq!(parse_count("3"), Ok(3));
        assert!(parse(&["--until", "0"]).is_err());
        assert!(parse(&["--duration", "0s"]).is_err());
        assert!(parse(&["--sparse-hot", "0ms"]).is_err());
    }

    #[test]
    fn a_snaplen_must_hold_a_status_line() {
        assert!(parse_snaplen("10").unwrap_err().contains("status line"));
        assert!(parse_snaplen(&(MIN_SNAPLEN - 1).to_string()).is_err());
        assert_eq!(parse_snaplen(&MIN_SNAPLEN.to_string()), Ok(MIN_SNAPLEN));
        assert_eq!(parse(&[]).unwrap().following.snaplen, 512);
        assert!(parse_snaplen("1000000").is_err());
    }

    #[test]
    fn force_needs_an_output_directory() {
        assert!(parse(&["--force"]).is_err());
        assert!(parse(&["--out", "x", "--force"]).unwrap().force);
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
    fn a_pod_replaces_pid_and_netns() {
        let a = parse(&["--pod", "shop/web-0"]).unwrap();
        assert_eq!(a.pod.as_deref(), Some("shop/web-0"));
        assert_eq!(a.pods_dir, Path::new("/var/log/pods"));
        assert!(parse(&["--pod", "web-0", "--pid", "7"]).is_err());
        assert!(parse(&["--pod", "web-0", "--netns", "x"]).is_err());
    }

    #[test]
    fn the_pod_is_the_json_reports_last_field() {
        let pod = Pod {
            namespace: "shop".into(),
            name: "web-0".into(),
            uid: "6f1c2b8e-3d4a-4f5b-9c8d-0123456789ab".into(),
            qos: tracer::pod::Qos::Burstable,
            cgroup_driver: tracer::pod::Driver::Systemd,
            containers: vec!["nginx".into()],
            processes: Vec::new(),
            netns: 4_026_532_000,
            host_network: false,
            netns_path: PathBuf::from("/proc/1/ns/net"),
        };
        let report = "{\n  \"schema\": \"tracer.report/v1\",\n  \"verdicts\": []\n}".to_owned();
        assert_eq!(with_pod(report.clone(), None).unwrap(), report);
        let out = with_pod(report, Some(&pod)).unwrap();
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["schema"], "tracer.report/v1");
        assert_eq!(v["pod"]["name"], "web-0");
        assert_eq!(v["pod"]["containers"][0], "nginx");
        assert_eq!(v["pod"]["host_network"], false);
        assert!(out.starts_with("{\n  \"schema\""), "{out}");
        assert!(out.ends_with("\n  }\n}"), "{out}");
        assert!(with_pod("[]".into(), Some(&pod)).is_err());
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
