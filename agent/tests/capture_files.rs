//! The capture reader on real captures (recorded by `tests/data/make.sh`): every segment
//! must match what tshark decodes from the same file, and broken files must give partial
//! results or a clear error, never a panic.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;

use tracer::capture::{self, CaptureError, LinkType, PcapWriter};
use tracer::segment::{flags, Segment};

fn data(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name)
}

const FIXTURES: [&str; 7] = [
    "lo-eth-us.pcap",
    "lo-eth-ns.pcap",
    "lo-eth-snap96.pcap",
    "any-sll.pcap",
    "any-sll2.pcap",
    "lo-eth.pcapng",
    "mixed-eth-sll2.pcapng",
];

fn read(paths: &[PathBuf]) -> (Vec<Segment>, capture::CaptureStats) {
    let mut stream = capture::open_many(paths).expect("fixture opens");
    let segments: Vec<Segment> = stream.by_ref().collect();
    (segments, stream.stats())
}

/// A scratch directory for this test, removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new(test: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!("tracer-{test}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("create scratch dir");
        Scratch(dir)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// (time ns, src, dst, seq, ack, flags, payload length on the wire) — what both decoders
/// must agree on.
type Row = (i64, SocketAddr, SocketAddr, u32, u32, u8, u32);

fn row(s: &Segment) -> Row {
    (s.ts_ns, s.src, s.dst, s.seq, s.ack, s.flags, s.wire_len)
}

fn tshark_available() -> bool {
    Command::new("tshark")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// "1795638846.487234000" → nanoseconds.
fn epoch_ns(s: &str) -> i64 {
    let (sec, frac) = s.split_once('.').unwrap_or((s, "0"));
    let frac = format!("{frac:0<9}");
    sec.parse::<i64>().unwrap() * 1_000_000_000 + frac[..9].parse::<i64>().unwrap()
}

/// The TCP segments of a file as tshark decodes them.
fn tshark_rows(path: &Path) -> Vec<Row> {
    let fields = [
        "frame.time_epoch",
        "ip.src",
        "ipv6.src",
        "tcp.srcport",
        "ip.dst",
        "ipv6.dst",
        "tcp.dstport",
        "tcp.seq_raw",
        "tcp.ack_raw",
        "tcp.flags",
        "tcp.len",
    ];
    let mut cmd = Command::new("tshark");
    cmd.arg("-r").arg(path).args(["-Y", "tcp", "-T", "fields"]);
    for f in fields {
        cmd.args(["-e", f]);
    }
    let out = cmd.output().expect("run tshark");
    assert!(out.status.success(), "tshark failed on {}", path.display());
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| {
            let c: Vec<&str> = l.split('\t').collect();
            let addr = |v4: &str, v6: &str, port: &str| -> SocketAddr {
                let ip = if v4.is_empty() { v6 } else { v4 };
                SocketAddr::new(ip.parse().unwrap(), port.parse().unwrap())
            };
            let flags = u16::from_str_radix(c[9].trim_start_matches("0x"), 16).unwrap();
            (
                epoch_ns(c[0]),
                addr(c[1], c[2], c[3]),
                addr(c[4], c[5], c[6]),
                c[7].parse().unwrap(),
                c[8].parse().unwrap(),
                (flags & 0xff) as u8,
                c[10].parse().unwrap(),
            )
        })
        .collect()
}

#[test]
fn every_fixture_matches_tshark_segment_for_segment() {
    if !tshark_available() {
        eprintln!("skipped: tshark is not installed (apt-get install tshark)");
        return;
    }
    for name in FIXTURES {
        let path = data(name);
        let (segments, _) = read(std::slice::from_ref(&path));
        let ours: Vec<Row> = segments.iter().map(row).collect();
        let theirs = tshark_rows(&path);
        assert!(!ours.is_empty(), "{name}: no segments");
        assert_eq!(ours, theirs, "{name}: decoded differently from tshark");
    }
}

#[test]
fn loopback_fixture_has_handshake_refusal_ipv6_and_udp() {
    let (segments, stats) = read(&[data("lo-eth-us.pcap")]);
    assert!(segments.iter().any(|s| s.flags == flags::SYN));
    assert!(segments
        .iter()
        .any(|s| s.has(flags::RST) && s.src.port() == 18081));
    assert!(segments.iter().any(|s| s.src.is_ipv6()));
    assert!(segments
        .iter()
        .any(|s| s.payload.starts_with(b"GET /hello.txt HTTP/1.1")));
    assert_eq!(stats.non_tcp, 1, "the UDP datagram");
    assert_eq!(stats.undecodable, 0);
    assert_eq!(stats.packets, stats.tcp_segments + stats.non_tcp);
    assert!(!stats.truncated);
    assert_eq!(stats.files[0].format, "pcap");
}

