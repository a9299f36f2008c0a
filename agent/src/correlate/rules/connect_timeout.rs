//! `connect_timeout`: the proxy's SYNs to the upstream went unanswered.
//!
//! Evidence: a SYN from the proxy's side sent again and again, never answered. For a
//! client's error it is linked by timing (made while the request waited), so `probable`;
//! for the connection itself, `proven` once it is known to be the proxy's (see
//! [`super::upstream_refused`]).

use super::Finding;
use crate::correlate::evidence::{connect_evidence, upstream_of_conn};
use crate::correlate::judge::Down;
use crate::correlate::state::CConn;
use crate::correlate::{Correlator, Role};
use crate::verdict::{Cause, Confidence, Verdict};

impl Correlator {
    /// An unanswered connection attempt made while the request waited.
    pub(in crate::correlate) fn unanswered_while_waiting(&mut self, d: &Down) -> Option<Finding> {
        let tc = self.find_trouble(d.req_ns, d.err_ns, false)?;
        let t = self.conns.get_mut(&tc)?;
        t.claimed = true;
        let t = &*t;
        Some(Finding {
            cause: Some(Cause::ConnectTimeout),
            probable: true,
            summary: format!(
                "{} SYNs to {} went unanswered; the client got {}",
                t.syn_count, t.info.server, d.what
            ),
            evidence: connect_evidence(t),
            upstream: Some(upstream_of_conn(t, None)),
            ..Finding::default()
        })
    }
}

/// A connection whose SYNs were never answered.
pub(in crate::correlate) fn connection(c: &CConn, role: Role) -> Verdict {
    let known = role == Role::Up;
    Verdict {
        cause: Cause::ConnectTimeout,
        subcause: None,
        confidence: if known {
            Confidence::Proven
        } else {
            Confidence::Probable
        },
        status: None,
        ts_ns: c.last_syn_ns.unwrap_or(c.info.first_ns),
        downstream: None,
        upstream: Some(upstream_of_conn(c, None)),
        request_id: None,
        idempotent: None,
        summary: format!(
            "{} SYNs to {} went unanswered; no client-facing error was matched to it",
            c.syn_count, c.info.server
        ),
        reason: (!known).then(|| {
            "whether the proxy made this connection is not known (no request was seen forwarded to this server, and no kernel probe named its process)".to_owned()
        }),
        evidence: connect_evidence(c),
        process: None,
        link_guessed: false,
    }
}

#[cfg(test)]
mod tests {
    use crate::correlate::rules::timeline::{client, upstream, Tl, MS};
    use crate::correlate::rules::Rule;
    use crate::segment::flags;
    use crate::verdict::Cause;

    fn three_syns_then_504() -> Tl {
        let mut tl = Tl::warmed_up();
        let (d, u) = (client(40001), upstream(50001));
        tl.open(10 * MS, d);
        tl.req(10 * MS + 200, d, "GET", 2);
        tl.seg(10 * MS + 300, u.c, u.s, flags::SYN, b"");
        tl.seg(1_010 * MS + 300, u.c, u.s, flags::SYN, b"");
        tl.seg(3_010 * MS + 300, u.c, u.s, flags::SYN, b"");
        tl.res(5_010 * MS, d, 504);
        tl
    }

    #[test]
    fn unanswered_syns_then_504_is_connect_timeout() {
        let a = three_syns_then_504().run();
        let v = a.verdicts.iter().find(|v| v.status == Some(504)).unwrap();
        assert_eq!(v.cause, Cause::ConnectTimeout, "{v:#?}");
        let off = three_syns_then_504().run_without(Rule::ConnectTimeout);
        let v = off.verdicts.iter().find(|v| v.status == Some(504)).unwrap();
        assert_ne!(v.cause, Cause::ConnectTimeout, "{v:#?}");
    }
}
