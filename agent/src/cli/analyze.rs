//! `tracer analyze FILE… [--proxy ADDR[:PORT]] [--upstream ADDR[:PORT]] [--format text|json]
//! [-v] [--show-query] [--html FILE] [--evidence DIR [--force]]`
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use super::Format;
use anyhow::{Context, Result};
use tracer::bundle;
use tracer::capture::{open_many, CaptureStats};
use tracer::correlate::Endpoint;
use tracer::engine::{Analysis, Config, Engine};
use tracer::kernel::Ledger;
use tracer::report::sides::Sides;
use tracer::report::{self, CaptureSummary, Options};

/// What `-` stands for: the standard input, opened again as a file (a pipe reads the
/// same way).
const STDIN: &str = "/dev/stdin";

#[derive(clap::Args)]
pub struct Args {
    /// Capture files (pcap or pcapng), merged by time; `-` reads one from standard input;
    /// or a bundle directory written by `tracer capture --out DIR` (its packets and kernel
    /// events).
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
    /// The proxy's address (IP or IP:PORT of its listener); inferred when absent.
    #[arg(long, value_name = "ADDR[:PORT]")]
    pub proxy: Option<Endpoint>,
    /// An upstream's address (IP or IP:PORT); inferred when absent.
    #[arg(long, value_name = "ADDR[:PORT]")]
    pub upstream: Option<Endpoint>,
    /// The files hold a sparse capture (`tracer capture` by default): sequence gaps are
    /// deliberate, not losses. Implied by a sparse bundle.
    #[arg(long)]
    pub sparse: bool,
    /// Most connections tracked at once; when full, the oldest idle or half-open are evicted first (counted in the report; verdicts on them are unexplained).
    #[arg(long, value_name = "N", default_value_t = tracer::flow::DEFAULT_MAX_CONNECTIONS)]
    pub max_connections: usize,
    /// Report format.
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
    /// Also write the report as one self-contained HTML page (summary, timelines of
    /// examples, idle-time distributions) to FILE.
    #[arg(long, value_name = "FILE")]
    pub html: Option<PathBuf>,
    /// Write the evidence bundle here: `evidence.pcapng` (the implicated connections, each
    /// packet a verdict rests on commented, opens in Wireshark), `report.json` and
    /// `report.html`. evidence.pcapng keeps full packets by design (headers, cookies,
    /// query strings): a new directory is made 0700, the files 0600.
    #[arg(long, value_name = "DIR")]
    pub evidence: Option<PathBuf>,
    /// With --evidence: write into a directory that already holds files (tracer's own
    /// files there are replaced, nothing else is touched).
    #[arg(long, requires = "evidence")]
    pub force: bool,
}

