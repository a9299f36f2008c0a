//! Which connections face the client (downstream: client → proxy) and which face the
//! upstream (proxy → upstream): named by the user, or learned from the traffic.

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;

use crate::flow::ConnInfo;

/// An address with an optional port, as given on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Endpoint {
    pub ip: IpAddr,
    pub port: Option<u16>,
}

/// `--proxy`/`--upstream` values that are neither `IP` nor `IP:PORT`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not an address: give IP or IP:PORT (e.g. 10.0.0.5 or 10.0.0.5:8080)")]
pub struct BadEndpoint(pub String);

impl FromStr for Endpoint {
    type Err = BadEndpoint;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if let Ok(sa) = s.parse::<SocketAddr>() {
            return Ok(Endpoint {
                ip: sa.ip(),
                port: Some(sa.port()),
            });
        }
        let bare = s.trim_start_matches('[').trim_end_matches(']');
        bare.parse::<IpAddr>()
            .map(|ip| Endpoint { ip, port: None })
            .map_err(|_| BadEndpoint(s.to_owned()))
    }
}

impl Endpoint {
    #[must_use]
    pub fn matches(&self, a: SocketAddr) -> bool {
        self.ip == a.ip() && self.port.is_none_or(|p| p == a.port())
    }
}

/// A connection's side of the proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Client → proxy.
    Down,
    /// Proxy → upstream.
    Up,
    /// Neither: the kernel saw another process make it (not one of the proxy's attempts).
    Other,
    Unknown,
}

/// Client and server addresses remembered for roles, each.
const MAX_IPS: usize = 65_536;

/// What is known about roles.
#[derive(Debug, Default)]
pub struct Roles {
    pub proxy: Option<Endpoint>,
    pub upstream: Option<Endpoint>,
    /// Server endpoints learned to be the proxy's listeners.
    listeners: HashSet<SocketAddr>,
    /// Server endpoints learned to be upstreams.
    upstreams: HashSet<SocketAddr>,
    /// IPs that opened connections / accepted connections.
    client_ips: HashSet<IpAddr>,
    server_ips: HashSet<IpAddr>,
    /// Server endpoints whose clients' first bytes were not HTTP/1.x (TLS, mostly).
    opaque: HashSet<SocketAddr>,
    /// Server endpoints that received readable HTTP requests.
    readable: HashSet<SocketAddr>,
    /// What the kernel probe says: who opened each socket, and how.
    pub kernel: super::kernel_roles::KernelRoles,
    /// Kernel roles are switched off (tests).
    pub(super) kernel_off: bool,
}

impl Roles {
    #[must_use]
    pub fn new(proxy: Option<Endpoint>, upstream: Option<Endpoint>) -> Self {
        Roles {
            proxy,
            upstream,
            ..Roles::default()
        }
    }

    /// Notes a connection's endpoints (connections whose opener was seen only).
    pub fn saw(&mut self, info: &ConnInfo) {
        if info.opener_known {
            // (bounded: an ingress sees ever new client addresses; the first ones teach
            // what there is to learn, the proxy's own among them)
            if self.client_ips.len() < MAX_IPS {
                self.client_ips.insert(info.client.ip());
            }
            if self.server_ips.len() < MAX_IPS {
                self.server_ips.insert(info.server.ip());
            }
        }
    }

    /// A client sent `server` bytes that are not HTTP/1.x before any request.
    pub fn saw_opaque(&mut self, server: SocketAddr) {
        self.opaque.insert(server);
    }

    /// A client sent `server` a readable HTTP request.
    pub fn saw_readable(&mut self, server: SocketAddr) {
        if !self.readable.contains(&server) {
            self.readable.insert(server);
        }
    }

    /// The proxy's listeners whose client side is encrypted (or otherwise unreadable).
    #[must_use]
    pub fn opaque_listeners(&self) -> Vec<SocketAddr> {
        let mut v: Vec<SocketAddr> = self
            .opaque
            .iter()
            .filter(|s| !self.readable.contains(s) && !self.upstreams.contains(s))
            .copied()
            .collect();
        v.sort();
        v
    }

    /// A request on `up` mirrored one on `down`: learn both sides.
    pub fn learn(&mut self, down: &ConnInfo, up: &ConnInfo) {
        self.listeners.insert(down.server);
        self.upstreams.insert(up.server);
    }

    /// Requests to `listener` were repeatedly followed by connections to `upstream`: the
    /// proxy's two sides, learned from timing alone.
    pub fn learn_by_timing(&mut self, listener: SocketAddr, upstream: SocketAddr) {
        if !self.upstreams.contains(&listener) && !self.listeners.contains(&upstream) {
            self.listeners.insert(listener);
            self.upstreams.insert(upstream);
        }
    }

