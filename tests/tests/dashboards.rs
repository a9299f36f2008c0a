//! tracer's Grafana dashboards and Prometheus rules (`dashboards/`), checked the way Grafana
//! and Prometheus will read them:
//!
//! - the dashboards are well formed (data source variable, no fixed uid, unique panel ids,
//!   every variable defined) and use only the metrics, labels and label values the agent
//!   exports; every count of responses chooses a side (`upstream=""`: the proxy's responses
//!   to its clients, `upstream!=""`: its upstreams' responses to it);
//! - `promtool check rules` and `promtool test rules` pass, and every alert has a unit test;
//! - every panel query, interpolated as Grafana would, parses in a real Prometheus and returns
//!   series, and every rule is healthy, on **synthetic data**: two fake agents (Python's
//!   `http.server` serving an exposition this file writes, counters growing with time), one
//!   with keep-alive races and one without. The end-to-end test with the real agent and the
//!   lab's scenarios (`agent/tests/agent_dashboards.rs`) uses the same helpers
//!   (`tracer_lab::grafana`, `tracer_lab::prom::Prometheus`, `scale_rule_durations`);
//! - the alerts, time-scaled, fire for the racy fake agent and not for the healthy one.
//!
//! Needs Debian's `prometheus` package (and python3 for the fake agents); skips with a printed
//! reason without them.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tracer_lab::grafana::{evaluate, Context, Dashboard, PanelResult};
use tracer_lab::prom::{
    free_port, promtool, scale_rule_durations, selectors, Matcher, PromApi, Prometheus,
    PrometheusConfig, ScrapeJob,
};

// ---------------------------------------------------------------------------------------------
// The contract with the agent (issue: the node agent's metric names and labels).

/// Every metric the agent exports, histogram series included.
const AGENT_METRICS: &[&str] = &[
    "tracer_verdicts_total",
    "tracer_responses_total",
    "tracer_upstream_idle_close_seconds_bucket",
    "tracer_upstream_idle_close_seconds_sum",
    "tracer_upstream_idle_close_seconds_count",
    "tracer_proxy_reuse_idle_seconds_bucket",
    "tracer_proxy_reuse_idle_seconds_sum",
    "tracer_proxy_reuse_idle_seconds_count",
    "tracer_upstream_keepalive_timeout_seconds",
    "tracer_proxy_idle_timeout_seconds",
    "tracer_events_lost_total",
    "tracer_packets_dropped_total",
    "tracer_connections_tracked",
    "tracer_connections_evicted_total",
    "tracer_proxies_followed",
    "tracer_sessions_failed_total",
    "tracer_build_info",
    "tracer_engine_entries",
    "tracer_heap_bytes",
    "process_cpu_seconds_total",
    "process_resident_memory_bytes",
];
/// Labels the agent sets, the scrape adds (`job`, `instance`), Kubernetes adds (`namespace`,
/// `pod`), or Prometheus gives histograms (`le`).
const LABELS: &[&str] = &[
    "proxy",
    "upstream",
    "status",
    "cause",
    "subcause",
    "confidence",
    "status_class",
    "version",
    "table",
    "job",
    "instance",
    "namespace",
    "pod",
    "le",
];
const CAUSES: &[&str] = &[
    "keepalive_race",
    "upstream_refused",
    "upstream_reset",
    "upstream_closed_early",
    "proxy_timeout",
    "connect_timeout",
    "client_abort",
    "upstream_generated",
    "unexplained",
];
const SUBCAUSES: &[&str] = &[
    "fin_crossed",
    "request_never_sent",
    "fin_unread",
    "closed_unread",
    "",
];
const CONFIDENCES: &[&str] = &["proven", "probable"];
const STATUS_CLASSES: &[&str] = &["1xx", "2xx", "3xx", "4xx", "5xx"];

// ---------------------------------------------------------------------------------------------
// Where things are.

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the lab crate sits in the workspace")
        .to_owned()
}

fn dashboards_dir() -> PathBuf {
    root().join("dashboards")
}

fn rules_file() -> PathBuf {
    dashboards_dir().join("rules/tracer.rules.yml")
}

fn rule_tests() -> Vec<PathBuf> {
    let mut tests: Vec<PathBuf> = std::fs::read_dir(dashboards_dir().join("rules/tests"))
        .expect("dashboards/rules/tests")
        .map(|e| e.expect("a directory entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yml"))
        .collect();
    tests.sort();
    tests
}

fn dashboards() -> Vec<Dashboard> {
    Dashboard::load_dir(&dashboards_dir()).expect("every JSON file in dashboards/ is a dashboard")
}

/// The rule file's alert names and recorded metric names, read from its text.
fn rule_names(text: &str) -> (Vec<String>, Vec<String>) {
    let names = |key: &str| {
        text.lines()
            .filter_map(|l| l.trim().strip_prefix(key))
            .map(|n| n.trim().to_owned())
            .collect::<Vec<_>>()
    };
    (names("- alert:"), names("- record:"))
}

