//! The capabilities `deploy/daemonset.yaml` grants are the ones tracer needs: with exactly
//! those (uid 0, every other capability out of the bounding set, as a container runtime
//! starts the agent), `tracer check` passes and `tracer capture --pod` resolves a pod whose
//! process runs as another user, enters its network namespace, captures there and loads
//! the probe; with any one of them removed, one of the two fails and names it.
//!
//! The list is read from the manifest, so the manifest cannot drift from what was tested.
//! Needs root and `setpriv` (util-linux); skips with a printed reason otherwise.

mod kubelet;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use kubelet::{Driver, Logs, PodCgroup};

/// The pod the capture is pointed at.
const NS: &str = "edge";
const POD: &str = "proxy-0";

/// `capabilities.add` of the DaemonSet's container.
fn manifest_capabilities() -> Vec<String> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/daemonset.yaml");
    let text = std::fs::read_to_string(&path).expect("deploy/daemonset.yaml");
    let line = text
        .lines()
        .map(str::trim)
        .find_map(|l| l.strip_prefix("add:"))
        .expect("capabilities.add in the DaemonSet");
    // One flow sequence: ["SYS_ADMIN", "NET_RAW", …].
    let inner = line
        .trim()
        .strip_prefix('[')
        .and_then(|l| l.strip_suffix(']'))
        .expect("capabilities.add written as [\"A\", \"B\"]");
    inner
        .split(',')
        .map(|c| c.trim().trim_matches('"').to_owned())
        .filter(|c| !c.is_empty())
        .collect()
}

fn setpriv() -> Option<PathBuf> {
    ["/usr/bin/setpriv", "/bin/setpriv"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
}

/// Runs `tracer ARGS` as uid 0 with only `caps` in its bounding set (and so in its
/// permitted and effective sets after exec), none inheritable.
fn tracer_with(setpriv: &Path, caps: &[String], args: &[&str]) -> Output {
    let bounding: String = std::iter::once("-all".to_owned())
        .chain(caps.iter().map(|c| format!("+{}", c.to_lowercase())))
        .collect::<Vec<_>>()
        .join(",");
    Command::new(setpriv)
        .args(["--bounding-set", &bounding, "--inh-caps", "-all", "--"])
        .arg(env!("CARGO_BIN_EXE_tracer"))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("running setpriv")
}

/// The pod: a network namespace, a process in it running as `nobody` (as a proxy's
/// workers do), a kubelet-named cgroup holding it, and the kubelet's log layout.
struct Pod {
    ns: String,
    child: Child,
    _cgroup: PodCgroup,
    logs: Logs,
}

impl Pod {
    fn create() -> Result<Pod, String> {
        let hierarchy = kubelet::v2()
            .or_else(kubelet::v1)
            .ok_or("no cgroup hierarchy is mounted")?;
        let uid = kubelet::uid();
        let id = kubelet::hex(64);
        let mut cgroup = PodCgroup::create(&hierarchy, Driver::Systemd, "besteffort", &uid)
            .map_err(|e| {
                format!(
                    "cannot create cgroups in {}: {e}",
                    hierarchy.mount.display()
                )
            })?;
        let dir = cgroup.container(Driver::Systemd, &id);
        let ns = format!("tracer-caps-{}", std::process::id());
        let ip = |args: &[&str]| {
            assert!(
                Command::new("ip").args(args).status().unwrap().success(),
                "ip {args:?}"
            );
        };
        ip(&["netns", "add", &ns]);
        ip(&["-n", &ns, "link", "set", "lo", "up"]);
        let child = Command::new("ip")
            .args([
                "netns", "exec", &ns, "setpriv", "--reuid", "65534", "--regid", "65534",
            ])
            .args(["--clear-groups", "sleep", "600"])
            .spawn()
            .expect("starting the pod's process");
        let deadline = Instant::now() + Duration::from_secs(5);
        while kubelet::comm(child.id()) != "sleep" {
            assert!(Instant::now() < deadline, "the pod's process did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        PodCgroup::add(&dir, child.id());
        let logs = Logs::create("caps");
        logs.pod(NS, POD, &uid, &[("proxy", &id)]);
        Ok(Pod {
            ns,
            child,
            _cgroup: cgroup,
            logs,
        })
    }
}

impl Drop for Pod {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = Command::new("ip").args(["netns", "del", &self.ns]).status();
    }
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn the_daemonsets_capabilities_are_enough_and_each_is_needed() {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("SKIPPED: needs root (to hand tracer a chosen set of capabilities)");
        return;
    }
    let Some(setpriv) = setpriv() else {
        eprintln!("SKIPPED: needs setpriv (apt-get install util-linux)");
        return;
    };
    let caps = manifest_capabilities();
    eprintln!("the DaemonSet's capabilities: {caps:?}");
    assert!(!caps.is_empty());
    let pod = match Pod::create() {
        Ok(p) => p,
        Err(why) => {
            eprintln!("SKIPPED: {why}");
            return;
        }
    };
    let pods_dir = pod.logs.pods_dir();
    let pods_dir = pods_dir.to_str().unwrap();
    let wanted = format!("{NS}/{POD}");
    let capture = [
        "capture",
        "--pod",
        &wanted,
        "--pods-dir",
        pods_dir,
        "--duration",
        "1s",
        "--format",
        "json",
    ];

    // Exactly the manifest's list: both pass, with the probe attached.
    let check = tracer_with(&setpriv, &caps, &["check"]);
    assert!(check.status.success(), "tracer check:\n{}", text(&check));
    let run = tracer_with(&setpriv, &caps, &capture);
    assert!(
        run.status.success(),
        "tracer capture --pod:\n{}",
        text(&run)
    );
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(stderr.contains("kernel probe attached"), "{stderr}");
    let report: serde_json::Value =
        serde_json::from_slice(&run.stdout).expect("capture's report is JSON");
    assert_eq!(report["pod"]["name"], POD);
    assert_eq!(
        report["pod"]["processes"][0]["pid"],
        pod.child.id(),
        "the pod's process"
    );
    eprintln!("with {caps:?}: tracer check and tracer capture --pod pass");

    // Each one removed: one of them fails, naming it.
    for missing in &caps {
        let fewer: Vec<String> = caps.iter().filter(|c| *c != missing).cloned().collect();
        let check = tracer_with(&setpriv, &fewer, &["check"]);
        let run = tracer_with(&setpriv, &fewer, &capture);
        let name = format!("CAP_{missing}");
        let failed: Vec<(&str, String)> =
            [("tracer check", &check), ("tracer capture --pod", &run)]
                .into_iter()
                .filter(|(_, o)| !o.status.success())
                .map(|(what, o)| (what, text(o)))
                .collect();
        assert!(
            !failed.is_empty(),
            "without {name} both passed: it is not needed\n{}",
            text(&run)
        );
        assert!(
            failed.iter().any(|(_, t)| t.contains(&name)),
            "without {name} the failure does not name it:\n{failed:#?}"
        );
        let (what, t) = failed
            .iter()
            .find(|(_, t)| t.contains(&name))
            .expect("checked above");
        let line = t
            .lines()
            .find(|l| l.contains(&name))
            .unwrap_or_default()
            .trim();
        eprintln!("without {name}: {what} fails: {line}");
    }
}
