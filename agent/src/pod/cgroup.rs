//! Which pod (and container) a process belongs to, from its `/proc/PID/cgroup`. Pure
//! parsers.
//!
//! The kubelet names a pod's cgroup after the pod's UID, in one of two ways:
//!
//! | driver | pod cgroup | container cgroup below it |
//! |---|---|---|
//! | systemd | `kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod<UID, `-` as `_`>.slice` | `cri-containerd-<ID>.scope`, `crio-<ID>.scope`, `docker-<ID>.scope` |
//! | cgroupfs | `kubepods/burstable/pod<UID>` | `<ID>`, `crio-<ID>` |
//!
//! with `besteffort` for BestEffort pods and no QoS level at all for Guaranteed ones
//! (`kubepods-pod<UID>.slice`, `kubepods/pod<UID>`). cgroup v1 gives one line per
//! hierarchy (`4:memory:/kubepods/...`), v2 one line (`0::/kubepods.slice/...`), hybrid
//! hosts both; a process in a cgroup namespace sees paths relative to its own root
//! (`0::/../../kubepods-...`). The pod is found by the names of the path's components,
//! wherever they sit, so all of these read the same.

use serde::Serialize;

use super::name::is_uid;

/// One line of `/proc/PID/cgroup`: `hierarchy-ID:controllers:path`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CgroupLine<'a> {
    pub hierarchy: u32,
    /// Comma-separated controllers (`cpu,cpuacct`, `name=systemd`); empty for cgroup v2.
    pub controllers: &'a str,
    pub path: &'a str,
}

impl CgroupLine<'_> {
    /// The cgroup v2 (unified) line.
    pub fn is_v2(&self) -> bool {
        self.hierarchy == 0 && self.controllers.is_empty()
    }
}

/// Parses `/proc/PID/cgroup`; lines it cannot read are skipped.
pub fn parse_proc_cgroup(text: &str) -> Vec<CgroupLine<'_>> {
    text.lines()
        .filter_map(|l| {
            let mut it = l.splitn(3, ':');
            let hierarchy = it.next()?.parse().ok()?;
            let controllers = it.next()?;
            let path = it.next()?;
            Some(CgroupLine {
                hierarchy,
                controllers,
                path,
            })
        })
        .collect()
}

/// The pod's quality-of-service class, which places its cgroup.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Qos {
    Guaranteed,
    Burstable,
    BestEffort,
}

/// How the kubelet names cgroups (its `cgroupDriver`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Driver {
    Systemd,
    Cgroupfs,
}

impl std::fmt::Display for Driver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Systemd => "systemd",
            Self::Cgroupfs => "cgroupfs",
        })
    }
}

/// The container runtime, as far as the container cgroup's name tells.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Runtime {
    Containerd,
    Crio,
    Docker,
    /// The cgroupfs driver names containerd's and Docker's containers by bare id.
    Unknown,
}

/// What the process is within the pod's cgroup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Member {
    /// In a container's cgroup (the pod sandbox's `pause` is a container too).
    Container { runtime: Runtime, id: String },
    /// A runtime's helper placed in the pod's cgroup (CRI-O's `conmon`): not part of the
    /// pod's workload, and not in its network namespace.
    RuntimeHelper,
    /// Directly in the pod's cgroup.
    Pod,
}

/// A process's pod, from its cgroup path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodCgroup {
    /// The pod UID with dashes, as in `/var/log/pods`.
    pub uid: String,
    pub qos: Qos,
    pub driver: Driver,
    pub member: Member,
}

/// The pod a cgroup path belongs to, `None` when it is not a pod's.
pub fn pod_of_path(path: &str) -> Option<PodCgroup> {
    let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
    for (i, part) in parts.iter().enumerate() {
        let found = systemd_pod(part)
            .map(|(uid, qos)| (uid, qos, Driver::Systemd))
            .or_else(|| {
                cgroupfs_pod(part).map(|uid| {
                    let qos = i
                        .checked_sub(1)
                        .and_then(|p| qos_word(parts[p]))
                        .unwrap_or(Qos::Guaranteed);
                    (uid, qos, Driver::Cgroupfs)
                })
            });
        if let Some((uid, qos, driver)) = found {
            let member = parts.get(i + 1).map_or(Member::Pod, |c| member(c, driver));
            return Some(PodCgroup {
                uid,
                qos,
                driver,
                member,
            });
        }
    }
    None
}

