//! The pieces every verdict is made of: the client-facing and upstream sides it names, and
//! the timestamped facts of a connection it rests on.

use super::state::{CConn, Ex};
use crate::verdict::{Downstream, Evidence, Upstream};

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

/// The exchange's request and response, and the connection's opening and closes.
pub(super) fn base_evidence(c: &CConn, e: &Ex, client: &str, server: &str) -> Vec<Evidence> {
    let name = c.name();
    let mut v = Vec::new();
    let mut push = |ts: Option<i64>, what: String| {
        if let Some(ts) = ts {
            v.push(Evidence {
                ts_ns: ts,
                connection: name.clone(),
                what,
            });
        }
    };
    push(
        c.info.syn_ns,
        format!("{client} opens the connection (SYN)"),
    );
    if let Some(r) = &e.req {
        let idle = match (e.index, e.idle_ns) {
            (1, _) if c.info.opener_known => "fresh connection".to_owned(),
            (_, Some(i)) => format!("reused, idle {:.1} ms", ms(i)),
            _ => "reused".to_owned(),
        };
        push(
            e.req_ns,
            format!(
                "{client} sends {} {} (exchange #{}, {idle})",
                r.method, r.target, e.index
            ),
        );
    }
    if let Some(r) = &e.res {
        push(e.res_ns, format!("{server} answers {}", r.status));
    }
    push(c.fin_server, format!("{server} FIN"));
    push(c.rst_server, format!("{server} RST"));
    push(c.fin_client, format!("{client} FIN"));
    push(c.rst_client, format!("{client} RST"));
    v
}

/// A connection attempt's SYNs and the answer to them.
pub(super) fn connect_evidence(c: &CConn) -> Vec<Evidence> {
    let name = c.name();
    let mut v = vec![];
    if let Some(s) = c.info.syn_ns {
        v.push(Evidence {
            ts_ns: s,
            connection: name.clone(),
            what: "proxy sends SYN".into(),
        });
    }
    if c.syn_count >= 2 {
        if let Some(s) = c.last_syn_ns {
            v.push(Evidence {
                ts_ns: s,
                connection: name.clone(),
                what: format!("SYN sent {} times without answer", c.syn_count),
            });
        }
    }
    if let Some(r) = c.refused_ns {
        v.push(Evidence {
            ts_ns: r,
            connection: name,
            what: "upstream answers the SYN with RST".into(),
        });
    }
    v
}
