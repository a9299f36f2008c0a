//! Roles from the kernel: the probe sees each socket's opening — `connect` (active) or a
//! listener's accept (passive) — and the process that owns it. The proxy is a process that
//! both accepts connections and makes them; a connection it accepted faces its clients, one
//! it connected faces its upstream, and a connection another process made is not one of
//! the proxy's upstream attempts. This holds where addresses say nothing: one loopback for
//! client, proxy and upstream (the sidecar shape).

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;

use super::Role;
use crate::flow::ConnInfo;
use crate::kernel::{tuple_key, Opened, SocketOpen};

/// Sockets remembered per generation: at this size the older generation is dropped and the
/// current one becomes it, so at most twice this many are kept, the newest always. A
/// connection's role is asked when it is first seen, moments after its opening; a busy
/// proxy (600 new sockets a second in the lab's seed) cycles a generation in under a
/// minute. 7/8 of 32,768 buckets: a map allocated for this many never grows.
const GENERATION: usize = (1 << 15) / 8 * 7;

/// A generation's map: [`tuple_key`] of (local, remote) → how the socket was opened and
/// its owner, when known (24 bytes a socket, where keying by the two addresses took 76).
type Generation = HashMap<u64, (Opened, Option<u32>)>;

/// What the kernel said about sockets, for roles.
///
/// Both generations are allocated whole at the start (some 800 KiB each) and reused: the
/// count of distinct tuples creeps up for many minutes as a proxy's ports are reused, and
/// a map sized as it went doubled at whatever moment it crossed a power of two (a step of
/// megabytes in the node agent's memory long after its start). A 64-bit key shared by two
/// tuples (about one chance in 10^10 a generation) would give one the other's opening.
#[derive(Debug)]
pub struct KernelRoles {
    /// Per process: (sockets it accepted, sockets it connected).
    procs: HashMap<u32, (u32, u32)>,
    /// The current generation, and the one before it.
    sockets: Generation,
    older: Generation,
    /// Local endpoints of accepted sockets → the processes seen accepting there.
    listeners: HashMap<SocketAddr, HashSet<u32>>,
}

impl Default for KernelRoles {
    fn default() -> Self {
        Self {
            procs: HashMap::new(),
            sockets: Generation::with_capacity(GENERATION),
            older: Generation::with_capacity(GENERATION),
            listeners: HashMap::new(),
        }
    }
}

impl KernelRoles {
    /// Takes one socket opening.
    pub fn saw(&mut self, s: SocketOpen) {
        if self.sockets.len() >= GENERATION {
            // the older generation's map is emptied and reused: both keep their capacity
            std::mem::swap(&mut self.older, &mut self.sockets);
            self.sockets.clear();
        }
        let key = tuple_key(s.local, s.remote);
        let prev = self
            .sockets
            .insert(key, (s.opened, s.pid))
            .or_else(|| self.older.get(&key).copied());
        let Some(pid) = s.pid else { return };
        if prev.is_some_and(|(_, p)| p == Some(pid)) {
            return; // already counted
        }
        let n = self.procs.entry(pid).or_default();
        match s.opened {
            Opened::Passive => {
                n.0 += 1;
                self.listeners.entry(s.local).or_default().insert(pid);
            }
            Opened::Active => n.1 += 1,
        }
    }

    /// What is known of socket (local, remote), in either generation.
    fn socket(&self, local: SocketAddr, remote: SocketAddr) -> Option<&(Opened, Option<u32>)> {
        let key = tuple_key(local, remote);
        self.sockets.get(&key).or_else(|| self.older.get(&key))
    }

    /// Sockets remembered now (at most twice [`GENERATION`]).
    #[must_use]
    pub fn remembered(&self) -> usize {
        self.sockets.len() + self.older.len()
    }

    /// `pid` both accepts connections and makes them: a proxy.
    fn is_proxy(&self, pid: u32) -> bool {
        self.procs.get(&pid).is_some_and(|&(a, c)| a > 0 && c > 0)
    }

    fn knows_a_proxy(&self) -> bool {
        self.procs.values().any(|&(a, c)| a > 0 && c > 0)
    }

