//! The bounded connection table: who is forgotten when a new connection finds it full.
//!
//! A SYN flood or a connect storm opens connections that never carry anything; without a
//! bound each would be kept until the capture ends. When the table is full, a batch of
//! 1/[`BATCH_DIVISOR`] of it is forgotten at once (one pass over the table per batch keeps
//! the cost per new connection constant and needs no per-connection bookkeeping): first
//! closed connections still lingering for late segments, then half-open ones (never
//! established, no data), then the least recently active. A connection forgotten before
//! it closed is *evicted*: counted, reported by [`Event::Evicted`] (so that verdicts on it
//! say they rest on an incomplete view), and its 4-tuple remembered for a while, so that a
//! segment that carries on from where it was cut off is known not to start a connection.

use std::collections::{BinaryHeap, VecDeque};
use std::hash::{BuildHasher, BuildHasherDefault};

use super::hash::{FxHashMap, FxHasher};
use super::{Conn, Event, Key, Tracker};

/// The default bound of the connection table. A tracked connection costs about 1 KiB
/// here and in the correlator together (a little more while a table grows), so this keeps
/// a flood of any length near 150 MiB (`cargo xtask bench-flood`); a busy proxy's open
/// connections, both sides together, seldom come near it.
pub const DEFAULT_MAX_CONNECTIONS: usize = 100_000;

/// Evicted 4-tuples remembered at least (a few dozen KiB).
const EVICTED_MIN: usize = 4096;

/// A full table forgets this fraction of itself at once.
const BATCH_DIVISOR: usize = 16;

/// Which connections go first (lower first).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Class {
    /// Closed, lingering for late segments: nothing is lost by forgetting it now.
    Closed,
    /// Never established and never carried data.
    HalfOpen,
    /// Everything else.
    Open,
}

fn class(c: &Conn) -> Class {
    if c.closed_ns.is_some() {
        Class::Closed
    } else if c.established_ns.is_none() && c.c2s.seq.bytes() == 0 && c.s2c.seq.bytes() == 0 {
        Class::HalfOpen
    } else {
        Class::Open
    }
}

impl Tracker {
    /// Forgets a batch of connections (see the module documentation).
    pub(super) fn make_room(&mut self, out: &mut Vec<Event>) {
        let batch = (self.max_conns / BATCH_DIVISOR).clamp(1, self.conns.len().max(1));
        // the `batch` lowest (class, last activity, id) in one pass: a max-heap of them
        let mut worst: BinaryHeap<(Class, i64, u64, Key)> = BinaryHeap::with_capacity(batch + 1);
        for (k, c) in &self.conns {
            let rank = (class(c), c.last_ns, c.info.id.0, *k);
            if worst.len() < batch {
                worst.push(rank);
            } else if worst.peek().is_some_and(|top| rank < *top) {
                worst.pop();
                worst.push(rank);
            }
        }
        let mut chosen = worst.into_vec();
        chosen.sort_unstable();
        let now = self.now;
        for (class, _, _, k) in chosen {
            let Some(c) = self.conns.remove(&k) else {
                continue;
            };
            if class != Class::Closed {
                self.stats.evicted += 1;
                self.evicted.insert(&k, self.max_conns);
                out.push(Event::Evicted {
                    conn: c.info.id,
                    ts: now,
                    forgotten: true,
                });
            }
            self.forget(c, now, out);
        }
    }
}

/// The 4-tuples of recently evicted connections, as 64-bit hashes (a collision only marks
/// one more connection as incomplete), oldest forgotten first; at most as many as the
/// table holds connections (or [`EVICTED_MIN`], for small tables).
#[derive(Debug, Default)]
pub(super) struct Evicted {
    set: FxHashMap<u64, ()>,
    order: VecDeque<u64>,
}

impl Evicted {
    fn hash(k: &Key) -> u64 {
        BuildHasherDefault::<FxHasher>::default().hash_one(k)
    }

    fn insert(&mut self, k: &Key, max: usize) {
        let h = Self::hash(k);
        if self.set.insert(h, ()).is_none() {
            self.order.push_back(h);
        }
        while self.order.len() > max.max(EVICTED_MIN) {
            if let Some(old) = self.order.pop_front() {
                self.set.remove(&old);
            }
        }
    }

    /// Whether `k` was evicted (and forgets it: only its next connection is marked).
    pub(super) fn take(&mut self, k: &Key) -> bool {
        if self.set.is_empty() {
            return false;
        }
        // its entry in `order` stays until it comes out at the front
        self.set.remove(&Self::hash(k)).is_some()
    }
}
