//! [`Node`] over a node layout built in a temporary directory: pod log directories,
//! container log links, and a `/proc` whose `ns/net` files are hard links, so that
//! processes sharing a namespace share an inode as they do on a real node.

use std::path::{Path, PathBuf};

use super::super::{Driver, PodError, PodRef, Qos};
use super::Node;

const WEB: &str = "6f1c2b8e-3d4a-4f5b-9c8d-0123456789ab";
const DB: &str = "11111111-2222-4333-8444-555555555555";
const HOSTNET: &str = "99999999-8888-4777-8666-555555555555";

struct Layout {
    root: PathBuf,
}

impl Layout {
    fn new(tag: &str) -> Self {
        let root =
            std::env::temp_dir().join(format!("tracer-pod-unit-{}-{tag}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        for d in ["log/pods", "log/containers", "proc", "netns"] {
            std::fs::create_dir_all(root.join(d)).unwrap();
        }
        let l = Self { root };
        l.netns("host");
        l.process(1, "0::/init.scope\n", "systemd", "host");
        l
    }

    fn node(&self) -> Node {
        Node {
            proc_dir: self.root.join("proc"),
            ..Node::with_pods_dir(self.root.join("log/pods"))
        }
    }

    fn pod(&self, ns: &str, name: &str, uid: &str, containers: &[&str]) {
        for c in containers {
            let d = self.root.join(format!("log/pods/{ns}_{name}_{uid}/{c}"));
            std::fs::create_dir_all(&d).unwrap();
            std::fs::write(d.join("0.log"), "").unwrap();
        }
    }

    fn link(&self, pod: &str, ns: &str, container: &str, id: &str) {
        std::fs::write(
            self.root
                .join(format!("log/containers/{pod}_{ns}_{container}-{id}.log")),
            "",
        )
        .unwrap();
    }

    fn netns(&self, name: &str) -> PathBuf {
        let p = self.root.join("netns").join(name);
        if !p.exists() {
            std::fs::write(&p, "").unwrap();
        }
        p
    }

    fn process(&self, pid: u32, cgroup: &str, comm: &str, netns: &str) {
        let d = self.root.join(format!("proc/{pid}"));
        std::fs::create_dir_all(d.join("ns")).unwrap();
        std::fs::write(d.join("cgroup"), cgroup).unwrap();
        std::fs::write(d.join("comm"), format!("{comm}\n")).unwrap();
        std::fs::hard_link(self.netns(netns), d.join("ns/net")).unwrap();
    }
}

impl Drop for Layout {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

fn id(c: char) -> String {
    c.to_string().repeat(64)
}

fn systemd(uid: &str, qos: &str, scope: &str) -> String {
    let u = uid.replace('-', "_");
    format!("0::/kubepods.slice/kubepods-{qos}.slice/kubepods-{qos}-pod{u}.slice/{scope}\n")
}

/// shop/web-0: nginx and a sidecar in containerd containers (systemd driver), and its
/// sandbox; shop/db-0 with its own namespace; a hostNetwork pod; plus unrelated processes.
fn node_with_pods(tag: &str) -> Layout {
    let l = Layout::new(tag);
    l.pod("shop", "web-0", WEB, &["nginx", "sidecar"]);
    l.link("web-0", "shop", "nginx", &id('a'));
    l.link("web-0", "shop", "sidecar", &id('b'));
    let scope = |c| format!("cri-containerd-{}.scope", id(c));
    l.process(200, &systemd(WEB, "burstable", &scope('f')), "pause", "web");
    l.process(210, &systemd(WEB, "burstable", &scope('a')), "nginx", "web");
    l.process(211, &systemd(WEB, "burstable", &scope('a')), "nginx", "web");
    l.process(220, &systemd(WEB, "burstable", &scope('b')), "envoy", "web");

    l.pod("shop", "db-0", DB, &["postgres"]);
    l.process(
        300,
        &format!("5:pids:/kubepods/besteffort/pod{DB}/{}\n0::/\n", id('c')),
        "postgres",
        "db",
    );

    l.pod("kube-system", "proxy-node1", HOSTNET, &["kube-proxy"]);
    l.process(
        400,
        &systemd(HOSTNET, "besteffort", &scope('d')),
        "kube-proxy",
        "host",
    );
    l.process(500, "0::/system.slice/sshd.service\n", "sshd", "host");
    l
}

#[test]
fn a_pod_resolves_to_its_containers_processes_and_network_namespace() {
    let l = node_with_pods("resolve");
    let pod = l
        .node()
        .resolve(&PodRef::parse("shop/web-0").unwrap())
        .unwrap();
    assert_eq!(
        (pod.namespace.as_str(), pod.name.as_str()),
        ("shop", "web-0")
    );
    assert_eq!(pod.uid, WEB);
    assert_eq!(
        (pod.qos, pod.cgroup_driver),
        (Qos::Burstable, Driver::Systemd)
    );
    assert_eq!(pod.containers, ["nginx", "sidecar"]);
    let procs: Vec<(u32, &str, Option<&str>, bool)> = pod
        .processes
        .iter()
        .map(|p| (p.pid, p.comm.as_str(), p.container.as_deref(), p.sandbox))
        .collect();
    assert_eq!(
        procs,
        [
            (200, "pause", None, true),
            (210, "nginx", Some("nginx"), false),
            (211, "nginx", Some("nginx"), false),
            (220, "envoy", Some("sidecar"), false),
        ]
    );
    assert!(!pod.host_network);
    assert_eq!(pod.netns_path, l.root.join("proc/200/ns/net"));
    let f = pod.follow();
    assert_eq!((f.pid, f.note), (None, None));
    let line = pod.describe();
    assert!(
        line.starts_with(&format!("pod shop/web-0 (uid {WEB}, Burstable, systemd cgroups): containers nginx, sidecar; processes pause[200] (sandbox), nginx[210] in nginx")),
        "{line}"
    );
}

#[test]
fn cgroup_v1_cgroupfs_pod_without_container_links_names_its_lone_container() {
    let l = node_with_pods("v1");
    let pod = l.node().resolve(&PodRef::parse("db-0").unwrap()).unwrap();
    assert_eq!(
        (pod.qos, pod.cgroup_driver),
        (Qos::BestEffort, Driver::Cgroupfs)
    );
    assert_eq!(pod.processes.len(), 1);
    assert_eq!(pod.processes[0].container.as_deref(), Some("postgres"));
    assert_eq!(pod.processes[0].container_id, Some(id('c')));
}

#[test]
fn a_host_network_pod_is_followed_through_its_one_process() {
    let l = node_with_pods("hostnet");
    let pod = l
        .node()
        .resolve(&PodRef::parse("kube-system/proxy-node1").unwrap())
        .unwrap();
    assert!(pod.host_network);
    let f = pod.follow();
    assert_eq!(f.pid, Some(400));
    assert!(f.note.unwrap().contains("hostNetwork"));
    // With a second process the probe cannot narrow to the pod: it says so.
    l.process(
        401,
        &systemd(
            HOSTNET,
            "besteffort",
            &format!("cri-containerd-{}.scope", id('d')),
        ),
        "kube-proxy",
        "host",
    );
    let pod = l
        .node()
        .resolve(&PodRef::parse("kube-system/proxy-node1").unwrap())
        .unwrap();
    let f = pod.follow();
    assert_eq!(f.pid, None);
    assert!(f.note.unwrap().contains("2 processes"));
}

#[test]
fn a_pod_not_on_this_node_names_the_similar_ones_that_are() {
    let l = node_with_pods("similar");
    let err = l
        .node()
        .resolve(&PodRef::parse("shop/web").unwrap())
        .unwrap_err();
    let PodError::NotOnNode { similar, count, .. } = &err else {
        panic!("{err}");
    };
    assert_eq!(
        (similar.as_slice(), *count),
        (&["shop/web-0".to_owned()][..], 3)
    );
    assert!(
        err.to_string()
            .starts_with("pod shop/web is not on this node (3 pods in"),
        "{err}"
    );
    assert!(
        err.to_string().ends_with("similar names: shop/web-0"),
        "{err}"
    );
    let err = l
        .node()
        .resolve(&PodRef::parse("payments/api").unwrap())
        .unwrap_err();
    assert!(
        err.to_string().ends_with("none has a similar name"),
        "{err}"
    );
}

#[test]
fn a_name_in_several_namespaces_asks_for_the_namespace() {
    let l = node_with_pods("ambiguous");
    l.pod("staging", "web-0", DB, &["nginx"]);
    let err = l
        .node()
        .resolve(&PodRef::parse("web-0").unwrap())
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "pod web-0 is in several namespaces on this node: shop/web-0, staging/web-0; give NAMESPACE/NAME"
    );
}

#[test]
fn a_pod_whose_processes_are_gone_is_not_running() {
    let l = node_with_pods("ended");
    l.pod(
        "shop",
        "job-1",
        "abababab-abab-4bab-8bab-abababababab",
        &["main"],
    );
    let err = l
        .node()
        .resolve(&PodRef::parse("shop/job-1").unwrap())
        .unwrap_err();
    assert!(matches!(err, PodError::NotRunning { .. }), "{err}");
    assert!(err.to_string().contains("hostPID"), "{err}");
}

#[test]
fn a_pod_recreated_under_the_same_name_is_the_running_one() {
    let l = node_with_pods("recreated");
    // The old directory of an earlier shop/web-0 the kubelet has not removed yet.
    l.pod(
        "shop",
        "web-0",
        "00000000-0000-4000-8000-000000000000",
        &["nginx"],
    );
    let pod = l
        .node()
        .resolve(&PodRef::parse("shop/web-0").unwrap())
        .unwrap();
    assert_eq!(pod.uid, WEB);
}

#[test]
fn a_missing_kubelet_layout_says_so() {
    let node = Node {
        proc_dir: PathBuf::from("/proc"),
        ..Node::with_pods_dir("/nonexistent/var/log/pods")
    };
    let err = node.resolve(&PodRef::parse("web-0").unwrap()).unwrap_err();
    assert!(matches!(err, PodError::LayoutMissing { .. }), "{err}");
    assert!(err.to_string().contains("not a Kubernetes node"), "{err}");
    assert_eq!(
        node.containers_dir,
        Path::new("/nonexistent/var/log/containers")
    );
}

#[test]
fn a_process_is_mapped_back_to_its_namespace_pod_and_container() {
    let l = node_with_pods("reverse");
    let node = l.node();
    let p = node.pod_of_pid(220).unwrap().unwrap();
    assert_eq!(p.uid, WEB);
    assert_eq!(
        (
            p.namespace.as_deref(),
            p.name.as_deref(),
            p.container.as_deref()
        ),
        (Some("shop"), Some("web-0"), Some("sidecar"))
    );
    // Without container links the container stays unnamed.
    let p = node.pod_of_pid(300).unwrap().unwrap();
    assert_eq!((p.name.as_deref(), p.container), (Some("db-0"), None));
    assert_eq!(node.pod_of_pid(500).unwrap(), None);
    assert!(matches!(node.pod_of_pid(999), Err(PodError::Io { .. })));
}

#[test]
fn unreadable_layouts_are_permission_errors_naming_the_fix() {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } == 0 {
        eprintln!(
            "SKIPPED: root reads any directory (tests/capabilities.rs drops capabilities instead)"
        );
        return;
    }
    let l = node_with_pods("perm");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(
        l.root.join("log/pods"),
        std::fs::Permissions::from_mode(0o000),
    )
    .unwrap();
    let err = l.node().pods().unwrap_err();
    std::fs::set_permissions(
        l.root.join("log/pods"),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    assert!(matches!(err, PodError::PermissionDenied { .. }), "{err}");
}
