//! The analyzer on the lab's recorded fixtures (`tests/fixtures/<scenario>/`), compared
//! with the ground truth the proxies' own logs gave (`truth.json`), by request id.

use std::collections::BTreeMap;
use std::path::PathBuf;

use tracer::capture::open_many;
use tracer::engine::{analyze, Config};

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures")
}

/// (matched, misses) of one scenario; every truth row must get a verdict of its cause.
fn compare(name: &str) -> Option<(usize, Vec<String>, usize)> {
    let dir = fixtures().join(name);
    let truth: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("truth.json")).ok()?).ok()?;
    let files = [dir.join("client.pcap"), dir.join("upstream.pcap")];
    let a = analyze(Config::default(), open_many(&files).expect("fixture opens"));
    let mut by_rid: BTreeMap<String, Vec<(String, Option<String>)>> = BTreeMap::new();
    for v in &a.verdicts {
        if let (Some(rid), Some(_)) = (&v.request_id, &v.downstream) {
            by_rid.entry(rid.clone()).or_default().push((
                v.cause.name().to_owned(),
                v.subcause.map(|s| s.name().to_owned()),
            ));
        }
    }
    let rows = truth["rows"].as_array()?;
    let mut matched = 0;
    let mut misses = Vec::new();
    for r in rows {
        let rid = r["rid"].to_string();
        let cause = r["cause"].as_str().unwrap_or("").to_owned();
        let sub = r["subcause"].as_str().map(str::to_owned);
        let got = by_rid.remove(&rid).unwrap_or_default();
        if got
            .iter()
            .any(|(c, s)| *c == cause && (sub.is_none() || *s == sub))
        {
            matched += 1;
        } else {
            misses.push(format!("rid {rid}: truth {cause}/{sub:?}, got {got:?}"));
        }
    }
    let extra = by_rid.len();
    Some((matched, misses, extra))
}

#[test]
fn every_fixture_matches_its_ground_truth() {
    let Ok(entries) = std::fs::read_dir(fixtures()) else {
        eprintln!("skipped: no tests/fixtures directory");
        return;
    };
    let mut names: Vec<String> = entries
        .filter_map(|e| e.ok())
        .filter(|e| e.path().join("truth.json").is_file())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    let mut failures = Vec::new();
    for n in &names {
        let Some((matched, misses, extra)) = compare(n) else {
            failures.push(format!("{n}: unreadable fixture"));
            continue;
        };
        eprintln!(
            "{n}: {matched} matched, {} missed, {extra} verdicts for requests without a truth row",
            misses.len()
        );
        for m in misses {
            failures.push(format!("{n}: {m}"));
        }
        if extra > 0 {
            failures.push(format!(
                "{n}: {extra} client-facing verdicts the ground truth does not have"
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
