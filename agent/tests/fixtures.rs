//! The acceptance test of the verdict engine: `tracer analyze` over every lab fixture,
//! compared request by request with the ground truth the lab derived from the proxy's own
//! logs (never from tracer). Prints recall and precision per fixture.
//!
//! Rules: every race 502 is `keepalive_race`, every contrast its own cause, no verdict names
//! a cause the proxy's logs contradict, and rows whose packets the capture lost are
//! `unexplained`. Where the clients spoke TLS to the proxy, the report must say the client
//! side is encrypted, and a race the proxy never sent upstream (it leaves nothing readable)
//! is counted as unseen rather than required.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

fn fixtures() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures");
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(&root)
        .expect("tests/fixtures exists")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.join("truth.json").is_file())
        .collect();
    dirs.sort();
    dirs
}

/// `tracer analyze --format json` on a fixture's two captures.
fn analyze(dir: &Path) -> Value {
    let out = Command::new(env!("CARGO_BIN_EXE_tracer"))
        .arg("analyze")
        .arg(dir.join("client.pcap"))
        .arg(dir.join("upstream.pcap"))
        .args(["--format", "json"])
        .output()
        .expect("tracer runs");
    assert!(
        out.status.success(),
        "tracer analyze {} failed: {}",
        dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("tracer prints JSON")
}

fn rid_of(v: &Value) -> Option<u64> {
    match v.get("request_id")? {
        Value::String(s) => s.trim().parse().ok(),
        Value::Number(n) => n.as_u64(),
        _ => None,
    }
}

#[derive(Default)]
struct Score {
    truth: usize,
    found: usize,
    verdicts: usize,
    correct: usize,
    /// Verdicts marked `proven`, and those of them the proxy's logs contradict.
    proven: usize,
    proven_wrong: usize,
    /// Race rows in the ground truth, and those tracer called `keepalive_race`.
    races: usize,
    races_found: usize,
    /// Rows an encrypted client side hides (nothing of them reached the upstream leg).
    unseen: usize,
    problems: Vec<String>,
}

fn score(dir: &Path) -> Score {
    let truth: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("truth.json")).unwrap()).unwrap();
    let report = analyze(dir);
    assert_eq!(report["schema"], "tracer.report/v1");
    let tls = truth["scenario"]
        .as_str()
        .and_then(tracer_lab::scenarios::by_name)
        .is_some_and(|s| s.client().encrypted());
    let verdicts = report["verdicts"].as_array().cloned().unwrap_or_default();
    let mut by_rid: BTreeMap<u64, Vec<&Value>> = BTreeMap::new();
    let mut s = Score {
        verdicts: verdicts.len(),
        proven: verdicts
            .iter()
            .filter(|v| v["confidence"] == "proven")
            .count(),
        ..Score::default()
    };
    for v in &verdicts {
        match rid_of(v) {
            Some(rid) => by_rid.entry(rid).or_default().push(v),
            None => s
                .problems
                .push(format!("a verdict without request id: {}", v["summary"])),
        }
    }
    if tls && report["client_side"]["encrypted"] != true {
        s.problems.push(format!(
            "the clients spoke TLS but the report does not say the client side is encrypted: {}",
            report["client_side"]
        ));
    }
    let rows = truth["rows"].as_array().cloned().unwrap_or_default();
    let mut rows_by_rid = BTreeMap::new();
    for row in &rows {
        let rid = row["rid"].as_u64().unwrap();
        rows_by_rid.insert(rid, row);
        s.truth += 1;
        let lost = row["capture_lost"].as_bool().unwrap_or(false);
        let want = if lost {
            "unexplained"
        } else {
            row["cause"].as_str().unwrap()
        };
        // Where the proxy's log tells the sub-kind too (Go's two race errors), it must agree.
        let want_sub = row["subcause"].as_str().filter(|_| !lost);
        let sub_ok = |v: &Value| want_sub.is_none_or(|w| v["subcause"] == w);
        if tls && want_sub == Some("request_never_sent") && !by_rid.contains_key(&rid) {
            s.unseen += 1;
            continue;
        }
        if want == "keepalive_race" {
            s.races += 1;
        }
        match by_rid.get(&rid).map(Vec::as_slice) {
            Some([v]) if v["cause"] == want && sub_ok(v) => {
                s.found += 1;
                s.correct += 1;
                if want == "keepalive_race" {
                    s.races_found += 1;
                }
            }
            Some([v]) => {
                if v["confidence"] == "proven" {
                    s.proven_wrong += 1;
                }
                s.problems.push(format!(
                    "rid {rid}: tracer says {}/{} ({}), the proxy's logs say {want}/{}: {}",
                    v["cause"],
                    v["subcause"],
                    v["summary"],
                    want_sub.unwrap_or("-"),
                    row["evidence"]
                        .as_str()
                        .unwrap_or("")
                        .chars()
                        .take(200)
                        .collect::<String>()
                ));
            }
            Some(vs) => s.problems.push(format!("rid {rid}: {} verdicts", vs.len())),
            None => s
                .problems
                .push(format!("rid {rid}: no verdict (truth: {want})")),
        }
    }
    for rid in by_rid.keys() {
        if !rows_by_rid.contains_key(rid) {
            s.problems.push(format!(
                "rid {rid}: a verdict for a request the client saw succeed"
            ));
        }
    }
    s
}

#[test]
fn every_fixture_verdict_matches_the_proxy_logs() {
    let dirs = fixtures();
    assert!(!dirs.is_empty(), "no fixtures under tests/fixtures");
    let mut failures = Vec::new();
    for dir in dirs {
        let name = dir.file_name().unwrap().to_string_lossy().into_owned();
        let s = score(&dir);
        let seeable = s.truth - s.unseen;
        let recall = if seeable == 0 {
            1.0
        } else {
            s.found as f64 / seeable as f64
        };
        let precision = if s.verdicts == 0 {
            1.0
        } else {
            s.correct as f64 / s.verdicts as f64
        };
        eprintln!(
            "{name:18} truth rows {:4}  verdicts {:4}  recall {:6.2}%  precision {:6.2}%  races {:3}/{:3}  proven {:3} (wrong {}){}",
            s.truth - s.unseen,
            s.verdicts,
            recall * 100.0,
            precision * 100.0,
            s.races_found,
            s.races,
            s.proven,
            s.proven_wrong,
            if s.unseen > 0 {
                format!("  unseen behind TLS {}", s.unseen)
            } else {
                String::new()
            }
        );
        for p in s.problems.iter().take(8) {
            failures.push(format!("{name}: {p}"));
        }
        if s.problems.len() > 8 {
            failures.push(format!("{name}: … and {} more", s.problems.len() - 8));
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}
