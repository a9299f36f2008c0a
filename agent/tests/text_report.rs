//! The text report checked against what the lab saw without tracer: the error rate it
//! prints against the clients' own results (`client.jsonl`), the requests `--all` lists
//! against the proxy's own logs (`truth.json`), and the seed demo's report fits on one
//! screen with its 502 rate and the fix for the proxy the lab ran.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures")
        .join(name)
}

fn fixtures() -> Vec<PathBuf> {
    let root = fixture("");
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(&root)
        .expect("tests/fixtures exists")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.join("client.jsonl").is_file() && p.join("truth.json").is_file())
        .collect();
    dirs.sort();
    dirs
}

/// `tracer analyze` of a fixture's two captures, text, with `extra` options.
fn report(dir: &Path, extra: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_tracer"))
        .arg("analyze")
        .arg(dir.join("client.pcap"))
        .arg(dir.join("upstream.pcap"))
        .args(extra)
        .output()
        .expect("tracer runs");
    assert!(
        out.status.success(),
        "tracer analyze {}: {}",
        dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("the report is UTF-8")
}

/// The clients' own results: how many requests, and how many ended how (`502`, or
/// `no response` for a client that gave up waiting).
fn client_results(dir: &Path) -> (u64, BTreeMap<String, u64>) {
    let text = std::fs::read_to_string(dir.join("client.jsonl")).unwrap();
    let mut by = BTreeMap::new();
    let mut total = 0;
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let r: Value = serde_json::from_str(line).unwrap();
        let key = match r["outcome"].get("Status").and_then(Value::as_u64) {
            Some(s) => s.to_string(),
            None => "no response".to_owned(),
        };
        *by.entry(key).or_default() += 1;
        total += 1;
    }
    (total, by)
}

/// The report's sentence that starts with `prefix`, its wrapped lines joined.
fn sentence(report: &str, prefix: &str) -> String {
    let mut lines = report.lines().skip_while(|l| !l.starts_with(prefix));
    let mut s = lines.next().unwrap_or_default().to_owned();
    for l in lines.take_while(|l| l.starts_with("  ")) {
        s.push(' ');
        s.push_str(l.trim());
    }
    s
}

fn encrypted(dir: &Path) -> bool {
    dir.ends_with("seed-tls")
}

#[test]
fn the_error_rate_is_what_the_clients_counted() {
    for dir in fixtures() {
        let name = dir.file_name().unwrap().to_string_lossy().into_owned();
        let text = report(&dir, &[]);
        let line = sentence(&text, "client requests:");
        if encrypted(&dir) {
            // The proxy's answers were unreadable: no rate may be claimed.
            assert!(line.contains("no response seen"), "{name}: {line}");
            continue;
        }
        let (total, by) = client_results(&dir);
        let errors: u64 = by
            .iter()
            .filter(|(k, _)| k.as_str() >= "500" || k.as_str() == "no response")
            .map(|(_, n)| n)
            .sum();
        assert!(
            line.starts_with(&format!("client requests: {total} (")),
            "{name}: the clients sent {total}: {line}"
        );
        if errors == 0 {
            assert!(line.contains("; 0 errors"), "{name}: {line}");
            continue;
        }
        let pct = format!("({:.1} %)", errors as f64 * 100.0 / total as f64);
        assert!(
            line.contains(&format!("; {errors} error")) && line.contains(&pct),
            "{name}: the clients saw {errors} errors of {total} {pct}: {line}"
        );
        for (status, n) in &by {
            let said = match status.as_str() {
                "no response" => format!("{n} × no response"),
                s if s >= "500" => format!("{n} × {s}"),
                _ => continue,
            };
            assert!(line.contains(&said), "{name}: want {said}: {line}");
        }
    }
}

/// The requests the proxy's own logs say failed.
fn failed_rids(dir: &Path) -> Vec<u64> {
    let truth: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("truth.json")).unwrap()).unwrap();
    truth["rows"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r["rid"].as_u64())
        .collect()
}

/// The request ids a text report lists.
fn listed_rids(report: &str) -> Vec<u64> {
    report
        .split(" rid=")
        .skip(1)
        .filter_map(|s| {
            s.split(|c: char| !c.is_ascii_digit())
                .next()
                .and_then(|n| n.parse().ok())
        })
        .collect()
}

#[test]
fn all_lists_every_request_the_proxy_logs_say_failed_and_the_default_a_few() {
    for dir in fixtures() {
        if encrypted(&dir) {
            // Races the proxy never sent upstream leave nothing readable (see fixtures.rs).
            continue;
        }
        let name = dir.file_name().unwrap().to_string_lossy().into_owned();
        let failed = failed_rids(&dir);
        let all = listed_rids(&report(&dir, &["--all"]));
        for rid in &failed {
            assert!(
                all.contains(rid),
                "{name}: rid {rid} failed but --all does not list it"
            );
        }
        let default = listed_rids(&report(&dir, &[]));
        let groups = report(&dir, &[])
            .lines()
            .filter(|l| l.contains(", upstream ") && l.contains(" of "))
            .count();
        assert!(
            default.len() <= 2 * groups,
            "{name}: {} verdicts listed for {groups} groups",
            default.len()
        );
        let one = listed_rids(&report(&dir, &["--limit", "1"]));
        assert_eq!(one.len(), groups.min(failed.len()), "{name}: --limit 1");
    }
}

