//! The node agent end to end. `tracer agent` starts before any proxy exists; the lab then
//! runs its scenarios one after another (seed, nginx-node, fixed), each with a new proxy
//! in a new network namespace, and a real Prometheus scrapes the agent every second.
//!
//! Per scenario, against the ground truth the lab derives from the proxy's own logs and
//! the client's own results (never from tracer):
//! - the agent followed the new proxy by itself, and stopped following it when it exited;
//! - every non-2xx request the logs explain has one verdict line with that cause, and no
//!   request that succeeded has one (the lines carry the proxy's network namespace, so
//!   other proxies on the machine cannot mix in);
//! - in Prometheus, the growth of `tracer_verdicts_total` per cause equals the ground truth's
//!   count per cause (races in seed and nginx-node, none in fixed), and the growth of
//!   `tracer_responses_total{upstream=""}` per status class equals what the client received;
//! - at the end `promtool check metrics` accepts a scrape, and SIGTERM ends the agent with
//!   exit status 0.
//!
//! Needs root, the kernel probe and Prometheus; skips with a printed reason otherwise.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::PathBuf;
use std::process::{Child, Command};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use tracer_lab::prom::{PromApi, Prometheus, PrometheusConfig, ScrapeJob};
use tracer_lab::run::{preflight, run, BeforeLoad, RunOptions};
use tracer_lab::scenarios;

mod common;
use common::agent::{netns_inode, wait_following, wait_for_scrapes, Agent};

/// Requests per scenario: enough for seed and nginx-node to race reliably.
const REQUESTS: u32 = 800;

/// `sum by (label) (metric{selector})` now, as a map (absent series count as 0).
fn sums(api: &PromApi, expr: &str, label: &str) -> BTreeMap<String, f64> {
    api.query(expr, None)
        .unwrap_or_else(|e| panic!("querying {expr}: {e}"))
        .into_iter()
        .map(|s| (s.labels.get(label).cloned().unwrap_or_default(), s.value))
        .collect()
}

fn growth(before: &BTreeMap<String, f64>, after: &BTreeMap<String, f64>) -> BTreeMap<String, u64> {
    after
        .iter()
        .map(|(k, v)| {
            (
                k.clone(),
                (v - before.get(k).copied().unwrap_or(0.0)).round() as u64,
            )
        })
        .filter(|(_, n)| *n > 0)
        .collect()
}

