//! The kernel's `/proc` interface as the probe and the agent read it: rows of the TCP
//! tables (`/proc/PID/net/tcp{,6}`) and the sockets behind a process's descriptors. Every
//! path is taken under a `/proc` root the caller passes (the host's, or a fixture's).

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::Path;

/// Where the kernel's `/proc` is mounted on the host the probe runs on.
pub const HOST: &str = "/proc";

/// `st` of a listening socket in `/proc/net/tcp`.
pub const TCP_LISTEN: u8 = 0x0A;

/// One row of `/proc/net/tcp` or `/proc/net/tcp6`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpRow {
    pub local: SocketAddr,
    pub remote: SocketAddr,
    pub state: u8,
    pub inode: u64,
}

/// An address of `/proc/net/tcp{,6}`: hex of the address as stored in memory (32-bit
/// words in host byte order), a colon, the port in hex.
fn parse_addr(s: &str) -> Option<SocketAddr> {
    let (a, p) = s.split_once(':')?;
    let port = u16::from_str_radix(p, 16).ok()?;
    let ip = match a.len() {
        8 => {
            let w = u32::from_str_radix(a, 16).ok()?;
            IpAddr::V4(Ipv4Addr::from(w.to_ne_bytes()))
        }
        32 => {
            let mut b = [0u8; 16];
            for i in 0..4 {
                let w = u32::from_str_radix(&a[i * 8..i * 8 + 8], 16).ok()?;
                b[i * 4..i * 4 + 4].copy_from_slice(&w.to_ne_bytes());
            }
            let v6 = Ipv6Addr::from(b);
            v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4)
        }
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

/// One row of a `/proc/net/tcp{,6}` table; `None` for the header and malformed rows.
#[must_use]
pub fn parse_tcp_row(line: &str) -> Option<TcpRow> {
    let mut f = line.split_whitespace();
    let local = parse_addr(f.nth(1)?)?;
    let remote = parse_addr(f.next()?)?;
    let state = u8::from_str_radix(f.next()?, 16).ok()?;
    let inode = f.nth(5)?.parse().ok()?;
    Some(TcpRow {
        local,
        remote,
        state,
        inode,
    })
}

/// The socket inode a descriptor link names (`socket:[N]`), if it is a socket.
#[must_use]
pub fn socket_inode(link: &Path) -> Option<u64> {
    let t = std::fs::read_link(link).ok()?;
    t.to_str()?
        .strip_prefix("socket:[")?
        .strip_suffix(']')?
        .parse()
        .ok()
}

/// Adds the socket inodes of `pid`'s open descriptors (under `proc_root`) to `into`.
pub fn socket_inodes(proc_root: &Path, pid: u32, into: &mut HashSet<u64>) {
    let Ok(fds) = std::fs::read_dir(proc_root.join(pid.to_string()).join("fd")) else {
        return;
    };
    into.extend(fds.flatten().filter_map(|fd| socket_inode(&fd.path())));
}
