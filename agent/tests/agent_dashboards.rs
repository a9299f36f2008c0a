//! The Grafana dashboards and Prometheus rules of `dashboards/` against a real agent.
//!
//! A real Prometheus (Debian's) scrapes `tracer agent` every second, with the rule file
//! loaded time-scaled (windows divided by 20, `[5m]` → `[15s]`; `for:` by 60, `5m` → `5s`:
//! the alert may fire within the window that follows seconds of load, however fast the
//! machine; the promtool unit tests check `for:` at its real length), while the lab runs seed
//! (caddy → uwsgi without keep-alive: races) and then fixed (the same with keep-alive: none).
//! For each scenario's time range, every query of every panel is interpolated as Grafana's
//! Prometheus data source would and evaluated as Grafana draws the panel (range queries;
//! instant ones at the end of the range):
//! - every query parses and evaluates;
//! - the race panels (every query counting `keepalive_race`) show races during seed and
//!   nothing or zero during fixed; the share per upstream names the lab's upstream, and
//!   during fixed is a zero (traffic, no race), not a gap;
//! - every Agent health query returns series, and so does every other query whose series
//!   all have data in the range (the histogram panels wait for the agent to fill them);
//! - `TracerKeepaliveRaces` fires during seed (Prometheus's own `ALERTS` series) and is
//!   neither pending nor firing during fixed, nor is its recorded share above zero.
//!
//! The metrics and labels the dashboards and rules use are checked against the agent's own
//! exposition (its scrape during seed, and its metrics registry for the histograms).
//!
//! Each scenario has its own agent, narrowed with `--netns` to the scenario's proxy and
//! listening on the same port (one scrape target): proxies that other tests run on this
//! machine at the same time have the same names and addresses, and would otherwise mix into
//! Prometheus's sums. The verdict lines, which carry the network namespace, confirm it.
//!
//! Needs root, the kernel probe and Prometheus; skips with a printed reason otherwise.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tracer_lab::grafana::{evaluate_range, Context, Dashboard, PanelResult};
use tracer_lab::prom::{
    free_port, scale_rule_durations_apart, selectors, PromApi, Prometheus, PrometheusConfig,
    ScrapeJob,
};
use tracer_lab::run::{preflight, run, BeforeLoad, RunOptions};
use tracer_lab::scenarios;

mod common;
use common::agent::{netns_inode, wait_following, wait_for_scrapes, Agent};

/// Requests of seed (4-8 s of load at 700-1500 a second, 15-20% of them races): the agent
/// hands over verdicts and counts every second or two, and a counter's first value is no
/// increase to Prometheus, so the races must span several of its hand-overs.
const SEED_REQUESTS: u32 = 6000;
/// Requests of fixed: traffic for the panels, and reuse that would race if it could.
const FIXED_REQUESTS: u32 = 1000;
/// Windows: minutes become 3 s (`[5m]` → `[15s]`).
const WINDOW_SCALE: u32 = 20;
/// `for:`: minutes become 1 s (`for: 5m` → `5s`).
const FOR_SCALE: u32 = 60;
/// The scaled 5-minute window.
const WINDOW: Duration = Duration::from_secs(15);
/// Grafana's step for the scenario's range ($__interval; $__rate_interval is then 4 s).
const STEP: Duration = Duration::from_secs(2);
const RACE_ALERT: &str = "TracerKeepaliveRaces";

fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the agent crate sits in the workspace")
        .to_owned()
}

