//! Client sides tracer cannot read: connections whose client's first bytes are not HTTP/1.x
//! (TLS to an ingress, mostly). They face the client ([`super::Roles::saw_opaque`]); the
//! proxy's plain upstream leg is learned from timing (a new unreadable connection, then a
//! readable request elsewhere); an upstream failure is linked to the one unreadable client
//! connection that ended right after it, when exactly one did.

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};

use super::{Correlator, Role, CONNECT_AFTER_REQUEST_NS, REORDER_NS, TIMING_LEARN_MIN};
use crate::flow::ConnId;
use crate::verdict::{Confidence, Downstream, Evidence, Fact, Leg, Verdict};

/// An unreadable client connection ended (either side's FIN or RST) at most this long after
/// the upstream failure it is linked to: the proxy answers and closes at once.
const LINK_AFTER_FAILURE_NS: i64 = 10_000_000;
/// Unreadable connections remembered for links (the oldest go first).
const KEEP_CONNS: usize = 1 << 16;

/// What the correlator knows of unreadable client sides.
#[derive(Debug, Default)]
pub(super) struct Opaque {
    /// Client connections whose first bytes were unreadable.
    connections: u64,
    /// Upstream failures linked to one of them by timing.
    linked: u64,
    /// (first unreadable bytes, listener, client IP), the last [`CONNECT_AFTER_REQUEST_NS`].
    recent: VecDeque<(i64, SocketAddr, IpAddr)>,
    /// (listener, upstream) → readable requests that followed a new unreadable connection.
    pairs: HashMap<(SocketAddr, SocketAddr), u32>,
    /// Unreadable client connections in the order they appeared.
    conns: VecDeque<ConnId>,
}

/// The proxy's client side was encrypted (or otherwise unreadable) in this capture.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncryptedSide {
    /// The proxy's listeners whose clients' bytes were unreadable.
    pub listeners: Vec<SocketAddr>,
    /// Client connections tracer could not read: their statuses were not seen.
    pub connections: u64,
    /// Upstream failures linked to one of those connections by timing.
    pub linked: u64,
    /// Verdicts about failures seen only on the upstream leg (set by the engine).
    pub from_upstream_leg: usize,
}

impl EncryptedSide {
    /// The sentence the reports print.
    #[must_use]
    pub fn describe(&self) -> String {
        let listeners: Vec<String> = self.listeners.iter().map(ToString::to_string).collect();
        format!(
            "the client side is encrypted (TLS or another unreadable protocol) on {}: the responses of its {} connections could not be read, so no client-facing status was seen; {} client-facing errors were inferred from the upstream leg ({} linked to their client connection by timing), and errors that left no trace there (a request the proxy never sent, an error it made itself) could not be seen",
            listeners.join(", "),
            self.connections,
            self.from_upstream_leg,
            self.linked
        )
    }
}

impl Correlator {
    /// The client sent bytes that are not HTTP/1.x before any request on `conn`.
    pub(super) fn saw_unreadable(&mut self, conn: ConnId, ts: i64) {
        if !self.rule_on(super::Rule::EncryptedClientSide) {
            return;
        }
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        // Only a connection seen from its SYN: bytes after a capture's gap or from before
        // it began are not a protocol's first bytes.
        if c.opaque || !c.info.opener_known || c.exchanges.iter().any(|e| e.req.is_some()) {
            return;
        }
        c.opaque = true;
        let info = c.info;
        self.roles.saw_opaque(info.server);
        if self.roles.role(&info) != Role::Down {
            return;
        }
        let o = &mut self.opaque;
        o.connections += 1;
        o.recent.push_back((ts, info.server, info.client.ip()));
        o.conns.push_back(conn);
        if o.conns.len() > KEEP_CONNS {
            o.conns.pop_front();
        }
    }

    /// A readable request on a connection of unknown role: if new unreadable connections
    /// to a listener keep preceding requests to this server, it is the proxy's upstream.
    pub(super) fn learn_after_unreadable(&mut self, info: &crate::flow::ConnInfo, ts: i64) {
        let o = &mut self.opaque;
        while o
            .recent
            .front()
            .is_some_and(|&(t, ..)| ts - t > CONNECT_AFTER_REQUEST_NS)
        {
            o.recent.pop_front();
        }
        let mut seen: Vec<SocketAddr> = Vec::new();
        for &(t, listener, client_ip) in &o.recent {
            if t > ts
                || listener == info.server
                || client_ip == info.client.ip()
                || seen.contains(&listener)
            {
                continue;
            }
            seen.push(listener);
            let n = o.pairs.entry((listener, info.server)).or_insert(0);
            *n += 1;
            if *n == TIMING_LEARN_MIN {
                self.roles.learn_by_timing(listener, info.server);
            }
        }
    }

