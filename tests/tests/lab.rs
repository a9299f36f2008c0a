//! The lab's own guarantees: what it creates is gone after every run, failed ones too.
//! (Every scenario runs, with `tracer capture` attached, in `agent/tests/lab_live.rs`.)
//! Needs root; skips with a printed reason otherwise.

use tracer_lab::run::{preflight, run, RunOptions};

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

/// The failing scenario's sleeper runs for 300 s and a fraction this test's process alone
/// uses, so that another `sleep 300` on the machine (a shell waiting on the suite) is never
/// taken for it.
fn sleeper_arg() -> String {
    format!("300.{}", std::process::id())
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
            sleeper.arg(sleeper_arg());
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
        .args([
            "-f",
            &format!("^sleep {}$", sleeper_arg().replace('.', "[.]")),
        ])
        .output()
        .unwrap();
    assert!(
        ps.stdout.is_empty(),
        "a process of the failed run survived: {}",
        String::from_utf8_lossy(&ps.stdout)
    );
    std::fs::remove_dir_all(&dir).ok();
}
