//! End to end: every lab scenario with real proxies and upstreams, and `tracer capture`
//! attached live to the proxy's network namespace (packets and kernel probe).
//!
//! For each scenario it checks, against the ground truth the lab derives from the proxy's
//! own logs (never from tracer):
//! - the scenario reproduces (its 502 rate, or 100% of its cause for a contrast) and the
//!   ground truth agrees with the client's own results;
//! - every race 502 the client saw has a `keepalive_race` verdict carrying kernel evidence
//!   (the proxy's process), every contrast its own cause, and no verdict names another
//!   cause than the logs (zero misattributions);
//! - the probe lost no event; capture drops are reported;
//! - where the clients speak TLS: with the TLS uprobes attached (the default) the client side
//!   is read from the proxy's plaintext, and every race is seen, also those the proxy never
//!   sent upstream; with `--no-tls` (checked on `seed-tls` with `--all-data`) the report
//!   says the client side is encrypted, and a race the proxy never sent leaves nothing
//!   readable: it is counted as unseen.
//!
//! Needs root; skips with a printed reason otherwise.

use std::collections::BTreeMap;

use serde_json::Value;
use tracer_lab::run::{preflight, run, RunOptions};
use tracer_lab::scenarios;

mod chromium;

fn verdicts_by_rid(report: &Value) -> BTreeMap<u64, Vec<Value>> {
    let mut m: BTreeMap<u64, Vec<Value>> = BTreeMap::new();
    for v in report["verdicts"].as_array().into_iter().flatten() {
        if let Some(rid) = v["request_id"].as_str().and_then(|r| r.parse().ok()) {
            m.entry(rid).or_default().push(v.clone());
        }
    }
    m
}

/// The request ids (`?rid=N ` in a request line) anywhere in a capture file's bytes: the
/// requests that crossed that leg. A request line sits in one segment's first bytes.
fn request_ids_in(pcap: &std::path::Path) -> std::collections::BTreeSet<u64> {
    let bytes = std::fs::read(pcap).unwrap_or_default();
    let mut ids = std::collections::BTreeSet::new();
    let needle = b"?rid=";
    let mut i = 0;
    while let Some(at) = bytes[i..].windows(needle.len()).position(|w| w == needle) {
        let start = i + at + needle.len();
        let digits: Vec<u8> = bytes[start..]
            .iter()
            .take_while(|b| b.is_ascii_digit())
            .copied()
            .collect();
        if bytes.get(start + digits.len()) == Some(&b' ') {
            if let Some(n) = std::str::from_utf8(&digits)
                .ok()
                .and_then(|d| d.parse().ok())
            {
                ids.insert(n);
            }
        }
        i = start;
    }
    ids
}

/// (request id, cause, subcause, status) of every verdict of a report.
fn verdict_keys(report: &Value) -> std::collections::BTreeSet<String> {
    report["verdicts"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|v| {
            format!(
                "{} {} {} {}",
                v["request_id"], v["cause"], v["subcause"], v["status"]
            )
        })
        .collect()
}

/// `tracer capture` as it runs by default: the kernel keeps only a selection of the packets.
/// The scenarios with TLS (and HTTP/2) on the client side run here with the TLS uprobes:
/// their client side is read from the proxy's plaintext, the same whatever the packet
/// selection.
#[test]
fn every_scenario_live_sparse_matches_the_proxy_logs() {
    check_every_scenario("sparse", &[], true);
}

/// The same bar for `--all-data`, where every data segment is copied; of the scenarios with
/// TLS on the client side only `seed-tls`, with `--no-tls`: what the packets alone show.
#[test]
fn every_scenario_live_matches_the_proxy_logs() {
    check_every_scenario("all-data", &["--all-data"], false);
}

/// The scenario with TLS on the client side that runs without the uprobes.
const PACKETS_ONLY_TLS: &str = "seed-tls";