#[test]
fn the_seed_demo_fits_one_screen_with_its_502_rate_and_the_fix() {
    let dir = fixture("seed");
    let text = report(&dir, &[]);
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines.len() <= 80, "{} lines:\n{text}", lines.len());
    for l in &lines {
        assert!(
            l.chars().count() <= 100,
            "a line of {}: {l}",
            l.chars().count()
        );
    }
    let (total, by) = client_results(&dir);
    let bad = by["502"];
    let line = sentence(&text, "client requests:");
    let pct = format!("{:.1} %", bad as f64 * 100.0 / total as f64);
    assert!(
        line.contains(&format!("{bad} × 502")) && line.contains(&pct),
        "{line}"
    );
    // The lab's seed scenario runs Caddy in front of uwsgi (tests/src/scenarios/seed.rs):
    // the fix names Caddy's setting and no other proxy's.
    let fix = &text[text.find("\nfix:").expect("a fix section")..];
    assert!(fix.contains("Caddy"), "{fix}");
    for other in ["nginx", "HAProxy", "Traefik", "Envoy", "Apache"] {
        assert!(!fix.contains(&format!("] {other}")), "{other} in {fix}");
    }
    assert!(fix.contains("uwsgi"), "{fix}");
}

/// The proxy and upstream each lab scenario runs (`tests/src/scenarios/`), as the fix
/// names them; `None` for an upstream that says nothing of itself (uwsgi).
const LAB: [(&str, &str, Option<&str>); 5] = [
    ("seed", "Caddy", None),
    ("nginx-node", "nginx", Some("Node.js")),
    ("haproxy-gunicorn", "HAProxy", Some("gunicorn")),
    ("haproxy-node", "HAProxy", Some("Node.js")),
    ("caddy-node", "Caddy", Some("Node.js")),
];

const PROXIES: [&str; 6] = ["Traefik", "nginx", "Envoy", "HAProxy", "Caddy", "Apache"];
const UPSTREAMS: [&str; 4] = ["uwsgi", "gunicorn", "Node.js", "Apache"];

/// The fix section's bullets, each as one line.
fn bullets(report: &str) -> Vec<String> {
    let Some(at) = report.find("\nfix:\n") else {
        return Vec::new();
    };
    let mut out: Vec<String> = Vec::new();
    for l in report[at + 6..].lines() {
        if let Some(b) = l.strip_prefix("  - ") {
            out.push(b.to_owned());
        } else if let (Some(last), true) = (out.last_mut(), l.starts_with("    ")) {
            last.push(' ');
            last.push_str(l.trim());
        }
    }
    out
}

#[test]
fn the_fix_is_for_the_proxy_and_upstream_the_lab_ran_and_all_for_every_one() {
    for (name, proxy, upstream) in LAB {
        let dir = fixture(name);
        let shown = bullets(&report(&dir, &[]));
        let proxies: Vec<&String> = shown.iter().filter(|b| b.starts_with("[proxy]")).collect();
        assert_eq!(proxies.len(), 1, "{name}: {shown:#?}");
        assert!(
            proxies[0].starts_with(&format!("[proxy] {proxy}")),
            "{name}: the lab runs {proxy}: {shown:#?}"
        );
        let named: Vec<&str> = shown
            .iter()
            .filter_map(|b| b.strip_prefix("[upstream] "))
            .filter_map(|b| {
                UPSTREAMS
                    .iter()
                    .copied()
                    .find(|u| b.starts_with(&format!("{u}:")))
            })
            .collect();
        assert_eq!(
            named,
            upstream.into_iter().collect::<Vec<_>>(),
            "{name}: {shown:#?}"
        );
        assert!(
            !shown.iter().any(|b| b.starts_with("[kubernetes]")),
            "{name}"
        );
        // --all: every proxy's and every upstream's setting.
        let all = bullets(&report(&dir, &["--all"]));
        for p in PROXIES {
            assert!(
                all.iter().any(|b| b.starts_with(&format!("[proxy] {p}"))),
                "{name} --all: no {p}: {all:#?}"
            );
        }
        for u in UPSTREAMS {
            assert!(
                all.iter()
                    .any(|b| b.starts_with(&format!("[upstream] {u}"))),
                "{name} --all: no {u}: {all:#?}"
            );
        }
    }
}

#[test]
fn the_proxys_own_listener_is_never_an_upstream_in_the_inferred_timeouts() {
    for dir in fixtures() {
        let text = report(&dir, &[]);
        let Some(at) = text.find("\ninferred timeouts:\n") else {
            continue;
        };
        // The lab's proxies listen on 198.18.1.2 (tests/src/net.rs); upstreams on 198.18.2.2.
        let section: String = text[at..]
            .lines()
            .skip(2)
            .take_while(|l| !l.is_empty())
            .collect();
        assert!(
            !section.contains("198.18.1.2:"),
            "{}: {section}",
            dir.display()
        );
        assert!(!section.contains("0.000 s"), "{}: {section}", dir.display());
    }
}
