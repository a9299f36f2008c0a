//! `upstream_refused`: the upstream's host answered the proxy's SYN with RST — nothing
//! listens there.
//!
//! Evidence: a SYN from the proxy's side answered by RST. For the connection itself that
//! is `proven` once it is known to be the proxy's (its role learned from the traffic, or
//! the kernel saw the proxy's process open it); a connection of unknown role may be any
//! process's — a script probing the proxy's port before it listens — so then `probable`.
//! For a client's error it is linked by timing (made while the request waited), so
//! `probable`.

use super::Finding;
use crate::correlate::evidence::{connect_evidence, upstream_of_conn};
use crate::correlate::judge::Down;
use crate::correlate::state::CConn;
use crate::correlate::{Correlator, Role};
use crate::flow::ConnId;
use crate::verdict::{Cause, Confidence, Verdict};

impl Correlator {
    /// A refused connection attempt made while the request waited.
    pub(in crate::correlate) fn refused_while_waiting(&mut self, d: &Down) -> Option<Finding> {
        let tc = self.find_trouble(d.req_ns, d.err_ns, true)?;
        let t = self.conns.get_mut(&tc)?;
        t.claimed = true;
        let t = &*t;
        Some(Finding {
            cause: Some(Cause::UpstreamRefused),
            probable: true,
            summary: format!(
                "the proxy's connection to {} was refused (SYN answered by RST); the client got {}",
                t.info.server, d.what
            ),
            evidence: connect_evidence(t),
            upstream: Some(upstream_of_conn(t, None)),
            ..Finding::default()
        })
    }

    /// A refused (`refused`) or unanswered connection attempt of the proxy's, not yet
    /// claimed, made while a request waited from `req_ns` to `err_ns`.
    pub(in crate::correlate) fn find_trouble(
        &self,
        req_ns: i64,
        err_ns: i64,
        refused: bool,
    ) -> Option<ConnId> {
        use crate::correlate::REORDER_NS;
        self.troubles
            .iter()
            .filter_map(|id| self.conns.get(id))
            .filter(|t| !t.claimed && t.established_ns.is_none())
            .filter(|t| t.refused_ns.is_some() == refused)
            .filter(|t| matches!(self.roles.role(&t.info), Role::Up | Role::Unknown))
            .find(|t| {
                let start = t.info.syn_ns.unwrap_or(t.info.first_ns);
                start + REORDER_NS >= req_ns && start <= err_ns + REORDER_NS
            })
            .map(|t| t.info.id)
    }
}

/// A connection that never carried a request and was refused.
pub(in crate::correlate) fn connection(c: &CConn, role: Role) -> Verdict {
    let known = role == Role::Up;
    Verdict {
        cause: Cause::UpstreamRefused,
        subcause: None,
        confidence: if known {
            Confidence::Proven
        } else {
            Confidence::Probable
        },
        status: None,
        ts_ns: c.refused_ns.unwrap_or(c.info.first_ns),
        downstream: None,
        upstream: Some(upstream_of_conn(c, None)),
        request_id: None,
        idempotent: None,
        summary: format!(
            "{} refused the connection (SYN answered by RST); no client-facing error was matched to it",
            c.info.server
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

    fn refused_while_a_get_waits() -> Tl {
        let mut tl = Tl::warmed_up();
        let (d, u) = (client(40001), upstream(50001));
        tl.open(10 * MS, d);
        tl.req(10 * MS + 200, d, "GET", 2);
        tl.seg(10 * MS + 300, u.c, u.s, flags::SYN, b"");
        tl.rst(10 * MS + 350, u, false);
        tl.res(10 * MS + 500, d, 502);
        tl
    }

    #[test]
    fn syn_answered_by_rst_is_upstream_refused() {
        let a = refused_while_a_get_waits().run();
        let v = a.verdicts.iter().find(|v| v.status == Some(502)).unwrap();
        assert_eq!(v.cause, Cause::UpstreamRefused, "{v:#?}");
        let off = refused_while_a_get_waits().run_without(Rule::UpstreamRefused);
        let v = off.verdicts.iter().find(|v| v.status == Some(502)).unwrap();
        assert_ne!(v.cause, Cause::UpstreamRefused, "{v:#?}");
    }
}