pub fn run(args: &Args) -> ExitCode {
    match analyze(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tracer analyze: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn analyze(args: &Args) -> Result<()> {
    if let Some(dir) = &args.evidence {
        bundle::check_dir(dir, args.force)?;
    }
    let (files, ledger) = inputs(&args.files, args.evidence.is_some())?;
    let sparse = args.sparse || args.files.iter().any(|p| bundle::is_sparse(p));
    let mut segments = open_many(&files).context("cannot read the capture")?;
    let mut engine = Engine::new(Config {
        proxy: args.proxy,
        upstream: args.upstream,
        sparse,
    });
    engine.set_max_connections(args.max_connections);
    if let Some(ledger) = ledger {
        engine.set_ledger(ledger);
    }
    for dir in args.files.iter().filter(|p| bundle::is_bundle(p)) {
        let copies = tracer::plaintext::read_bundle(dir)
            .with_context(|| format!("cannot read the bundle {}", dir.display()))?;
        for rec in copies {
            engine.plaintext(rec);
        }
    }
    let mut sides = Sides::new();
    for seg in segments.by_ref() {
        sides.push(&seg);
        engine.push(&seg);
    }
    let stats = segments.stats();
    warn_about_files(&stats);
    decodable(&stats)?;
    let analysis = engine.finish();
    let capture = CaptureSummary {
        packets: stats.packets,
        dropped_or_missing: analysis.flow.gaps,
        sparse,
        one_side: sides.one_side(args.proxy, args.upstream),
    };
    let opts = Options {
        verbose: args.verbose,
        show_query: args.show_query,
        limit: args.listing.limit(),
    };
    let read: Vec<String> = args.files.iter().map(|p| p.display().to_string()).collect();
    super::print_report(&analysis, capture, args.format, opts, &read)?;
    if let Some(path) = &args.html {
        super::write_html(path, &report::html::render(&analysis, capture, opts, &read))?;
    }
    if let Some(dir) = &args.evidence {
        write_evidence(dir, args.force, &files, &analysis, capture, opts, &read)
            .context("cannot write the evidence bundle")?;
    }
    Ok(())
}

/// Each file's warnings, and a word about a file that added nothing next to others that
/// did (a lone file that adds nothing is an error, see [`decodable`]).
fn warn_about_files(stats: &CaptureStats) {
    for f in &stats.files {
        for w in &f.warnings {
            eprintln!("warning: {}: {w}", f.path);
        }
    }
    if stats.files.len() < 2 {
        return;
    }
    for f in &stats.files {
        if f.packets == 0 {
            eprintln!(
                "warning: {}: holds no packets (a capture header and nothing after it); the \
                 other files are analysed without it",
                f.path
            );
        } else if f.tcp_segments == 0 {
            eprintln!(
                "warning: {}: none of its {} packets is a TCP segment tracer can read ({}); \
                 the other files are analysed without it",
                f.path,
                f.packets,
                skipped(f.undecodable, f.non_tcp, f.fragments)
            );
        }
    }
}

/// What was skipped, in words.
fn skipped(undecodable: u64, non_tcp: u64, fragments: u64) -> String {
    format!(
        "{undecodable} undecodable or on an unsupported link type, {non_tcp} of other \
         protocols, {fragments} IP fragments"
    )
}

/// An analysis of nothing is not an all-clear: no packets, or no TCP segment among them,
/// is an error.
fn decodable(stats: &CaptureStats) -> Result<()> {
    if stats.packets == 0 {
        anyhow::bail!("the capture holds no packets");
    }
    if stats.tcp_segments == 0 {
        anyhow::bail!(
            "nothing could be decoded: none of the {} packets is a TCP segment tracer can \
             read ({}), so no verdict is possible",
            stats.packets,
            skipped(stats.undecodable, stats.non_tcp, stats.fragments)
        );
    }
    Ok(())
}

/// Capture files to read, and the probe events when a `tracer capture --out` bundle
/// directory is among the inputs (its `capture.pcap` and `events.jsonl`). `-` is the
/// standard input, which can be read once only (so not with `--evidence`, which reads the
/// captures twice).
fn inputs(paths: &[PathBuf], read_twice: bool) -> Result<(Vec<PathBuf>, Option<Ledger>)> {
    let mut files = Vec::new();
    let mut ledger: Option<Ledger> = None;
    let mut stdin = false;
    for p in paths {
        if p.as_os_str() == "-" {
            if stdin {
                anyhow::bail!("`-` (standard input) is given twice: it can be read once");
            }
            if read_twice {
                anyhow::bail!(
                    "--evidence reads the captures twice, and standard input can be read \
                     once: save it to a file first"
                );
            }
            if std::io::stdin().is_terminal() {
                anyhow::bail!(
                    "`-` reads a capture from standard input, which is a terminal: pipe one \
                     in (e.g. `tcpdump -w - … | tracer analyze -`)"
                );
            }
            stdin = true;
            files.push(PathBuf::from(STDIN));
        } else if bundle::is_bundle(p) {
            files.push(p.join(bundle::CAPTURE));
            let events = bundle::read_events(p).context("cannot read the bundle")?;
            for w in &events.warnings {
                eprintln!("warning: {w}");
            }
            match &mut ledger {
                None => ledger = Some(events.ledger),
                Some(_) => anyhow::bail!("give one bundle directory at a time"),
            }
        } else if p.is_dir() {
            anyhow::bail!("{} is a directory without {}: give capture files or a `tracer capture --out` bundle", p.display(), bundle::CAPTURE);
        } else {
            files.push(p.clone());
        }
    }
    Ok((files, ledger))
}

/// Second pass over the files: the implicated connections, and the report, into a
/// private directory (see [`bundle::prepare_dir`]).
fn write_evidence(
    dir: &Path,
    force: bool,
    files: &[PathBuf],
    a: &Analysis,
    capture: CaptureSummary,
    opts: Options,
    read: &[String],
) -> Result<()> {
    bundle::prepare_dir(dir, force)?;
    bundle::write_evidence(files, &dir.join(bundle::EVIDENCE), &a.verdicts)?;
    bundle::write_private(
        &dir.join(bundle::REPORT),
        report::json::render_with(a, capture, opts).as_bytes(),
    )?;
    bundle::write_private(
        &dir.join(bundle::HTML),
        report::html::render(a, capture, opts, read).as_bytes(),
    )?;
    Ok(())
}
