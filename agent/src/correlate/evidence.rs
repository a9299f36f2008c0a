//! The pieces every verdict is made of: the client-facing and upstream sides it names, and
//! the timestamped facts of a connection it rests on.

use super::state::{CConn, Ex};
use crate::verdict::{Downstream, Evidence, Fact, Leg, Party, Upstream};

/// Nanoseconds as milliseconds, rounded to the microsecond.
pub(super) fn ms(ns: i64) -> f64 {
    (ns as f64 / 1e6 * 1000.0).round() / 1000.0
}

pub(super) fn downstream(c: &CConn, e: &Ex) -> Downstream {
    Downstream {
        client: c.info.client,
        proxy: c.info.server,
        method: e.req.as_ref().map(|r| r.method.clone()),
        target: e.req.as_ref().map(|r| r.target.clone()),
    }
}

pub(super) fn upstream_of_conn(c: &CConn, index: Option<u32>) -> Upstream {
    Upstream {
        proxy: c.info.client,
        server: c.info.server,
        exchange_index: index,
        seen_from_start: c.info.opener_known,
        idle_ms: None,
        fin_to_request_ms: None,
        close_order: c.close_order("proxy", "upstream"),
    }
}

pub(super) fn upstream_of(c: &CConn, e: &Ex) -> Upstream {
    let mut u = upstream_of_conn(c, Some(e.index));
    u.idle_ms = e.idle_ns.map(ms);
    u
}

/// The lane of a connection whose two ends are `client` and `server`.
fn leg(client: Party, server: Party) -> Leg {
    match (client, server) {
        (Party::Client, Party::Proxy) => Leg::Client,
        (Party::Proxy, Party::Upstream) => Leg::Upstream,
        _ => Leg::Unknown,
    }
}

/// The exchange's request and response, and the connection's opening and closes, with
/// `client` and `server` as the connection's two ends.
pub(super) fn base_evidence(c: &CConn, e: &Ex, client: Party, server: Party) -> Vec<Evidence> {
    let name = c.conn();
    let lane = leg(client, server);
    let mut v = Vec::new();
    let mut push = |ts: Option<i64>, fact: Fact| {
        if let Some(ts) = ts {
            v.push(Evidence::new(ts, name, lane, fact));
        }
    };
    push(c.info.syn_ns, Fact::Syn { by: client });
    if let Some(r) = &e.req {
        push(
            e.req_ns,
            Fact::Request {
                by: client,
                method: r.method.clone(),
                target: r.target.clone(),
                exchange: e.index,
                fresh: e.index == 1 && c.info.opener_known,
                idle_ms: e.idle_ns.map(ms),
            },
        );
    }
    if let Some(r) = &e.res {
        push(
            e.res_ns,
            Fact::Response {
                by: server,
                status: r.status,
            },
        );
    }
    push(c.fin_server, Fact::Fin { by: server });
    push(c.rst_server, Fact::Rst { by: server });
    push(c.fin_client, Fact::Fin { by: client });
    push(c.rst_client, Fact::Rst { by: client });
    v
}

/// A connection attempt's SYNs and the answer to them.
pub(super) fn connect_evidence(c: &CConn) -> Vec<Evidence> {
    let name = c.conn();
    let mut v = vec![];
    let mut push = |ts: i64, fact: Fact| v.push(Evidence::new(ts, name, Leg::Upstream, fact));
    if let Some(s) = c.info.syn_ns {
        push(s, Fact::ConnectAttempt);
    }
    if c.syn_count >= 2 {
        if let Some(s) = c.last_syn_ns {
            push(s, Fact::SynUnanswered { count: c.syn_count });
        }
    }
    if let Some(r) = c.refused_ns {
        push(r, Fact::Refused);
    }
    v
}
