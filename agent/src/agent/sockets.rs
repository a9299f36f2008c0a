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
    use crate::procfs::tests::{parse_tcp_table, TCP, TCP6};

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
        proxy_sockets(
            Path::new(crate::procfs::HOST),
            &[std::process::id()],
            &mut s,
        );
        assert!(s.is_listener(addr));
    }
}
