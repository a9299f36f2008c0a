//! Links by request line alone are guesses: with several concurrent requests of one method
//! and target and no request id, an upstream exchange may be paired with the wrong client.
//! When two guesses contradict what happened — a failed attempt serving a client that got
//! an answer from no later attempt, while a client with the same request line got 5xx from
//! an attempt that succeeded — they are swapped, which fits both outcomes. The links stay
//! guesses (their verdicts `probable`).

use super::state::ExRef;
use super::{Correlator, Role, REORDER_NS};
use crate::flow::ConnId;

impl Correlator {
    /// The failed attempt `(conn, index)` serves, by a guess, a client that got a success
    /// with no later attempt: find the client of the same request line that got 5xx from a
    /// guessed attempt that succeeded, and swap the two links. True when swapped.
    pub(super) fn swap_contradicting_guess(&mut self, conn: ConnId, index: u32) -> bool {
        let a = (conn, index);
        let Some(uc) = self.conns.get(&conn) else {
            return false;
        };
        let Some(ue) = uc.ex(index) else {
            return false;
        };
        let (Some(((d1c, d1i), false)), Some(req), Some(a_req_ns)) =
            (ue.serves, ue.req.as_ref(), ue.req_ns)
        else {
            return false;
        };
        let failed_ns = uc.server_close().or(uc.client_close()).unwrap_or(a_req_ns);
        let Some(d1_req_ns) = self
            .conns
            .get(&d1c)
            .and_then(|d| d.ex(d1i))
            .and_then(|x| x.req_ns)
        else {
            return false;
        };
        // The 5xx client whose guessed attempt succeeded, answered soonest after the failure.
        let mut best: Option<(i64, ExRef, ExRef)> = None;
        for (id, dc) in &self.conns {
            if self.roles.role(&dc.info) != Role::Down {
                continue;
            }
            for x in &dc.exchanges {
                let (Some(status), Some(res_ns), Some(xr), Some(x_req_ns), Some(&b)) = (
                    x.status(),
                    x.res_ns,
                    x.req.as_ref(),
                    x.req_ns,
                    x.attempts.last(),
                ) else {
                    continue;
                };
                let b_ok = self
                    .conns
                    .get(&b.0)
                    .and_then(|c| c.ex(b.1))
                    .is_some_and(|be| {
                        be.serves == Some(((*id, x.index), false))
                            && be.status().is_some_and(|s| s < 500)
                            && be.req_ns.is_some_and(|t| t + REORDER_NS >= d1_req_ns)
                    });
                let fits = status >= 500
                    && !x.judged
                    && b_ok
                    && xr.method == req.method
                    && xr.target == req.target
                    && x_req_ns <= a_req_ns + REORDER_NS
                    && res_ns + REORDER_NS >= failed_ns;
                if fits && best.is_none_or(|(t, ..)| res_ns < t) {
                    best = Some((res_ns, (*id, x.index), b));
                }
            }
        }
        let Some((_, d2, b)) = best else {
            return false;
        };
        let d1 = (d1c, d1i);
        let mut set_serves = |up: ExRef, down: ExRef| {
            if let Some(e) = self.conns.get_mut(&up.0).and_then(|c| c.ex_mut(up.1)) {
                e.serves = Some((down, false));
            }
        };
        set_serves(a, d2);
        set_serves(b, d1);
        for (down, from, to) in [(d1, a, b), (d2, b, a)] {
            if let Some(x) = self.conns.get_mut(&down.0).and_then(|c| c.ex_mut(down.1)) {
                for at in &mut x.attempts {
                    if *at == from {
                        *at = to;
                    }
                }
            }
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use crate::correlate::rules::timeline::{client, upstream, Tl, MS};
    use crate::correlate::rules::Rule;
    use crate::verdict::{Cause, Confidence};

    /// Two clients POST the same target without request ids. The proxy forwards the first
    /// on a fresh connection that the upstream resets (the first client gets 502), the
    /// second on another that answers 200. Linked by request line, each attempt is
    /// guessed for the other client.
    fn crossed_guesses() -> Tl {
        let mut tl = Tl::warmed_up();
        let (d1, d2) = (client(40001), client(40002));
        let (a, b) = (upstream(50001), upstream(50002));
        tl.open(10 * MS, d1);
        tl.open(10 * MS + 10, d2);
        tl.req_plain(10 * MS + 200, d1, "POST", "/orders");
        tl.req_plain(10 * MS + 210, d2, "POST", "/orders");
        tl.open(10 * MS + 300, a);
        tl.req_plain(10 * MS + 500, a, "POST", "/orders");
        tl.open(10 * MS + 400, b);
        tl.req_plain(10 * MS + 600, b, "POST", "/orders");
        tl.rst(12 * MS, a, false);
        tl.res(12 * MS + 100, d1, 502);
        tl.res(13 * MS, b, 200);
        tl.res(13 * MS + 100, d2, 200);
        tl
    }

    #[test]
    fn contradicting_guesses_are_swapped() {
        let verdicts = crossed_guesses().run().verdicts;
        assert_eq!(verdicts.len(), 1, "{verdicts:#?}");
        let v = &verdicts[0];
        assert_eq!(v.status, Some(502));
        assert_eq!(v.cause, Cause::UpstreamReset, "{v:#?}");
        assert_eq!(v.confidence, Confidence::Probable, "the link is a guess");
        let off = crossed_guesses().run_without(Rule::UncertainLink).verdicts;
        assert!(off.iter().any(|v| v.summary.contains("turned")), "{off:#?}");
    }
}
