//! `tracer capture --pod NS/NAME` on a kubelet-like node built for real on this machine:
//! the lab's nginx (a real proxy) in a network namespace, its processes in a pod cgroup
//! named as the kubelet names it, a pod sandbox (`pause`) beside it, the kubelet's log
//! layout naming the pod; its upstream a pod in another namespace where nothing listens on
//! the port nginx proxies to, so every request is a 502. Ground truth is nginx's own error
//! log joined with the client's results (the lab's `refused` contrast), never tracer.
//!
//! Once with the systemd cgroup driver in the cgroup v2 hierarchy, once with the cgroupfs
//! driver in a cgroup v1 hierarchy (v2 where there is none). Needs root; skips with a
//! printed reason otherwise. Everything is removed on every exit path.

mod kubelet;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use kubelet::{Driver, Hierarchy, Logs, PodCgroup};
use serde_json::Value;
use tracer_lab::load::{self, outcome_counts};
use tracer_lab::net::Net;
use tracer_lab::procs::Procs;
use tracer_lab::scenario::{Launcher, Scenario, PROXY_PORT};
use tracer_lab::scenarios::contrast::{Contrast, Kind};

/// The proxy's pod, as a Deployment names its pods.
const PROXY_NS: &str = "ingress";
const PROXY_POD: &str = "nginx-6d4cf56db6-tj7qx";
/// The upstream's pod, in another namespace.
const UPSTREAM_NS: &str = "shop";
const UPSTREAM_POD: &str = "orders-0";

fn skip_reason() -> Option<String> {
    if !kubelet::is_root() {
        return Some("needs root (cgroups, network namespaces, packet capture)".into());
    }
    if let Err(e) = tracer_lab::run::preflight() {
        return Some(format!("{e:#}"));
    }
    if let Err(e) = tracer_lab::scenario::require_program("nginx", "nginx") {
        return Some(format!("{e:#}"));
    }
    if kubelet::hierarchies().is_empty() {
        return Some("no cgroup hierarchy is mounted".into());
    }
    None
}

/// Kills `tracer capture` if the test ends before it did.
struct Tracer(Child);

impl Drop for Tracer {
    fn drop(&mut self) {
        if self.0.try_wait().ok().flatten().is_none() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

#[test]
fn capture_pod_explains_every_502_systemd_driver_cgroup_v2() {
    let Some(h) = skip_or(kubelet::v2) else {
        return;
    };
    run_pod(&h, Driver::Systemd, "burstable", "json");
}

#[test]
fn capture_pod_explains_every_502_cgroupfs_driver_cgroup_v1() {
    let Some(h) = skip_or(|| kubelet::v1().or_else(kubelet::v2)) else {
        return;
    };
    run_pod(&h, Driver::Cgroupfs, "guaranteed", "text");
}

fn skip_or(h: impl FnOnce() -> Option<Hierarchy>) -> Option<Hierarchy> {
    if let Some(why) = skip_reason() {
        eprintln!("SKIPPED: {why}");
        return None;
    }
    let found = h();
    if found.is_none() {
        eprintln!("SKIPPED: no suitable cgroup hierarchy mounted");
    }
    found
}

/// One lab at a time: two at once on a small machine change each other's timing.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

#[allow(clippy::too_many_lines, reason = "one scenario, top to bottom")]
fn run_pod(h: &Hierarchy, driver: Driver, qos: &str, format: &str) {
    let _turn = ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let tag = format!("{driver:?}").to_lowercase();
    eprintln!(
        "{tag} driver, {qos} pod, cgroup {} at {}",
        h.v1.as_deref()
            .map_or("v2".to_owned(), |c| format!("v1 ({c})")),
        h.mount.display()
    );
    let run_dir = RunDir::create(&tag);
    let dir = run_dir.0.clone();

    // Dropped in reverse: tracer, the processes, the network, then the cgroups.
    let (proxy_uid, upstream_uid) = (kubelet::uid(), kubelet::uid());
    let (sandbox_id, nginx_id, orders_id) = (kubelet::hex(64), kubelet::hex(64), kubelet::hex(64));
    let cgroups = PodCgroup::create(h, driver, qos, &proxy_uid)
        .and_then(|p| PodCgroup::create(h, driver, "besteffort", &upstream_uid).map(|u| (p, u)));
    let (mut proxy_cg, mut upstream_cg) = match cgroups {
        Ok(c) => c,
        Err(e) => {
            eprintln!(
                "SKIPPED: cannot create cgroups in {}: {e}",
                h.mount.display()
            );
            return;
        }
    };
    let logs = Logs::create(&tag);
    let net = Net::create().expect("building the lab network");
    let hosts = net.hosts().clone();
    let mut procs = Procs::new(hosts.clone(), dir.clone());

    // The pods' processes: the proxy pod's sandbox and nginx; the upstream pod's app, which
    // does not listen on the port nginx proxies to.
    let pause = kubelet::pause_binary(&dir);
    let mut sandbox = Command::new(&pause);
    sandbox.arg("600");
    procs
        .spawn(&hosts.proxy_ns, "pause", sandbox)
        .expect("starting the sandbox");
    let scenario = Contrast(Kind::Refused);
    scenario.start(&mut procs).expect("starting nginx");
    let mut app = Command::new("sleep");
    app.arg("600");
    procs
        .spawn(&hosts.upstream_ns, "orders", app)
        .expect("starting the upstream pod's process");
    std::thread::sleep(Duration::from_millis(200));

    let sandbox_cg = proxy_cg.container(driver, &sandbox_id);
    let nginx_cg = proxy_cg.container(driver, &nginx_id);
    let proxy_pids = kubelet::netns_pids(&hosts.proxy_ns);
    for &pid in &proxy_pids {
        let c = if kubelet::comm(pid) == "pause" {
            &sandbox_cg
        } else {
            &nginx_cg
        };
        PodCgroup::add(c, pid);
    }
    let orders_cg = upstream_cg.container(driver, &orders_id);
    let upstream_pids = kubelet::netns_pids(&hosts.upstream_ns);
    for &pid in &upstream_pids {
        PodCgroup::add(&orders_cg, pid);
    }
    // What the report must list: the namespace's processes, as the kernel names them.
    let expected: Vec<(u64, String, Value, bool)> = proxy_pids
        .iter()
        .map(|&pid| {
            let comm = kubelet::comm(pid);
            let sandbox = comm == "pause";
            let container = if sandbox {
                Value::Null
            } else {
                Value::from("nginx")
            };
            (u64::from(pid), comm, container, sandbox)
        })
        .collect();
    let comms: BTreeSet<String> = expected.iter().map(|e| e.1.clone()).collect();
    assert_eq!(
        comms,
        BTreeSet::from(["nginx".to_owned(), "pause".to_owned()]),
        "the proxy namespace's processes"
    );
    logs.pod(PROXY_NS, PROXY_POD, &proxy_uid, &[("nginx", &nginx_id)]);
    logs.pod(
        UPSTREAM_NS,
        UPSTREAM_POD,
        &upstream_uid,
        &[("orders", &orders_id)],
    );

    // tracer capture --pod, as a user would run it on the node.
    let err_path = dir.join("tracer.err");
    let out_path = dir.join("tracer.out");
    let child = Command::new(env!("CARGO_BIN_EXE_tracer"))
        .args([
            "capture",
            "--pod",
            &format!("{PROXY_NS}/{PROXY_POD}"),
            "--pods-dir",
        ])
        .arg(logs.pods_dir())
        .args(["--format", format, "--out"])
        .arg(dir.join("bundle"))
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out_path).unwrap())
        .stderr(std::fs::File::create(&err_path).unwrap())
        .spawn()
        .expect("starting tracer capture");
    let mut tracer = Tracer(child);
    wait_started(&mut tracer, &err_path);

