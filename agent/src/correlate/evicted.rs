//! Connections the flow tracker evicted from its full table ([`Event::Evicted`]): what
//! the correlator knows of them is incomplete (an evicted connection may not have closed;
//! one that carries on an evicted 4-tuple has lost its start), so a verdict that rests on
//! one is `unexplained`, and says why. Self-contained: one event, one field of
//! [`super::state::CConn`], and one pass over the verdicts just made.
//!
//! [`Event::Evicted`]: crate::flow::Event::Evicted

use super::Correlator;
use crate::flow::ConnId;
use crate::verdict::{Cause, Confidence, Conn, Evidence, Fact, Leg, Verdict};

impl Correlator {
    /// The tracker evicted `conn` (`forgotten`), or `conn` carries on an evicted 4-tuple.
    /// An evicted one that never carried a request nor failed to connect can have no
    /// verdict: it is forgotten at once rather than kept for late evidence like a closed
    /// one, so that a flood of half-open connections is not held here at its own rate.
    pub(super) fn on_evicted(&mut self, conn: ConnId, ts: i64, forgotten: bool) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        c.evicted.get_or_insert(ts);
        if forgotten && c.exchanges.is_empty() && c.refused_ns.is_none() && c.syn_count < 2 {
            let tuple = (c.info.client, c.info.server);
            self.conns.remove(&conn);
            self.idle_closes.remove(&conn);
            if self.by_tuple.get(&tuple) == Some(&conn) {
                self.by_tuple.remove(&tuple);
            }
        }
    }

    /// Turns the verdicts made since `from` in [`Correlator::verdicts_out`] that rest on
    /// an evicted connection into `unexplained`.
    pub(super) fn vet_evicted(&mut self, from: usize) {
        let Some(made) = self.verdicts_out.get_mut(from..) else {
            return;
        };
        for v in made {
            let tuples = [
                v.downstream
                    .as_ref()
                    .map(|d| ((d.client, d.proxy), Leg::Client)),
                v.upstream
                    .as_ref()
                    .map(|u| ((u.proxy, u.server), Leg::Upstream)),
            ];
            let evicted = tuples.iter().flatten().find_map(|(t, leg)| {
                let c = self.conns.get(self.by_tuple.get(t)?)?;
                c.evicted.map(|ts| (c.conn(), ts, *leg))
            });
            if let Some((conn, ts, leg)) = evicted {
                unexplained(v, conn, ts, leg);
            }
        }
    }
}

fn unexplained(v: &mut Verdict, conn: Conn, ts: i64, leg: Leg) {
    if v.cause != Cause::Unexplained {
        v.reason = Some(format!(
            "connection table full: {conn} was evicted (see --max-connections), so what tracer \
             saw of it is incomplete and cannot show {} ({})",
            v.cause.name(),
            v.summary
        ));
        v.summary =
            format!("{conn} was evicted from a full connection table; the cause cannot be proven");
        v.cause = Cause::Unexplained;
        v.subcause = None;
        v.confidence = Confidence::Probable;
    }
    v.evidence.push(Evidence::new(ts, conn, leg, Fact::Evicted));
}