/// The pod of a whole `/proc/PID/cgroup` text: from the line that says most (a container
/// before the pod alone), the v2 line first.
pub fn pod_of_proc_cgroup(text: &str) -> Option<PodCgroup> {
    let mut lines = parse_proc_cgroup(text);
    lines.sort_by_key(|l| !l.is_v2());
    let mut found: Vec<PodCgroup> = lines.iter().filter_map(|l| pod_of_path(l.path)).collect();
    let best = found
        .iter()
        .position(|p| matches!(p.member, Member::Container { .. }))
        .unwrap_or(0);
    (!found.is_empty()).then(|| found.swap_remove(best))
}

/// `kubepods-burstable-pod<UID_>.slice` (any prefix ending in `kubepods[-qos]-`).
fn systemd_pod(part: &str) -> Option<(String, Qos)> {
    let stem = part.strip_suffix(".slice")?;
    let at = stem.rfind("-pod")?;
    let (prefix, uid) = (&stem[..at], &stem[at + "-pod".len()..]);
    if !prefix.contains("kubepods") {
        return None;
    }
    let uid = uid.replace('_', "-");
    if !is_uid(&uid) {
        return None;
    }
    let qos = prefix
        .rsplit('-')
        .next()
        .and_then(qos_word)
        .unwrap_or(Qos::Guaranteed);
    Some((uid, qos))
}

/// `pod<UID>`.
fn cgroupfs_pod(part: &str) -> Option<String> {
    let uid = part.strip_prefix("pod")?;
    is_uid(uid).then(|| uid.to_owned())
}

fn qos_word(s: &str) -> Option<Qos> {
    match s {
        "besteffort" => Some(Qos::BestEffort),
        "burstable" => Some(Qos::Burstable),
        _ => None,
    }
}

/// What the component below the pod's cgroup says about the process.
fn member(part: &str, driver: Driver) -> Member {
    let container = |runtime, id: &str| {
        if id.len() >= 12 && id.bytes().all(|b| b.is_ascii_hexdigit()) {
            Member::Container {
                runtime,
                id: id.to_owned(),
            }
        } else {
            Member::Pod
        }
    };
    let stem = match driver {
        Driver::Systemd => part.strip_suffix(".scope").unwrap_or(part),
        Driver::Cgroupfs => part,
    };
    if stem.starts_with("crio-conmon-") {
        return Member::RuntimeHelper;
    }
    if let Some(id) = stem.strip_prefix("cri-containerd-") {
        return container(Runtime::Containerd, id);
    }
    if let Some(id) = stem.strip_prefix("crio-") {
        return container(Runtime::Crio, id);
    }
    if let Some(id) = stem.strip_prefix("docker-") {
        return container(Runtime::Docker, id);
    }
    container(Runtime::Unknown, stem)
}

#[cfg(test)]
mod tests {
    use super::*;

    const UID: &str = "6f1c2b8e-3d4a-4f5b-9c8d-0123456789ab";
    const UID_: &str = "6f1c2b8e_3d4a_4f5b_9c8d_0123456789ab";

    fn id() -> String {
        "0f".repeat(32)
    }

    fn container(runtime: Runtime) -> Member {
        Member::Container { runtime, id: id() }
    }

    #[test]
    fn systemd_driver_names_the_pod_slice_after_its_uid() {
        let p = pod_of_path(&format!(
            "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_}.slice/cri-containerd-{}.scope",
            id()
        ))
        .unwrap();
        assert_eq!(p.uid, UID);
        assert_eq!((p.qos, p.driver), (Qos::Burstable, Driver::Systemd));
        assert_eq!(p.member, container(Runtime::Containerd));
    }

    #[test]
    fn guaranteed_pods_have_no_qos_level() {
        let p = pod_of_path(&format!(
            "/kubepods.slice/kubepods-pod{UID_}.slice/crio-{}.scope",
            id()
        ))
        .unwrap();
        assert_eq!((p.qos, p.driver), (Qos::Guaranteed, Driver::Systemd));
        assert_eq!(p.member, container(Runtime::Crio));
        let p = pod_of_path(&format!("/kubepods/pod{UID}/{}", id())).unwrap();
        assert_eq!((p.qos, p.driver), (Qos::Guaranteed, Driver::Cgroupfs));
        assert_eq!(p.member, container(Runtime::Unknown));
    }