    let target = SocketAddr::from((hosts.proxy_front_ip, PROXY_PORT));
    let results = load::run(&hosts.client_ns, target, &scenario.load()).expect("the load");
    std::thread::sleep(Duration::from_millis(800));
    stop(&mut tracer, &err_path);
    procs.stop_all(); // nginx flushes its logs
    let truth = scenario
        .ground_truth(&dir, &results)
        .expect("reading nginx's logs");

    // The client's own counts: every request a 502, each explained by nginx's error log.
    let counts = outcome_counts(&results);
    assert_eq!(
        counts.get("502").copied(),
        Some(results.len() as u64),
        "{counts:?}"
    );
    assert!(results.len() >= 50, "only {} requests", results.len());
    assert_eq!(truth.len(), results.len());
    assert!(truth.iter().all(|r| r.cause == "upstream_refused"));

    let stderr = std::fs::read_to_string(&err_path).unwrap();
    let stdout = std::fs::read_to_string(&out_path).unwrap();
    let report: Value = serde_json::from_str(
        &std::fs::read_to_string(dir.join("bundle/report.json")).expect("the bundle's report"),
    )
    .expect("the bundle's report is JSON");
    if format == "json" {
        let printed: Value = serde_json::from_str(&stdout).expect("stdout is one JSON document");
        assert_eq!(printed, report, "the printed report and the bundle's");
    } else {
        let first = stdout.lines().next().unwrap_or("");
        assert!(
            first.starts_with(&format!("pod {PROXY_NS}/{PROXY_POD} (uid {proxy_uid}")),
            "the text report's first line: {first}"
        );
    }
    assert!(
        stderr.contains("kernel probe attached"),
        "the probe was not attached: {stderr}"
    );

