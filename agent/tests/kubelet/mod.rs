//! A kubelet-like node layout built for real on this machine, for the `--pod` tests: pod
//! cgroups named as the kubelet names them (systemd or cgroupfs driver) in the cgroup
//! hierarchies this machine mounts, and the kubelet's pod log directories and container
//! log links under a directory of the test's own. Everything is removed when dropped,
//! also when a test fails.

#![allow(dead_code, reason = "each test crate uses a part of it")]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// Prefix of the cgroups these tests create under a hierarchy's root; the next field is the
/// owning process id, so that leftovers of a killed run can be told from a running one's.
const CGROUP_PREFIX: &str = "tracer-kubelet-test-";

/// How the kubelet names pod cgroups.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Driver {
    Systemd,
    Cgroupfs,
}

/// A cgroup hierarchy mounted on this machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hierarchy {
    pub mount: PathBuf,
    /// `None` for cgroup v2; the v1 controllers (`pids`, `cpu,cpuacct`, `name=systemd`).
    pub v1: Option<String>,
}

/// The cgroup hierarchies this machine mounts at their root, from `/proc/self/mountinfo`.
pub fn hierarchies() -> Vec<Hierarchy> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    text.lines()
        .filter_map(|l| {
            // id parent major:minor root mountpoint options [optional…] - fstype source superopts
            let (left, right) = l.split_once(" - ")?;
            let f: Vec<&str> = left.split(' ').collect();
            let (root, mount) = (*f.get(3)?, *f.get(4)?);
            let r: Vec<&str> = right.split(' ').collect();
            let (fstype, superopts) = (*r.first()?, *r.get(2).unwrap_or(&""));
            if root != "/" {
                return None;
            }
            let v1 = match fstype {
                "cgroup2" => None,
                "cgroup" => Some(
                    superopts
                        .split(',')
                        .filter(|o| !matches!(*o, "rw" | "ro") && !o.starts_with("release_agent"))
                        .collect::<Vec<_>>()
                        .join(","),
                ),
                _ => return None,
            };
            Some(Hierarchy {
                mount: PathBuf::from(mount),
                v1,
            })
        })
        .collect()
}

/// The cgroup v2 hierarchy, if mounted.
pub fn v2() -> Option<Hierarchy> {
    hierarchies().into_iter().find(|h| h.v1.is_none())
}

/// A cgroup v1 hierarchy (`pids` preferred), if any is mounted: the hybrid layout.
pub fn v1() -> Option<Hierarchy> {
    let all: Vec<Hierarchy> = hierarchies()
        .into_iter()
        .filter(|h| h.v1.is_some())
        .collect();
    all.iter()
        .find(|h| h.v1.as_deref() == Some("pids"))
        .or_else(|| all.first())
        .cloned()
}

/// A random-looking hex string of `n` digits, different on every call.
pub fn hex(n: usize) -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut out = String::new();
    while out.len() < n {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u128(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos()),
        );
        out.push_str(&format!("{:016x}", h.finish()));
    }
    out.truncate(n);
    out
}

/// A new pod UID (UUID v4 shape).
pub fn uid() -> String {
    let h = hex(32);
    format!(
        "{}-{}-4{}-8{}-{}",
        &h[0..8],
        &h[8..12],
        &h[13..16],
        &h[17..20],
        &h[20..32]
    )
}

/// One pod's cgroups in one hierarchy: the pod's and one per container below it, named as
/// the kubelet and containerd name them.
pub struct PodCgroup {
    hierarchy: Hierarchy,
    /// Every directory created, parents first.
    created: Vec<PathBuf>,
    pod_dir: PathBuf,
}

impl PodCgroup {
    /// Creates the pod's cgroup for `uid` with QoS `qos` (`burstable`, `besteffort`, or
    /// `guaranteed`, which has no level of its own), under a base cgroup of this test's.
    /// `Err` when this machine does not let us (a read-only cgroup mount in a container).
    pub fn create(
        hierarchy: &Hierarchy,
        driver: Driver,
        qos: &str,
        uid: &str,
    ) -> std::io::Result<Self> {
        remove_stale(&hierarchy.mount);
        let base =
            hierarchy
                .mount
                .join(format!("{CGROUP_PREFIX}{}-{}", std::process::id(), hex(6)));
        let mut rel: Vec<String> = Vec::new();
        let u = uid.replace('-', "_");
        match (driver, qos) {
            (Driver::Systemd, "guaranteed") => {
                rel.push("kubepods.slice".into());
                rel.push(format!("kubepods-pod{u}.slice"));
            }
            (Driver::Systemd, q) => {
                rel.push("kubepods.slice".into());
                rel.push(format!("kubepods-{q}.slice"));
                rel.push(format!("kubepods-{q}-pod{u}.slice"));
            }
            (Driver::Cgroupfs, "guaranteed") => {
                rel.push("kubepods".into());
                rel.push(format!("pod{uid}"));
            }
            (Driver::Cgroupfs, q) => {
                rel.push("kubepods".into());
                rel.push(q.into());
                rel.push(format!("pod{uid}"));
            }
        }
        std::fs::create_dir(&base)?;
        let mut cg = Self {
            hierarchy: hierarchy.clone(),
            created: vec![base.clone()],
            pod_dir: base,
        };
        for r in rel {
            let dir = cg.pod_dir.join(r);
            std::fs::create_dir(&dir)?;
            cg.created.push(dir.clone());
            cg.pod_dir = dir;
        }
        Ok(cg)
    }