#[test]
fn the_agent_follows_each_new_proxy_and_its_metrics_match_the_proxy_logs() {
    if let Err(why) = preflight() {
        eprintln!("SKIPPED the agent's lab test: {why:#}");
        return;
    }
    if let Err(why) = tracer::probe::built_with_probe() {
        eprintln!("SKIPPED the agent's lab test: tracer was built without the probe: {why}");
        return;
    }
    if let Err(why) = Prometheus::available() {
        eprintln!("SKIPPED the agent's lab test: {why}");
        return;
    }
    let tracer = PathBuf::from(env!("CARGO_BIN_EXE_tracer"));
    let root = std::env::temp_dir().join(format!("tracer-agent-lab-{}", std::process::id()));
    std::fs::create_dir_all(&root).unwrap();
    let mut agent = Agent::start(&tracer, &root);
    let target = agent.url.trim_start_matches("http://").to_owned();
    let prom = Prometheus::start(&PrometheusConfig {
        jobs: vec![ScrapeJob::new("tracer", [target])],
        ..PrometheusConfig::default()
    })
    .expect("starting Prometheus");
    let api = prom.api();
    wait_for_scrapes(api);

    let mut failures = Vec::new();
    for name in ["seed", "nginx-node", "fixed"] {
        let scenario = scenarios::by_name(name).expect("a lab scenario");
        let netns = Arc::new(Mutex::new(None::<u64>));
        // This scenario's proxy may get an earlier one's namespace number: only what the
        // agent logs from here on is about it.
        let mark = agent.log_mark();
        let hook = {
            let (netns, err, url) = (netns.clone(), agent.err.clone(), agent.url.clone());
            BeforeLoad(Arc::new(move |h| {
                let ino = netns_inode(&h.proxy_ns)?;
                *netns.lock().unwrap() = Some(ino);
                // The agent finds the proxy by itself; the load waits until it follows it.
                wait_following(&err, &url, ino, mark)
            }))
        };
        let verdicts_before = sums(api, "sum by (cause) (tracer_verdicts_total)", "cause");
        let responses_before = sums(
            api,
            "sum by (status_class) (tracer_responses_total{upstream=\"\"})",
            "status_class",
        );
        let lines_before = agent.lines().len();
        let opts = RunOptions {
            requests: Some(REQUESTS),
            before_load: Some(hook),
            ..RunOptions::default()
        };
        let out = match run(scenario.as_ref(), &root.join(name), &opts) {
            Ok(out) => out,
            Err(e) => {
                failures.push(format!("{name}: the run failed: {e:#}"));
                continue;
            }
        };
        let ino = netns.lock().unwrap().expect("the hook ran");
        // The proxy exited with the run: the agent stops following it and hands over the
        // verdicts it still held.
        agent.wait_for(
            "the agent to stop following the proxy",
            Duration::from_secs(20),
            |a| a.stopped_following(ino, mark),
        );
        wait_for_scrapes(api);
        eprintln!("{}", out.summary());
        let mut mine: Vec<String> = out.misses.clone();
        mine.extend(out.disagreements.iter().take(3).cloned());

        // The verdict lines of this proxy against the logs.
        let lines: Vec<Value> = agent.lines().split_off(lines_before);
        let ours: Vec<&Value> = lines.iter().filter(|v| v["netns"] == ino).collect();
        let mut by_rid: BTreeMap<u64, Vec<&Value>> = BTreeMap::new();
        for v in &ours {
            if let Some(rid) = v["request_id"].as_str().and_then(|r| r.parse().ok()) {
                by_rid.entry(rid).or_default().push(v);
            }
        }
        let mut want: BTreeMap<String, u64> = BTreeMap::new();
        for row in &out.truth.rows {
            let cause = if row.capture_lost {
                "unexplained"
            } else {
                row.cause.as_str()
            };
            *want.entry(cause.to_owned()).or_default() += 1;
            match by_rid.get(&row.rid).map(Vec::as_slice).unwrap_or_default() {
                [v] if v["cause"] == cause => {}
                [v] => mine.push(format!(
                    "rid {}: the agent says {} ({}), the proxy's logs say {cause}",
                    row.rid, v["cause"], v["summary"]
                )),
                [] => mine.push(format!(
                    "rid {}: no verdict (the logs say {cause})",
                    row.rid
                )),
                vs => mine.push(format!("rid {}: {} verdicts", row.rid, vs.len())),
            }
        }
        let failed: std::collections::BTreeSet<u64> =
            out.truth.rows.iter().map(|r| r.rid).collect();
        for (rid, vs) in &by_rid {
            if !failed.contains(rid) && vs.iter().any(|v| v["cause"] != "unexplained") {
                mine.push(format!(
                    "rid {rid}: a {} verdict for a request that succeeded",
                    vs[0]["cause"]
                ));
            }
        }
        let races = want.get("keepalive_race").copied().unwrap_or(0);
        if name == "fixed" && races != 0 {
            mine.push(format!("the fixed scenario logged {races} races"));
        } else if name != "fixed" && races == 0 {
            mine.push("the scenario logged no race".to_owned());
        }

        // Prometheus against the same ground truth.
        let verdicts = growth(
            &verdicts_before,
            &sums(api, "sum by (cause) (tracer_verdicts_total)", "cause"),
        );
        // Prometheus sums over every proxy the agent follows: where other proxies ran on
        // this machine meanwhile (other tests, other work), only the lines can be compared.
        let other_proxies = lines.len() - ours.len();
        if other_proxies > 0 {
            eprintln!(
                "    note: {other_proxies} verdicts of other proxies on this machine: Prometheus's sums not compared"
            );
        }
        if other_proxies == 0 && verdicts != want {
            mine.push(format!(
                "tracer_verdicts_total grew by {verdicts:?}, the proxy's logs say {want:?}"
            ));
        }
        let responses = growth(
            &responses_before,
            &sums(
                api,
                "sum by (status_class) (tracer_responses_total{upstream=\"\"})",
                "status_class",
            ),
        );
        let mut received: BTreeMap<String, u64> = BTreeMap::new();
        for (status, n) in &out.truth.client_counts {
            if let Some(class) = status.parse::<u16>().ok().map(|s| format!("{}xx", s / 100)) {
                *received.entry(class).or_default() += n;
            }
        }
        if other_proxies == 0 && responses != received {
            mine.push(format!(
                "tracer_responses_total{{upstream=\"\"}} grew by {responses:?}, the client received {received:?}"
            ));
        }
        eprintln!(
            "    agent: {} verdict lines for this proxy (netns {ino}; {} from other proxies), verdicts by cause {verdicts:?}, client-facing responses {responses:?}",
            ours.len(),
            other_proxies
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

    // The exposition is valid, and SIGTERM is a clean stop.
    let scrape = agent.get("/metrics").expect("a scrape of /metrics");
    let scrape_file = root.join("scrape.txt");
    std::fs::write(&scrape_file, &scrape).unwrap();
    let mut check = Command::new("sh");
    check.arg("-c").arg(format!(
        "promtool check metrics < '{}'",
        scrape_file.display()
    ));
    let lint = check.output().expect("running promtool");
    if !lint.status.success() {
        failures.push(format!(
            "promtool check metrics: {}{}",
            String::from_utf8_lossy(&lint.stdout),
            String::from_utf8_lossy(&lint.stderr)
        ));
    }
    let pid = nix_pid(&agent.child);
    // SAFETY: kill(2) with a pid we spawned and still own (not yet waited for).
    unsafe { libc::kill(pid, libc::SIGTERM) };
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(s) = agent.child.try_wait().unwrap() {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "the agent did not stop within 10 s of SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    if !status.success() {
        let mut err = String::new();
        let _ = std::fs::File::open(&agent.err).map(|mut f| f.read_to_string(&mut err));
        failures.push(format!("SIGTERM: the agent exited with {status}: {err}"));
    }
    assert!(
        failures.is_empty(),
        "runs kept under {}:\n{}",
        root.display(),
        failures.join("\n")
    );
    std::fs::remove_dir_all(&root).ok();
}

fn nix_pid(child: &Child) -> libc::pid_t {
    libc::pid_t::try_from(child.id()).expect("a pid fits pid_t")
}
