//! `evidence.pcapng` read by Wireshark's own dissector (Debian's `tshark`): each packet a
//! verdict rests on carries a comment (`frame.comment`) naming that verdict, on the
//! verdict's connections, and the client-facing error responses commented are exactly the
//! ones the proxy's own logs record (the lab's ground truth, `truth.json`), with their
//! causes.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

/// The separator tshark puts between several comments of one packet (a comment may hold
/// commas, tshark's default).
const AGGREGATOR: &str = "\u{1e}";

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures")
        .join(name)
}

fn have_tshark() -> bool {
    Command::new("tshark")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// One commented packet as tshark reads it.
struct Commented {
    comments: Vec<String>,
    /// `ip:port->ip:port` in the packet's direction.
    from: String,
    to: String,
}

fn commented_packets(file: &Path) -> Vec<Commented> {
    let out = Command::new("tshark")
        .arg("-r")
        .arg(file)
        .args(["-Y", "frame.comment", "-T", "fields"])
        .args(["-E", &format!("aggregator={AGGREGATOR}")])
        .args(["-e", "frame.comment", "-e", "ip.src", "-e", "tcp.srcport"])
        .args(["-e", "ip.dst", "-e", "tcp.dstport"])
        .output()
        .expect("tshark runs");
    assert!(
        out.status.success(),
        "tshark cannot read {}: {}",
        file.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .expect("tshark prints UTF-8")
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            assert_eq!(f.len(), 5, "{l}");
            Commented {
                comments: f[0].split(AGGREGATOR).map(str::to_owned).collect(),
                from: format!("{}:{}", f[1], f[2]),
                to: format!("{}:{}", f[3], f[4]),
            }
        })
        .collect()
}

fn check(name: &str) {
    let dir = fixture(name);
    let tmp = Scratch(std::env::temp_dir().join(format!(
        "tracer-evidence-comments-{name}-{}",
        std::process::id()
    )));
    let _ = std::fs::remove_dir_all(&tmp.0);
    let out = Command::new(env!("CARGO_BIN_EXE_tracer"))
        .arg("analyze")
        .arg(dir.join("client.pcap"))
        .arg(dir.join("upstream.pcap"))
        .args(["--format", "json", "--show-query", "--evidence"])
        .arg(&tmp.0)
        .output()
        .expect("tracer runs");
    assert!(
        out.status.success(),
        "{name}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let verdicts = report["verdicts"].as_array().unwrap();
    let packets = commented_packets(&tmp.0.join("evidence.pcapng"));
    assert!(!packets.is_empty(), "{name}: no commented packet");

    // Each comment names a verdict of the report, and sits on one of its connections.
    let mut seen_verdicts = 0;
    for v in verdicts {
        let cause = match v["subcause"].as_str() {
            Some(sc) => format!("{}/{sc}", v["cause"].as_str().unwrap()),
            None => v["cause"].as_str().unwrap().to_owned(),
        };
        let summary = v["summary"].as_str().unwrap();
        let mine = format!("verdict {}: {summary}", v["time"].as_str().unwrap());
        let conns: Vec<&str> = v["evidence"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|e| e["connection"].as_str())
            .collect();
        let on: Vec<&Commented> = packets
            .iter()
            .filter(|p| p.comments.iter().any(|c| c.ends_with(&mine)))
            .collect();
        if on.is_empty() {
            continue;
        }
        seen_verdicts += 1;
        for p in on {
            let c = p.comments.iter().find(|c| c.ends_with(&mine)).unwrap();
            assert!(c.starts_with(&format!("tracer: {cause}")), "{name}: {c}");
            let fwd = format!("{}->{}", p.from, p.to);
            let back = format!("{}->{}", p.to, p.from);
            assert!(
                conns.iter().any(|k| *k == fwd || *k == back),
                "{name}: `{c}` on {fwd}, not a connection of its verdict {conns:?}"
            );
        }
    }
    assert!(
        seen_verdicts * 10 >= verdicts.len() * 9,
        "{name}: only {seen_verdicts} of {} verdicts have commented packets",
        verdicts.len()
    );

    // The proxy's error responses commented, by (status, cause), against the proxy's logs.
    let truth: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("truth.json")).unwrap()).unwrap();
    let mut want: BTreeMap<(String, String), usize> = BTreeMap::new();
    for r in truth["rows"].as_array().unwrap() {
        let key = (
            r["client"].as_str().unwrap().to_owned(),
            r["cause"].as_str().unwrap().to_owned(),
        );
        *want.entry(key).or_default() += 1;
    }
    let mut got: BTreeMap<(String, String), usize> = BTreeMap::new();
    for p in &packets {
        for c in &p.comments {
            let Some((head, _)) = c.split_once(" | verdict ") else {
                panic!("{name}: a comment without its verdict: {c}");
            };
            let Some(status) = head.split("proxy answers ").nth(1) else {
                continue;
            };
            let cause = head
                .trim_start_matches("tracer: ")
                .split(['/', ' ', ':'])
                .next()
                .unwrap();
            *got.entry((status.trim().to_owned(), cause.to_owned()))
                .or_default() += 1;
        }
    }
    assert_eq!(
        got, want,
        "{name}: commented error responses vs the proxy's logs"
    );
    eprintln!(
        "{name}: {} commented packets, {seen_verdicts} of {} verdicts; error responses {got:?}",
        packets.len(),
        verdicts.len()
    );
}

#[test]
fn evidence_packets_say_which_verdict_they_belong_to() {
    if !have_tshark() {
        eprintln!("skipped: tshark is not installed (bootstrap.sh installs it)");
        return;
    }
    for name in ["seed", "crash", "refused"] {
        check(name);
    }
}