// ---------------------------------------------------------------------------------------------
// Static checks.

/// What in `expr` the agent does not export: unknown metrics, labels or label values.
fn contract_problems(expr: &str, recorded: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    for sel in selectors(expr) {
        let m = &sel.metric;
        let is_metric = m.starts_with("tracer_") || m.starts_with("process_") || m.contains(':');
        if is_metric && !AGENT_METRICS.contains(&m.as_str()) && !recorded.contains(m) {
            out.push(format!(
                "metric {m} is neither exported by the agent nor recorded"
            ));
        }
        for Matcher { label, op, value } in &sel.matchers {
            if !LABELS.contains(&label.as_str()) {
                out.push(format!("label {label} is not one the agent's series carry"));
            }
            let allowed: Option<&[&str]> = match label.as_str() {
                "cause" => Some(CAUSES),
                "subcause" => Some(SUBCAUSES),
                "confidence" => Some(CONFIDENCES),
                "status_class" => Some(STATUS_CLASSES),
                _ => None,
            };
            if let (Some(allowed), "=") = (allowed, op.as_str()) {
                if !allowed.contains(&value.as_str()) {
                    out.push(format!(
                        "{label}=\"{value}\" is not a value the agent exports"
                    ));
                }
            }
            if label == "status" && op == "=" && value != "none" && value.parse::<u16>().is_err() {
                out.push(format!(
                    "status=\"{value}\": the agent's status is a code or \"none\""
                ));
            }
        }
    }
    out
}

/// Where a query counts responses without saying which side: `tracer_responses_total` holds
/// the proxy's responses to its clients (`upstream=""`) and each upstream's responses to the
/// proxy (`upstream="ADDR"`), so every use selects one side (`upstream=""` or
/// `upstream!=""`), and a client-facing one applies no `$upstream` selection (responses to
/// clients have no upstream). Recording rules that keep both sides are exempt.
fn side_problems(expr: &str) -> Vec<String> {
    let mut out = Vec::new();
    for sel in selectors(expr) {
        if sel.metric != "tracer_responses_total"
            && sel.metric != "proxy_upstream:tracer_responses:rate5m"
        {
            continue;
        }
        let client = sel
            .on("upstream")
            .any(|m| m.op == "=" && m.value.is_empty());
        let upstreams = sel
            .on("upstream")
            .any(|m| m.op == "!=" && m.value.is_empty());
        if client == upstreams {
            out.push(format!(
                "{} selects {} (upstream=\"\": responses to clients; upstream!=\"\": upstreams' responses)",
                sel.metric,
                if client { "both sides" } else { "no side" }
            ));
        }
        if client && sel.on("upstream").any(|m| m.value.contains("$upstream")) {
            out.push(format!(
                "{} counts responses to clients but applies $upstream: they have no upstream",
                sel.metric
            ));
        }
    }
    out
}

