//! `tracer analyze FILE… [--proxy ADDR[:PORT]] [--upstream ADDR[:PORT]] [--format text|json]
//! [-v] [--evidence DIR]`
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use super::Format;
use anyhow::{Context, Result};
use tracer::bundle;
use tracer::capture::open_many;
use tracer::correlate::Endpoint;
use tracer::engine::{Analysis, Config, Engine};
use tracer::kernel::{self, Ledger};
use tracer::report::{self, CaptureSummary};

#[derive(clap::Args)]
pub struct Args {
    /// Capture files (pcap or pcapng), merged by time; or a bundle directory written by
    /// `tracer capture --out DIR` (its packets and kernel events).
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
    /// Show each verdict's evidence timeline.
    #[arg(short, long)]
    pub verbose: bool,
    /// Write the evidence bundle here: `evidence.pcap` (the implicated connections, opens
    /// in Wireshark) and `report.json`.
    #[arg(long, value_name = "DIR")]
    pub evidence: Option<PathBuf>,
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
    let (files, ledger) = inputs(&args.files)?;
    let sparse = args.sparse || args.files.iter().any(|p| bundle::is_sparse(p));
    let mut segments = open_many(&files).context("cannot read the capture")?;
    let mut engine = Engine::new(Config {
        proxy: args.proxy,
        upstream: args.upstream,
        sparse,
    });
    engine.set_max_connections(args.max_connections);
    for idle in ledger.iter().flat_map(Ledger::send_idles) {
        engine.kernel_send_idle(idle);
    }
    for open in ledger.iter().flat_map(Ledger::opens) {
        engine.kernel_socket(open);
    }
    for dir in args.files.iter().filter(|p| bundle::is_bundle(p)) {
        let copies = tracer::plaintext::read_bundle(dir)
            .with_context(|| format!("cannot read the bundle {}", dir.display()))?;
        for rec in copies {
            engine.plaintext(rec);
        }
    }
    for seg in segments.by_ref() {
        engine.push(&seg);
    }
    let stats = segments.stats();
    for f in &stats.files {
        for w in &f.warnings {
            eprintln!("warning: {}: {w}", f.path);
        }
    }
    if stats.packets == 0 {
        anyhow::bail!("the capture holds no packets");
    }
    let mut analysis = engine.finish();
    if let Some(ledger) = &ledger {
        for v in &mut analysis.verdicts {
            kernel::enrich(v, ledger);
        }
    }
    let capture = CaptureSummary {
        packets: stats.packets,
        dropped_or_missing: analysis.flow.gaps,
        sparse,
    };
    super::print_report(&analysis, capture, args.format, args.verbose)?;
    if let Some(dir) = &args.evidence {
        write_evidence(dir, &files, &analysis, capture)
            .with_context(|| format!("cannot write the evidence bundle to {}", dir.display()))?;
    }
    Ok(())
}

/// Capture files to read, and the probe events when a `tracer capture --out` bundle
/// directory is among the inputs (its `capture.pcap` and `events.jsonl`).
fn inputs(paths: &[PathBuf]) -> Result<(Vec<PathBuf>, Option<Ledger>)> {
    let mut files = Vec::new();
    let mut ledger: Option<Ledger> = None;
    for p in paths {
        if bundle::is_bundle(p) {
            files.push(p.join(bundle::CAPTURE));
            let events = bundle::read_events(p)
                .with_context(|| format!("cannot read the bundle {}", p.display()))?;
            match &mut ledger {
                None => ledger = Some(events),
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

/// Second pass over the files: the implicated connections, and the report.
fn write_evidence(
    dir: &Path,
    files: &[PathBuf],
    a: &Analysis,
    capture: CaptureSummary,
) -> Result<()> {
    std::fs::create_dir_all(dir)?;
    bundle::write_evidence(files, &dir.join(bundle::EVIDENCE), &a.verdicts)?;
    std::fs::write(dir.join(bundle::REPORT), report::json::render(a, capture))?;
    Ok(())
}
