//! The node-local pod lookup over this machine's real `/proc` and cgroups: a `hostNetwork`
//! pod (a process in the host's network namespace, in a pod cgroup named as the kubelet's
//! cgroupfs driver names it, in a cgroup v1 hierarchy where the host has one), the reverse
//! lookup from a pid, and the errors a user meets. Needs root; skips with a printed reason
//! otherwise.

mod kubelet;

use std::os::unix::fs::MetadataExt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use kubelet::{Driver, Logs, PodCgroup};
use tracer::pod::{Node, PodError, PodRef};

const NS: &str = "kube-system";
const POD: &str = "node-proxy-x7k2d";

struct Kill(Child);

impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn a_host_network_pod_is_found_followed_by_its_process_and_named_from_its_pid() {
    if !kubelet::is_root() {
        eprintln!("SKIPPED: needs root (cgroups)");
        return;
    }
    let Some(hierarchy) = kubelet::v1().or_else(kubelet::v2) else {
        eprintln!("SKIPPED: no cgroup hierarchy is mounted");
        return;
    };
    let uid = kubelet::uid();
    let id = kubelet::hex(64);
    let mut cgroup = match PodCgroup::create(&hierarchy, Driver::Cgroupfs, "burstable", &uid) {
        Ok(c) => c,
        Err(e) => {
            eprintln!(
                "SKIPPED: cannot create cgroups in {}: {e}",
                hierarchy.mount.display()
            );
            return;
        }
    };
    let logs = Logs::create("hostnet");
    let dir = cgroup.container(Driver::Cgroupfs, &id);
    let proc = Kill(
        Command::new("sleep")
            .arg("600")
            .stdin(Stdio::null())
            .spawn()
            .expect("sleep"),
    );
    let pid = proc.0.id();
    let deadline = Instant::now() + Duration::from_secs(5);
    while kubelet::comm(pid) != "sleep" {
        assert!(Instant::now() < deadline, "sleep did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    PodCgroup::add(&dir, pid);
    logs.pod(NS, POD, &uid, &[("proxy", &id)]);
    let node = Node::with_pods_dir(logs.pods_dir());

    let pod = node
        .resolve(&PodRef::parse(&format!("{NS}/{POD}")).unwrap())
        .expect("the pod resolves");
    let host = std::fs::metadata("/proc/self/ns/net").unwrap().ino();
    assert_eq!(pod.netns, host);
    assert!(pod.host_network, "{pod:?}");
    assert_eq!(pod.processes.len(), 1, "{:?}", pod.processes);
    assert_eq!(pod.processes[0].pid, pid);
    assert_eq!(pod.processes[0].container.as_deref(), Some("proxy"));
    let follow = pod.follow();
    assert_eq!(
        follow.pid,
        Some(pid),
        "the probe follows the pod's one process"
    );
    eprintln!("{}", pod.describe());

    // The reverse: which pod and container a pid is.
    let owner = node.pod_of_pid(pid).unwrap().expect("in a pod");
    assert_eq!(
        (
            owner.namespace.as_deref(),
            owner.name.as_deref(),
            owner.container.as_deref()
        ),
        (Some(NS), Some(POD), Some("proxy"))
    );
    assert_eq!(
        node.pod_of_pid(std::process::id()).unwrap(),
        None,
        "this test is no pod"
    );

    // A near miss names the pod that is here.
    let err = node
        .resolve(&PodRef::parse(&format!("{NS}/node-proxy")).unwrap())
        .unwrap_err();
    assert!(matches!(err, PodError::NotOnNode { .. }), "{err}");
    assert!(err.to_string().contains(&format!("{NS}/{POD}")), "{err}");

    // `tracer capture --pod` on it: the host's namespace, the probe on its process.
    let out = Command::new(env!("CARGO_BIN_EXE_tracer"))
        .args(["capture", "--pod", &format!("{NS}/{POD}"), "--pods-dir"])
        .arg(logs.pods_dir())
        .args(["--duration", "1s", "--format", "json"])
        .stdin(Stdio::null())
        .output()
        .expect("tracer capture");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("hostNetwork") && stderr.contains(&format!("its process sleep[{pid}]")),
        "{stderr}"
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON report");
    assert_eq!(report["pod"]["host_network"], true);

    drop(proc);
    let base = cgroup.base();
    drop(cgroup);
    assert!(!base.exists(), "cgroup {} left behind", base.display());
}

#[test]
fn a_missing_kubelet_layout_and_a_bad_name_are_one_sentence_each() {
    let dir = std::env::temp_dir().join(format!("tracer-no-kubelet-{}", std::process::id()));
    let out = Command::new(env!("CARGO_BIN_EXE_tracer"))
        .args(["capture", "--pod", "shop/web-0", "--pods-dir"])
        .arg(&dir)
        .output()
        .expect("tracer capture");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.trim().ends_with("this is not a Kubernetes node, or its kubelet keeps pod logs elsewhere (give that directory with --pods-dir)"),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    let out = Command::new(env!("CARGO_BIN_EXE_tracer"))
        .args(["capture", "--pod", "Shop/web-0"])
        .output()
        .expect("tracer capture");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("the namespace `Shop` contains `S`"), "{err}");
}
