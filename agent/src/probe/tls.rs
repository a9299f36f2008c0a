//! The proxy's TLS library: which processes to probe, where their TLS calls are, and the
//! uprobes on them.
//!
//! The followed processes are the servers of the capture: those with a listening TCP socket
//! in the followed network namespace (or the `--pid` process and its children, such as
//! nginx's workers). For each, `/proc/PID/maps` tells whether it loaded OpenSSL's
//! `libssl.so` (nginx, HAProxy), and its executable whether it is a Go binary with
//! `crypto/tls` (Caddy, Traefik). Uprobes are attached per process, so other programs that
//! use the same library pay nothing; a process started later (a reloaded nginx's new
//! workers) is not followed.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use tracer_common::tls::site;

use super::elf::Elf;
use super::gopclntab::{ret_sites, PcLnTab};
use crate::procfs;

/// Which TLS library a process uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Library {
    /// OpenSSL's `libssl.so` (nginx, HAProxy, Apache, Envoy built against it).
    OpenSsl,
    /// Go's `crypto/tls` (Caddy, Traefik).
    GoTls,
}

impl Library {
    /// `"OpenSSL"`, `"Go crypto/tls"`.
    pub fn name(self) -> &'static str {
        match self {
            Self::OpenSsl => "OpenSSL",
            Self::GoTls => "Go crypto/tls",
        }
    }
}

/// One probe to attach: an offset in a file, entry or return, with its cookie.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Site {
    pub offset: u64,
    /// One of [`site`]; a return probe's is the entry's.
    pub cookie: u64,
    /// A return probe (OpenSSL's reads only; never Go).
    pub ret: bool,
}

/// The probes of one library file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sites {
    pub library: Library,
    pub sites: Vec<Site>,
}

/// Why a library's calls could not be located.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SitesError {
    #[error(transparent)]
    Elf(#[from] super::elf::ElfError),
    #[error(transparent)]
    Go(#[from] super::gopclntab::GoError),
    /// The binary is a Go program without `crypto/tls`.
    #[error("not a Go binary with crypto/tls")]
    NotGoTls,
}

/// OpenSSL's calls in `libssl.so`: entry probes on the writes and reads, return probes on
/// the reads (the bytes are there when they return); the handshake (entry and return: its
/// socket operations name the socket of the `SSL *`) and `SSL_free` (the object's socket is
/// forgotten). `SSL_write_ex` and `SSL_read_ex` are optional (OpenSSL 1.1.0 has none).
pub fn openssl_sites(elf: &Elf<'_>) -> Result<Sites, SitesError> {
    let mut sites = Vec::new();
    let mut add = |name: &str, cookie: u64, ret: bool, required: bool| match elf.function(name) {
        Ok(f) => {
            sites.push(Site {
                offset: f.file_offset,
                cookie,
                ret: false,
            });
            if ret {
                sites.push(Site {
                    offset: f.file_offset,
                    cookie,
                    ret: true,
                });
            }
            Ok(())
        }
        Err(e) if required => Err(e),
        Err(_) => Ok(()),
    };
    add("SSL_write", site::OPENSSL_WRITE, false, true)?;
    add("SSL_read", site::OPENSSL_READ, true, true)?;
    add("SSL_do_handshake", site::OPENSSL_HANDSHAKE, true, true)?;
    add("SSL_free", site::OPENSSL_FREE, false, true)?;
    add("SSL_shutdown", site::OPENSSL_SHUTDOWN, false, true)?;
    add("SSL_write_ex", site::OPENSSL_WRITE, false, false)?;
    add("SSL_read_ex", site::OPENSSL_READ_EX, true, false)?;
    Ok(Sites {
        library: Library::OpenSsl,
        sites,
    })
}

/// Go's calls: entry probes on `(*Conn).Write` and `(*Conn).flush`, and on the entry and
/// every `RET` of `(*Conn).Read` — no return probe, ever.
pub fn go_sites(elf: &Elf<'_>) -> Result<Sites, SitesError> {
    let (tab, _) = elf.section(".gopclntab").ok_or(SitesError::NotGoTls)?;
    let text = elf.section(".text").map_or(0, |(_, a)| a);
    let t = PcLnTab::parse(tab, text)?;
    let find = |name: &str| {
        t.find(name).map_err(|e| match e {
            super::gopclntab::GoError::NoFunction(_) => SitesError::NotGoTls,
            e => e.into(),
        })
    };
    let write = find("crypto/tls.(*Conn).Write")?;
    let flush = find("crypto/tls.(*Conn).flush")?;
    let read = find("crypto/tls.(*Conn).Read")?;
    let entry = |f: super::gopclntab::GoFunc, cookie| -> Result<Site, SitesError> {
        Ok(Site {
            offset: elf.file_offset(f.entry)?,
            cookie,
            ret: false,
        })
    };
    let mut sites = vec![
        entry(write, site::GO_WRITE)?,
        entry(flush, site::GO_FLUSH)?,
        entry(read, site::GO_READ)?,
    ];
    let name = "crypto/tls.(*Conn).Read";
    let code = elf
        .bytes_at(read.entry, read.end - read.entry)
        .ok_or(super::elf::ElfError::NotInFile(read.entry))?;
    for at in ret_sites(name, code, read.entry)? {
        sites.push(Site {
            offset: elf.file_offset(at)?,
            cookie: site::GO_READ_RET,
            ret: false,
        });
    }
    Ok(Sites {
        library: Library::GoTls,
        sites,
    })
}

/// A followed process and the file whose TLS calls it makes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub pid: u32,
    pub comm: String,
    pub library: Library,
    /// The file as this process sees it (`/proc/PID/root/…`, so that a container's own
    /// library is probed, not the host's).
    pub file: PathBuf,
}