#[test]
fn snaplen_cut_segments_keep_wire_length() {
    let (full, _) = read(&[data("lo-eth-ns.pcap")]);
    let (cut, _) = read(&[data("lo-eth-snap96.pcap")]);
    assert!(full.iter().all(|s| s.payload.len() == s.wire_len as usize));
    let short = cut
        .iter()
        .find(|s| (s.payload.len() as u32) < s.wire_len)
        .expect("a segment longer than the 96-byte snaplen");
    assert!(short.payload.len() < 96);
}

#[test]
fn pcapng_interfaces_with_different_link_types_are_all_decoded() {
    let (mixed, stats) = read(&[data("mixed-eth-sll2.pcapng")]);
    let (eth, _) = read(&[data("lo-eth-us.pcap")]);
    let (sll2, _) = read(&[data("any-sll2.pcap")]);
    assert_eq!(mixed.len(), eth.len() + sll2.len());
    assert_eq!(stats.files[0].format, "pcapng");
    assert!(
        stats.files[0].warnings.is_empty(),
        "{:?}",
        stats.files[0].warnings
    );
}

#[test]
fn merging_two_files_interleaves_by_time() {
    let (a, _) = read(&[data("lo-eth-us.pcap")]);
    let (b, _) = read(&[data("any-sll2.pcap")]);
    let (merged, stats) = read(&[data("lo-eth-us.pcap"), data("any-sll2.pcap")]);
    assert_eq!(merged.len(), a.len() + b.len());
    assert_eq!(stats.files.len(), 2);
    assert_eq!(stats.tcp_segments, merged.len() as u64);
    // These captures were taken seconds apart: the merge puts one file wholly first.
    let first_b = merged.iter().position(|s| *s == b[0]).unwrap();
    assert!(merged[..first_b].iter().all(|s| s.ts_ns <= b[0].ts_ns));
    // Each file's own order is kept.
    let only_a: Vec<&Segment> = merged.iter().filter(|s| a.contains(s)).collect();
    assert!(only_a.iter().zip(&a).all(|(m, o)| *m == o));
}

#[test]
fn same_file_twice_dedups_to_once() {
    let (once, _) = read(&[data("lo-eth-us.pcap")]);
    let stream = capture::open_many(&[data("lo-eth-us.pcap"), data("lo-eth-us.pcap")]).unwrap();
    let mut dedup = capture::Dedup::new(stream, capture::DEFAULT_DEDUP_WINDOW_NS);
    let twice: Vec<Segment> = dedup.by_ref().collect();
    assert_eq!(twice, once);
    assert_eq!(dedup.dropped(), once.len() as u64);
}

#[test]
fn truncated_file_gives_partial_results_and_a_warning() {
    let scratch = Scratch::new("truncated");
    let bytes = std::fs::read(data("lo-eth-us.pcap")).unwrap();
    let cut = scratch.path("cut.pcap");
    std::fs::write(&cut, &bytes[..bytes.len() * 2 / 3]).unwrap();
    let (all, _) = read(&[data("lo-eth-us.pcap")]);
    let (part, stats) = read(&[cut]);
    assert!(!part.is_empty() && part.len() < all.len());
    assert_eq!(part[..], all[..part.len()]);
    assert!(stats.truncated);
    assert!(stats.files[0].warnings[0].contains("truncated"));
}

#[test]
fn non_capture_file_is_an_error_naming_the_file() {
    let scratch = Scratch::new("notpcap");
    let path = scratch.path("notes.txt");
    std::fs::write(&path, "GET / HTTP/1.1\r\n").unwrap();
    let err = capture::open_many(&[path]).err().expect("must fail");
    let msg = err.to_string();
    assert!(
        msg.contains("notes.txt") && msg.contains("not a capture file"),
        "{msg}"
    );
}

#[test]
fn missing_file_is_an_error_naming_the_file() {
    let err = capture::open_many(&[data("no-such.pcap")]).err().unwrap();
    assert!(matches!(err, CaptureError::InFile { .. }));
    assert!(err.to_string().contains("no-such.pcap"));
}

#[test]
fn garbage_after_a_valid_header_never_panics() {
    let scratch = Scratch::new("garbage");
    let header = std::fs::read(data("lo-eth.pcapng")).unwrap();
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    for i in 0..200 {
        let mut bytes = header.clone();
        // Flip a few pseudo-random bytes after the section header.
        for _ in 0..1 + i % 8 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let at = 28 + (seed as usize) % (bytes.len() - 28);
            bytes[at] = (seed >> 32) as u8;
        }
        let path = scratch.path("g.pcapng");
        std::fs::write(&path, &bytes).unwrap();
        if let Ok(mut s) = capture::open_many(&[path]) {
            s.by_ref().for_each(drop);
            let _ = s.stats();
        }
    }
}

