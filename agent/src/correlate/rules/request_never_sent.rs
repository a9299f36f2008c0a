//! `keepalive_race` / `request_never_sent`: the proxy took a pooled connection the upstream
//! had already closed, found it dead before writing, and answered the error without
//! sending the request (Go's `http: server closed idle connection`).
//!
//! Evidence: no upstream attempt carries the request; an idle pooled connection the
//! upstream closed (FIN or RST) shortly before the error, on which no request went out
//! afterwards, closed by the proxy at about the time of the error. The link between that
//! connection and this request is by timing alone, so the verdict is `probable`. Excluded
//! by what was seen: a refused or unanswered connection attempt (checked first, and none
//! was made in the request's time), an attempt that failed on the wire (none was sent).

use super::Finding;
use crate::correlate::evidence::{ms, upstream_of_conn};
use crate::correlate::judge::Down;
use crate::correlate::{Correlator, IdleClose, Role, REORDER_NS};
use crate::flow::ConnId;
use crate::verdict::{Cause, Evidence, Fact, Leg, Party, Subcause};

/// The proxy closes the dead pooled connection "at about the time" of its error.
const NEVER_SENT_CLOSE_NS: i64 = 10_000_000;
/// How far before a never-sent error the proxy's close of the dead connection may lie.
const NEVER_SENT_LOOKBACK_NS: i64 = 100_000_000;

impl Correlator {
    pub(in crate::correlate) fn never_sent(&mut self, d: &Down) -> Option<Finding> {
        let ic = self.find_never_sent(d.status, d.req_ns, d.err_ns)?;
        let ucc = &self.conns[&ic.conn];
        let mut up = upstream_of_conn(ucc, None);
        up.idle_ms = ic.idle_ns.map(ms);
        up.fin_to_request_ms = Some(ms(d.req_ns - ic.upstream_ns));
        let kind = if ic.upstream_rst { "RST" } else { "FIN" };
        let mut evidence = vec![Evidence::new(
            ic.upstream_ns,
            ucc.conn(),
            Leg::Upstream,
            Fact::IdleClose {
                by: Party::Upstream,
                rst: ic.upstream_rst,
                idle_ms: ic.idle_ns.map(ms),
            },
        )];
        if let Some(p) = ic.proxy_ns {
            evidence.push(Evidence::new(
                p,
                ucc.conn(),
                Leg::Upstream,
                Fact::DeadClosed,
            ));
        }
        Some(Finding {
            cause: Some(Cause::KeepaliveRace),
            subcause: Some(Subcause::RequestNeverSent),
            probable: true,
            summary: format!(
                "the pooled connection {} had been closed by the upstream ({kind}) {:.1} ms before; the proxy closed it and answered {} without sending the request",
                ucc.name(),
                ms(d.err_ns - ic.upstream_ns),
                d.what
            ),
            evidence,
            upstream: Some(up),
            ..Finding::default()
        })
    }

    /// An idle pooled connection closed by the upstream shortly before the error, which
    /// the proxy closed at about the time of the error and on which no request went out.
    fn find_never_sent(
        &mut self,
        status: Option<u16>,
        req_ns: i64,
        err_ns: i64,
    ) -> Option<IdleClose> {
        if !matches!(status, Some(500 | 502)) {
            return None;
        }
        let conns = &self.conns;
        let roles = &self.roles;
        // Proxy closes are in time order. The dead pooled connection is closed by the proxy
        // after the request arrived and about when it answered; several never-sent errors
        // within a few milliseconds compete for the closes around them, so each takes the
        // earliest one that fits and leaves the later ones to the later errors.
        // Go's pool can hand out a connection its read loop is closing that very moment, so
        // the proxy's close may come a little before the request; and a stalled proxy may
        // answer well after it. Bounded, so a slow request does not reach far back.
        let from = (req_ns - NEVER_SENT_CLOSE_NS).max(err_ns - NEVER_SENT_LOOKBACK_NS);
        let start = self.proxy_closes.partition_point(|&(p, _)| p < from);
        let mut best: Option<(i64, ConnId)> = None;
        for &(p, id) in self.proxy_closes.range(start..) {
            if p > err_ns + NEVER_SENT_CLOSE_NS {
                break;
            }
            let Some(ic) = self.idle_closes.get(&id) else {
                continue;
            };
            let fits = !ic.claimed
                && ic.upstream_ns <= err_ns + REORDER_NS
                && conns.get(&ic.conn).is_some_and(|c| {
                    matches!(roles.role(&c.info), Role::Up | Role::Unknown)
                        && !c
                            .exchanges
                            .iter()
                            .any(|e| e.req_ns.is_some_and(|t| t >= ic.upstream_ns))
                });
            if fits {
                best = Some((p, id));
                break;
            }
        }
        let best = self.idle_closes.get_mut(&best?.1)?;
        best.claimed = true;
        Some(*best)
    }
}

#[cfg(test)]
mod tests {
    use crate::correlate::rules::timeline::{client, upstream, Tl, MS};
    use crate::correlate::rules::Rule;
    use crate::verdict::{Cause, Confidence, Subcause};

    fn dead_before_use() -> Tl {
        let mut tl = Tl::warmed_up();
        let (d, u) = (client(40001), upstream(50000));
        tl.fin(5_000 * MS, u, false);
        tl.open(5_001 * MS, d);
        tl.req(5_001 * MS + 200, d, "POST", 2);
        tl.fin(5_001 * MS + 300, u, true); // the proxy closes the dead connection
        tl.res(5_001 * MS + 350, d, 502);
        tl
    }

    #[test]
    fn pooled_connection_dead_before_use_is_request_never_sent() {
        let v = dead_before_use().only();
        assert_eq!(v.cause, Cause::KeepaliveRace);
        assert_eq!(v.subcause, Some(Subcause::RequestNeverSent));
        assert_eq!(v.confidence, Confidence::Probable);
        assert_eq!(v.upstream.as_ref().unwrap().exchange_index, None);
        let off = dead_before_use().only_without(Rule::RequestNeverSent);
        assert_ne!(off.cause, Cause::KeepaliveRace, "{off:#?}");
    }
}