/// Polls `check` every 250 ms until it returns `Some`; `None` after `timeout`.
fn poll<T>(timeout: Duration, mut check: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// The first value of an instant query, 0 when it returns nothing.
fn scalar(api: &PromApi, expr: &str) -> f64 {
    api.query(expr, None)
        .unwrap_or_else(|e| panic!("querying {expr}: {e}"))
        .first()
        .map_or(0.0, |s| s.value)
}

/// Whether a query counts keep-alive races.
fn is_race_panel(r: &PanelResult) -> bool {
    r.query.expr.contains("keepalive_race")
}

/// Whether every series selector of the query as sent has data in `start..end`.
fn reads_only_data(api: &PromApi, r: &PanelResult, start: f64, end: f64) -> bool {
    let range = (end - start).ceil().max(1.0);
    selectors(&r.sent)
        .iter()
        .filter(|s| !s.metric.is_empty())
        .all(|s| {
            let matchers: Vec<String> = s
                .matchers
                .iter()
                .map(|m| format!("{}{}\"{}\"", m.label, m.op, m.value))
                .collect();
            let expr = format!(
                "count(last_over_time({}{{{}}}[{range}s]))",
                s.metric,
                matchers.join(", ")
            );
            api.query(&expr, Some(end)).is_ok_and(|v| !v.is_empty())
        })
}

/// One scenario's view of every dashboard, and what is wrong with it.
fn check_dashboards(
    api: &PromApi,
    scenario: &str,
    start: f64,
    end: f64,
    failures: &mut Vec<String>,
) -> Vec<PanelResult> {
    let range = Duration::from_secs_f64(end - start);
    let ctx = Context::new(Duration::from_secs(1), STEP, range);
    let mut all = Vec::new();
    for d in Dashboard::load_dir(&workspace().join("dashboards")).expect("the dashboards") {
        all.extend(evaluate_range(api, &d, &ctx, start, end).expect("every variable is defined"));
    }
    let mut fail = |r: &PanelResult, why: &str| failures.push(format!("{scenario}: {why}: {r}"));
    for r in &all {
        let Ok(o) = &r.outcome else {
            fail(r, "the query fails");
            continue;
        };
        let health = r.dashboard == "tracer / Agent health";
        if is_race_panel(r) {
            let races = o.max.is_some_and(|m| m > 0.0);
            if scenario == "seed" && !races {
                fail(r, "a race panel shows no race during seed");
            }
            if scenario == "fixed" && races {
                fail(r, "a race panel shows races during fixed");
            }
        } else if o.series == 0 && (health || reads_only_data(api, r, start, end)) {
            fail(r, "no series");
        }
    }
    all
}

/// The share per upstream: for the lab's upstream only (no series without an upstream).
fn check_share_per_upstream(
    results: &[PanelResult],
    scenario: &str,
    lab: &str,
    failures: &mut Vec<String>,
) {
    let Some(share) = results
        .iter()
        .find(|r| r.query.panel_title == "Keep-alive race share per upstream")
    else {
        failures.push("no panel \"Keep-alive race share per upstream\"".into());
        return;
    };
    let upstreams: BTreeSet<&str> = share
        .outcome
        .iter()
        .flat_map(|o| &o.samples)
        .map(|s| s.labels.get("upstream").map_or("", String::as_str))
        .collect();
    if upstreams != BTreeSet::from([lab]) {
        failures.push(format!(
            "{scenario}: the race share per upstream is for {upstreams:?}, not the lab's upstream {lab}: {share}"
        ));
    }
}

/// The metric families and their label names in a text exposition.
fn families(text: &str) -> BTreeMap<String, BTreeSet<String>> {
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        for s in selectors(line).into_iter().filter(|s| !s.metric.is_empty()) {
            out.entry(s.metric)
                .or_default()
                .extend(s.matchers.into_iter().map(|m| m.label));
        }
    }
    out
}

/// What the dashboards and rules ask of the agent that its exposition does not have.
fn contract_problems(exposition: &BTreeMap<String, BTreeSet<String>>) -> Vec<String> {
    let mut exprs: Vec<(String, String)> = Vec::new();
    for d in Dashboard::load_dir(&workspace().join("dashboards")).expect("the dashboards") {
        for q in d.queries() {
            exprs.push((format!("{} / {:?}", d.title(), q.panel_title), q.expr));
        }
    }
    let rules = std::fs::read_to_string(workspace().join("dashboards/rules/tracer.rules.yml"))
        .expect("the rule file");
    exprs.push(("the rule file".into(), rules));
    let mut out = BTreeSet::new();
    for (what, expr) in &exprs {
        for s in selectors(expr) {
            let exported = s.metric.starts_with("tracer_") || s.metric.starts_with("process_");
            if !exported {
                continue; // recorded series, up, ALERTS
            }
            let Some(labels) = exposition.get(&s.metric) else {
                out.insert(format!("{what}: the agent exports no {}", s.metric));
                continue;
            };
            for m in &s.matchers {
                let scrape = ["job", "instance"].contains(&m.label.as_str());
                if !scrape && !labels.contains(&m.label) {
                    out.insert(format!(
                        "{what}: {} has no label {} in the agent's exposition",
                        s.metric, m.label
                    ));
                }
            }
        }
    }
    out.into_iter().collect()
}

/// The agent's exposition with one of each labelled series (the histograms too, which the
/// agent fills as it learns idle times).
fn registry_exposition() -> String {
    use tracer::agent::metrics::{Metrics, ProxyLabels};
    let m = Metrics::new(8).expect("the agent's metrics");
    let p = ProxyLabels {
        proxy: "caddy".into(),
        ..ProxyLabels::default()
    };
    m.responses(&p, None, 2, 1);
    m.responses(&p, Some("198.18.2.2:9000"), 2, 1);
    m.upstream_idle_close(&p, "198.18.2.2:9000", 0.001);
    m.proxy_reuse_idle(&p, "198.18.2.2:9000", 0.5);
    m.timeouts(&p, "198.18.2.2:9000", Some(0.0), Some(90.0));
    m.render()
}

