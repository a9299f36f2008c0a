//! Upstream requests whose client request has not been seen yet. Captures of two
//! interfaces merged by time are out of order by milliseconds under load, so the attempt a
//! request caused can come first; by request id (unique) the pair is still certain.

use std::collections::VecDeque;

use super::state::ExRef;
use crate::flow::hash::FxHashMap;

/// How long an upstream request waits for the client request with its id.
const WAIT_NS: i64 = 1_000_000_000;
/// How much earlier than its client's request an attempt may be stamped.
const EARLIER_NS: i64 = 100_000_000;

/// Upstream requests by the key of their id, and in arrival order for expiry.
#[derive(Debug, Default)]
pub(super) struct Unpaired {
    by_key: FxHashMap<u64, (ExRef, i64)>,
    order: VecDeque<(i64, u64)>,
}

impl Unpaired {
    pub fn push(&mut self, key: u64, up: ExRef, ts: i64) {
        while self.order.front().is_some_and(|&(t, _)| ts - t > WAIT_NS) {
            if let Some((t, k)) = self.order.pop_front() {
                if self.by_key.get(&k).is_some_and(|&(_, at)| at == t) {
                    self.by_key.remove(&k);
                }
            }
        }
        self.by_key.insert(key, (up, ts));
        self.order.push_back((ts, key));
    }

    /// The upstream request with this id key, if it came at most [`EARLIER_NS`] before a
    /// client request at `ts` (and not long after it: then it was found the usual way).
    pub fn take(&mut self, key: u64, ts: i64) -> Option<ExRef> {
        let &(up, at) = self.by_key.get(&key)?;
        if at + EARLIER_NS < ts {
            return None;
        }
        self.by_key.remove(&key);
        Some(up)
    }
}

#[cfg(test)]
mod tests {
    use crate::correlate::rules::timeline::{client, upstream, Tl, MS};
    use crate::verdict::{Cause, Confidence, Subcause};

    #[test]
    fn an_attempt_captured_before_its_client_request_is_still_linked_by_id() {
        // The merged capture hands over the proxy's request 0.6 ms before the client's
        // (stamped 0.1 ms after it): it must not end as a race nobody asked for and a 502
        // with no upstream failure in sight.
        let mut tl = Tl::warmed_up();
        let (d, u) = (client(40001), upstream(50000));
        tl.fin(5_000 * MS, u, false);
        tl.open(5_000 * MS - 300, d);
        tl.req(5_000 * MS + 50, u, "POST", 2);
        tl.req(5_000 * MS - 100, d, "POST", 2);
        tl.rst(5_000 * MS + 150, u, false);
        tl.res(5_000 * MS + 400, d, 502);
        let v = tl.only_unsorted();
        assert_eq!(v.cause, Cause::KeepaliveRace, "{v:#?}");
        assert_eq!(v.subcause, Some(Subcause::FinCrossed));
        assert_eq!(v.confidence, Confidence::Proven);
        assert_eq!(v.status, Some(502));
    }

    #[test]
    fn a_client_answer_merged_before_the_attempt_still_pairs() {
        // The client-facing interface's block (request, then the 502 stamped later) is
        // handed over before the upstream-facing one with the attempt that came between.
        let mut tl = Tl::warmed_up();
        let (d, u) = (client(40001), upstream(50000));
        tl.fin(5_000 * MS, u, false);
        tl.open(5_000 * MS - 300, d);
        tl.req(5_000 * MS - 100, d, "POST", 2);
        tl.res(5_000 * MS + 400, d, 502);
        tl.req(5_000 * MS + 50, u, "POST", 2);
        tl.rst(5_000 * MS + 150, u, false);
        let v = tl.only_unsorted();
        assert_eq!(v.cause, Cause::KeepaliveRace, "{v:#?}");
        assert_eq!(v.status, Some(502));
        assert_eq!(v.confidence, Confidence::Proven);
    }
}
