//! The evidence bundle `tracer capture --out DIR` writes, and `tracer analyze DIR` reads:
//!
//! | file | what |
//! |---|---|
//! | `capture.pcap` | every packet tracer analysed, in the order it analysed them (raw IP) |
//! | `events.jsonl` | the kernel probe's events, one JSON object a line, on the pcap clock |
//! | `evidence.pcap` | just the connections behind the verdicts, for Wireshark |
//! | `report.json` | the report (`tracer.report/v1`) |
//!
//! Reading `capture.pcap` and `events.jsonl` again gives the same verdicts.

use std::collections::HashSet;
use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};

use crate::capture::{open_many_with_frames, CaptureError, LinkType, PcapWriter, RawPacket};
use crate::flow::{key, Key};
use crate::kernel::{KernelEvent, Ledger};
use crate::verdict::Verdict;

pub const CAPTURE: &str = "capture.pcap";
pub const EVENTS: &str = "events.jsonl";
pub const EVIDENCE: &str = "evidence.pcap";
pub const REPORT: &str = "report.json";
/// Present when the capture was sparse (what `tracer capture` does by default): the packets are a
/// selection, and `tracer analyze` must read them as such.
pub const SPARSE: &str = "SPARSE";

/// Why a bundle could not be written or read.
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    /// A file of the bundle could not be created, written or read.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The packet files could not be written or read back.
    #[error(transparent)]
    Capture(#[from] CaptureError),
    /// A line of `events.jsonl` is not an event.
    #[error("{path}:{line}: not a probe event: {message}")]
    BadEvent {
        path: PathBuf,
        line: usize,
        message: String,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> BundleError + '_ {
    move |source| BundleError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Whether `path` is a bundle directory.
#[must_use]
pub fn is_bundle(path: &Path) -> bool {
    path.is_dir() && path.join(CAPTURE).is_file()
}

/// Whether the bundle at `dir` holds a sparse capture.
#[must_use]
pub fn is_sparse(dir: &Path) -> bool {
    dir.join(SPARSE).is_file()
}

/// Writes a bundle while a live capture runs.
pub struct BundleWriter {
    dir: PathBuf,
    packets: PcapWriter<BufWriter<File>>,
    events: BufWriter<File>,
}

impl BundleWriter {
    /// Creates `dir` (and its parents) and the packet and event files.
    pub fn create(dir: &Path) -> Result<Self, BundleError> {
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let events_path = dir.join(EVENTS);
        let events = BufWriter::new(File::create(&events_path).map_err(io(&events_path))?);
        Ok(BundleWriter {
            dir: dir.to_owned(),
            // Raw IP: interfaces of different framings (Ethernet, cooked `any`) in one file.
            packets: PcapWriter::create(&dir.join(CAPTURE), LinkType::RAW)?,
            events,
        })
    }

    /// Records that the capture is sparse (see [`SPARSE`]).
    pub fn mark_sparse(&self) -> Result<(), BundleError> {
        let path = self.dir.join(SPARSE);
        std::fs::write(
            &path,
            "tracer capture --sparse: the kernel kept only control segments and selected \
             exchanges; gaps in sequence numbers are deliberate\n",
        )
        .map_err(io(&path))
    }

    /// One packet, in the order the engine received it.
    pub fn packet(&mut self, p: &RawPacket) -> Result<(), BundleError> {
        Ok(self.packets.write(p)?)
    }

    /// One probe event.
    pub fn event(&mut self, e: &KernelEvent) -> Result<(), BundleError> {
        let path = self.dir.join(EVENTS);
        serde_json::to_writer(&mut self.events, e).map_err(|e| io(&path)(e.into()))?;
        self.events.write_all(b"\n").map_err(io(&path))
    }

    /// Closes the packet and event files, then writes `evidence.pcap` (the connections of
    /// `verdicts`) and `report.json`.
    pub fn finish(self, verdicts: &[Verdict], report_json: &str) -> Result<PathBuf, BundleError> {
        let dir = self.dir;
        self.packets.finish()?;
        let events_path = dir.join(EVENTS);
        self.events
            .into_inner()
            .map_err(|e| io(&events_path)(e.into_error()))?;
        write_evidence(&[dir.join(CAPTURE)], &dir.join(EVIDENCE), verdicts)?;
        let report = dir.join(REPORT);
        std::fs::write(&report, report_json).map_err(io(&report))?;
        Ok(dir)
    }
}

/// Copies every packet of the connections behind `verdicts` from `inputs` into `out`.
pub fn write_evidence(
    inputs: &[PathBuf],
    out: &Path,
    verdicts: &[Verdict],
) -> Result<u64, BundleError> {
    let mut wanted: HashSet<Key> = HashSet::new();
    for v in verdicts {
        if let Some(d) = &v.downstream {
            wanted.insert(key(d.client, d.proxy));
        }
        if let Some(u) = &v.upstream {
            wanted.insert(key(u.proxy, u.server));
        }
    }
    let mut w = PcapWriter::create(out, LinkType::RAW)?;
    for (seg, raw) in open_many_with_frames(inputs)? {
        if wanted.contains(&key(seg.src, seg.dst)) {
            w.write(&raw)?;
        }
    }
    let n = w.written();
    w.finish()?;
    Ok(n)
}

/// The probe events of a bundle (none when it has no `events.jsonl`).
pub fn read_events(dir: &Path) -> Result<Ledger, BundleError> {
    let path = dir.join(EVENTS);
    let mut ledger = Ledger::new();
    let Ok(f) = File::open(&path) else {
        return Ok(ledger);
    };
    for (i, line) in BufReader::new(f).lines().enumerate() {
        let line = line.map_err(io(&path))?;
        if line.trim().is_empty() {
            continue;
        }
        let e: KernelEvent = serde_json::from_str(&line).map_err(|e| BundleError::BadEvent {
            path: path.clone(),
            line: i + 1,
            message: e.to_string(),
        })?;
        ledger.push(e);
    }
    Ok(ledger)
}