    /// `server` is where a proxy accepts connections.
    fn proxy_listener(&self, server: SocketAddr) -> bool {
        self.listeners
            .get(&server)
            .is_some_and(|pids| pids.iter().any(|&p| self.is_proxy(p)))
    }

    /// The role of a connection as the kernel tells it, when it does.
    #[must_use]
    pub fn role(&self, info: &ConnInfo) -> Option<Role> {
        if self.sockets.is_empty() && self.older.is_empty() {
            return None;
        }
        let client_side = self.socket(info.client, info.server);
        // The proxy connected it: it faces the upstream.
        if let Some(&(Opened::Active, Some(pid))) = client_side {
            if self.is_proxy(pid) {
                return Some(Role::Up);
            }
        }
        // The proxy accepted it, or it goes to where the proxy accepts: it faces a client.
        let server_side = self.socket(info.server, info.client);
        if let Some(&(Opened::Passive, Some(pid))) = server_side {
            if self.is_proxy(pid) {
                return Some(Role::Down);
            }
        }
        if self.proxy_listener(info.server) {
            return Some(Role::Down);
        }
        // Another process made it: not the proxy's.
        if let Some(&(Opened::Active, Some(pid))) = client_side {
            if self.knows_a_proxy() && !self.is_proxy(pid) {
                return Some(Role::Other);
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open(local: &str, remote: &str, opened: Opened, pid: Option<u32>) -> SocketOpen {
        SocketOpen {
            local: local.parse().unwrap(),
            remote: remote.parse().unwrap(),
            opened,
            pid,
        }
    }

    /// Both generations are allocated at their bound once: three generations of sockets,
    /// each with a tuple of its own, leave their room as it was.
    #[test]
    fn generations_are_allocated_once() {
        let mut k = KernelRoles::default();
        let room = (k.sockets.capacity(), k.older.capacity());
        assert!(room.0 >= GENERATION && room.1 >= GENERATION);
        for i in 0..3 * GENERATION {
            let local = format!(
                "10.1.{}.{}:{}",
                i / 60_000,
                (i / 250) % 240,
                1024 + i % 60_000
            );
            k.saw(open(&local, "10.2.0.1:80", Opened::Active, Some(7)));
        }
        assert_eq!((k.sockets.capacity(), k.older.capacity()), room);
        assert!(k.remembered() > GENERATION, "both generations hold sockets");
    }

    fn conn(client: &str, server: &str) -> ConnInfo {
        ConnInfo::for_test(client, server)
    }

    #[test]
    fn one_loopback_the_proxy_is_the_process_that_accepts_and_connects() {
        const CURL: u32 = 10;
        const NGINX: u32 = 20;
        const BASH: u32 = 30;
        let mut k = KernelRoles::default();
        k.saw(open(
            "127.0.0.1:40000",
            "127.0.0.1:8080",
            Opened::Active,
            Some(CURL),
        ));
        // accepted in softirq: the owner shows on a later event
        k.saw(open(
            "127.0.0.1:8080",
            "127.0.0.1:40000",
            Opened::Passive,
            None,
        ));
        k.saw(open(
            "127.0.0.1:8080",
            "127.0.0.1:40000",
            Opened::Passive,
            Some(NGINX),
        ));
        k.saw(open(
            "127.0.0.1:50000",
            "127.0.0.1:9",
            Opened::Active,
            Some(NGINX),
        ));
        k.saw(open(
            "127.0.0.1:50001",
            "127.0.0.1:6379",
            Opened::Active,
            Some(BASH),
        ));
        assert_eq!(
            k.role(&conn("127.0.0.1:40000", "127.0.0.1:8080")),
            Some(Role::Down)
        );
        assert_eq!(
            k.role(&conn("127.0.0.1:50000", "127.0.0.1:9")),
            Some(Role::Up)
        );
        assert_eq!(
            k.role(&conn("127.0.0.1:50001", "127.0.0.1:6379")),
            Some(Role::Other)
        );
        // a later client whose accepted socket is not known yet: the proxy's listener
        assert_eq!(
            k.role(&conn("127.0.0.1:40002", "127.0.0.1:8080")),
            Some(Role::Down)
        );
        assert_eq!(k.role(&conn("10.0.0.1:1", "10.0.0.2:2")), None);
    }

    /// nginx, its clients and a refused upstream all on 127.0.0.1: addresses say nothing
    /// about roles. A shell's probe of a closed port comes first, then three requests,
    /// each answered 502 after nginx's connection to port 9 was refused.
    fn one_loopback() -> crate::correlate::rules::timeline::Tl {
        use crate::correlate::rules::timeline::{Conn, Tl, MS};
        use crate::segment::flags;
        const NGINX: u32 = 20;
        let lo = |c: u16, s: u16| Conn {
            c: format!("127.0.0.1:{c}").parse().unwrap(),
            s: format!("127.0.0.1:{s}").parse().unwrap(),
        };
        let mut tl = Tl::default();
        let probe = lo(39000, 8081);
        tl.kernel_opened(probe, Some(30), None);
        tl.seg(0, probe.c, probe.s, flags::SYN, b"");
        tl.rst(50, probe, false);
        for i in 0..3u16 {
            let t = (1 + i64::from(i)) * 100 * MS;
            let (d, u) = (lo(40000 + i, 8080), lo(50000 + i, 9));
            tl.kernel_opened(d, Some(10 + u32::from(i)), Some(NGINX));
            tl.kernel_opened(u, Some(NGINX), None);
            tl.open(t, d);
            tl.req(t + 200, d, "POST", u32::from(i) + 1);
            tl.seg(t + 300, u.c, u.s, flags::SYN, b"");
            tl.rst(t + 350, u, false);
            tl.res(t + 500, d, 502);
            tl.fin(t + 600, d, true);
            tl.fin(t + 700, d, false);
        }
        tl
    }

    #[test]
    fn on_one_loopback_the_kernel_names_the_sides() {
        use crate::correlate::rules::Rule;
        use crate::verdict::{Cause, Confidence};
        let verdicts = one_loopback().run().verdicts;
        assert_eq!(verdicts.len(), 3, "{verdicts:#?}");
        for v in &verdicts {
            assert_eq!(v.cause, Cause::UpstreamRefused, "{v:#?}");
            assert_eq!(v.status, Some(502));
        }
        // The shell's refused probe is not the proxy's upstream attempt.
        assert!(verdicts
            .iter()
            .all(|v| v.upstream.as_ref().is_none_or(|u| u.server.port() != 8081)));
        let off = one_loopback().run_without(Rule::KernelRoles).verdicts;
        assert!(
            off.iter()
                .all(|v| v.cause != Cause::UpstreamRefused || v.confidence == Confidence::Probable),
            "{off:#?}"
        );
        assert!(
            off.iter().any(|v| v.summary.contains("role is unknown")),
            "{off:#?}"
        );
    }

    #[test]
    fn without_a_process_that_does_both_the_kernel_says_nothing() {
        let mut k = KernelRoles::default();
        k.saw(open(
            "127.0.0.1:40000",
            "127.0.0.1:8080",
            Opened::Active,
            Some(1),
        ));
        k.saw(open(
            "127.0.0.1:8080",
            "127.0.0.1:40000",
            Opened::Passive,
            Some(2),
        ));
        assert_eq!(k.role(&conn("127.0.0.1:40000", "127.0.0.1:8080")), None);
    }

    #[test]
    fn memory_is_bounded_and_the_newest_sockets_are_kept() {
        let mut k = KernelRoles::default();
        // the proxy: accepts and connects
        k.saw(open("10.0.0.2:80", "10.0.0.1:1", Opened::Passive, Some(7)));
        k.saw(open("10.0.0.2:2", "10.0.0.3:9000", Opened::Active, Some(7)));
        for i in 0..(3 * GENERATION as u32) {
            let port = 1024 + (i % 60_000) as u16;
            let host = i / 60_000;
            k.saw(open(
                &format!("10.0.{host}.2:{port}"),
                "10.0.0.3:9000",
                Opened::Active,
                Some(7),
            ));
        }
        assert!(k.remembered() <= 2 * GENERATION, "{}", k.remembered());
        let last = 3 * GENERATION as u32 - 1;
        let newest = conn(
            &format!("10.0.{}.2:{}", last / 60_000, 1024 + (last % 60_000) as u16),
            "10.0.0.3:9000",
        );
        assert_eq!(k.role(&newest), Some(Role::Up), "the newest is still known");
    }
}