    // Every 502 has exactly one verdict, upstream_refused; nothing else has one.
    let mut by_rid: std::collections::BTreeMap<u64, Vec<&Value>> = Default::default();
    for v in report["verdicts"].as_array().expect("verdicts") {
        let rid = v["request_id"].as_str().and_then(|r| r.parse().ok());
        by_rid.entry(rid.unwrap_or(0)).or_default().push(v);
    }
    let mut wrong = Vec::new();
    for row in &truth {
        match by_rid.get(&row.rid).map(Vec::as_slice) {
            Some([v]) if v["cause"] == "upstream_refused" && v["status"] == 502 => {}
            got => wrong.push(format!("rid {}: {got:?}", row.rid)),
        }
    }
    let truth_rids: BTreeSet<u64> = truth.iter().map(|r| r.rid).collect();
    for (rid, vs) in &by_rid {
        if !truth_rids.contains(rid) {
            wrong.push(format!("rid {rid}: {} verdicts for no 502", vs.len()));
        }
    }
    assert!(
        wrong.is_empty(),
        "{} of {} 502s not explained (kept in {}):\n{}",
        wrong.len(),
        truth.len(),
        dir.display(),
        wrong.iter().take(8).cloned().collect::<Vec<_>>().join("\n")
    );

    eprintln!(
        "{} requests, {} answered 502 (nginx's error log: {} refused), {} upstream_refused verdicts",
        results.len(),
        counts.get("502").copied().unwrap_or(0),
        truth.len(),
        report["verdicts"].as_array().map_or(0, Vec::len)
    );
    eprintln!(
        "{}",
        stderr.lines().find(|l| l.contains("pod ")).unwrap_or("")
    );

    // The report names the pod, its containers and exactly its processes.
    let pod = &report["pod"];
    assert_eq!(pod["namespace"], PROXY_NS);
    assert_eq!(pod["name"], PROXY_POD);
    assert_eq!(pod["uid"], proxy_uid.as_str());
    assert_eq!(pod["containers"], serde_json::json!(["nginx"]));
    assert_eq!(pod["host_network"], false);
    let want_qos = if qos == "guaranteed" {
        "Guaranteed"
    } else {
        "Burstable"
    };
    assert_eq!(pod["qos"], want_qos);
    assert_eq!(pod["cgroup_driver"], tag.as_str());
    let netns = std::fs::metadata(format!("/run/netns/{}", hosts.proxy_ns))
        .unwrap()
        .ino();
    assert_eq!(pod["netns"], netns);
    let listed: Vec<(u64, String, Value, bool)> = pod["processes"]
        .as_array()
        .expect("processes")
        .iter()
        .map(|p| {
            (
                p["pid"].as_u64().unwrap_or(0),
                p["comm"].as_str().unwrap_or("").to_owned(),
                p["container"].clone(),
                p["sandbox"] == true,
            )
        })
        .collect();
    assert_eq!(listed, expected, "the pod's processes");

    let bases = [proxy_cg.base(), upstream_cg.base()];
    drop(tracer);
    drop(procs);
    drop(net);
    drop(logs);
    drop((proxy_cg, upstream_cg));
    for b in bases {
        assert!(!b.exists(), "cgroup {} was left behind", b.display());
    }
}

/// The run's configs, logs and bundle: removed at the end, kept (and named) when the test
/// fails; those of earlier runs whose process is gone are removed first.
struct RunDir(PathBuf);

impl RunDir {
    fn create(tag: &str) -> Self {
        let tmp = std::env::temp_dir();
        for e in std::fs::read_dir(&tmp)
            .into_iter()
            .flatten()
            .filter_map(Result::ok)
        {
            let name = e.file_name().to_string_lossy().into_owned();
            let owner = name
                .strip_prefix("tracer-pod-capture-")
                .and_then(|r| r.rsplit('-').next())
                .map(str::to_owned);
            if let Some(owner) = owner {
                if !std::path::Path::new("/proc").join(&owner).exists() {
                    let _ = std::fs::remove_dir_all(e.path());
                }
            }
        }
        let dir = tmp.join(format!("tracer-pod-capture-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir.canonicalize().unwrap())
    }
}

impl Drop for RunDir {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("the run's logs and bundle are kept in {}", self.0.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// Waits until `tracer capture` captures with its probe attached.
fn wait_started(t: &mut Tracer, err: &PathBuf) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let text = std::fs::read_to_string(err).unwrap_or_default();
        if text.contains("Ctrl-C to stop") {
            std::thread::sleep(Duration::from_millis(300));
            return;
        }
        if let Some(status) = t.0.try_wait().unwrap() {
            panic!("tracer capture --pod exited ({status}): {text}");
        }
        assert!(
            Instant::now() < deadline,
            "tracer capture did not start: {text}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Ctrl-C, then its report.
fn stop(t: &mut Tracer, err: &PathBuf) {
    let pid = nix_pid(t.0.id());
    // SAFETY: kill has no memory preconditions; `pid` is our own child, not yet reaped.
    unsafe { libc::kill(pid, libc::SIGINT) };
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(status) = t.0.try_wait().unwrap() {
            assert!(
                status.success(),
                "tracer capture --pod failed ({status}): {}",
                std::fs::read_to_string(err).unwrap_or_default()
            );
            return;
        }
        assert!(Instant::now() < deadline, "tracer capture did not finish");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn nix_pid(id: u32) -> i32 {
    i32::try_from(id).unwrap_or(i32::MAX)
}