    /// A verdict about an upstream attempt alone, when the client side is unreadable: link
    /// it to the one unreadable client connection that was open when the request went
    /// upstream (`req_ns`) and ended right after the failure. The link rests on timing, so
    /// the verdict becomes `probable`.
    pub(super) fn link_unreadable_client(&mut self, v: &mut Verdict, req_ns: i64) {
        if v.downstream.is_some() || self.opaque.conns.is_empty() {
            return;
        }
        let fail = v.ts_ns;
        let conns = &self.conns;
        self.opaque.conns.retain(|id| conns.contains_key(id));
        let mut found = None;
        for id in &self.opaque.conns {
            let Some(c) = self.conns.get(id) else {
                continue;
            };
            let opened = c.info.syn_ns.unwrap_or(c.info.first_ns);
            let ended = crate::correlate::state::min_opt(c.client_close(), c.server_close());
            let fits = !c.claimed
                && opened <= req_ns
                && ended
                    .is_some_and(|e| e + REORDER_NS >= fail && e <= fail + LINK_AFTER_FAILURE_NS);
            if fits {
                if found.is_some() {
                    return; // two could have carried it: no link
                }
                found = Some((*id, ended.unwrap_or(fail)));
            }
        }
        let Some((id, ended)) = found else { return };
        let Some(c) = self.conns.get_mut(&id) else {
            return;
        };
        c.claimed = true;
        self.opaque.linked += 1;
        let name = c.conn();
        v.downstream = Some(Downstream {
            client: c.info.client,
            proxy: c.info.server,
            method: None,
            target: None,
        });
        v.confidence = Confidence::Probable;
        v.link_guessed = true;
        v.summary = v.summary.replace(
            "; the client side of this request was not seen (TLS or not captured)",
            &format!(
                "; the client's connection {name} is encrypted: linked by timing, the only one that ended within {} ms after",
                LINK_AFTER_FAILURE_NS / 1_000_000
            ),
        );
        v.evidence.push(Evidence::new(
            ended,
            name,
            Leg::Client,
            Fact::EncryptedClientEnds,
        ));
        v.evidence.sort_by_key(|e| e.ts_ns);
    }

    /// The encrypted client side, when the capture had one.
    #[must_use]
    pub fn encrypted_side(&self) -> Option<EncryptedSide> {
        let listeners = self.roles.opaque_listeners();
        (self.opaque.connections > 0 && !listeners.is_empty()).then_some(EncryptedSide {
            listeners,
            connections: self.opaque.connections,
            linked: self.opaque.linked,
            from_upstream_leg: 0,
        })
    }
}

#[cfg(test)]
mod tests {
    use crate::correlate::rules::timeline::{Conn, Tl, MS};
    use crate::correlate::rules::Rule;
    use crate::segment::flags;
    use crate::verdict::{Cause, Confidence, Subcause};

    /// A TLS ClientHello's first bytes.
    const HELLO: &[u8] = b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03";

    fn tls_client(port: u16) -> Conn {
        Conn {
            c: format!("198.18.1.1:{port}").parse().unwrap(),
            s: "198.18.1.2:8443".parse().unwrap(),
        }
    }

    fn plain_upstream(port: u16) -> Conn {
        Conn {
            c: format!("198.18.2.1:{port}").parse().unwrap(),
            s: "198.18.2.2:9000".parse().unwrap(),
        }
    }

    /// An ingress terminating TLS on one address and calling a plain upstream from
    /// another: four TLS clients each followed by a request upstream on pooled connection
    /// 50000, then a fifth whose request crosses the upstream's FIN on it. The ingress
    /// answers 502 inside TLS and closes.
    fn ingress_with_tls_clients() -> Tl {
        let mut tl = Tl::default();
        let u = plain_upstream(50000);
        tl.open(0, u);
        for i in 0..5u16 {
            let t = i64::from(i) * 100 * MS + MS;
            let d = tls_client(41000 + i);
            tl.open(t, d);
            tl.seg(t + 200, d.c, d.s, flags::ACK | flags::PSH, HELLO);
            tl.seg(
                t + 300,
                d.s,
                d.c,
                flags::ACK | flags::PSH,
                b"\x16\x03\x03\x00\x7a",
            );
            let rid = u32::from(i) + 1;
            if i == 4 {
                tl.fin(t + 1_000, u, false);
                tl.req(t + 1_050, u, "POST", rid);
                tl.rst(t + 1_150, u, false);
            } else {
                tl.req(t + 1_000, u, "POST", rid);
                tl.res(t + 1_800, u, 200);
            }
            tl.seg(
                t + 2_000,
                d.s,
                d.c,
                flags::ACK | flags::PSH,
                b"\x17\x03\x03\x00\x40",
            );
            tl.fin(t + 2_100, d, false);
            tl.fin(t + 2_200, d, true);
        }
        tl
    }

    #[test]
    fn an_encrypted_client_side_faces_the_client_and_links_by_timing() {
        let (verdicts, encrypted) = ingress_with_tls_clients().run_full();
        assert_eq!(verdicts.len(), 1, "{verdicts:#?}");
        let v = &verdicts[0];
        assert_eq!(v.cause, Cause::KeepaliveRace, "{v:#?}");
        assert_eq!(v.subcause, Some(Subcause::FinCrossed));
        assert_eq!(v.confidence, Confidence::Probable, "linked by timing");
        assert_eq!(v.request_id.as_deref(), Some("5"));
        let d = v
            .downstream
            .as_ref()
            .expect("linked to its client connection");
        assert_eq!(d.client, tls_client(41004).c);
        let e = encrypted.expect("the report says the client side is encrypted");
        assert_eq!(e.listeners, vec![tls_client(0).s]);
        assert_eq!(e.connections, 5);
        let (verdicts, encrypted) =
            ingress_with_tls_clients().run_full_without(Rule::EncryptedClientSide);
        assert!(encrypted.is_none());
        assert!(
            verdicts.iter().all(|v| v.downstream.is_none()),
            "{verdicts:#?}"
        );
    }
}