/// The libssl mapping of a process, from its `/proc/PID/maps`.
pub fn libssl_in_maps(maps: &str) -> Option<&str> {
    maps.lines()
        .filter_map(|l| l.split_whitespace().nth(5))
        .find(|p| {
            Path::new(p)
                .file_name()
                .and_then(|f| f.to_str())
                .is_some_and(|f| f.starts_with("libssl.so"))
        })
}

/// Socket inodes in LISTEN state in a `/proc/net/tcp` or `tcp6` table.
pub fn listening_inodes(table: &str) -> HashSet<u64> {
    table
        .lines()
        .filter_map(procfs::parse_tcp_row)
        .filter(|r| r.state == procfs::TCP_LISTEN)
        .map(|r| r.inode)
        .collect()
}

fn ppid(proc_root: &Path, pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(proc_root.join(pid.to_string()).join("stat")).ok()?;
    // pid (comm) state ppid …: comm may hold spaces and parentheses
    stat.rsplit_once(')')?
        .1
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

fn netns_of(proc_root: &Path, pid: u32) -> Option<u64> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(proc_root.join(pid.to_string()).join("ns/net"))
        .ok()
        .map(|m| m.ino())
}

/// The servers to follow: `pid` and its descendants when given, else the processes of
/// network namespace `netns` (inode; this process's own when `None`) that hold a listening
/// TCP socket. `proc_root` is where `/proc` is mounted.
pub fn followed_processes(proc_root: &Path, pid: Option<u32>, netns: Option<u32>) -> Vec<u32> {
    let pids: Vec<u32> = std::fs::read_dir(proc_root)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .collect();
    if let Some(root) = pid {
        let descends = |mut p: u32| {
            for _ in 0..8 {
                if p == root {
                    return true;
                }
                match ppid(proc_root, p) {
                    Some(q) if q > 1 => p = q,
                    _ => return false,
                }
            }
            false
        };
        return pids.into_iter().filter(|&p| descends(p)).collect();
    }
    let me = std::process::id();
    let ns = netns.map(u64::from).or_else(|| netns_of(proc_root, me));
    let mut listening: HashMap<u64, HashSet<u64>> = HashMap::new();
    pids.into_iter()
        .filter(|&p| p != me)
        .filter(|&p| {
            let Some(pns) = netns_of(proc_root, p) else {
                return false;
            };
            if ns.is_some_and(|n| n != pns) {
                return false;
            }
            let dir = proc_root.join(p.to_string());
            let inodes = listening.entry(pns).or_insert_with(|| {
                ["tcp", "tcp6"]
                    .iter()
                    .filter_map(|t| std::fs::read_to_string(dir.join("net").join(t)).ok())
                    .flat_map(|t| listening_inodes(&t))
                    .collect()
            });
            let mut held = HashSet::new();
            procfs::socket_inodes(proc_root, p, &mut held);
            held.iter().any(|i| inodes.contains(i))
        })
        .collect()
}

