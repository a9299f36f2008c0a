//! Never guess: when the capture lost packets, a verdict either names the cause the
//! proxy's own logs give or says `unexplained` — it never names another cause.
//!
//! Built from the lab fixtures by dropping packets deterministically (as a capture that
//! could not keep up would), then compared with the fixtures' ground truth.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use tracer::capture::{open_many_with_frames, LinkType, PcapWriter};
use tracer::engine::{analyze, Config};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures")
        .join(name)
}

/// Copies `src` to `dst` without every `nth` packet (counting from `offset`).
fn thin(src: &Path, dst: &Path, nth: usize, offset: usize) {
    let mut w = PcapWriter::create(dst, LinkType::ETHERNET).expect("writable temp dir");
    for (i, (_, raw)) in open_many_with_frames(&[src])
        .expect("fixture opens")
        .enumerate()
    {
        if !(i + offset).is_multiple_of(nth) {
            w.write(&raw).expect("write");
        }
    }
    w.finish().expect("finish");
}

fn truth(name: &str) -> BTreeMap<String, String> {
    let t: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixture(name).join("truth.json")).unwrap())
            .unwrap();
    t["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["rid"].to_string(),
                r["cause"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

fn check(name: &str, nth: usize) {
    let dir = std::env::temp_dir().join(format!("tracer-lost-{name}-{nth}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (c, u) = (dir.join("client.pcap"), dir.join("upstream.pcap"));
    thin(&fixture(name).join("client.pcap"), &c, nth, 0);
    thin(&fixture(name).join("upstream.pcap"), &u, nth, nth / 2);
    let a = analyze(
        Config::default(),
        tracer::capture::open_many(&[&c, &u]).unwrap(),
    );
    let truth = truth(name);
    let mut wrong = Vec::new();
    let (mut right, mut unexplained) = (0, 0);
    for v in &a.verdicts {
        let Some(rid) = &v.request_id else { continue };
        match truth.get(rid) {
            Some(cause) if cause == v.cause.name() => right += 1,
            _ if v.cause.name() == "unexplained" => unexplained += 1,
            Some(cause) => wrong.push(format!(
                "rid {rid}: {} where the proxy's logs say {cause}: {}",
                v.cause.name(),
                v.summary
            )),
            None => wrong.push(format!(
                "rid {rid}: {} for a request that succeeded: {}",
                v.cause.name(),
                v.summary
            )),
        }
    }
    eprintln!(
        "{name} without every {nth}th packet: {right} right, {unexplained} unexplained, {} wrong",
        wrong.len()
    );
    if wrong.is_empty() {
        std::fs::remove_dir_all(&dir).ok();
    }
    assert!(
        wrong.is_empty(),
        "{name}, every {nth}th packet dropped (captures kept in {}):\n{}",
        dir.display(),
        wrong.join("\n")
    );
}

#[test]
fn race_fixtures_with_lost_packets_give_no_wrong_cause() {
    for name in ["seed", "nginx-node", "haproxy-gunicorn"] {
        for nth in [5, 13] {
            check(name, nth);
        }
    }
}

#[test]
fn contrast_fixtures_with_lost_packets_give_no_wrong_cause() {
    for name in [
        "refused",
        "crash",
        "timeout",
        "client-abort",
        "upstream-500",
    ] {
        check(name, 7);
    }
}
