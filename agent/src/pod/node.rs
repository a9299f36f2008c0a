//! The filesystem side of the pod lookup: the kubelet's log directories and `/proc`, each
//! rooted at a directory of its own so that tests can lay out a node of their own.

use std::collections::HashMap;
use std::io::ErrorKind;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use super::cgroup::{self, Member, PodCgroup};
use super::name::{self, ContainerLogName, PodDirName, PodRef};
use super::{Pod, PodError, PodOfPid, PodProcess};

/// At most this many similar names are offered when a pod is not found.
const SIMILAR: usize = 5;

const NEEDS_ROOT: &str =
    "run tracer as root (in a container: mount the host's directory and run as uid 0)";
const NEEDS_PTRACE: &str = "reading the namespaces of another user's process needs CAP_SYS_PTRACE: run tracer as root, or grant it (Kubernetes: add SYS_PTRACE to securityContext.capabilities.add)";

/// Where this node's pods are described.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    /// The kubelet's pod log directory: one `NAMESPACE_NAME_UID` directory per pod.
    pub pods_dir: PathBuf,
    /// The kubelet's container log links, `POD_NAMESPACE_CONTAINER-ID.log`.
    pub containers_dir: PathBuf,
    /// procfs, showing the node's processes.
    pub proc_dir: PathBuf,
}

impl Default for Node {
    /// `/var/log/pods`, `/var/log/containers`, `/proc`.
    fn default() -> Self {
        Self::with_pods_dir("/var/log/pods")
    }
}

impl Node {
    /// The layout with the pod log directory at `pods_dir`, the container links beside it
    /// (`../containers`) and `/proc`.
    pub fn with_pods_dir(pods_dir: impl Into<PathBuf>) -> Self {
        let pods_dir = pods_dir.into();
        let containers_dir = pods_dir
            .parent()
            .unwrap_or_else(|| Path::new("/"))
            .join("containers");
        Self {
            pods_dir,
            containers_dir,
            proc_dir: PathBuf::from("/proc"),
        }
    }

    /// Every pod that has a log directory on this node, sorted.
    pub fn pods(&self) -> Result<Vec<PodDirName>, PodError> {
        let entries = std::fs::read_dir(&self.pods_dir).map_err(|e| match e.kind() {
            ErrorKind::NotFound => PodError::LayoutMissing {
                dir: self.pods_dir.clone(),
            },
            _ => io_error(&self.pods_dir, e, NEEDS_ROOT),
        })?;
        let mut pods: Vec<PodDirName> = entries
            .filter_map(Result::ok)
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .filter_map(|e| PodDirName::parse(e.file_name().to_str()?))
            .collect();
        pods.sort();
        Ok(pods)
    }

    /// The pod `wanted` names, among those with a log directory here.
    pub fn find(&self, wanted: &PodRef) -> Result<PodDirName, PodError> {
        let pods = self.pods()?;
        let mut hits: Vec<&PodDirName> = pods
            .iter()
            .filter(|p| {
                p.name == wanted.name
                    && wanted
                        .namespace
                        .as_ref()
                        .is_none_or(|ns| *ns == p.namespace)
            })
            .collect();
        // A pod recreated under the same name leaves its old directory until the kubelet
        // removes it: prefer the one that has processes.
        if hits.len() > 1 && hits.iter().all(|p| p.namespace == hits[0].namespace) {
            let running = self.running_uids();
            hits.sort_by_key(|p| !running.contains_key(&p.uid));
            hits.truncate(1);
        }
        match hits.as_slice() {
            [one] => Ok((*one).clone()),
            [] => Err(PodError::NotOnNode {
                wanted: wanted.to_string(),
                dir: self.pods_dir.clone(),
                count: pods.len(),
                similar: name::similar(wanted, &pods, SIMILAR)
                    .into_iter()
                    .map(PodDirName::qualified)
                    .collect(),
            }),
            many => Err(PodError::Ambiguous {
                name: wanted.name.clone(),
                candidates: many.iter().map(|p| p.qualified()).collect(),
            }),
        }
    }

