//! `tracer analyze FILE… [--proxy ADDR[:PORT]] [--upstream ADDR[:PORT]] [--format text|json]
//! [-v] [--evidence DIR]`
use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use tracer::capture::{open_many, open_many_with_frames, LinkType, PcapWriter};
use tracer::correlate::Endpoint;
use tracer::engine::{Analysis, Config, Engine};
use tracer::report::{self, CaptureSummary};

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Text,
    Json,
}

#[derive(clap::Args)]
pub struct Args {
    /// Capture files (pcap or pcapng); several are merged by time.
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
    /// The proxy's address (IP or IP:PORT of its listener); inferred when absent.
    #[arg(long, value_name = "ADDR[:PORT]")]
    pub proxy: Option<Endpoint>,
    /// An upstream's address (IP or IP:PORT); inferred when absent.
    #[arg(long, value_name = "ADDR[:PORT]")]
    pub upstream: Option<Endpoint>,
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
    let mut segments = open_many(&args.files).context("cannot read the capture")?;
    let mut engine = Engine::new(Config {
        proxy: args.proxy,
        upstream: args.upstream,
    });
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
    let analysis = engine.finish();
    let capture = CaptureSummary {
        packets: stats.packets,
        dropped_or_missing: analysis.flow.gaps,
    };
    match args.format {
        Format::Text => print!("{}", report::text::render(&analysis, capture, args.verbose)),
        Format::Json => println!("{}", report::json::render(&analysis, capture)),
    }
    if let Some(dir) = &args.evidence {
        write_evidence(dir, &args.files, &analysis, capture)
            .with_context(|| format!("cannot write the evidence bundle to {}", dir.display()))?;
    }
    Ok(())
}

type Pair = (SocketAddr, SocketAddr);

fn pair(a: SocketAddr, b: SocketAddr) -> Pair {
    if a <= b {
        (a, b)
    } else {
        (b, a)
    }
}

/// Second pass over the files: copies every packet of an implicated connection.
fn write_evidence(
    dir: &Path,
    files: &[PathBuf],
    a: &Analysis,
    capture: CaptureSummary,
) -> Result<()> {
    std::fs::create_dir_all(dir)?;
    let mut wanted: HashSet<Pair> = HashSet::new();
    for v in &a.verdicts {
        if let Some(d) = &v.downstream {
            wanted.insert(pair(d.client, d.proxy));
        }
        if let Some(u) = &v.upstream {
            wanted.insert(pair(u.proxy, u.server));
        }
    }
    let mut w = PcapWriter::create(&dir.join("evidence.pcap"), LinkType::RAW)?;
    for (seg, raw) in open_many_with_frames(files)? {
        if wanted.contains(&pair(seg.src, seg.dst)) {
            w.write(&raw)?;
        }
    }
    w.finish()?;
    std::fs::write(dir.join("report.json"), report::json::render(a, capture))?;
    Ok(())
}