/// Which TLS library each of `pids` uses, if any (a process using none is left out).
/// `proc_root` is where `/proc` is mounted.
pub fn candidates(proc_root: &Path, pids: &[u32]) -> Vec<Candidate> {
    let mut go_checked: HashMap<PathBuf, bool> = HashMap::new();
    let mut out = Vec::new();
    for &pid in pids {
        let dir = proc_root.join(pid.to_string());
        let comm = std::fs::read_to_string(dir.join("comm"))
            .map(|c| c.trim().to_owned())
            .unwrap_or_default();
        let root = dir.join("root");
        let maps = std::fs::read_to_string(dir.join("maps")).unwrap_or_default();
        if let Some(lib) = libssl_in_maps(&maps) {
            out.push(Candidate {
                pid,
                comm,
                library: Library::OpenSsl,
                file: root.join(lib.trim_start_matches('/')),
            });
            continue;
        }
        let Ok(exe) = std::fs::read_link(dir.join("exe")) else {
            continue;
        };
        let file = root.join(exe.to_string_lossy().trim_start_matches('/'));
        let is_go = *go_checked
            .entry(exe.clone())
            .or_insert_with(|| is_go_tls(&file));
        if is_go {
            out.push(Candidate {
                pid,
                comm,
                library: Library::GoTls,
                file,
            });
        }
    }
    out
}

/// Whether `file` is a Go binary whose function table names `crypto/tls.(*Conn).Write`.
fn is_go_tls(file: &Path) -> bool {
    let Ok(data) = std::fs::read(file) else {
        return false;
    };
    let Ok(elf) = Elf::parse(&data) else {
        return false;
    };
    let Some((tab, _)) = elf.section(".gopclntab") else {
        return false;
    };
    PcLnTab::parse(tab, 0).is_ok_and(|t| t.find("crypto/tls.(*Conn).Write").is_ok())
}

/// The probes of `c`'s file.
pub fn sites_of(c: &Candidate) -> Result<Sites, String> {
    let data = std::fs::read(&c.file).map_err(|e| format!("{}: {e}", c.file.display()))?;
    let elf = Elf::parse(&data).map_err(|e| e.to_string())?;
    match c.library {
        Library::OpenSsl => openssl_sites(&elf),
        Library::GoTls => go_sites(&elf),
    }
    .map_err(|e| e.to_string())
}

/// What attaching the uprobes to one process gave.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct TlsAttachment {
    pub pid: u32,
    pub comm: String,
    pub library: Library,
    pub file: PathBuf,
    /// Probes attached.
    pub probes: usize,
    /// Why not all of them, if so.
    pub error: Option<String>,
}

impl std::fmt::Display for TlsAttachment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}[{}] ({}, {}): ",
            self.comm,
            self.pid,
            self.library.name(),
            self.file.display()
        )?;
        match &self.error {
            None => write!(f, "{} uprobes attached", self.probes),
            Some(e) => write!(f, "{} uprobes attached, then: {e}", self.probes),
        }
    }
}

/// What to attach: each followed process using a TLS library, with its library's probes
/// (or why they could not be located). `proc_root` is where `/proc` is mounted.
pub fn plan(
    proc_root: &Path,
    pid: Option<u32>,
    netns: Option<u32>,
) -> Vec<(Candidate, Result<Sites, String>)> {
    use std::os::unix::fs::MetadataExt;
    let mut by_file: HashMap<(u64, u64), Result<Sites, String>> = HashMap::new();
    candidates(proc_root, &followed_processes(proc_root, pid, netns))
        .into_iter()
        .map(|c| {
            let sites = match std::fs::metadata(&c.file) {
                Ok(m) => by_file
                    .entry((m.dev(), m.ino()))
                    .or_insert_with(|| sites_of(&c))
                    .clone(),
                Err(e) => Err(format!("{}: {e}", c.file.display())),
            };
            (c, sites)
        })
        .collect()
}

