//! Packets out of time order within a file: a copy of the seed fixture with one client
//! packet stamped an hour late (or early), and a locally shuffled copy, give the same
//! verdicts as the original, and the bad timestamp is named by file and packet number.

use std::path::{Path, PathBuf};

use tracer::capture::{open_many, CaptureReader, PcapWriter, RawPacket};
use tracer::engine::{Config, Engine};

const HOUR_NS: i64 = 3_600_000_000_000;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures/seed")
        .join(name)
}

fn scratch(test: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("tracer-time-order-{test}-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn frames(path: &Path) -> Vec<RawPacket> {
    let mut r = CaptureReader::new(std::fs::File::open(path).unwrap()).unwrap();
    let mut out = Vec::new();
    while let Some(f) = r.next_frame() {
        out.push(RawPacket::from(&f));
    }
    out
}

fn write(path: &Path, frames: &[RawPacket]) {
    let mut w = PcapWriter::create(path, frames[0].linktype).unwrap();
    for f in frames {
        w.write(f).unwrap();
    }
    w.finish().unwrap();
}

/// Each verdict in order: (cause, subcause, confidence, status, request id).
type Summary = Vec<(String, Option<String>, String, Option<u16>, Option<String>)>;

/// The verdicts of `files`, and each file's warnings.
fn verdicts(files: &[PathBuf]) -> (Summary, Vec<(String, Vec<String>)>) {
    let mut segments = open_many(files).unwrap();
    let mut e = Engine::new(Config::default());
    for s in segments.by_ref() {
        e.push(&s);
    }
    let a = e.finish();
    let summary = a
        .verdicts
        .iter()
        .map(|v| {
            (
                v.cause.name().to_owned(),
                v.subcause.map(|s| s.name().to_owned()),
                v.confidence.name().to_owned(),
                v.status,
                v.request_id.clone(),
            )
        })
        .collect();
    let warnings = segments
        .stats()
        .files
        .into_iter()
        .map(|f| (f.path, f.warnings))
        .collect();
    (summary, warnings)
}

fn races(s: &Summary) -> usize {
    s.iter().filter(|v| v.0 == "keepalive_race").count()
}

/// The seed fixture's client side with packet `number` (1-based) moved by `shift_ns`.
fn with_one_packet_moved(test: &str, number: usize, shift_ns: i64) -> PathBuf {
    let mut f = frames(&fixture("client.pcap"));
    f[number - 1].ts_ns += shift_ns;
    let path = scratch(test).join("client.pcap");
    write(&path, &f);
    path
}

fn check_one_bad_timestamp(test: &str, shift_ns: i64, word: &str) {
    let upstream = fixture("upstream.pcap");
    let (original, _) = verdicts(&[fixture("client.pcap"), upstream.clone()]);
    assert!(races(&original) > 20, "the fixture has races: {original:?}");
    let n = frames(&fixture("client.pcap")).len();
    // a packet in the middle of the capture
    let number = n / 2;
    let moved = with_one_packet_moved(test, number, shift_ns);
    let (got, warnings) = verdicts(&[moved.clone(), upstream]);
    std::fs::remove_dir_all(moved.parent().unwrap()).ok();
    assert_eq!(got, original, "verdicts changed by one bad timestamp");
    let (path, w) = &warnings[0];
    assert_eq!(path, &moved.display().to_string());
    assert!(
        w.iter()
            .any(|w| w.contains(&format!("packet {number} ")) && w.contains(word)),
        "no warning names packet {number}: {w:?}"
    );
    assert!(warnings[1].1.is_empty(), "{warnings:?}");
}

#[test]
fn one_client_packet_stamped_an_hour_late_keeps_the_verdicts() {
    check_one_bad_timestamp("late", HOUR_NS, "after");
}

#[test]
fn one_client_packet_stamped_an_hour_early_keeps_the_verdicts() {
    check_one_bad_timestamp("early", -HOUR_NS, "before");
}

#[test]
fn a_locally_shuffled_file_keeps_the_verdicts() {
    let upstream = fixture("upstream.pcap");
    let (original, _) = verdicts(&[fixture("client.pcap"), upstream.clone()]);
    let mut f = frames(&fixture("client.pcap"));
    // reverse every run of 6 packets that spans less than 5 ms (half the window)
    let mut shuffled = 0;
    for block in f.chunks_mut(6) {
        let span = block.last().unwrap().ts_ns - block[0].ts_ns;
        if span < 5_000_000 {
            block.reverse();
            shuffled += 1;
        }
    }
    assert!(shuffled > 100, "only {shuffled} blocks shuffled");
    let dir = scratch("shuffled");
    let path = dir.join("client.pcap");
    write(&path, &f);
    let (got, warnings) = verdicts(&[path, upstream]);
    std::fs::remove_dir_all(&dir).ok();
    assert_eq!(got, original, "verdicts changed by a local shuffle");
    assert!(warnings.iter().all(|(_, w)| w.is_empty()), "{warnings:?}");
}