#[test]
fn dashboards_are_well_formed_and_use_only_what_the_agent_exports() {
    let all = dashboards();
    let titles: Vec<&str> = all.iter().map(Dashboard::title).collect();
    assert_eq!(
        titles,
        [
            "tracer / Agent health",
            "tracer / Overview",
            "tracer / Timeout mismatch"
        ],
        "the dashboards in dashboards/"
    );
    let mut uids = BTreeSet::new();
    let (_, recorded) = rule_names(&std::fs::read_to_string(rules_file()).unwrap());
    let mut problems = Vec::new();
    for d in &all {
        let name = d.path.file_name().unwrap().to_string_lossy().into_owned();
        problems.extend(d.problems().into_iter().map(|p| format!("{name}: {p}")));
        if !uids.insert(d.uid().unwrap_or_default().to_owned()) {
            problems.push(format!("{name}: uid {:?} used twice", d.uid()));
        }
        let mut queries = d.queries();
        assert!(!queries.is_empty(), "{name} has no query");
        for v in d.variables() {
            if let Some(q) = d.variable_query(&v.name) {
                queries.push(tracer_lab::grafana::Query {
                    panel_id: 0,
                    panel_title: format!("variable {}", v.name),
                    panel_type: String::new(),
                    ref_id: String::new(),
                    expr: q,
                    instant: true,
                });
            }
        }
        for q in &queries {
            for p in contract_problems(&q.expr, &recorded) {
                problems.push(format!("{name}: {:?}: {p}", q.panel_title));
            }
            if q.panel_id != 0 {
                for p in side_problems(&q.expr) {
                    problems.push(format!("{name}: {:?} {}: {p}", q.panel_title, q.ref_id));
                }
            }
        }
    }
    // The proxy dashboards filter by proxy, upstream and the Kubernetes labels; the health
    // dashboard by agent.
    for d in &all {
        let names: BTreeSet<String> = d.variables().into_iter().map(|v| v.name).collect();
        let want: &[&str] = if d.uid() == Some("tracer-agent-health") {
            &["datasource", "job", "instance"]
        } else {
            &["datasource", "namespace", "pod", "proxy", "upstream"]
        };
        for w in want {
            if !names.contains(*w) {
                problems.push(format!("{}: no variable {w}", d.title()));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    // The side check can fail: both sides summed, and $upstream on responses to clients.
    assert_eq!(
        side_problems(r#"sum(rate(tracer_responses_total{proxy=~"$proxy"}[5m]))"#).len(),
        1
    );
    assert_eq!(
        side_problems(r#"tracer_responses_total{upstream="", upstream=~"$upstream"}"#).len(),
        1
    );
}

#[test]
fn the_provisioning_file_sits_where_grafana_reads_it_and_points_at_the_dashboards() {
    // Grafana reads the *.yaml directly in provisioning/dashboards (not below) and the
    // provider walks `path` for *.json: mounting dashboards/ there serves both.
    let text = std::fs::read_to_string(dashboards_dir().join("provisioning.yaml"))
        .expect("dashboards/provisioning.yaml");
    for line in [
        "apiVersion: 1",
        "type: file",
        "path: /etc/grafana/provisioning/dashboards",
    ] {
        assert!(text.contains(line), "provisioning.yaml lacks {line:?}");
    }
    let top_level_yaml: Vec<_> = std::fs::read_dir(dashboards_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file() && p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
        .collect();
    assert_eq!(
        top_level_yaml,
        [dashboards_dir().join("provisioning.yaml")],
        "Grafana would read every top-level YAML file of dashboards/ as provisioning"
    );
}

#[test]
fn rules_pass_promtool_and_every_alert_and_recording_has_a_unit_test() {
    if let Err(why) = promtool(&["--version"]) {
        eprintln!("SKIPPED: {why}");
        return;
    }
    let rules = rules_file();
    let check = promtool(&["check", "rules", rules.to_str().unwrap()]).unwrap();
    assert!(
        check.status.success(),
        "promtool check rules:\n{}{}",
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );
    let tests = rule_tests();
    assert!(
        !tests.is_empty(),
        "no rule unit tests in dashboards/rules/tests"
    );
    let mut args = vec!["test", "rules"];
    args.extend(tests.iter().map(|t| t.to_str().unwrap()));
    let run = promtool(&args).unwrap();
    let out = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "promtool test rules:\n{out}{}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert_eq!(
        out.matches("SUCCESS").count(),
        tests.len(),
        "every test file ran: {out}"
    );

    let text = std::fs::read_to_string(&rules).unwrap();
    let (alerts, recorded) = rule_names(&text);
    assert!(
        alerts.len() >= 5 && recorded.len() >= 3,
        "{alerts:?} {recorded:?}"
    );
    let test_text: String = tests
        .iter()
        .map(|t| std::fs::read_to_string(t).unwrap())
        .collect();
    for a in &alerts {
        assert!(
            test_text.contains(&format!("alertname: {a}\n        exp_alerts:\n          -")),
            "alert {a} has no unit test that expects it to fire"
        );
    }
    for r in &recorded {
        assert!(
            test_text.contains(r.as_str()),
            "recording rule {r} has no unit test"
        );
    }
    let exprs = rule_exprs(&text);
    assert_eq!(exprs.len(), alerts.len() + recorded.len(), "{exprs:#?}");
    let mut problems: Vec<String> = exprs
        .iter()
        .flat_map(|e| contract_problems(e, &recorded))
        .collect();
    // The recorded rates keep both sides of the responses; the shares built on them choose.
    let keeps_both = ["rate(tracer_responses_total[5m])"];
    for e in exprs
        .iter()
        .filter(|e| !keeps_both.iter().any(|k| e.contains(k)))
    {
        problems.extend(side_problems(e).into_iter().map(|p| format!("{e}: {p}")));
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// Every rule's `expr:` in a rule file's text: on its line, or the block below `expr: |`.
fn rule_exprs(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut lines = text.lines().peekable();
    while let Some(line) = lines.next() {
        let Some(value) = line.trim_start().strip_prefix("expr:") else {
            continue;
        };
        let value = value.trim();
        if value != "|" && value != ">" {
            out.push(value.to_owned());
            continue;
        }
        let indent = line.len() - line.trim_start().len();
        let mut block = String::new();
        while let Some(next) = lines.peek() {
            let deeper = next.len() - next.trim_start().len() > indent;
            if !(deeper || next.trim().is_empty()) {
                break;
            }
            block.push_str(next.trim());
            block.push('\n');
            lines.next();
        }
        out.push(block);
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Synthetic agents.

/// One fake agent's traffic: what it sees per second.
struct FakeAgent {
    /// Kubernetes labels of its proxy, if any.
    k8s: Option<(&'static str, &'static str)>,
    proxy: &'static str,
    upstream: &'static str,
    /// Responses per second to the proxy's clients, by status class.
    responses: &'static [(&'static str, f64)],
    /// Responses per second of the upstream to the proxy, by status class.
    upstream_responses: &'static [(&'static str, f64)],
    /// Verdicts: (status, cause, subcause, confidence, per second, constant offset).
    verdicts: &'static [(
        &'static str,
        &'static str,
        &'static str,
        &'static str,
        f64,
        f64,
    )],
    /// Upstream idle closes per second by bucket upper bound.
    idle_close: &'static [(f64, f64)],
    /// Proxy reuses per second by bucket upper bound.
    reuse: &'static [(f64, f64)],
    keepalive_timeout: f64,
    proxy_idle_timeout: f64,
    events_lost_per_s: f64,
    packets_dropped: f64,
    sessions_failed: f64,
    tracked: f64,
    cpu_per_s: f64,
    rss: f64,
    /// What the allocator holds for live allocations (bytes).
    heap: f64,
}

const BUCKETS: [f64; 9] = [0.005, 0.05, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 120.0];

/// Caddy → uwsgi without keep-alive (the seed scenario's shape): 16 races a second against
/// 80 responses of the upstream (a share of 16 / 96), a proxy idle timeout of 90 s against an
/// upstream that closes after every response, events lost.
const RACY: FakeAgent = FakeAgent {
    k8s: Some(("ingress", "caddy-5d8f7")),
    proxy: "caddy",
    upstream: "198.18.0.10:8000",
    responses: &[("2xx", 80.0), ("4xx", 1.0), ("5xx", 20.0)],
    upstream_responses: &[("2xx", 80.0)],
    verdicts: &[
        (
            "502",
            "keepalive_race",
            "request_never_sent",
            "proven",
            5.0,
            0.0,
        ),
        ("502", "keepalive_race", "fin_crossed", "proven", 6.0, 0.0),
        (
            "502",
            "keepalive_race",
            "closed_unread",
            "probable",
            2.0,
            0.0,
        ),
        ("502", "keepalive_race", "fin_unread", "proven", 3.0, 0.0),
        ("502", "upstream_reset", "", "proven", 1.0, 0.0),
        ("504", "proxy_timeout", "", "proven", 1.0, 0.0),
        ("499", "client_abort", "", "proven", 1.0, 0.0),
        ("none", "upstream_closed_early", "", "proven", 1.0, 0.0),
        ("502", "unexplained", "", "probable", 1.0, 0.0),
    ],
    idle_close: &[(0.005, 16.0)],
    reuse: &[(0.05, 10.0), (0.5, 20.0), (1.0, 10.0), (5.0, 10.0)],
    keepalive_timeout: 0.0,
    proxy_idle_timeout: 90.0,
    events_lost_per_s: 2.0,
    packets_dropped: 0.0,
    sessions_failed: 1.0,
    tracked: 120.0,
    cpu_per_s: 0.05,
    rss: 41_943_040.0,
    heap: 25_165_824.0,
};

/// nginx (outside Kubernetes) → an upstream that keeps connections longer than nginx: no race
/// since three old ones, nothing lost.
const HEALTHY: FakeAgent = FakeAgent {
    k8s: None,
    proxy: "nginx",
    upstream: "198.18.0.20:8080",
    responses: &[("2xx", 50.0)],
    upstream_responses: &[("2xx", 50.0)],
    verdicts: &[("502", "keepalive_race", "fin_crossed", "proven", 0.0, 3.0)],
    idle_close: &[(120.0, 1.0)],
    reuse: &[(0.05, 30.0), (1.0, 20.0)],
    keepalive_timeout: 75.0,
    proxy_idle_timeout: 60.0,
    events_lost_per_s: 0.0,
    packets_dropped: 5.0,
    sessions_failed: 0.0,
    tracked: 40.0,
    cpu_per_s: 0.02,
    rss: 31_457_280.0,
    heap: 12_582_912.0,
};

/// The text exposition of `agent` after `t` seconds, labelled as the agent labels: the
/// proxy's `proxy, namespace, pod` (empty outside Kubernetes) on every per-proxy series, then
/// `upstream` (empty on the proxy's responses to its clients).
fn exposition(agent: &FakeAgent, t: f64) -> String {
    let count = |per_s: f64, offset: f64| (per_s * t).floor() + offset;
    let (ns, pod) = agent.k8s.unwrap_or_default();
    let proxy_labels = format!(
        "proxy=\"{}\",namespace=\"{ns}\",pod=\"{pod}\",upstream=\"{}\"",
        agent.proxy, agent.upstream
    );
    let client_labels = format!(
        "proxy=\"{}\",namespace=\"{ns}\",pod=\"{pod}\",upstream=\"\"",
        agent.proxy
    );
    let mut out = String::new();
    let header = |out: &mut String, name: &str, kind: &str, help: &str| {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
    };
    header(
        &mut out,
        "tracer_build_info",
        "gauge",
        "The agent's version.",
    );
    let _ = writeln!(out, "tracer_build_info{{version=\"0.1.0\"}} 1");
    header(
        &mut out,
        "tracer_responses_total",
        "counter",
        "Responses by status class.",
    );
    let sides = [
        (&client_labels, agent.responses),
        (&proxy_labels, agent.upstream_responses),
    ];
    for (labels, responses) in sides {
        for (class, per_s) in responses {
            let _ = writeln!(
                out,
                "tracer_responses_total{{{labels},status_class=\"{class}\"}} {}",
                count(*per_s, 0.0)
            );
        }
    }
    header(
        &mut out,
        "tracer_verdicts_total",
        "counter",
        "Client-facing errors by cause.",
    );
    for (status, cause, sub, conf, per_s, offset) in agent.verdicts {
        let _ = writeln!(
            out,
            "tracer_verdicts_total{{{proxy_labels},status=\"{status}\",cause=\"{cause}\",subcause=\"{sub}\",confidence=\"{conf}\"}} {}",
            count(*per_s, *offset)
        );
    }
    let histogram = |out: &mut String, name: &str, labels: &str, spread: &[(f64, f64)]| {
        header(out, name, "histogram", "Idle time of pooled connections.");
        let mut cumulative = 0.0;
        let mut sum = 0.0;
        for le in BUCKETS {
            for (bound, per_s) in spread {
                if (*bound - le).abs() < f64::EPSILON {
                    cumulative += count(*per_s, 0.0);
                    sum += count(*per_s, 0.0) * le / 2.0;
                }
            }
            let _ = writeln!(out, "{name}_bucket{{{labels},le=\"{le}\"}} {cumulative}");
        }
        let _ = writeln!(out, "{name}_bucket{{{labels},le=\"+Inf\"}} {cumulative}");
        let _ = writeln!(out, "{name}_sum{{{labels}}} {sum}");
        let _ = writeln!(out, "{name}_count{{{labels}}} {cumulative}");
    };
    histogram(
        &mut out,
        "tracer_upstream_idle_close_seconds",
        &proxy_labels,
        agent.idle_close,
    );
    histogram(
        &mut out,
        "tracer_proxy_reuse_idle_seconds",
        &proxy_labels,
        agent.reuse,
    );
    let gauges = [
        (
            "tracer_upstream_keepalive_timeout_seconds",
            proxy_labels.as_str(),
            agent.keepalive_timeout,
        ),
        (
            "tracer_proxy_idle_timeout_seconds",
            proxy_labels.as_str(),
            agent.proxy_idle_timeout,
        ),
    ];
    for (name, labels, value) in gauges {
        header(&mut out, name, "gauge", "An inferred timeout.");
        let _ = writeln!(out, "{name}{{{labels}}} {value}");
    }
    let plain = [
        (
            "tracer_events_lost_total",
            "counter",
            count(agent.events_lost_per_s, 0.0),
        ),
        (
            "tracer_packets_dropped_total",
            "counter",
            agent.packets_dropped,
        ),
        ("tracer_connections_tracked", "gauge", agent.tracked),
        ("tracer_connections_evicted_total", "counter", 0.0),
        (
            "tracer_sessions_failed_total",
            "counter",
            agent.sessions_failed,
        ),
        ("tracer_proxies_followed", "gauge", 1.0),
        ("process_cpu_seconds_total", "counter", agent.cpu_per_s * t),
        ("process_resident_memory_bytes", "gauge", agent.rss),
        ("tracer_heap_bytes", "gauge", agent.heap),
    ];
    for (name, kind, value) in plain {
        header(&mut out, name, kind, "A self-metric.");
        let _ = writeln!(out, "{name} {value}");
    }
    out
}

/// Fake agents: one `python3 -m http.server` each, serving an exposition a thread rewrites
/// every 200 ms. Stopped on drop.
struct FakeAgents {
    servers: Vec<Child>,
    addresses: Vec<String>,
    dir: PathBuf,
    stop: Arc<AtomicBool>,
    writer: Option<JoinHandle<()>>,
}

const METRICS_PATH: &str = "/metrics.txt";

fn python() -> Option<PathBuf> {
    // Debian's interpreter first: the one on PATH may be another (http.server is stdlib).
    ["/usr/bin/python3"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
        .or_else(|| {
            let out = Command::new("sh")
                .args(["-c", "command -v python3"])
                .output()
                .ok()?;
            let path = String::from_utf8_lossy(&out.stdout).trim().to_owned();
            (!path.is_empty()).then(|| PathBuf::from(path))
        })
}

impl FakeAgents {
    fn start(agents: &'static [&'static FakeAgent], tag: &str) -> FakeAgents {
        let python = python().expect("python3 (checked by the caller)");
        let dir =
            std::env::temp_dir().join(format!("tracer-fake-agents-{}-{tag}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let started = Instant::now();
        let write_all = {
            let dir = dir.clone();
            move || {
                let t = started.elapsed().as_secs_f64();
                for (i, a) in agents.iter().enumerate() {
                    let d = dir.join(i.to_string());
                    let tmp = d.join("metrics.tmp");
                    std::fs::write(&tmp, exposition(a, t)).expect("writing an exposition");
                    std::fs::rename(&tmp, d.join("metrics.txt")).expect("publishing it");
                }
            }
        };
        for i in 0..agents.len() {
            std::fs::create_dir_all(dir.join(i.to_string())).unwrap();
        }
        write_all();
        let mut fake = FakeAgents {
            servers: Vec::new(),
            addresses: Vec::new(),
            dir: dir.clone(),
            stop: Arc::new(AtomicBool::new(false)),
            writer: None,
        };
        for i in 0..agents.len() {
            let (child, address) = (0..3)
                .find_map(|_| {
                    let port = free_port().ok()?;
                    let mut child = Command::new(&python)
                        .args([
                            "-m",
                            "http.server",
                            &port.to_string(),
                            "--bind",
                            "127.0.0.1",
                        ])
                        .arg("--directory")
                        .arg(dir.join(i.to_string()))
                        .stdin(Stdio::null())
                        .stdout(Stdio::null())
                        .stderr(Stdio::null())
                        .spawn()
                        .ok()?;
                    let address = format!("127.0.0.1:{port}");
                    let deadline = Instant::now() + Duration::from_secs(20);
                    while Instant::now() < deadline {
                        if TcpStream::connect(&address).is_ok() {
                            return Some((child, address));
                        }
                        if let Ok(Some(_)) = child.try_wait() {
                            return None;
                        }
                        std::thread::sleep(Duration::from_millis(50));
                    }
                    let _ = child.kill();
                    let _ = child.wait();
                    None
                })
                .expect("a python3 http.server for a fake agent");
            fake.servers.push(child);
            fake.addresses.push(address);
        }
        let stop = fake.stop.clone();
        fake.writer = Some(std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(200));
                write_all();
            }
        }));
        fake
    }
}

impl Drop for FakeAgents {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(w) = self.writer.take() {
            let _ = w.join();
        }
        for s in &mut self.servers {
            let _ = s.kill();
            let _ = s.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Why a live test cannot run here, if it cannot.
fn live_prerequisites() -> Result<(), String> {
    Prometheus::available().map_err(|e| e.to_string())?;
    python().ok_or("python3 is not installed (the fake agents are its http.server)")?;
    Ok(())
}

fn start_prometheus(fake: &FakeAgents, rules: &Path) -> Prometheus {
    let mut job = ScrapeJob::new("tracer", fake.addresses.clone());
    job.metrics_path = METRICS_PATH.into();
    Prometheus::start(&PrometheusConfig {
        jobs: vec![job],
        rule_files: vec![rules.to_owned()],
        // Its own process_* series must stay out of the agent's CPU and memory panels.
        scrape_self: true,
        ..PrometheusConfig::default()
    })
    .expect("prometheus starts")
}

/// Polls `check` every 250 ms until it returns `Some`, or panics after `timeout`.
fn wait_for<T>(what: &str, timeout: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// Waits until every fake agent was scraped `n` times and every rule evaluated.
fn wait_for_data(api: &PromApi, agents: usize, n: usize) {
    wait_for(
        "scrapes of the fake agents",
        Duration::from_secs(90),
        || {
            let s = api
                .query("count_over_time(tracer_build_info[10m])", None)
                .ok()?;
            (s.len() == agents && s.iter().all(|s| s.value >= n as f64)).then_some(())
        },
    );
    wait_for(
        "every rule's first evaluation",
        Duration::from_secs(30),
        || {
            let rules = api.rules().ok()?;
            rules.iter().all(|r| r.health != "unknown").then_some(())
        },
    );
}

fn show(results: &[PanelResult]) -> String {
    results
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("\n")
}

fn find<'a>(results: &'a [PanelResult], title: &str, ref_id: &str) -> &'a PanelResult {
    results
        .iter()
        .find(|r| r.query.panel_title == title && r.query.ref_id == ref_id)
        .unwrap_or_else(|| panic!("no panel {title:?} {ref_id}"))
}

// ---------------------------------------------------------------------------------------------
// Live checks.

#[test]
fn every_panel_and_rule_query_parses_and_returns_series_on_synthetic_data() {
    if let Err(why) = live_prerequisites() {
        eprintln!("SKIPPED: {why}");
        return;
    }
    let fake = FakeAgents::start(&[&RACY, &HEALTHY], "panels");
    let racy = fake.addresses[0].clone();

    // The synthetic exposition itself is what Prometheus's linter accepts.
    let sample = std::env::temp_dir().join(format!("tracer-exposition-{}", std::process::id()));
    std::fs::write(&sample, exposition(&RACY, 10.0)).unwrap();
    let lint = Command::new("sh")
        .arg("-c")
        .arg(format!("promtool check metrics < {}", sample.display()))
        .output()
        .unwrap();
    let _ = std::fs::remove_file(&sample);
    assert!(
        lint.status.success(),
        "promtool check metrics on the synthetic exposition:\n{}{}",
        String::from_utf8_lossy(&lint.stdout),
        String::from_utf8_lossy(&lint.stderr)
    );

    let prometheus = start_prometheus(&fake, &rules_file());
    let api = prometheus.api();
    wait_for_data(api, 2, 10);

    // Grafana's view: a 1 s scrape interval, a 5 s step ($__rate_interval = 6 s, room for a
    // late scrape on a busy machine), the run so far as the time range, everything "All".
    let all = Context::new(
        Duration::from_secs(1),
        Duration::from_secs(5),
        Duration::from_secs(10),
    );
    let mut every = Vec::new();
    for d in dashboards() {
        every.extend(evaluate(api, &d, &all, None).expect("every variable is defined"));
    }
    eprintln!("synthetic data, everything selected:\n{}", show(&every));
    let failed: Vec<&PanelResult> = every
        .iter()
        .filter(|r| r.outcome.is_err() || r.series() == 0)
        .collect();
    assert!(
        failed.is_empty(),
        "panel queries that fail or return no series on synthetic data:\n{}\nPrometheus log:\n{}",
        failed
            .iter()
            .map(|r| r.to_string())
            .collect::<Vec<_>>()
            .join("\n"),
        prometheus.log()
    );

    // The race share per upstream: races / (the upstream's responses + races), 16 / 96 for
    // the racy pair (the responses to clients left out), 0 (not absent) for the healthy.
    let share = find(&every, "Keep-alive race share per upstream", "A");
    let by_upstream: BTreeMap<&str, f64> = share
        .outcome
        .as_ref()
        .unwrap()
        .samples
        .iter()
        .map(|s| (s.labels["upstream"].as_str(), s.value))
        .collect();
    assert!(
        (0.15..0.185).contains(&by_upstream[RACY.upstream]),
        "{by_upstream:?}"
    );
    assert_eq!(
        by_upstream.len(),
        2,
        "no series without an upstream: {by_upstream:?}"
    );
    assert!(
        by_upstream[HEALTHY.upstream].abs() < f64::EPSILON,
        "{by_upstream:?}"
    );
    // Responses to clients only: 101 + 50 a second (both sides together would be 281).
    let responses = find(&every, "Responses", "A");
    let rate = responses.outcome.as_ref().unwrap().max.unwrap_or_default();
    assert!((136.0..166.0).contains(&rate), "{responses}");
    // The agent's CPU: the two agents, not Prometheus's own process.
    let cpu = find(&every, "CPU (share of one core)", "A");
    assert_eq!(cpu.series(), 2, "{cpu}");
    // Four subcauses of races, each its own series.
    assert_eq!(
        find(&every, "Keep-alive races by subcause", "A").series(),
        4
    );

    // The racy pair selected by value (regex-escaped like Grafana does): every race panel
    // shows races; the healthy pair selected: every race panel shows zero.
    let racy_only = all
        .clone()
        .select("namespace", &["ingress"])
        .select("pod", &["caddy-5d8f7"])
        .select("proxy", &["caddy"])
        .select("upstream", &[RACY.upstream]);
    let healthy_only = all
        .clone()
        .select("proxy", &["nginx"])
        .select("upstream", &[HEALTHY.upstream]);
    for d in dashboards()
        .iter()
        .filter(|d| d.uid() == Some("tracer-overview"))
    {
        let on_racy = evaluate(api, d, &racy_only, None).unwrap();
        let on_healthy = evaluate(api, d, &healthy_only, None).unwrap();
        let races = |r: &&PanelResult| r.query.expr.contains("keepalive_race");
        assert!(on_racy.iter().filter(races).count() >= 4);
        for r in on_racy.iter().filter(races) {
            assert!(
                r.outcome.as_ref().unwrap().max > Some(0.0),
                "racy pair: {r}"
            );
        }
        for r in on_healthy.iter().filter(races) {
            let o = r.outcome.as_ref().unwrap();
            assert!(o.max.is_none_or(|m| m == 0.0), "healthy pair: {r}");
        }
        let classes = find(&on_racy, "Responses by status class", "A");
        assert_eq!(
            classes.series(),
            3,
            "the racy proxy's 2xx, 4xx, 5xx to its clients: {classes}"
        );
        let upstream = find(&on_racy, "Responses by status class", "B");
        assert_eq!(upstream.series(), 1, "the upstream's 2xx: {upstream}");
        // Races over every response to the proxy's clients: 16 / 101.
        let share = find(&on_racy, "Keep-alive race share", "A");
        let value = share.outcome.as_ref().unwrap().max.unwrap_or_default();
        assert!((0.14..0.18).contains(&value), "{share}");
    }
    for d in dashboards()
        .iter()
        .filter(|d| d.uid() == Some("tracer-agent-health"))
    {
        let one = all.clone().select("instance", &[&racy]);
        let results = evaluate(api, d, &one, None).unwrap();
        let lost = find(&results, "Kernel events lost per second", "A");
        assert_eq!(lost.series(), 1, "{lost}");
        assert!(lost.outcome.as_ref().unwrap().max > Some(0.0), "{lost}");
        let dropped = find(&results, "Packets dropped per second", "A");
        assert_eq!(
            dropped.outcome.as_ref().unwrap().max,
            Some(0.0),
            "{dropped}"
        );
        // The live heap beside the resident size, each the racy agent's own.
        let memory = "Memory (resident, and live heap)";
        let (resident, heap) = (find(&results, memory, "A"), find(&results, memory, "B"));
        assert_eq!(
            resident.outcome.as_ref().unwrap().max,
            Some(RACY.rss),
            "{resident}"
        );
        assert_eq!(
            heap.outcome.as_ref().unwrap().max,
            Some(RACY.heap),
            "{heap}"
        );
    }

    // Every rule: healthy after its evaluations, its expression parses on its own, recorded
    // series exist, and the alerts' conditions hold for the racy agent only.
    let rules = api.rules().unwrap();
    let (alerts, recorded) = rule_names(&std::fs::read_to_string(rules_file()).unwrap());
    assert_eq!(rules.len(), alerts.len() + recorded.len(), "{rules:?}");
    let mut holding = BTreeSet::new();
    for rule in &rules {
        assert_eq!(rule.health, "ok", "{rule:?}");
        let samples = api
            .query(&rule.query, None)
            .unwrap_or_else(|e| panic!("rule {}: {e}", rule.name));
        if rule.kind == "recording" {
            assert!(
                !samples.is_empty(),
                "recording rule {} records nothing",
                rule.name
            );
        }
        for s in samples.iter().filter(|_| rule.kind == "alerting") {
            let who = ["proxy", "instance"]
                .iter()
                .filter_map(|l| s.labels.get(*l))
                .cloned()
                .collect::<Vec<_>>()
                .join(",");
            holding.insert(format!("{} {who}", rule.name));
        }
    }
    let expected: BTreeSet<String> = [
        "TracerKeepaliveRaces caddy".to_owned(),
        format!("TracerUpstreamClosesAfterEveryResponse caddy,{racy}"),
        format!("TracerEventsLost {racy}"),
    ]
    .into();
    assert_eq!(
        holding, expected,
        "alert conditions holding on synthetic data"
    );
}

#[test]
fn time_scaled_alerts_fire_for_the_racy_agent_only() {
    if let Err(why) = live_prerequisites() {
        eprintln!("SKIPPED: {why}");
        return;
    }
    // Minutes become seconds: 5m windows → 5s, `for: 15m` → 15s.
    let text = std::fs::read_to_string(rules_file()).unwrap();
    let scaled = scale_rule_durations(&text, 60).unwrap();
    assert!(
        scaled.contains("[5s]") && scaled.contains("for: 15s"),
        "{scaled}"
    );
    let scaled_file =
        std::env::temp_dir().join(format!("tracer-rules-scaled-{}.yml", std::process::id()));
    std::fs::write(&scaled_file, scaled).unwrap();
    let check = promtool(&["check", "rules", scaled_file.to_str().unwrap()]).unwrap();
    assert!(check.status.success(), "{check:?}");

    let fake = FakeAgents::start(&[&RACY, &HEALTHY], "alerts");
    let racy = fake.addresses[0].clone();
    let prometheus = start_prometheus(&fake, &scaled_file);
    let api = prometheus.api();
    let expected: BTreeSet<String> = [
        "TracerKeepaliveRaces caddy".to_owned(),
        "TracerUpstreamClosesAfterEveryResponse caddy".to_owned(),
        format!("TracerEventsLost {racy}"),
    ]
    .into();
    let describe = |alerts: &[tracer_lab::prom::Alert]| -> BTreeSet<String> {
        alerts
            .iter()
            .map(|a| {
                let who = a
                    .labels
                    .get("proxy")
                    .or_else(|| a.labels.get("instance"))
                    .cloned()
                    .unwrap_or_default();
                format!("{} {who}", a.labels["alertname"])
            })
            .collect()
    };
    let firing = wait_for(
        "the expected alerts to fire",
        Duration::from_secs(120),
        || {
            let alerts = api.alerts().ok()?;
            let firing: Vec<_> = alerts
                .iter()
                .filter(|a| a.state == "firing")
                .cloned()
                .collect();
            expected.is_subset(&describe(&firing)).then_some(alerts)
        },
    );
    let _ = std::fs::remove_file(&scaled_file);
    // Nothing else fires or even pends: the healthy agent and pair raise nothing.
    assert_eq!(describe(&firing), expected, "{firing:#?}");
    let races = firing
        .iter()
        .find(|a| a.labels["alertname"] == "TracerKeepaliveRaces")
        .unwrap();
    assert_eq!(races.labels["upstream"], RACY.upstream);
    assert!(
        races.annotations["description"].contains("of the exchanges of caddy with"),
        "{races:?}"
    );
}
