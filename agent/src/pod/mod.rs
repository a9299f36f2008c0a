//! Kubernetes pods on this node, found from the node itself with no API server and no
//! credentials: the kubelet's pod log directories name the pods (`/var/log/pods/
//! NAMESPACE_NAME_UID/`, one directory per container inside), the pod's cgroup carries its
//! UID (see [`cgroup`]), and `/proc/*/cgroup` gives its processes, their names and their
//! network namespace.
//!
//! ```no_run
//! use tracer::pod::{Node, PodRef};
//! let node = Node::default();
//! let pod = node.resolve(&PodRef::parse("ingress/traefik-7d9f8b6c5-x2k9p").unwrap())?;
//! println!("{}", pod.describe());
//! let owner = node.pod_of_pid(4242)?; // which pod a process belongs to
//! # Ok::<(), tracer::pod::PodError>(())
//! ```
//!
//! The parsers are pure ([`name`], [`cgroup`]); the filesystem is read by [`Node`], rooted at
//! configurable directories so that tests can build a layout of their own.

pub mod cgroup;
pub mod name;
mod node;

use std::path::PathBuf;

use serde::Serialize;

pub use cgroup::{Driver, Qos, Runtime};
pub use name::{PodDirName, PodRef};
pub use node::Node;

/// Why a pod could not be found or read. Each message says what to do next.
#[derive(Debug, thiserror::Error)]
pub enum PodError {
    /// The pod argument is not a Kubernetes name.
    #[error("{0}")]
    BadName(String),
    /// The kubelet's pod log directory does not exist.
    #[error("{} does not exist: this is not a Kubernetes node, or its kubelet keeps pod logs elsewhere (give that directory with --pods-dir)", dir.display())]
    LayoutMissing { dir: PathBuf },
    /// No pod of that name has a directory here.
    #[error("pod {wanted} is not on this node ({count} pods in {}){}", dir.display(), similar_text(similar))]
    NotOnNode {
        wanted: String,
        dir: PathBuf,
        count: usize,
        /// `NAMESPACE/NAME` of the pods here with similar names, closest first.
        similar: Vec<String>,
    },
    /// A name without namespace matches pods in several namespaces.
    #[error("pod {name} is in several namespaces on this node: {}; give NAMESPACE/NAME", candidates.join(", "))]
    Ambiguous {
        name: String,
        candidates: Vec<String>,
    },
    /// The pod has a directory but no process.
    #[error("pod {pod} (uid {uid}) has a log directory on this node but no process in its cgroup: it has ended or not started yet, or tracer does not see the node's processes (in a container it needs the host's PID namespace, hostPID)")]
    NotRunning { pod: String, uid: String },
    /// Reading something needs a privilege this process lacks.
    #[error("permission denied reading {}: {needs}", path.display())]
    PermissionDenied { path: PathBuf, needs: &'static str },
    /// Any other failure to read the layout.
    #[error("reading {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

fn similar_text(similar: &[String]) -> String {
    if similar.is_empty() {
        "; none has a similar name".to_owned()
    } else {
        format!("; pods here with similar names: {}", similar.join(", "))
    }
}

/// One process of a pod.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PodProcess {
    pub pid: u32,
    /// Its command name (`/proc/PID/comm`).
    pub comm: String,
    /// The container it runs in, when the kubelet's layout names it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub container: Option<String>,
    /// The runtime's container id, when the cgroup names one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub container_id: Option<String>,
    /// The pod sandbox (`pause`), which holds the pod's namespaces.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub sandbox: bool,
    /// A container runtime's helper in the pod's cgroup (CRI-O's `conmon`), not the pod's.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub runtime_helper: bool,
    /// Its network namespace (inode of `/proc/PID/ns/net`).
    pub netns: u64,
}

/// A pod running on this node, with what tracer needs to follow it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Pod {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub qos: Qos,
    pub cgroup_driver: Driver,
    /// Its containers, from the kubelet's log directory (init containers too).
    pub containers: Vec<String>,
    /// Its processes, by pid.
    pub processes: Vec<PodProcess>,
    /// The pod's network namespace (inode).
    pub netns: u64,
    /// The pod uses the host's network namespace.
    pub host_network: bool,
    /// Where the namespace can be entered: `/proc/PID/ns/net` of one of its processes.
    #[serde(skip)]
    pub netns_path: PathBuf,
}

/// What the capture follows for a pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Follow {
    /// The network namespace to capture in.
    pub netns_path: PathBuf,
    /// The one process whose sockets the probe follows, when the namespace is not the pod's
    /// alone (`hostNetwork`).
    pub pid: Option<u32>,
    /// What could not be narrowed to the pod, in one sentence.
    pub note: Option<String>,
}

impl Pod {
    /// `NAMESPACE/NAME`.
    pub fn qualified(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }

    /// The pod's own processes: neither its sandbox nor a runtime's helper.
    pub fn workload(&self) -> impl Iterator<Item = &PodProcess> {
        self.processes
            .iter()
            .filter(|p| !p.sandbox && !p.runtime_helper)
    }

    /// How to follow the pod's sockets: in its network namespace, every socket there is the
    /// pod's. A `hostNetwork` pod shares the host's: the probe then follows its process
    /// when it has exactly one, and says so when it cannot narrow further.
    pub fn follow(&self) -> Follow {
        if !self.host_network {
            return Follow {
                netns_path: self.netns_path.clone(),
                pid: None,
                note: None,
            };
        }
        let workload: Vec<&PodProcess> = self.workload().collect();
        match workload.as_slice() {
            [one] => Follow {
                netns_path: self.netns_path.clone(),
                pid: Some(one.pid),
                note: Some(format!(
                    "{} uses the host's network (hostNetwork): packets are those of the whole host; the kernel probe follows only its process {}[{}]",
                    self.qualified(),
                    one.comm,
                    one.pid
                )),
            },
            many => Follow {
                netns_path: self.netns_path.clone(),
                pid: None,
                note: Some(format!(
                    "{} uses the host's network (hostNetwork) and has {} processes: packets and kernel events are those of the whole host (the probe follows one process at most); each verdict names the process that owned the socket",
                    self.qualified(),
                    many.len()
                )),
            },
        }
    }

    /// One line for the top of a report: the pod, its containers and processes.
    pub fn describe(&self) -> String {
        let procs: Vec<String> = self
            .processes
            .iter()
            .map(|p| {
                let role = if p.sandbox {
                    " (sandbox)".to_owned()
                } else if p.runtime_helper {
                    " (runtime helper)".to_owned()
                } else {
                    p.container
                        .as_ref()
                        .map_or_else(String::new, |c| format!(" in {c}"))
                };
                format!("{}[{}]{role}", p.comm, p.pid)
            })
            .collect();
        let network = if self.host_network {
            "the host's network namespace (hostNetwork)".to_owned()
        } else {
            format!("network namespace {}", self.netns)
        };
        format!(
            "pod {} (uid {}, {:?}, {} cgroups): containers {}; processes {}; {network}",
            self.qualified(),
            self.uid,
            self.qos,
            self.cgroup_driver,
            if self.containers.is_empty() {
                "(none named)".to_owned()
            } else {
                self.containers.join(", ")
            },
            procs.join(", "),
        )
    }
}

/// The pod a process belongs to ([`Node::pod_of_pid`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PodOfPid {
    pub uid: String,
    /// Namespace and name, when the kubelet's layout has the pod's directory.
    pub namespace: Option<String>,
    pub name: Option<String>,
    /// The container's name, when the layout names it.
    pub container: Option<String>,
}