/// Runs every scenario (or those named in `TRACER_LAB_ONLY`, comma-separated) with
/// `tracer capture ARGS` attached and checks its verdicts against the proxy's logs; with
/// `uprobes`, those with TLS on the client side too, else only [`PACKETS_ONLY_TLS`], with
/// `--no-tls`.
fn check_every_scenario(label: &str, args: &[&str], uprobes: bool) {
    // One lab at a time: two at once on a small machine change the scenarios' timing.
    static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _turn = ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Err(why) = preflight() {
        eprintln!("SKIPPED lab scenarios with tracer capture {label}: {why:#}");
        return;
    }
    let only: Vec<String> = std::env::var("TRACER_LAB_ONLY")
        .map(|v| v.split(',').map(str::to_owned).collect())
        .unwrap_or_default();
    let tracer = std::path::PathBuf::from(env!("CARGO_BIN_EXE_tracer"));
    let root = std::env::temp_dir().join(format!("tracer-lab-live-{label}-{}", std::process::id()));
    let mut failures = Vec::new();
    for s in scenarios::all() {
        let name = s.name();
        if !only.is_empty() && !only.iter().any(|o| o == name) {
            continue;
        }
        let encrypted = s.client().encrypted();
        let mut tracer_args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
        if encrypted && !uprobes {
            if name != PACKETS_ONLY_TLS {
                continue;
            }
            tracer_args.push("--no-tls".into());
        }
        let opts = RunOptions {
            tracer: Some(tracer.clone()),
            tracer_args,
            ..RunOptions::default()
        };
        let out = match run(s.as_ref(), &root.join(name), &opts) {
            Ok(out) => out,
            Err(e) => {
                failures.push(format!("{name}: the run failed: {e:#}"));
                continue;
            }
        };
        let mut mine = Vec::new();
        // The lab itself: the scenario reproduces and its ground truth agrees with the client.
        for d in out.disagreements.iter().take(5) {
            mine.push(format!("ground truth disagrees with the client: {d}"));
        }
        mine.extend(out.misses.iter().cloned());

        // tracer's live verdicts against the ground truth.
        let report: Value = std::fs::read_to_string(out.dir.join("tracer-report.json"))
            .ok()
            .and_then(|s| serde_json::from_str(&s).ok())
            .unwrap_or(Value::Null);
        assert_eq!(
            report["schema"], "tracer.report/v1",
            "{name}: no report from tracer capture"
        );
        let by_rid = verdicts_by_rid(&report);
        let err = std::fs::read_to_string(out.dir.join("tracer.err")).unwrap_or_default();
        if encrypted && uprobes && !err.contains("uprobes attached") {
            mine.push(format!(
                "no TLS uprobe was attached to the proxy: {}",
                err.lines()
                    .filter(|l| l.contains("TLS"))
                    .collect::<Vec<_>>()
                    .join("; ")
            ));
        }
        // Without the uprobes a race the proxy never sent upstream leaves nothing readable.
        let blind = encrypted && !uprobes;
        if blind && report["client_side"]["encrypted"] != true {
            mine.push(
                "the clients spoke TLS but the report does not say the client side is encrypted"
                    .into(),
            );
        }
        // With the uprobes the client side is read from the proxy's plaintext: no client
        // connection may be left unreadable.
        if encrypted && uprobes && !report["client_side"].is_null() {
            mine.push(format!(
                "the TLS uprobes were attached, yet the report says client connections were unreadable: {}",
                report["client_side"]["summary"]
            ));
        }
        let upstream_saw = if blind {
            request_ids_in(&out.dir.join("upstream.pcap"))
        } else {
            std::collections::BTreeSet::new()
        };
        let (mut right, mut with_kernel, mut unseen) = (0, 0, 0);
        for row in &out.truth.rows {
            let got = by_rid.get(&row.rid).map(Vec::as_slice).unwrap_or_default();
            // Behind TLS without the uprobes, a race is seeable only where its request
            // reached the upstream leg: the upstream capture (tcpdump's, not tracer's) says
            // whether it did. (Caddy logs some races whose request never left as `EOF`.)
            if blind
                && got.is_empty()
                && row.cause == "keepalive_race"
                && !upstream_saw.contains(&row.rid)
            {
                unseen += 1;
                continue;
            }
            let want = if row.capture_lost {
                "unexplained"
            } else {
                row.cause.as_str()
            };
            match got {
                [v] if v["cause"] == want => {
                    right += 1;
                    if row.cause == "keepalive_race" {
                        if v["process"].is_string() {
                            with_kernel += 1;
                        } else {
                            mine.push(format!(
                                "rid {}: keepalive_race without kernel evidence: {}",
                                row.rid, v["summary"]
                            ));
                        }
                    }
                }
                [v] => mine.push(format!(
                    "rid {}: tracer says {} ({}), the proxy's logs say {want}: {}",
                    row.rid,
                    v["cause"],
                    v["summary"],
                    row.evidence.chars().take(160).collect::<String>()
                )),
                [] => mine.push(format!(
                    "rid {}: no verdict (the proxy's logs say {want})",
                    row.rid
                )),
                vs => mine.push(format!("rid {}: {} verdicts", row.rid, vs.len())),
            }
        }
        let truth_rids: std::collections::BTreeSet<u64> =
            out.truth.rows.iter().map(|r| r.rid).collect();
        for (rid, vs) in &by_rid {
            if !truth_rids.contains(rid) && vs.iter().any(|v| v["cause"] != "unexplained") {
                mine.push(format!(
                    "rid {rid}: a {} verdict for a request that succeeded",
                    vs[0]["cause"]
                ));
            }
        }
        // The bundle, read again offline, gives the same verdicts.
        let again = std::process::Command::new(&tracer)
            .args(["analyze", "--format", "json"])
            .arg(out.dir.join("tracer"))
            .output()
            .expect("running tracer analyze");
        let again: Value = serde_json::from_slice(&again.stdout).unwrap_or(Value::Null);
        let (live, offline) = (verdict_keys(&report), verdict_keys(&again));
        if live != offline {
            mine.push(format!(
                "tracer analyze of the bundle disagrees with the live verdicts: {} live, {} offline, first differences {:?}",
                live.len(),
                offline.len(),
                live.symmetric_difference(&offline).take(3).collect::<Vec<_>>()
            ));
        }
        mine.extend(check_html(
            name,
            &out.dir.join("tracer"),
            with_kernel > 0 && !encrypted,
        ));
        if err.contains("probe lost") {
            mine.push(format!(
                "the probe lost events: {}",
                err.lines().find(|l| l.contains("probe lost")).unwrap_or("")
            ));
        }
        if !err.contains("kernel probe attached") {
            mine.push(format!("the kernel probe was not attached: {}", err.trim()));
        }
        let seeable = out.truth.rows.len() - unseen;
        let recall = if seeable == 0 {
            1.0
        } else {
            right as f64 / seeable as f64
        };
        let proven = report["verdicts"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|v| v["confidence"] == "proven")
            .count();
        eprintln!(
            "{}\n    tracer capture ({label}): {right}/{seeable} right (recall {:.1}%), {with_kernel} races with kernel evidence, {proven} proven{}",
            out.summary(),
            recall * 100.0,
            if unseen > 0 {
                format!(", {unseen} races the proxy never sent unseen behind TLS")
            } else {
                String::new()
            }
        );
        if mine.is_empty() {
            std::fs::remove_dir_all(&out.dir).ok();
        } else {
            let n = mine.len();
            failures.extend(mine.into_iter().take(6).map(|m| format!("{name}: {m}")));
            if n > 6 {
                failures.push(format!("{name}: … {} more", n - 6));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "runs kept under {}:\n{}",
        root.display(),
        failures.join("\n")
    );
}

/// The bundle's HTML report: there, with the kernel's evidence drawn when the verdicts
/// carry it; for the seed scenario, also drawn by headless Chromium (when installed) with
/// its errors in red.
fn check_html(name: &str, bundle: &std::path::Path, kernel: bool) -> Vec<String> {
    let html = bundle.join("report.html");
    let Ok(page) = std::fs::read_to_string(&html) else {
        return vec!["the bundle has no report.html".into()];
    };
    let mut mine = Vec::new();
    if !page.contains("<title>tracer report: ") || !page.contains("interface") {
        mine.push("report.html has no title or no summary".into());
    }
    if kernel && !page.contains("class=\"m krn\"") {
        mine.push("report.html draws no kernel evidence though the verdicts carry it".into());
    }
    let Some(browser) = chromium::browser().filter(|_| name == "seed") else {
        return mine;
    };
    let png = bundle.join("report.png");
    let shot = chromium::screenshot(browser, &html, &png, &bundle.join("chromium-profile"))
        .and_then(|()| chromium::ink(&png));
    match shot {
        Ok(ink) if ink.inked > 0.03 && ink.colours >= 24 && ink.red > 300 => {
            eprintln!("    report.html in chromium: {ink:?}");
        }
        Ok(ink) => mine.push(format!("report.html looks blank in chromium: {ink:?}")),
        Err(e) => mine.push(format!("report.html in chromium: {e}")),
    }
    mine
}