#[test]
fn every_panel_and_the_race_alert_on_a_real_agent_during_seed_and_fixed() {
    if let Err(why) = preflight() {
        eprintln!("SKIPPED the dashboards' agent test: {why:#}");
        return;
    }
    if let Err(why) = tracer::probe::built_with_probe() {
        eprintln!("SKIPPED the dashboards' agent test: tracer was built without the probe: {why}");
        return;
    }
    if let Err(why) = Prometheus::available() {
        eprintln!("SKIPPED the dashboards' agent test: {why}");
        return;
    }
    let tracer = PathBuf::from(env!("CARGO_BIN_EXE_tracer"));
    let root = std::env::temp_dir().join(format!("tracer-agent-dashboards-{}", std::process::id()));
    std::fs::create_dir_all(&root).unwrap();
    let rules = std::fs::read_to_string(workspace().join("dashboards/rules/tracer.rules.yml"))
        .expect("the rule file");
    let scaled = root.join("tracer.rules.scaled.yml");
    let text = scale_rule_durations_apart(&rules, WINDOW_SCALE, FOR_SCALE).unwrap();
    assert!(text.contains("[15s]") && text.contains("for: 5s"), "{text}");
    std::fs::write(&scaled, text).unwrap();

    let port = free_port().expect("a free port");
    let prom = Prometheus::start(&PrometheusConfig {
        jobs: vec![ScrapeJob::new("tracer", [format!("127.0.0.1:{port}")])],
        rule_files: vec![scaled],
        ..PrometheusConfig::default()
    })
    .expect("starting Prometheus");
    let api = prom.api().clone();

    let agent: Arc<Mutex<Option<Agent>>> = Arc::new(Mutex::new(None));
    let mut failures = Vec::new();
    let mut exposition = BTreeMap::new();
    let mut first_start = None;
    for name in ["seed", "fixed"] {
        let scenario = scenarios::by_name(name).expect("a lab scenario");
        let dir = root.join(format!("{name}-agent"));
        std::fs::create_dir_all(&dir).unwrap();
        // When the load started, the proxy's network namespace, the upstream's address.
        let load_start = Arc::new(Mutex::new(None::<(f64, u64, String)>));
        let hook = {
            let (agent, load_start, tracer, api) = (
                agent.clone(),
                load_start.clone(),
                tracer.clone(),
                api.clone(),
            );
            BeforeLoad(Arc::new(move |h| {
                let ino = netns_inode(&h.proxy_ns)?;
                let mut slot = agent.lock().unwrap();
                // The previous scenario's agent leaves the port to this one's.
                drop(slot.take());
                let a = Agent::start_with(&tracer, &dir, port, &["--netns", &h.proxy_ns]);
                wait_following(&a.err, &a.url, ino, 0)?;
                *slot = Some(a);
                drop(slot);
                // The previous scenario's races leave the alert's window before the load.
                let quiet = format!(
                    "sum(increase(tracer_verdicts_total{{cause=\"keepalive_race\"}}[{}s])) > 0",
                    WINDOW.as_secs()
                );
                poll(WINDOW * 3, || {
                    api.query(&quiet, None).ok().filter(Vec::is_empty)
                })
                .ok_or_else(|| anyhow::anyhow!("earlier races stay in the window"))?;
                wait_for_scrapes(&api);
                let upstream = format!("{}:{}", h.upstream_ip, tracer_lab::scenario::UPSTREAM_PORT);
                *load_start.lock().unwrap() = Some((now(), ino, upstream));
                Ok(())
            }))
        };
        let requests = if name == "seed" {
            SEED_REQUESTS
        } else {
            FIXED_REQUESTS
        };
        let opts = RunOptions {
            requests: Some(requests),
            before_load: Some(hook),
            ..RunOptions::default()
        };
        let out = match run(scenario.as_ref(), &root.join(name), &opts) {
            Ok(out) => out,
            Err(e) => {
                failures.push(format!("{name}: the run failed: {e:#}"));
                break;
            }
        };
        let load_end = now();
        let (start, ino, upstream) = load_start.lock().unwrap().clone().expect("the hook ran");
        first_start.get_or_insert(start);
        eprintln!(
            "    {:.1} s from the load's start to the run's end",
            load_end - start
        );
        eprintln!("{}", out.summary());
        failures.extend(out.misses.iter().map(|m| format!("{name}: {m}")));
        {
            let slot = agent.lock().unwrap();
            let a = slot.as_ref().expect("the scenario's agent");
            // The proxy exited with the run: the agent hands over its last verdicts.
            a.wait_for(
                "the agent to stop following the proxy",
                Duration::from_secs(20),
                |a| a.stopped_following(ino, 0),
            );
            let lines = a.lines();
            let others = lines.iter().filter(|v| v["netns"] != ino).count();
            if others > 0 {
                failures.push(format!(
                    "{name}: {others} verdict lines of other network namespaces from an agent narrowed to {ino}"
                ));
            }
            let races = lines
                .iter()
                .filter(|v| v["cause"] == "keepalive_race")
                .count();
            eprintln!(
                "    agent: {} verdict lines, {races} keep-alive races",
                lines.len()
            );
            if name == "seed" {
                let scrape = a.get("/metrics").expect("a scrape of /metrics");
                exposition = families(&scrape);
            }
        }
        wait_for_scrapes(&api);

        let end = now();
        let results = check_dashboards(&api, name, start, end, &mut failures);
        check_share_per_upstream(&results, name, &upstream, &mut failures);
        for r in &results {
            eprintln!("    {r}");
        }

        // The race alert, from Prometheus's own record of it (windows rounded down, so that
        // they never reach before the load).
        let since = |t: f64| format!("{}s", (now() - t).floor() as u64);
        if name == "seed" {
            // It can fire until the window has passed the last race.
            let firing = || {
                format!(
                    "max_over_time(ALERTS{{alertname=\"{RACE_ALERT}\", alertstate=\"firing\"}}[{}])",
                    since(start)
                )
            };
            let until = Duration::from_secs_f64((load_end - now()).max(0.0)) + WINDOW * 2;
            if poll(until, || (scalar(&api, &firing()) > 0.0).then_some(())).is_none() {
                let share = format!(
                    "max_over_time(proxy_upstream:tracer_keepalive_race:ratio_rate5m[{}])",
                    since(start)
                );
                failures.push(format!(
                    "seed: {RACE_ALERT} never fired (largest recorded share {})",
                    scalar(&api, &share)
                ));
            }
        } else {
            // A race would make the alert pend at the next evaluations: give it those.
            std::thread::sleep(Duration::from_secs(3));
            let any = format!(
                "max_over_time(ALERTS{{alertname=\"{RACE_ALERT}\"}}[{}])",
                since(start)
            );
            if scalar(&api, &any) > 0.0 {
                failures.push(format!("fixed: {RACE_ALERT} pended or fired"));
            }
            let share = format!(
                "max_over_time(proxy_upstream:tracer_keepalive_race:ratio_rate5m[{}])",
                since(start)
            );
            let recorded = scalar(&api, &share);
            if recorded > 0.0 {
                failures.push(format!("fixed: the recorded race share reached {recorded}"));
            }
        }
        if failures.is_empty() {
            std::fs::remove_dir_all(&out.dir).ok();
        }
    }
    drop(agent.lock().unwrap().take());

    // When the race alert pended and fired, for whoever tunes the load.
    if let Some(t0) = first_start {
        let states = api
            .query_range(
                &format!("ALERTS{{alertname=\"{RACE_ALERT}\"}}"),
                t0,
                now(),
                Duration::from_secs(1),
            )
            .unwrap_or_default();
        for s in states {
            let state = s.labels.get("alertstate").cloned().unwrap_or_default();
            if let (Some(first), Some(last)) = (s.points.first(), s.points.last()) {
                eprintln!(
                    "{RACE_ALERT} {state} from +{:.0} s to +{:.0} s after seed's load started",
                    first.0 - t0,
                    last.0 - t0,
                );
            }
        }
    }

    for (k, v) in families(&registry_exposition()) {
        exposition.entry(k).or_default().extend(v);
    }
    failures.extend(contract_problems(&exposition));
    assert!(
        failures.is_empty(),
        "kept under {}:\n{}\nPrometheus's log:\n{}",
        root.display(),
        failures.join("\n"),
        prom.log()
    );
    std::fs::remove_dir_all(&root).ok();
}

#[test]
fn the_contract_check_reads_expositions_and_bites() {
    let f = families(
        "# HELP tracer_x_total X.\n# TYPE tracer_x_total counter\n\
         tracer_x_total{proxy=\"caddy\",upstream=\"\"} 3\nprocess_cpu_seconds_total 2\n",
    );
    assert_eq!(
        f["tracer_x_total"],
        BTreeSet::from(["proxy".to_owned(), "upstream".to_owned()])
    );
    assert!(f["process_cpu_seconds_total"].is_empty());
    // The registry alone has every metric but the verdicts (the test makes none): the check
    // names them, and nothing else.
    let problems = contract_problems(&families(&registry_exposition()));
    assert!(!problems.is_empty());
    assert!(
        problems
            .iter()
            .all(|p| p.contains("exports no tracer_verdicts_total")),
        "{problems:#?}"
    );
}
