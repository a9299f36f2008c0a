//! The lab's three hosts as network namespaces joined by veth pairs:
//!
//! ```text
//!  client ns                 proxy ns                        upstream ns
//!  c  198.18.1.1 ── veth ── f 198.18.1.2   b 198.18.2.1 ── veth ── u 198.18.2.2
//! ```
//! Nothing routes out of these namespaces. Dropping a [`Net`] kills every process still
//! inside its namespaces and deletes them; namespaces left behind by a lab that was killed
//! outright are removed the next time a lab starts.

use std::fs::File;
use std::net::Ipv4Addr;
use std::os::fd::AsFd;
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::scenario::Hosts;

/// Prefix of every namespace this lab creates; the next field is the owning process id.
const NS_PREFIX: &str = "tracerlab-";

static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

pub struct Net {
    hosts: Hosts,
    namespaces: Vec<String>,
}

impl Net {
    /// Creates the three namespaces and their links. Needs CAP_NET_ADMIN and CAP_SYS_ADMIN.
    pub fn create() -> Result<Net> {
        remove_stale();
        let pid = std::process::id();
        // Several labs may run at once in one process (parallel tests): number them.
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let tag = format!("{}{n}", pid % 10_000);
        let hosts = Hosts {
            client_ns: format!("{NS_PREFIX}{pid}-{n}-client"),
            proxy_ns: format!("{NS_PREFIX}{pid}-{n}-proxy"),
            upstream_ns: format!("{NS_PREFIX}{pid}-{n}-upstream"),
            client_ip: Ipv4Addr::new(198, 18, 1, 1),
            proxy_front_ip: Ipv4Addr::new(198, 18, 1, 2),
            proxy_back_ip: Ipv4Addr::new(198, 18, 2, 1),
            upstream_ip: Ipv4Addr::new(198, 18, 2, 2),
            front_if: format!("tlf{tag}"),
            back_if: format!("tlb{tag}"),
        };
        let mut net = Net {
            hosts,
            namespaces: Vec::new(),
        };
        for ns in [
            net.hosts.client_ns.clone(),
            net.hosts.proxy_ns.clone(),
            net.hosts.upstream_ns.clone(),
        ] {
            ip(&["netns", "add", &ns])?;
            net.namespaces.push(ns.clone());
            ip(&["-n", &ns, "link", "set", "lo", "up"])?;
        }
        let h = net.hosts.clone();
        net.link(
            &h.client_ns,
            &format!("tlc{tag}"),
            h.client_ip,
            &h.proxy_ns,
            &h.front_if,
            h.proxy_front_ip,
        )?;
        net.link(
            &h.proxy_ns,
            &h.back_if,
            h.proxy_back_ip,
            &h.upstream_ns,
            &format!("tlu{tag}"),
            h.upstream_ip,
        )?;
        Ok(net)
    }

    pub fn hosts(&self) -> &Hosts {
        &self.hosts
    }

    /// A veth pair from `a_if` in `a_ns` to `b_if` in `b_ns`, both up, each with a /24.
    fn link(
        &self,
        a_ns: &str,
        a_if: &str,
        a_ip: Ipv4Addr,
        b_ns: &str,
        b_if: &str,
        b_ip: Ipv4Addr,
    ) -> Result<()> {
        ip(&[
            "link", "add", a_if, "netns", a_ns, "type", "veth", "peer", "name", b_if, "netns", b_ns,
        ])?;
        for (ns, ifname, addr) in [(a_ns, a_if, a_ip), (b_ns, b_if, b_ip)] {
            ip(&[
                "-n",
                ns,
                "addr",
                "add",
                &format!("{addr}/24"),
                "dev",
                ifname,
            ])?;
            ip(&["-n", ns, "link", "set", ifname, "up"])?;
        }
        Ok(())
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        for ns in self.namespaces.iter().rev() {
            delete_namespace(ns);
        }
    }
}

/// Kills everything inside `ns`, then deletes it. Best effort: used on every exit path.
fn delete_namespace(ns: &str) {
    for _ in 0..3 {
        let pids = Command::new("ip").args(["netns", "pids", ns]).output();
        let Ok(out) = pids else { break };
        let list: Vec<i32> = String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .collect();
        if list.is_empty() {
            break;
        }
        for pid in list {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let _ = Command::new("ip").args(["netns", "del", ns]).status();
}

/// Removes namespaces left by labs whose process is gone (killed with SIGKILL, machine
/// crash): their names carry the owner's pid.
fn remove_stale() {
    let Ok(out) = Command::new("ip").args(["netns", "list"]).output() else {
        return;
    };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let name = line.split_whitespace().next().unwrap_or("");
        let Some(rest) = name.strip_prefix(NS_PREFIX) else {
            continue;
        };
        let owner: Option<i32> = rest.split('-').next().and_then(|p| p.parse().ok());
        if let Some(owner) = owner {
            if std::path::Path::new(&format!("/proc/{owner}")).exists() {
                continue;
            }
        }
        delete_namespace(name);
    }
}

fn ip(args: &[&str]) -> Result<()> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .context("running `ip` (apt-get install iproute2)")?;
    if !out.status.success() {
        bail!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// Runs `f` on a fresh thread that has entered network namespace `ns`; sockets it opens
/// live in that namespace (setns affects only the calling thread).
pub fn in_netns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> Result<T> {
    let ns = ns.to_owned();
    let handle = std::thread::Builder::new()
        .name(format!("netns-{ns}"))
        .spawn(move || -> Result<T> {
            enter_netns(&ns)?;
            Ok(f())
        })
        .context("spawning a thread")?;
    handle
        .join()
        .map_err(|_| anyhow::anyhow!("a thread in a lab namespace panicked"))?
}

/// Enters `ns` on the current thread. Only for threads that live and die inside the lab.
pub fn enter_netns(ns: &str) -> Result<()> {
    let path = format!("/run/netns/{ns}");
    let file = File::open(&path).with_context(|| format!("opening {path}"))?;
    nix::sched::setns(file.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET)
        .context("setns(CLONE_NEWNET) into the lab namespace")?;
    Ok(())
}