    /// The test's own cgroup at the hierarchy's root, which holds the pod's.
    pub fn base(&self) -> PathBuf {
        self.created[0].clone()
    }

    /// The container cgroup for runtime container `id` (created on first use).
    pub fn container(&mut self, driver: Driver, id: &str) -> PathBuf {
        let dir = self.pod_dir.join(match driver {
            Driver::Systemd => format!("cri-containerd-{id}.scope"),
            Driver::Cgroupfs => id.to_owned(),
        });
        if !dir.exists() {
            std::fs::create_dir(&dir).expect("creating a container cgroup");
            self.created.push(dir.clone());
        }
        dir
    }

    /// Moves process `pid` into the container cgroup `dir`.
    pub fn add(dir: &Path, pid: u32) {
        std::fs::write(dir.join("cgroup.procs"), pid.to_string())
            .unwrap_or_else(|e| panic!("moving {pid} into {}: {e}", dir.display()));
    }
}

impl Drop for PodCgroup {
    fn drop(&mut self) {
        remove_tree(&self.hierarchy.mount, &self.created);
    }
}

/// Moves any process left in `dirs` to the hierarchy's root, then removes them, children
/// first (a cgroup whose last process just exited may be busy for a moment).
fn remove_tree(mount: &Path, dirs: &[PathBuf]) {
    for d in dirs.iter().rev() {
        if let Ok(procs) = std::fs::read_to_string(d.join("cgroup.procs")) {
            for pid in procs.split_whitespace() {
                let _ = std::fs::write(mount.join("cgroup.procs"), pid);
            }
        }
        let deadline = Instant::now() + Duration::from_secs(3);
        while d.exists() && std::fs::remove_dir(d).is_err() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// Removes the cgroups of earlier runs whose process is gone.
fn remove_stale(mount: &Path) {
    let Ok(entries) = std::fs::read_dir(mount) else {
        return;
    };
    for e in entries.filter_map(Result::ok) {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(rest) = name.strip_prefix(CGROUP_PREFIX) else {
            continue;
        };
        let owner = rest.split('-').next().unwrap_or("");
        if Path::new("/proc").join(owner).exists() {
            continue;
        }
        let mut dirs = Vec::new();
        collect_dirs(&e.path(), &mut dirs);
        remove_tree(mount, &dirs);
    }
}

fn collect_dirs(dir: &Path, out: &mut Vec<PathBuf>) {
    out.push(dir.to_owned());
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.filter_map(Result::ok) {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                collect_dirs(&e.path(), out);
            }
        }
    }
}

/// The kubelet's log layout under a directory of the test's: `pods/NS_NAME_UID/CONTAINER/`
/// and `containers/POD_NS_CONTAINER-ID.log`.
pub struct Logs {
    pub root: PathBuf,
}

impl Logs {
    pub fn create(tag: &str) -> Self {
        let root =
            std::env::temp_dir().join(format!("tracer-kubelet-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(root.join("pods")).unwrap();
        std::fs::create_dir_all(root.join("containers")).unwrap();
        Self { root }
    }

    pub fn pods_dir(&self) -> PathBuf {
        self.root.join("pods")
    }

    /// The pod's directory with one directory per container, and the link naming `id`
    /// for each `(container, id)`.
    pub fn pod(&self, ns: &str, name: &str, uid: &str, containers: &[(&str, &str)]) {
        for (c, id) in containers {
            let d = self.root.join(format!("pods/{ns}_{name}_{uid}/{c}"));
            std::fs::create_dir_all(&d).unwrap();
            std::fs::write(d.join("0.log"), "").unwrap();
            std::os::unix::fs::symlink(
                d.join("0.log"),
                self.root
                    .join(format!("containers/{name}_{ns}_{c}-{id}.log")),
            )
            .unwrap();
        }
    }
}

impl Drop for Logs {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

/// The processes whose network namespace is `ns` (`ip netns pids`): ground truth from the
/// kernel for which processes a pod has.
pub fn netns_pids(ns: &str) -> Vec<u32> {
    let out = Command::new("ip")
        .args(["netns", "pids", ns])
        .output()
        .expect("running ip netns pids");
    let mut pids: Vec<u32> = String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect();
    pids.sort_unstable();
    pids
}

/// `/proc/PID/comm`.
pub fn comm(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .map(|s| s.trim_end().to_owned())
        .unwrap_or_default()
}

/// A copy of `sleep` named `pause` in `dir`: the pod sandbox's process, as `pause` is.
pub fn pause_binary(dir: &Path) -> PathBuf {
    let sleep = ["/usr/bin/sleep", "/bin/sleep"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .expect("sleep (coreutils)");
    let pause = dir.join("pause");
    std::fs::copy(sleep, &pause).expect("copying sleep");
    pause
}

/// Whether this process runs as root; the tests that build a node need it.
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}