/// Loads the TLS programs and attaches `plan`'s probes, each to its own process only.
pub(super) fn attach(
    ebpf: &mut aya::Ebpf,
    plan: &[(Candidate, Result<Sites, String>)],
) -> Vec<TlsAttachment> {
    use aya::programs::uprobe::{UProbeAttachLocation, UProbeAttachPoint, UProbeScope};
    use aya::programs::UProbe;
    use tracer_common::tls::tls_names;

    if plan.is_empty() {
        return Vec::new();
    }
    let mut load_error = None;
    for name in [tls_names::ENTRY, tls_names::OPENSSL_RET] {
        let loaded = ebpf
            .program_mut(name)
            .ok_or_else(|| format!("the probe has no program `{name}`: rebuild tracer"))
            .and_then(|p| {
                let p: &mut UProbe = p
                    .try_into()
                    .map_err(|e: aya::programs::ProgramError| e.to_string())?;
                p.load()
                    .map_err(|e| format!("the kernel rejected `{name}`: {e}"))
            });
        if let Err(e) = loaded {
            load_error = Some(e);
            break;
        }
    }
    plan.iter()
        .map(|(c, sites)| {
            let mut a = TlsAttachment {
                pid: c.pid,
                comm: c.comm.clone(),
                library: c.library,
                file: c.file.clone(),
                probes: 0,
                error: None,
            };
            let sites = match (sites, &load_error) {
                (_, Some(e)) | (Err(e), _) => {
                    a.error = Some(e.clone());
                    return a;
                }
                (Ok(s), None) => s,
            };
            let Some(pid) = std::num::NonZeroU32::new(c.pid) else {
                a.error = Some("process id 0".into());
                return a;
            };
            for s in &sites.sites {
                let name = if s.ret {
                    tls_names::OPENSSL_RET
                } else {
                    tls_names::ENTRY
                };
                let result = ebpf
                    .program_mut(name)
                    .and_then(|p| <&mut UProbe>::try_from(p).ok())
                    .ok_or_else(|| format!("program `{name}` is not a uprobe"))
                    .and_then(|p| {
                        p.attach(
                            UProbeAttachPoint {
                                location: UProbeAttachLocation::AbsoluteOffset(s.offset),
                                cookie: Some(s.cookie),
                            },
                            &c.file,
                            UProbeScope::OneProcess(pid),
                        )
                        .map_err(|e| format!("attaching at offset {:#x}: {e}", s.offset))
                    });
                match result {
                    Ok(_) => a.probes += 1,
                    Err(e) => {
                        a.error = Some(e);
                        break;
                    }
                }
            }
            a
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn libssl_is_found_in_a_process_map() {
        // the paths of a map line as the parser sees them: a file name behind a directory
        let maps = "\
55d0c0a00000-55d0c0a2a000 r--p 00000000 fe:01 1234 proxy-root/sbin/nginx
7f1c2a000000-7f1c2a01f000 r--p 00000000 fe:01 5678 proxy-root/lib/libssl.so.3
7f1c2b000000-7f1c2b100000 r-xp 00000000 00:00 0
7f1c2c000000-7f1c2c01f000 r--p 00000000 fe:01 9012 proxy-root/lib/libcrypto.so.3
";
        assert_eq!(libssl_in_maps(maps), Some("proxy-root/lib/libssl.so.3"));
        assert_eq!(
            libssl_in_maps("7f00-7f01 r--p 0 0:0 1 proxy-root/lib/libcrypto.so.3\n"),
            None
        );
    }

    #[test]
    fn listening_sockets_are_those_in_state_0a() {
        let t = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 41234 1 0000000000000000 100 0 0 10 0
   1: 0100007F:1F90 0100007F:D2C4 01 00000000:00000000 00:00000000 00000000     0        0 41299 1 0000000000000000 20 4 30 10 -1
";
        assert_eq!(listening_inodes(t), HashSet::from([41234]));
    }

    /// Debian's OpenSSL: the four calls, entry probes on all and return probes on the reads.
    #[test]
    fn libssl_gives_entry_probes_and_return_probes_on_reads() {
        let Some(data) = crate::probe::installed::library("libssl.so.3", "libssl3")
            .and_then(|p| std::fs::read(p).ok())
        else {
            return;
        };
        let s = openssl_sites(&Elf::parse(&data).unwrap()).unwrap();
        assert_eq!(s.sites.len(), 10);
        assert_eq!(s.sites.iter().filter(|s| s.ret).count(), 3);
        assert!(s.sites.iter().filter(|s| s.ret).all(|s| [
            site::OPENSSL_READ,
            site::OPENSSL_READ_EX,
            site::OPENSSL_HANDSHAKE
        ]
        .contains(&s.cookie)));
    }

    /// Debian's caddy: no return probe, one probe per RET of `(*Conn).Read`.
    #[test]
    fn caddy_gets_entry_probes_only() {
        let Some(caddy) = crate::probe::installed::program("caddy", "caddy") else {
            return;
        };
        let Ok(data) = std::fs::read(&caddy) else {
            return;
        };
        let s = go_sites(&Elf::parse(&data).unwrap()).unwrap();
        assert_eq!(s.library, Library::GoTls);
        assert!(s.sites.iter().all(|s| !s.ret));
        assert!(s.sites.iter().any(|s| s.cookie == site::GO_READ_RET));
        assert!(is_go_tls(&caddy));
    }
}