    #[test]
    fn cgroupfs_driver_names_the_pod_directory_after_its_uid() {
        let p = pod_of_path(&format!("/kubepods/besteffort/pod{UID}/crio-{}", id())).unwrap();
        assert_eq!(p.uid, UID);
        assert_eq!((p.qos, p.driver), (Qos::BestEffort, Driver::Cgroupfs));
        assert_eq!(p.member, container(Runtime::Crio));
    }

    #[test]
    fn a_kubelet_cgroup_root_prefix_and_a_cgroup_namespace_are_read_through() {
        // kind: the kubelet's cgroup root is kubelet.slice.
        let p = pod_of_path(&format!(
            "/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-besteffort.slice/kubelet-kubepods-besteffort-pod{UID_}.slice/docker-{}.scope",
            id()
        ))
        .unwrap();
        assert_eq!((p.uid.as_str(), p.qos), (UID, Qos::BestEffort));
        assert_eq!(p.member, container(Runtime::Docker));
        // Seen from inside another cgroup namespace.
        let p = pod_of_path(&format!(
            "/../../kubepods-burstable-pod{UID_}.slice/cri-containerd-{}.scope",
            id()
        ))
        .unwrap();
        assert_eq!(p.uid, UID);
    }

    #[test]
    fn cri_o_monitor_and_the_pod_level_are_not_containers() {
        let p = pod_of_path(&format!(
            "/kubepods.slice/kubepods-pod{UID_}.slice/crio-conmon-{}.scope",
            id()
        ))
        .unwrap();
        assert_eq!(p.member, Member::RuntimeHelper);
        let p = pod_of_path(&format!("/kubepods/burstable/pod{UID}")).unwrap();
        assert_eq!(p.member, Member::Pod);
    }

    #[test]
    fn other_cgroups_are_no_pods() {
        for path in [
            "/",
            "/system.slice/containerd.service",
            "/user.slice/user-1000.slice/session-2.scope",
            "/kubepods.slice/kubepods-burstable.slice",
            "/kubepods/burstable",
            "/kubepods/burstable/podnot-a-uid",
            &format!("/system.slice/app-pod{UID_}.slice"),
        ] {
            assert_eq!(pod_of_path(path), None, "{path}");
        }
    }

    #[test]
    fn proc_cgroup_lines_of_v1_v2_and_hybrid_hosts_are_read() {
        let v1 = format!(
            "12:pids:/kubepods/burstable/pod{UID}/{id}\n11:cpu,cpuacct:/kubepods/burstable/pod{UID}/{id}\n1:name=systemd:/kubepods/burstable/pod{UID}/{id}\n",
            id = id()
        );
        let lines = parse_proc_cgroup(&v1);
        assert_eq!(lines.len(), 3);
        assert_eq!(lines[1].controllers, "cpu,cpuacct");
        assert!(!lines[0].is_v2());
        let p = pod_of_proc_cgroup(&v1).unwrap();
        assert_eq!((p.uid.as_str(), p.driver), (UID, Driver::Cgroupfs));

        let v2 = format!(
            "0::/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{UID_}.slice/cri-containerd-{}.scope\n",
            id()
        );
        assert!(parse_proc_cgroup(&v2)[0].is_v2());
        let p = pod_of_proc_cgroup(&v2).unwrap();
        assert_eq!((p.qos, p.driver), (Qos::BestEffort, Driver::Systemd));

        // Hybrid: v1 controllers under systemd, the unified line only at the pod level.
        let hybrid = format!(
            "9:name=systemd:/kubepods.slice/kubepods-pod{UID_}.slice/cri-containerd-{id}.scope\n4:memory:/kubepods.slice/kubepods-pod{UID_}.slice/cri-containerd-{id}.scope\n0::/kubepods.slice/kubepods-pod{UID_}.slice\n",
            id = id()
        );
        let p = pod_of_proc_cgroup(&hybrid).unwrap();
        assert_eq!(p.member, container(Runtime::Containerd));
        assert_eq!(
            pod_of_proc_cgroup("0::/\n1:name=systemd:/init.scope\n"),
            None
        );
        assert_eq!(pod_of_proc_cgroup("garbage"), None);
    }

    #[test]
    fn paths_with_colons_stay_whole() {
        let l = parse_proc_cgroup("0::/a:b/c\n");
        assert_eq!(l[0].path, "/a:b/c");
    }
}
