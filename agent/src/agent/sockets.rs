//! The proxy's own sockets, from `/proc`: which endpoints it listens on (its responses
//! there face the clients) and which it is connected to (its upstreams). The agent uses
//! them to attribute the responses the kernel's selection counts per sender, so that
//! unrelated services sharing the network namespace (a `hostNetwork` proxy) are not
//! counted.
//!
//! [`proxy_sockets`] reads them (the rows are parsed by [`crate::procfs`]).

use std::collections::HashSet;
use std::io::BufRead;
use std::net::SocketAddr;
use std::path::Path;

use crate::procfs::{parse_tcp_row, socket_inodes, TcpRow, TCP_LISTEN};

/// Where a proxy listens and whom it is connected to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProxySockets {
    /// Listening endpoints (an unspecified address listens on every address).
    pub listeners: HashSet<SocketAddr>,
    /// Remote endpoints of its other sockets whose local port is not a listener's: the
    /// connections it opened, to its upstreams.
    pub upstreams: HashSet<SocketAddr>,
}

impl ProxySockets {
    /// Whether `sender` is one of the proxy's listening endpoints.
    #[must_use]
    pub fn is_listener(&self, sender: SocketAddr) -> bool {
        self.listeners.iter().any(|l| {
            l.port() == sender.port() && (l.ip().is_unspecified() || l.ip() == sender.ip())
        })
    }

    /// Adds what `rows` say of the sockets whose inode is in `owned`.
    pub fn learn(&mut self, rows: &[TcpRow], owned: &HashSet<u64>) {
        let mine: Vec<&TcpRow> = rows.iter().filter(|r| owned.contains(&r.inode)).collect();
        for r in &mine {
            if r.state == TCP_LISTEN {
                self.listeners.insert(r.local);
            }
        }
        for r in mine {
            if r.state != TCP_LISTEN && !self.is_listener(r.local) {
                self.upstreams.insert(r.remote);
            }
        }
    }
}

/// Adds to `known` the sockets the processes `pids` hold now (the TCP tables are read
/// through the first pid, so in their network namespace).
pub fn proxy_sockets(proc_root: &Path, pids: &[u32], known: &mut ProxySockets) {
    let Some(first) = pids.first() else {
        return;
    };
    let mut owned = HashSet::new();
    for pid in pids {
        socket_inodes(proc_root, *pid, &mut owned);
    }
    let net = proc_root.join(first.to_string()).join("net");
    // Read a line at a time, keeping only the proxy's rows: on a node's own network
    // namespace (a hostNetwork proxy) the tables hold every socket of the node, megabytes
    // of text at every read.
    let mut rows = Vec::new();
    for table in ["tcp", "tcp6"] {
        let Ok(file) = std::fs::File::open(net.join(table)) else {
            continue;
        };
        let mut lines = std::io::BufReader::new(file);
        let mut line = String::new();
        while matches!(lines.read_line(&mut line), Ok(n) if n > 0) {
            if let Some(row) = parse_tcp_row(&line).filter(|r| owned.contains(&r.inode)) {
                rows.push(row);
            }
            line.clear();
        }
    }
    known.learn(&rows, &owned);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_tcp_table(text: &str) -> Vec<TcpRow> {
        text.lines().filter_map(parse_tcp_row).collect()
    }

    /// Rows as a Linux x86_64 `/proc/net/tcp` shows them: nginx listening on
    /// 198.18.1.2:8080, a client connected to it, and its connection to 198.18.2.2:9000.
    const TCP: &str = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 020112C6:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1001 1 0000000000000000 100 0 0 10 0
   1: 020112C6:1F90 010112C6:A3F0 01 00000000:00000000 00:00000000 00000000     0        0 1002 1 0000000000000000 20 4 30 10 -1
   2: 010212C6:B8D6 020212C6:2328 01 00000000:00000000 00:00000000 00000000     0        0 1003 1 0000000000000000 20 4 30 10 -1
   3: 0100007F:0016 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 9999 1 0000000000000000 100 0 0 10 0
";
    /// `/proc/net/tcp6`: a listener on [::]:8443 and a v4-mapped connection.
    const TCP6: &str = "  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
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

    #[test]
    fn the_proxys_listeners_and_upstreams_are_told_apart_from_other_sockets() {
        let mut rows = parse_tcp_table(TCP);
        rows.extend(parse_tcp_table(TCP6));
        let owned: HashSet<u64> = [1001, 1002, 1003, 2001, 2002].into();
        let mut s = ProxySockets::default();
        s.learn(&rows, &owned);
        assert!(s.is_listener("198.18.1.2:8080".parse().unwrap()));
        assert!(
            s.is_listener("10.9.9.9:8443".parse().unwrap()),
            "[::] listens everywhere"
        );
        assert!(
            !s.is_listener("127.0.0.1:22".parse().unwrap()),
            "not the proxy's"
        );
        assert_eq!(
            s.upstreams,
            ["198.18.2.2:9000".parse().unwrap()].into(),
            "the accepted client connection is not an upstream"
        );
    }

    #[test]
    fn this_process_sockets_are_found() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let _c = std::net::TcpStream::connect(addr).unwrap();
        let mut s = ProxySockets::default();
        proxy_sockets(Path::new("/proc"), &[std::process::id()], &mut s);
        assert!(s.is_listener(addr));
    }
}
