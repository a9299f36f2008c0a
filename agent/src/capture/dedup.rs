//! Dropping the second copy of a segment captured twice.
//!
//! `tcpdump -i any` sees a packet on every interface it crosses (a veth and its bridge),
//! and merging captures from two interfaces does the same. Two copies are identical in
//! 4-tuple, flags, sequence and acknowledgement numbers and wire length, and lie within
//! microseconds of each other. A genuine retransmission is identical too but comes at least
//! a retransmission timeout later (≥ 200 ms on Linux), so a window well below that keeps it.
//! Duplicate ACKs sent within the window do collapse into one: use [`Dedup`] only when the
//! same traffic really was captured more than once.

use std::collections::HashMap;
use std::net::SocketAddr;

use crate::segment::Segment;

/// Default window: copies of one packet on two interfaces of one host arrive within tens
/// of microseconds.
pub const DEFAULT_DEDUP_WINDOW_NS: i64 = 1_000_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Key {
    src: SocketAddr,
    dst: SocketAddr,
    seq: u32,
    ack: u32,
    flags: u8,
    wire_len: u32,
}

impl Key {
    fn of(s: &Segment) -> Key {
        Key {
            src: s.src,
            dst: s.dst,
            seq: s.seq,
            ack: s.ack,
            flags: s.flags,
            wire_len: s.wire_len,
        }
    }
}

/// An iterator adapter that drops a segment identical to one seen less than a window
/// earlier (see the module documentation for what "identical" means).
pub struct Dedup<I> {
    inner: I,
    window_ns: i64,
    seen: HashMap<Key, i64>,
    last_prune: i64,
    dropped: u64,
}

impl<I: Iterator<Item = Segment>> Dedup<I> {
    /// Wraps a time-ordered segment stream.
    pub fn new(inner: I, window_ns: i64) -> Self {
        Dedup {
            inner,
            window_ns: window_ns.max(0),
            seen: HashMap::new(),
            last_prune: i64::MIN,
            dropped: 0,
        }
    }

    /// How many duplicates were dropped so far.
    #[must_use]
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// The wrapped stream (e.g. to read its statistics).
    pub fn inner(&self) -> &I {
        &self.inner
    }
}

impl<I: Iterator<Item = Segment>> Iterator for Dedup<I> {
    type Item = Segment;

    fn next(&mut self) -> Option<Segment> {
        loop {
            let s = self.inner.next()?;
            if s.ts_ns.saturating_sub(self.last_prune) > self.window_ns {
                // Keep memory to about two windows of traffic.
                let horizon = s.ts_ns.saturating_sub(self.window_ns);
                self.seen.retain(|_, ts| *ts >= horizon);
                self.last_prune = s.ts_ns;
            }
            let key = Key::of(&s);
            match self.seen.insert(key, s.ts_ns) {
                Some(prev) if s.ts_ns.abs_diff(prev) <= self.window_ns as u64 => {
                    self.dropped += 1;
                }
                _ => return Some(s),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::segment::flags;

    fn seg(ts_ns: i64, seq: u32) -> Segment {
        Segment {
            ts_ns,
            src: "10.0.0.1:40000".parse().unwrap(),
            dst: "10.0.0.2:80".parse().unwrap(),
            flags: flags::ACK | flags::PSH,
            seq,
            ack: 1,
            wire_len: 100,
            payload: vec![],
        }
    }

    #[test]
    fn copy_within_window_is_dropped() {
        let input = vec![seg(0, 1), seg(20_000, 1), seg(30_000, 101)];
        let mut d = Dedup::new(input.into_iter(), DEFAULT_DEDUP_WINDOW_NS);
        let out: Vec<_> = d.by_ref().map(|s| s.seq).collect();
        assert_eq!(out, vec![1, 101]);
        assert_eq!(d.dropped(), 1);
    }

    #[test]
    fn retransmission_after_window_is_kept() {
        let input = vec![seg(0, 1), seg(200_000_000, 1)];
        let out: Vec<_> = Dedup::new(input.into_iter(), DEFAULT_DEDUP_WINDOW_NS).collect();
        assert_eq!(out.len(), 2);
    }

    #[test]
    fn copy_stepping_back_in_time_is_dropped() {
        let input = vec![seg(60_000, 1), seg(0, 1)];
        let out: Vec<_> = Dedup::new(input.into_iter(), DEFAULT_DEDUP_WINDOW_NS).collect();
        assert_eq!(out.len(), 1);
    }
}
