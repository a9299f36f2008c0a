//! Finding the proxies on this node: processes whose name is one of the known proxies'
//! (or one the user gave), grouped by the network namespace they run in, so that the agent
//! follows each namespace once however many workers the proxy has.
//!
//! [`choose`] is pure over a process list; [`scan`] reads `/proc` (rooted at a path, so a
//! test can point it elsewhere).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Process names followed by default: the common ingresses and reverse proxies.
pub const DEFAULT_NAMES: &[&str] = &[
    "traefik", "nginx", "envoy", "haproxy", "caddy", "httpd", "apache2",
];

/// One process as `/proc` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Process {
    pub pid: u32,
    /// `/proc/PID/comm` (at most 15 bytes).
    pub comm: String,
    /// The inode of `/proc/PID/ns/net`.
    pub netns: u64,
}

/// Which processes to follow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selection {
    /// Process names (compared with `comm`, which the kernel cuts at 15 bytes).
    pub names: Vec<String>,
    /// Only this process (and the others in its network namespace with a proxy's name).
    pub pid: Option<u32>,
    /// Only this network namespace (its inode).
    pub netns: Option<u64>,
}

impl Selection {
    /// The default names, plus `extra`; or only `extra` when `replace`.
    #[must_use]
    pub fn with_names(extra: &[String], replace: bool) -> Self {
        let mut names: Vec<String> = if replace {
            Vec::new()
        } else {
            DEFAULT_NAMES.iter().map(|s| (*s).to_owned()).collect()
        };
        for n in extra {
            if !names.contains(n) {
                names.push(n.clone());
            }
        }
        Selection {
            names,
            pid: None,
            netns: None,
        }
    }

    fn name_matches(&self, comm: &str) -> bool {
        // `comm` holds the first 15 bytes of the name.
        self.names.iter().any(|n| {
            let cut = &n.as_bytes()[..n.len().min(15)];
            comm.as_bytes() == cut
        })
    }
}

/// The proxies of one network namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub netns: u64,
    /// The proxy's name (of the oldest matching process, the master of nginx or HAProxy).
    pub name: String,
    /// Every matching process in the namespace, oldest (lowest pid) first.
    pub pids: Vec<u32>,
}

impl Target {
    /// A path through which the namespace can be entered (while that process lives).
    #[must_use]
    pub fn netns_path(&self, proc_root: &Path) -> PathBuf {
        proc_root
            .join(self.pids[0].to_string())
            .join("ns")
            .join("net")
    }
}

/// The namespaces to follow, from a process list: one [`Target`] per namespace that
/// holds a process of a selected name.
#[must_use]
pub fn choose(processes: &[Process], sel: &Selection) -> Vec<Target> {
    let pinned_netns = sel
        .pid
        .and_then(|pid| processes.iter().find(|p| p.pid == pid).map(|p| p.netns));
    if sel.pid.is_some() && pinned_netns.is_none() {
        return Vec::new(); // the named process is gone
    }
    let mut by_ns: BTreeMap<u64, Vec<&Process>> = BTreeMap::new();
    for p in processes {
        let wanted = if sel.pid == Some(p.pid) {
            true
        } else {
            sel.name_matches(&p.comm)
        };
        if !wanted
            || sel.netns.is_some_and(|n| n != p.netns)
            || pinned_netns.is_some_and(|n| n != p.netns)
        {
            continue;
        }
        by_ns.entry(p.netns).or_default().push(p);
    }
    by_ns
        .into_iter()
        .map(|(netns, mut ps)| {
            ps.sort_by_key(|p| p.pid);
            Target {
                netns,
                name: ps[0].comm.clone(),
                pids: ps.iter().map(|p| p.pid).collect(),
            }
        })
        .collect()
}

/// Every process under `proc_root` (normally `/proc`) whose name and namespace can be read;
/// processes that exit while being read are skipped.
#[must_use]
pub fn scan(proc_root: &Path) -> Vec<Process> {
    use std::os::unix::fs::MetadataExt;
    let Ok(dir) = std::fs::read_dir(proc_root) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for entry in dir.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let base = entry.path();
        let Ok(comm) = std::fs::read_to_string(base.join("comm")) else {
            continue;
        };
        let Ok(ns) = std::fs::metadata(base.join("ns").join("net")) else {
            continue; // kernel threads have none readable, and the exited are gone
        };
        out.push(Process {
            pid,
            comm: comm.trim_end_matches('\n').to_owned(),
            netns: ns.ino(),
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(pid: u32, comm: &str, netns: u64) -> Process {
        Process {
            pid,
            comm: comm.into(),
            netns,
        }
    }

    fn default_sel() -> Selection {
        Selection::with_names(&[], false)
    }

    #[test]
    fn workers_of_one_proxy_are_one_target_per_namespace() {
        let ps = [
            p(300, "nginx", 7),
            p(100, "nginx", 7),
            p(200, "bash", 7),
            p(400, "haproxy", 9),
            p(500, "node", 9),
        ];
        let t = choose(&ps, &default_sel());
        assert_eq!(
            t,
            vec![
                Target {
                    netns: 7,
                    name: "nginx".into(),
                    pids: vec![100, 300]
                },
                Target {
                    netns: 9,
                    name: "haproxy".into(),
                    pids: vec![400]
                },
            ]
        );
    }

    #[test]
    fn names_can_be_added_or_replaced_and_long_names_match_their_comm() {
        let ps = [
            p(1, "nginx", 1),
            p(2, "my-ingress-cont", 2), // comm of "my-ingress-controller"
        ];
        let add = Selection::with_names(&["my-ingress-controller".into()], false);
        assert_eq!(choose(&ps, &add).len(), 2);
        let only = Selection::with_names(&["my-ingress-controller".into()], true);
        let t = choose(&ps, &only);
        assert_eq!(t.len(), 1);
        assert_eq!(t[0].pids, vec![2]);
    }

    #[test]
    fn pid_and_netns_narrow_the_choice() {
        let ps = [p(1, "nginx", 1), p(2, "nginx", 2), p(3, "envoy", 2)];
        let mut sel = default_sel();
        sel.pid = Some(2);
        let t = choose(&ps, &sel);
        assert_eq!(t.len(), 1);
        assert_eq!(t[0].pids, vec![2, 3]);
        sel.pid = Some(99);
        assert!(
            choose(&ps, &sel).is_empty(),
            "a pid that is gone follows nothing"
        );
        sel.pid = None;
        sel.netns = Some(1);
        assert_eq!(choose(&ps, &sel)[0].pids, vec![1]);
    }

    #[test]
    fn a_named_pid_is_followed_whatever_its_name() {
        let ps = [p(42, "my-proxy", 5)];
        let mut sel = default_sel();
        sel.pid = Some(42);
        assert_eq!(choose(&ps, &sel)[0].name, "my-proxy");
    }

    #[test]
    fn scan_reads_this_process() {
        let me = std::process::id();
        let ps = scan(Path::new("/proc"));
        let mine = ps
            .iter()
            .find(|p| p.pid == me)
            .expect("this process is listed");
        assert!(!mine.comm.is_empty());
        assert_ne!(mine.netns, 0);
    }
}