    /// Any upstream side is known at all.
    #[must_use]
    pub fn knows_upstreams(&self) -> bool {
        !self.upstreams.is_empty() || self.upstream.is_some()
    }

    /// The role of a connection, as far as it is known now.
    #[must_use]
    pub fn role(&self, info: &ConnInfo) -> Role {
        if let Some(p) = self.proxy {
            if p.matches(info.server) {
                return Role::Down;
            }
            if p.ip == info.client.ip() {
                return Role::Up;
            }
        }
        if !self.kernel_off {
            if let Some(r) = self.kernel.role(info) {
                return r;
            }
        }
        if let Some(u) = self.upstream {
            if u.matches(info.server) {
                return Role::Up;
            }
            if self.proxy.is_none() && u.ip != info.server.ip() {
                // everything that is not the upstream faces the client
                if self.listeners.contains(&info.server) {
                    return Role::Down;
                }
            }
        }
        if self.listeners.contains(&info.server) {
            return Role::Down;
        }
        if self.upstreams.contains(&info.server) {
            return Role::Up;
        }
        // Unreadable bytes to an endpoint no readable request reaches: the proxy's
        // encrypted client side (tracer reads plain HTTP/1.x, so an unreadable leg beside a
        // readable one is the clients' TLS), unless the connection comes from an address
        // that itself accepts connections — the proxy calling a TLS upstream.
        if self.opaque.contains(&info.server)
            && !self.readable.contains(&info.server)
            && !self.server_ips.contains(&info.client.ip())
        {
            return Role::Down;
        }
        // an address that accepts here and opens elsewhere is the proxy
        let server_opens = self.client_ips.contains(&info.server.ip());
        let client_accepts = self.server_ips.contains(&info.client.ip());
        match (server_opens, client_accepts) {
            (true, false) => Role::Down,
            (false, true) => Role::Up,
            _ => Role::Unknown,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(c: &str, s: &str) -> ConnInfo {
        ConnInfo::for_test(c, s)
    }

    #[test]
    fn endpoint_parses_ip_and_ip_port() {
        assert_eq!("10.0.0.1".parse::<Endpoint>().unwrap().port, None);
        assert_eq!("10.0.0.1:80".parse::<Endpoint>().unwrap().port, Some(80));
        assert_eq!("[::1]:80".parse::<Endpoint>().unwrap().port, Some(80));
        assert!("nope".parse::<Endpoint>().is_err());
    }

    #[test]
    fn address_that_accepts_and_opens_is_the_proxy() {
        let mut r = Roles::default();
        let down = info("10.0.0.1:40000", "10.0.0.2:80");
        let up = info("10.0.0.2:50000", "10.0.0.3:9000");
        r.saw(&down);
        r.saw(&up);
        assert_eq!(r.role(&down), Role::Down);
        assert_eq!(r.role(&up), Role::Up);
    }

    #[test]
    fn override_names_the_proxy() {
        let r = Roles::new(Some("10.0.0.2:80".parse().unwrap()), None);
        assert_eq!(r.role(&info("10.0.0.1:1", "10.0.0.2:80")), Role::Down);
        assert_eq!(r.role(&info("10.0.0.2:5", "10.0.0.3:9000")), Role::Up);
    }

    #[test]
    fn an_unreadable_client_side_faces_the_client() {
        let mut r = Roles::default();
        let tls = info("198.18.1.1:40000", "198.18.1.2:8080");
        let plain = info("198.18.2.1:50000", "198.18.2.2:9000");
        r.saw(&tls);
        r.saw(&plain);
        r.saw_readable(plain.server);
        r.saw_opaque(tls.server);
        assert_eq!(r.role(&tls), Role::Down);
        assert_ne!(r.role(&plain), Role::Down);
        assert_eq!(r.opaque_listeners(), vec![tls.server]);
        // The proxy calling a TLS upstream: the unreadable connection comes from an address
        // that accepts the clients' plain requests.
        let mut r = Roles::default();
        let down = info("10.0.0.1:40000", "10.0.0.2:80");
        let up_tls = info("10.0.0.2:50000", "10.0.0.3:443");
        r.saw(&down);
        r.saw(&up_tls);
        r.saw_readable(down.server);
        r.saw_opaque(up_tls.server);
        assert_ne!(r.role(&up_tls), Role::Down);
    }

    #[test]
    fn learned_mirror_survives_two_proxy_addresses() {
        let mut r = Roles::default();
        let down = info("198.18.1.1:40000", "198.18.1.2:8080");
        let up = info("198.18.2.2:50000", "198.18.2.3:9000");
        r.saw(&down);
        r.saw(&up);
        assert_eq!(r.role(&down), Role::Unknown);
        r.learn(&down, &up);
        assert_eq!(r.role(&down), Role::Down);
        assert_eq!(r.role(&up), Role::Up);
    }
}
