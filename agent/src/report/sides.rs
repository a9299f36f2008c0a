//! Which sides of the proxy a capture holds: the client side (clients → proxy), the
//! upstream side (proxy → upstreams), or both. A capture of one side alone cannot tie a
//! client's 5xx to the upstream attempt behind it, and the report says so once instead of
//! under every verdict.
//!
//! The rule is deliberately simple and errs towards silence: it looks at the server
//! endpoints (who accepted a SYN, or answered / received an HTTP/1.x head) and says "one
//! side" only when they all sit on one side of the proxy the user named, or, with nothing
//! named, when every connection goes to a single server. Extra traffic in the capture
//! (another service, `-i any`) can hide a missing side; it never invents one.

use std::collections::HashSet;
use std::net::SocketAddr;

use crate::correlate::Endpoint;
use crate::segment::{flags, Segment};

/// The server endpoints seen in a capture.
#[derive(Debug, Clone, Default)]
pub struct Sides {
    servers: HashSet<SocketAddr>,
    /// The last server recorded: most heads go to the same few servers, so this spares
    /// a hash lookup per head.
    last: Option<SocketAddr>,
}

/// Which side of the proxy the capture lacks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Missing {
    /// Only client → proxy connections were seen.
    Upstream,
    /// Only proxy → upstream connections were seen.
    Client,
    /// Every connection goes to one server, and nothing says whether it is the proxy or an
    /// upstream.
    Unknown,
}

impl Missing {
    /// The name the JSON report uses.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Missing::Upstream => "upstream",
            Missing::Client => "client",
            Missing::Unknown => "unknown",
        }
    }
}

/// A capture of one side of the proxy only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OneSide {
    pub missing: Missing,
    /// The one server every connection went to, when that is all there is to go by.
    pub server: Option<SocketAddr>,
}

/// Whether `p` starts like an HTTP/1.x request line (`METHOD SP`).
fn request_head(p: &[u8]) -> bool {
    let method = p
        .iter()
        .take(8)
        .take_while(|b| b.is_ascii_uppercase())
        .count();
    (3..=7).contains(&method) && p.get(method) == Some(&b' ')
}

impl Sides {
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Notes the server end of `seg`'s connection when the segment shows it.
    pub fn push(&mut self, seg: &Segment) {
        let server = if seg.has(flags::SYN) {
            if seg.has(flags::ACK) {
                seg.src
            } else {
                seg.dst
            }
        } else if seg.payload.starts_with(b"HTTP/1.") {
            seg.src
        } else if request_head(&seg.payload) {
            seg.dst
        } else {
            return;
        };
        if self.last != Some(server) {
            self.last = Some(server);
            self.servers.insert(server);
        }
    }

    /// The side the capture lacks, if it holds one side only (see the module's rule).
    /// `proxy` and `upstream` are what the user said (`--proxy`, `--upstream`).
    #[must_use]
    pub fn one_side(&self, proxy: Option<Endpoint>, upstream: Option<Endpoint>) -> Option<OneSide> {
        if self.servers.is_empty() {
            return None;
        }
        let client_facing = |s: &SocketAddr| match (proxy, upstream) {
            (Some(p), _) => p.matches(*s),
            (None, Some(u)) => !u.matches(*s),
            (None, None) => false,
        };
        if proxy.is_none() && upstream.is_none() {
            return match self.servers.iter().collect::<Vec<_>>().as_slice() {
                [one] => Some(OneSide {
                    missing: Missing::Unknown,
                    server: Some(**one),
                }),
                _ => None,
            };
        }
        let down = self.servers.iter().filter(|s| client_facing(s)).count();
        let up = self.servers.len() - down;
        let missing = match (down, up) {
            (_, 0) => Missing::Upstream,
            (0, _) => Missing::Client,
            _ => return None,
        };
        Some(OneSide {
            missing,
            server: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seg(src: &str, dst: &str, fl: u8, payload: &[u8]) -> Segment {
        Segment {
            ts_ns: 0,
            src: src.parse().unwrap(),
            dst: dst.parse().unwrap(),
            flags: fl,
            seq: 0,
            ack: 0,
            wire_len: payload.len() as u32,
            payload: payload.to_vec(),
        }
    }

    const CLIENT: &str = "10.0.0.1:40000";
    const PROXY: &str = "10.0.0.2:80";
    const PROXY_BACK: &str = "10.0.1.2:50000";
    const UPSTREAM: &str = "10.0.1.3:9000";

    fn ep(s: &str) -> Option<Endpoint> {
        Some(s.parse().unwrap())
    }

    fn client_side() -> Sides {
        let mut s = Sides::new();
        s.push(&seg(CLIENT, PROXY, flags::SYN, b""));
        s.push(&seg(PROXY, CLIENT, flags::SYN | flags::ACK, b""));
        s.push(&seg(CLIENT, PROXY, flags::ACK, b"POST /a HTTP/1.1\r\n"));
        s.push(&seg(
            PROXY,
            CLIENT,
            flags::ACK,
            b"HTTP/1.1 502 Bad Gateway\r\n",
        ));
        s
    }

    fn upstream_side() -> Sides {
        let mut s = Sides::new();
        // Pooled connections opened before the capture began: no SYN, only heads.
        s.push(&seg(
            PROXY_BACK,
            UPSTREAM,
            flags::ACK,
            b"POST /a HTTP/1.1\r\n",
        ));
        s.push(&seg(UPSTREAM, PROXY_BACK, flags::ACK | flags::FIN, b""));
        s
    }

    #[test]
    fn both_sides_say_nothing() {
        let mut s = client_side();
        s.push(&seg(PROXY_BACK, UPSTREAM, flags::SYN, b""));
        assert_eq!(s.one_side(None, None), None);
        assert_eq!(s.one_side(ep("10.0.0.2"), None), None);
        assert_eq!(s.one_side(None, ep("10.0.1.3:9000")), None);
    }

    #[test]
    fn the_client_side_alone_lacks_the_upstream_side_when_the_proxy_is_named() {
        let s = client_side();
        assert_eq!(
            s.one_side(ep("10.0.0.2"), None).map(|o| o.missing),
            Some(Missing::Upstream)
        );
    }

    #[test]
    fn the_upstream_side_alone_lacks_the_client_side() {
        let s = upstream_side();
        assert_eq!(
            s.one_side(None, ep("10.0.1.3")).map(|o| o.missing),
            Some(Missing::Client)
        );
        assert_eq!(
            s.one_side(ep("10.0.0.2:80"), None).map(|o| o.missing),
            Some(Missing::Client)
        );
    }

    #[test]
    fn one_server_and_no_name_is_one_side_of_unknown_kind() {
        assert_eq!(
            client_side().one_side(None, None),
            Some(OneSide {
                missing: Missing::Unknown,
                server: Some(PROXY.parse().unwrap())
            })
        );
    }

    #[test]
    fn a_capture_without_connection_starts_or_heads_says_nothing() {
        let mut s = Sides::new();
        s.push(&seg(CLIENT, PROXY, flags::ACK, b"body bytes"));
        assert_eq!(s.one_side(None, None), None);
    }

    #[test]
    fn request_heads_are_recognised_by_their_method() {
        assert!(request_head(b"GET / HTTP/1.1"));
        assert!(request_head(b"OPTIONS * HTTP/1.1"));
        assert!(!request_head(b"get / HTTP/1.1"));
        assert!(!request_head(b"HTTP/1.1 200 OK"));
        assert!(!request_head(b"AB c"));
    }
}