    /// Finds the pod and reads its containers, processes and network namespace.
    pub fn resolve(&self, wanted: &PodRef) -> Result<Pod, PodError> {
        let dir = self.find(wanted)?;
        let mut containers = self.container_dirs(&dir)?;
        containers.sort();
        let names = self.container_names(&dir);
        let members = self.members(&dir.uid)?;
        let Some(first) = members.first() else {
            return Err(PodError::NotRunning {
                pod: dir.qualified(),
                uid: dir.uid,
            });
        };
        let (qos, driver) = (first.1.qos, first.1.driver);
        // A single container with a log directory and a single unnamed workload id: that's it.
        let ids: std::collections::BTreeSet<&str> = members
            .iter()
            .filter_map(|(_, c)| match &c.member {
                Member::Container { id, .. } if !names.contains_key(id) => Some(id.as_str()),
                _ => None,
            })
            .collect();
        let mut processes = Vec::new();
        for (pid, c) in &members {
            let Some(netns) = self.netns_inode(*pid)? else {
                continue; // exited meanwhile
            };
            let comm = std::fs::read_to_string(self.proc_dir.join(pid.to_string()).join("comm"))
                .map(|s| s.trim_end().to_owned())
                .unwrap_or_default();
            let (container_id, runtime_helper) = match &c.member {
                Member::Container { id, .. } => (Some(id.clone()), false),
                Member::RuntimeHelper => (None, true),
                Member::Pod => (None, false),
            };
            let named = container_id.as_ref().and_then(|id| names.get(id).cloned());
            let sandbox = named.is_none() && container_id.is_some() && comm == "pause";
            let container = named.or_else(|| {
                // One container and one id that is not the sandbox's: the id is that container.
                let lone = containers.len() == 1 && ids.len() == 1 && !sandbox;
                (lone && container_id.is_some()).then(|| containers[0].clone())
            });
            processes.push(PodProcess {
                pid: *pid,
                comm,
                container,
                container_id,
                sandbox,
                runtime_helper,
                netns,
            });
        }
        let Some(netns) = pod_netns(&processes) else {
            return Err(PodError::NotRunning {
                pod: dir.qualified(),
                uid: dir.uid,
            });
        };
        let holder = processes
            .iter()
            .filter(|p| p.netns == netns)
            .min_by_key(|p| (!p.sandbox, p.pid))
            .map_or(0, |p| p.pid);
        // The host's network namespace is PID 1's (with hostPID, the node's init). Where
        // PID 1 is shielded even from root, tracer's own stands in: it runs on the host.
        let host = match self.netns_inode(1) {
            Err(PodError::PermissionDenied { .. }) => self.netns_of("self").ok().flatten(),
            other => other?,
        };
        Ok(Pod {
            namespace: dir.namespace,
            name: dir.name,
            uid: dir.uid,
            qos,
            cgroup_driver: driver,
            containers,
            processes,
            netns,
            host_network: host == Some(netns),
            netns_path: self
                .proc_dir
                .join(holder.to_string())
                .join("ns")
                .join("net"),
        })
    }

    /// The pod process `pid` belongs to; `Ok(None)` when it is not in a pod's cgroup.
    pub fn pod_of_pid(&self, pid: u32) -> Result<Option<PodOfPid>, PodError> {
        let path = self.proc_dir.join(pid.to_string()).join("cgroup");
        let text = std::fs::read_to_string(&path).map_err(|e| io_error(&path, e, NEEDS_ROOT))?;
        let Some(c) = cgroup::pod_of_proc_cgroup(&text) else {
            return Ok(None);
        };
        let dir = match self.pods() {
            Ok(pods) => pods.into_iter().find(|p| p.uid == c.uid),
            Err(PodError::LayoutMissing { .. }) => None,
            Err(e) => return Err(e),
        };
        let container = match (&c.member, &dir) {
            (Member::Container { id, .. }, Some(d)) => self.container_names(d).remove(id),
            _ => None,
        };
        Ok(Some(PodOfPid {
            uid: c.uid,
            namespace: dir.as_ref().map(|d| d.namespace.clone()),
            name: dir.map(|d| d.name),
            container,
        }))
    }

