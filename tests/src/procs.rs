//! Servers started inside the lab's namespaces, stopped on every exit path.

use std::fs::File;
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;

use crate::net::in_netns;
use crate::scenario::{Hosts, Launcher};

/// How long a server may take to exit after SIGTERM before it gets SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(3);
/// How long a server may take to start listening.
const LISTEN_TIMEOUT: Duration = Duration::from_secs(15);

struct Proc {
    name: String,
    child: Child,
}

/// Starts processes inside namespaces (each in its own process group) and stops them,
/// newest first, when asked or when dropped.
pub struct Procs {
    hosts: Hosts,
    dir: PathBuf,
    procs: Vec<Proc>,
}

impl Procs {
    pub fn new(hosts: Hosts, dir: PathBuf) -> Procs {
        Procs {
            hosts,
            dir,
            procs: Vec::new(),
        }
    }

    /// SIGTERM to every process group, newest first; SIGKILL for those still there after
    /// the grace period. Servers flush their logs on SIGTERM.
    pub fn stop_all(&mut self) {
        while let Some(mut p) = self.procs.pop() {
            stop(&mut p);
        }
    }

    /// Stops the one process started under `name`, if it is still running.
    pub fn stop(&mut self, name: &str) {
        if let Some(i) = self.procs.iter().position(|p| p.name == name) {
            let mut p = self.procs.remove(i);
            stop(&mut p);
        }
    }

    /// Sends `signal` to the process started under `name` (not its group).
    pub fn signal(&self, name: &str, signal: Signal) {
        if let Some(p) = self.procs.iter().find(|p| p.name == name) {
            let pid = Pid::from_raw(i32::try_from(p.child.id()).unwrap_or(i32::MAX));
            let _ = nix::sys::signal::kill(pid, signal);
        }
    }

    /// The process id of the process started under `name`.
    pub fn pid(&self, name: &str) -> Option<u32> {
        self.procs
            .iter()
            .find(|p| p.name == name)
            .map(|p| p.child.id())
    }

    /// Whether the process started under `name` has exited, with its status.
    pub fn exited(&mut self, name: &str) -> Option<std::process::ExitStatus> {
        let p = self.procs.iter_mut().find(|p| p.name == name)?;
        p.child.try_wait().ok().flatten()
    }
}

fn stop(p: &mut Proc) {
    let pgid = Pid::from_raw(i32::try_from(p.child.id()).unwrap_or(i32::MAX));
    if p.child.try_wait().ok().flatten().is_none() {
        let _ = killpg(pgid, Signal::SIGTERM);
        let deadline = Instant::now() + STOP_GRACE;
        while Instant::now() < deadline {
            if p.child.try_wait().ok().flatten().is_some() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    // Children of the server (workers) may outlive it: take down the whole group.
    let _ = killpg(pgid, Signal::SIGKILL);
    let _ = p.child.wait();
}

impl Drop for Procs {
    fn drop(&mut self) {
        self.stop_all();
    }
}

impl Launcher for Procs {
    fn hosts(&self) -> &Hosts {
        &self.hosts
    }

    fn dir(&self) -> &Path {
        &self.dir
    }

    fn spawn(&mut self, ns: &str, name: &str, cmd: Command) -> Result<()> {
        let out = File::create(self.dir.join(format!("{name}.out")))?;
        let err = File::create(self.dir.join(format!("{name}.err")))?;
        let mut wrapped = Command::new("ip");
        wrapped
            .args(["netns", "exec", ns])
            .arg(cmd.get_program())
            .args(cmd.get_args());
        for (k, v) in cmd.get_envs() {
            match v {
                Some(v) => wrapped.env(k, v),
                None => wrapped.env_remove(k),
            };
        }
        wrapped.current_dir(cmd.get_current_dir().unwrap_or(&self.dir));
        wrapped
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .process_group(0);
        let child = wrapped
            .spawn()
            .with_context(|| format!("starting {name} ({:?}) in {ns}", cmd.get_program()))?;
        self.procs.push(Proc {
            name: name.to_owned(),
            child,
        });
        Ok(())
    }

    fn wait_listening(&self, ns: &str, ip: Ipv4Addr, port: u16) -> Result<()> {
        let addr = SocketAddr::from((ip, port));
        let deadline = Instant::now() + LISTEN_TIMEOUT;
        loop {
            let ok = in_netns(ns, move || {
                TcpStream::connect_timeout(&addr, Duration::from_millis(300)).is_ok()
            })?;
            if ok {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("nothing listens on {addr} in {ns} after {LISTEN_TIMEOUT:?}: see the *.err files in {}", self.dir.display());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}
