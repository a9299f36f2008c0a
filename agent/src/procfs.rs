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

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn parse_tcp_table(text: &str) -> Vec<TcpRow> {
        text.lines().filter_map(parse_tcp_row).collect()
    }

    /// Rows as a Linux x86_64 `/proc/net/tcp` shows them: nginx listening on
    /// 198.18.1.2:8080, a client connected to it, and its connection to 198.18.2.2:9000.
    pub(crate) const TCP: &str = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 020112C6:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1001 1 0000000000000000 100 0 0 10 0
   1: 020112C6:1F90 010112C6:A3F0 01 00000000:00000000 00:00000000 00000000     0        0 1002 1 0000000000000000 20 4 30 10 -1
   2: 010212C6:B8D6 020212C6:2328 01 00000000:00000000 00:00000000 00000000     0        0 1003 1 0000000000000000 20 4 30 10 -1
   3: 0100007F:0016 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 9999 1 0000000000000000 100 0 0 10 0
";
    /// `/proc/net/tcp6`: a listener on [::]:8443 and a v4-mapped connection.
    pub(crate) const TCP6: &str = "  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000000000000000000000000000:20FB 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 2001 1 0000000000000000 100 0 0 10 0
   1: 0000000000000000FFFF0000010212C6:B8D8 0000000000000000FFFF0000020212C6:2328 01 00000000:00000000 00:00000000 00000000     0        0 2002 1 0000000000000000 20 4 30 10 -1
";

    #[test]
    fn tables_parse_in_both_families() {
        let rows = parse_tcp_table(TCP);
        assert_eq!(rows.len(), 4);
        assert_eq!(rows[0].local, "198.18.1.2:8080".parse().unwrap());
        assert_eq!(rows[0].state, TCP_LISTEN);
        assert_eq!(rows[2].remote, "198.18.2.2:9000".parse().unwrap());
        assert_eq!(rows[2].inode, 1003);
        let rows6 = parse_tcp_table(TCP6);
        assert_eq!(rows6[0].local, "[::]:8443".parse().unwrap());
        assert_eq!(
            rows6[1].remote,
            "198.18.2.2:9000".parse().unwrap(),
            "v4-mapped"
        );
    }
}