    /// The container directories inside the pod's log directory.
    fn container_dirs(&self, dir: &PodDirName) -> Result<Vec<String>, PodError> {
        let path = self
            .pods_dir
            .join(format!("{}_{}_{}", dir.namespace, dir.name, dir.uid));
        let entries = std::fs::read_dir(&path).map_err(|e| io_error(&path, e, NEEDS_ROOT))?;
        Ok(entries
            .filter_map(Result::ok)
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .filter_map(|e| e.file_name().to_str().map(str::to_owned))
            .collect())
    }

    /// Container id → name for the pod, from the container log links (empty without them).
    fn container_names(&self, dir: &PodDirName) -> HashMap<String, String> {
        let Ok(entries) = std::fs::read_dir(&self.containers_dir) else {
            return HashMap::new();
        };
        entries
            .filter_map(Result::ok)
            .filter_map(|e| ContainerLogName::parse(e.file_name().to_str()?))
            .filter(|c| c.pod == dir.name && c.namespace == dir.namespace)
            .map(|c| (c.id, c.container))
            .collect()
    }

    /// Every process in the cgroup of the pod with `uid`, by pid.
    fn members(&self, uid: &str) -> Result<Vec<(u32, PodCgroup)>, PodError> {
        let mut found: Vec<(u32, PodCgroup)> = self
            .cgroups()?
            .into_iter()
            .filter(|(_, c)| c.uid == uid)
            .collect();
        found.sort_by_key(|(pid, _)| *pid);
        Ok(found)
    }

    /// The pod UIDs that have processes, with one of their pids.
    fn running_uids(&self) -> HashMap<String, u32> {
        self.cgroups()
            .unwrap_or_default()
            .into_iter()
            .map(|(pid, c)| (c.uid, pid))
            .collect()
    }

    /// Every process of this node that is in a pod's cgroup.
    fn cgroups(&self) -> Result<Vec<(u32, PodCgroup)>, PodError> {
        let entries = std::fs::read_dir(&self.proc_dir)
            .map_err(|e| io_error(&self.proc_dir, e, NEEDS_ROOT))?;
        Ok(entries
            .filter_map(Result::ok)
            .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
            .filter_map(|pid| {
                // A process that exits meanwhile (or a kernel thread's) is skipped.
                let text =
                    std::fs::read_to_string(self.proc_dir.join(pid.to_string()).join("cgroup"))
                        .ok()?;
                Some((pid, cgroup::pod_of_proc_cgroup(&text)?))
            })
            .collect())
    }

    /// The inode of `pid`'s network namespace; `Ok(None)` when the process is gone.
    fn netns_inode(&self, pid: u32) -> Result<Option<u64>, PodError> {
        self.netns_of(&pid.to_string())
    }

    /// The same for a `/proc` entry (a pid or `self`).
    fn netns_of(&self, entry: &str) -> Result<Option<u64>, PodError> {
        let path = self.proc_dir.join(entry).join("ns").join("net");
        match std::fs::metadata(&path) {
            Ok(m) => Ok(Some(m.ino())),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_error(&path, e, NEEDS_PTRACE)),
        }
    }
}

/// The pod's network namespace: its sandbox's, else the one most of its processes share
/// (a runtime's helper lives outside it).
fn pod_netns(processes: &[PodProcess]) -> Option<u64> {
    if let Some(s) = processes.iter().find(|p| p.sandbox) {
        return Some(s.netns);
    }
    let mut counts: HashMap<u64, usize> = HashMap::new();
    for p in processes.iter().filter(|p| !p.runtime_helper) {
        *counts.entry(p.netns).or_default() += 1;
    }
    counts
        .into_iter()
        .max_by_key(|&(ns, n)| (n, std::cmp::Reverse(ns)))
        .map(|(ns, _)| ns)
}

fn io_error(path: &Path, e: std::io::Error, needs: &'static str) -> PodError {
    if e.kind() == ErrorKind::PermissionDenied {
        PodError::PermissionDenied {
            path: path.to_owned(),
            needs,
        }
    } else {
        PodError::Io {
            path: path.to_owned(),
            source: e,
        }
    }
}

#[cfg(test)]
mod tests;