#[test]
fn stats_serialize_to_json() {
    let (_, stats) = read(&[data("any-sll.pcap")]);
    let json = serde_json::to_value(&stats).unwrap();
    assert_eq!(json["files"][0]["format"], "pcap");
    assert!(json["tcp_segments"].as_u64().unwrap() > 0);
}

#[test]
fn link_types_of_fixtures_are_the_ones_recorded() {
    for (name, want) in [
        ("lo-eth-us.pcap", LinkType::ETHERNET),
        ("any-sll.pcap", LinkType::LINUX_SLL),
        ("any-sll2.pcap", LinkType::LINUX_SLL2),
    ] {
        let f = std::fs::File::open(data(name)).unwrap();
        let r = capture::CaptureReader::new(f).unwrap();
        assert_eq!(r.link_types(), vec![want], "{name}");
    }
}

/// Writes the frames of `inputs` through a [`PcapWriter`] of `linktype`.
fn write_evidence(inputs: &[PathBuf], out: &Path, linktype: LinkType) -> u64 {
    let mut w = PcapWriter::create(out, linktype).unwrap();
    for (_, raw) in capture::open_many_with_frames(inputs).unwrap() {
        w.write(&raw).unwrap();
    }
    let n = w.written();
    w.finish().unwrap();
    n
}

#[test]
fn evidence_pcap_same_link_type_reads_back_identically() {
    let scratch = Scratch::new("evidence-same");
    let out = scratch.path("evidence.pcap");
    let input = data("any-sll2.pcap");
    write_evidence(std::slice::from_ref(&input), &out, LinkType::LINUX_SLL2);
    let (orig, _) = read(&[input]);
    let (back, _) = read(std::slice::from_ref(&out));
    assert_eq!(back, orig);
    if tshark_available() {
        assert_eq!(tshark_rows(&out), orig.iter().map(row).collect::<Vec<_>>());
    } else {
        eprintln!("tshark check skipped: tshark is not installed");
    }
}

#[test]
fn evidence_pcap_raw_ip_mixes_link_types_and_opens_in_tshark() {
    let scratch = Scratch::new("evidence-raw");
    let out = scratch.path("evidence.pcap");
    let inputs = [data("lo-eth-us.pcap"), data("any-sll.pcap")];
    let n = write_evidence(&inputs, &out, LinkType::RAW);
    let (orig, _) = read(&inputs);
    let (back, stats) = read(std::slice::from_ref(&out));
    assert_eq!(n, orig.len() as u64);
    assert_eq!(back, orig);
    assert_eq!(stats.undecodable, 0);
    if tshark_available() {
        assert_eq!(tshark_rows(&out), orig.iter().map(row).collect::<Vec<_>>());
    } else {
        eprintln!("tshark check skipped: tshark is not installed");
    }
}

#[test]
fn writer_refuses_a_frame_of_another_link_type() {
    let mut w = PcapWriter::new(Vec::new(), LinkType::ETHERNET).unwrap();
    let raw = capture::RawPacket {
        ts_ns: 0,
        linktype: LinkType::LINUX_SLL2,
        data: vec![0; 40],
        orig_len: 40,
    };
    let err = w.write(&raw).err().unwrap();
    assert!(err.to_string().contains("one link type"), "{err}");
}

#[test]
fn write_evidence_keeps_only_chosen_connections_byte_exact() {
    let scratch = Scratch::new("evidence-filter");
    let out = scratch.path("refused.pcap");
    let input = data("lo-eth-us.pcap");
    let n = capture::write_evidence(std::slice::from_ref(&input), &out, |s| {
        s.src.port() == 18081 || s.dst.port() == 18081
    })
    .unwrap();
    assert_eq!(n, 2, "SYN and RST of the refused connection");
    let r = capture::CaptureReader::new(std::fs::File::open(&out).unwrap()).unwrap();
    assert_eq!(r.link_types(), vec![LinkType::ETHERNET]);
    let (back, _) = read(std::slice::from_ref(&out));
    assert!(back[1].has(flags::RST));
}

#[test]
fn write_evidence_from_pcapng_is_raw_ip() {
    let scratch = Scratch::new("evidence-ng");
    let out = scratch.path("all.pcap");
    let input = data("mixed-eth-sll2.pcapng");
    let n = capture::write_evidence(std::slice::from_ref(&input), &out, |_| true).unwrap();
    let (orig, _) = read(&[input]);
    assert_eq!(n, orig.len() as u64);
    let r = capture::CaptureReader::new(std::fs::File::open(&out).unwrap()).unwrap();
    assert_eq!(r.link_types(), vec![LinkType::RAW]);
    if tshark_available() {
        assert_eq!(tshark_rows(&out), orig.iter().map(row).collect::<Vec<_>>());
    }
}
