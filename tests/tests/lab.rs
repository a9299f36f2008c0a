//! Runs every lab scenario with real proxies and upstreams and checks that it reproduces
//! its cause at the expected rate, and that its ground truth (from the proxy's own logs)
//! agrees with the client's own results. Needs root; skips with a printed reason otherwise.

use tracer_lab::run::{preflight, run, RunOptions};
use tracer_lab::scenarios;

#[test]
fn every_scenario_reproduces_and_its_ground_truth_agrees_with_the_client() {
    if let Err(why) = preflight() {
        eprintln!("SKIPPED lab scenarios: {why:#}");
        return;
    }
    let root = std::env::temp_dir().join(format!("tracer-lab-test-{}", std::process::id()));
    let mut failures = Vec::new();
    for s in scenarios::all() {
        let out = match run(s.as_ref(), &root.join(s.name()), &RunOptions::default()) {
            Ok(out) => out,
            Err(e) => {
                failures.push(format!("{}: the run failed: {e:#}", s.name()));
                continue;
            }
        };
        eprintln!("{}", out.summary());
        let t = &out.truth;
        // The client's own counts, recounted here from its results, match the truth file.
        let non_2xx = out
            .results
            .iter()
            .filter(|r| !matches!(r.outcome, tracer_lab::load::Outcome::Status(200..=299)))
            .count();
        if non_2xx != t.rows.len() {
            failures.push(format!(
                "{}: {non_2xx} non-2xx results, {} truth rows",
                s.name(),
                t.rows.len()
            ));
        }
        for d in out.disagreements.iter().take(5) {
            failures.push(format!(
                "{}: ground truth disagrees with the client: {d}",
                s.name()
            ));
        }
        for m in &out.misses {
            failures.push(format!("{}: {m}", s.name()));
        }
        if out.misses.is_empty() && out.disagreements.is_empty() {
            std::fs::remove_dir_all(&out.dir).ok();
        }
    }
    assert!(
        failures.is_empty(),
        "lab failures (runs kept under {}):\n{}",
        root.display(),
        failures.join("\n")
    );
}

#[test]
fn no_lab_namespace_outlives_its_network() {
    if let Err(why) = preflight() {
        eprintln!("SKIPPED: {why:#}");
        return;
    }
    let netns_list = || {
        String::from_utf8_lossy(
            &std::process::Command::new("ip")
                .args(["netns", "list"])
                .output()
                .unwrap()
                .stdout,
        )
        .into_owned()
    };
    let hosts = {
        let net = tracer_lab::net::Net::create().expect("lab network");
        let h = net.hosts().clone();
        for ns in [&h.client_ns, &h.proxy_ns, &h.upstream_ns] {
            assert!(netns_list().contains(ns.as_str()), "{ns} was not created");
        }
        h
    };
    let after = netns_list();
    for ns in [&hosts.client_ns, &hosts.proxy_ns, &hosts.upstream_ns] {
        assert!(!after.contains(ns.as_str()), "{ns} outlived its network");
    }
}

#[test]
fn a_failing_scenario_leaves_nothing_behind() {
    if let Err(why) = preflight() {
        eprintln!("SKIPPED: {why:#}");
        return;
    }
    struct Broken;
    impl tracer_lab::scenario::Scenario for Broken {
        fn name(&self) -> &'static str {
            "broken"
        }
        fn about(&self) -> &'static str {
            "a server that exits at once"
        }
        fn start(&self, l: &mut dyn tracer_lab::scenario::Launcher) -> anyhow::Result<()> {
            let h = l.hosts().clone();
            let mut sleeper = std::process::Command::new("sleep");
            sleeper.arg("300");
            l.spawn(&h.upstream_ns, "sleeper", sleeper)?;
            anyhow::bail!("this scenario fails on purpose")
        }
        fn load(&self) -> tracer_lab::load::LoadProfile {
            unreachable!("never started")
        }
        fn ground_truth(
            &self,
            _: &std::path::Path,
            _: &[tracer_lab::load::ClientResult],
        ) -> anyhow::Result<Vec<tracer_lab::truth::TruthRow>> {
            Ok(vec![])
        }
        fn expect(&self) -> tracer_lab::scenario::Expectation {
            tracer_lab::scenario::Expectation {
                rate_502: (0.0, 0.0),
                only_cause: None,
            }
        }
    }
    let dir = std::env::temp_dir().join(format!("tracer-lab-broken-{}", std::process::id()));
    let err = run(&Broken, &dir, &RunOptions::default()).unwrap_err();
    assert!(format!("{err:#}").contains("fails on purpose"));
    // The sleeper it started is gone with its namespace.
    let ps = std::process::Command::new("pgrep")
        .args(["-f", "^sleep 300$"])
        .output()
        .unwrap();
    assert!(
        ps.stdout.is_empty(),
        "a process of the failed run survived: {}",
        String::from_utf8_lossy(&ps.stdout)
    );
    std::fs::remove_dir_all(&dir).ok();
}
