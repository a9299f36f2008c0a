//! One file's packets put back in time order, and timestamps that cannot be right set
//! aside.
//!
//! Packets are held for [`WINDOW_NS`] (10 ms) of capture time and released earliest first, so a
//! file whose packets step back by less than that (captures on several CPUs step back by
//! tens of microseconds; a locally shuffled file by milliseconds) reaches the engine in
//! order. A packet more than the window away from the others (ahead of the latest, or
//! behind the earliest still expected) is held until the next packet tells which it is:
//! if the next one is back with the others, the packet's own timestamp is wrong (one
//! client packet stamped an hour late used to turn half of a capture's verdicts into
//! others), so it takes its neighbours' time and a warning names it; if the next one
//! follows it, time really jumped (a quiet gap, a clock step, files joined end to end),
//! which is let through, with a warning when it goes backwards.

use std::collections::VecDeque;

use super::merge::Timestamped;

/// How far out of order packets of one file are put back in order.
pub const WINDOW_NS: i64 = 10_000_000;
/// At most this many packets are held (a denser file is ordered over a shorter time).
const MAX_HELD: usize = 1 << 16;
/// Warnings kept per file; the rest are counted.
const MAX_WARNINGS: usize = 8;

/// A packet whose timestamp is more than the window away from the others.
#[derive(Debug)]
struct Suspect<T> {
    /// Its packet number in the file (1-based, as Wireshark counts).
    number: u64,
    item: T,
    /// Ahead of the latest packet (else behind the window).
    ahead: bool,
}

/// The reorder buffer of one file.
#[derive(Debug)]
pub(crate) struct Reorder<T> {
    /// Held packets, earliest first.
    held: VecDeque<T>,
    /// Packets released before a backward step of time, to go out first.
    ready: VecDeque<T>,
    /// The latest timestamp accepted so far.
    newest: Option<i64>,
    suspect: Option<Suspect<T>>,
    /// The file has ended: release everything.
    ended: bool,
    warnings: Vec<String>,
    /// Warnings beyond [`MAX_WARNINGS`].
    more_warnings: u64,
}

impl<T> Default for Reorder<T> {
    fn default() -> Self {
        Reorder {
            held: VecDeque::new(),
            ready: VecDeque::new(),
            newest: None,
            suspect: None,
            ended: false,
            warnings: Vec::new(),
            more_warnings: 0,
        }
    }
}

impl<T: Timestamped> Reorder<T> {
    /// The next packet in time order; `pull` reads the file's next packet and its number.
    pub(crate) fn next(&mut self, mut pull: impl FnMut() -> Option<(u64, T)>) -> Option<T> {
        loop {
            if let Some(r) = self.ready.pop_front() {
                return Some(r);
            }
            if let Some(front) = self.held.front() {
                let ready = self.ended
                    || self.held.len() > MAX_HELD
                    || self
                        .newest
                        .is_some_and(|n| front.ts_ns() <= n.saturating_sub(WINDOW_NS));
                if ready {
                    return self.held.pop_front();
                }
            }
            if self.ended {
                return None;
            }
            match pull() {
                Some((number, item)) => self.accept(number, item),
                None => {
                    self.ended = true;
                    // the last packet: nothing can tell whether its time is right
                    if let Some(s) = self.suspect.take() {
                        self.hold(s.item);
                    }
                }
            }
        }
    }

    /// What went wrong with the file's timestamps, for its statistics.
    pub(crate) fn warnings(&self) -> Vec<String> {
        let mut w = self.warnings.clone();
        if self.more_warnings > 0 {
            w.push(format!(
                "{} more packets out of time order by more than {} ms",
                self.more_warnings,
                WINDOW_NS / 1_000_000
            ));
        }
        w
    }

    fn accept(&mut self, number: u64, item: T) {
        let ts = item.ts_ns();
        if let Some(s) = self.suspect.take() {
            let s_ts = s.item.ts_ns();
            let follows = if s.ahead {
                ts >= s_ts.saturating_sub(WINDOW_NS)
            } else {
                self.newest
                    .is_some_and(|n| ts < n.saturating_sub(WINDOW_NS))
            };
            if follows {
                self.jumped(s);
            } else {
                self.misstamped(s, ts);
            }
        }
        let Some(newest) = self.newest else {
            // the first packet: the next tells whether its time is right
            self.suspect = Some(Suspect {
                number,
                item,
                ahead: true,
            });
            return;
        };
        if ts > newest.saturating_add(WINDOW_NS) || ts < newest.saturating_sub(WINDOW_NS) {
            self.suspect = Some(Suspect {
                number,
                item,
                ahead: ts > newest,
            });
        } else {
            self.hold(item);
        }
    }

    /// The packet after `s` followed it: time really moved there.
    fn jumped(&mut self, s: Suspect<T>) {
        let ts = s.item.ts_ns();
        if !s.ahead {
            let back = self.newest.unwrap_or(ts) - ts;
            self.warn(format!(
                "time steps back by {} at packet {} (files joined end to end, or a clock step): what it sees across the step may be wrong",
                seconds(back),
                s.number
            ));
            // everything held is later than it: let it go first, as it came
            self.ready.extend(self.held.drain(..));
            self.newest = Some(ts);
        }
        self.hold(s.item);
    }

    /// The packet after `s` is back with the others: `s`'s own timestamp is wrong. It takes
    /// the time of the latest packet before it (or, first in the file, of the one after).
    fn misstamped(&mut self, s: Suspect<T>, next_ts: i64) {
        let Suspect {
            number,
            mut item,
            ahead,
        } = s;
        let was = item.ts_ns();
        let at = self.newest.unwrap_or(next_ts);
        self.warn(format!(
            "packet {number} is stamped {} {} the packets around it: its timestamp is taken to be wrong and it is read as at {}",
            seconds((was - at).abs()),
            if ahead { "after" } else { "before" },
            crate::report::rfc3339(at)
        ));
        item.set_ts_ns(at);
        self.hold(item);
    }

    /// Holds a packet in time order (stable: equal times keep the file's order).
    fn hold(&mut self, item: T) {
        let ts = item.ts_ns();
        self.newest = Some(self.newest.map_or(ts, |n| n.max(ts)));
        if self.held.back().is_none_or(|b| b.ts_ns() <= ts) {
            self.held.push_back(item);
        } else {
            let at = self.held.partition_point(|h| h.ts_ns() <= ts);
            self.held.insert(at, item);
        }
    }

    fn warn(&mut self, w: String) {
        if self.warnings.len() < MAX_WARNINGS {
            self.warnings.push(w);
        } else {
            self.more_warnings += 1;
        }
    }
}

/// `3600.000 s`, `12.5 ms`.
fn seconds(ns: i64) -> String {
    if ns >= 1_000_000_000 {
        format!("{:.3} s", ns as f64 / 1e9)
    } else {
        format!("{:.1} ms", ns as f64 / 1e6)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    struct P {
        ts: i64,
        id: u32,
    }

    impl Timestamped for P {
        fn ts_ns(&self) -> i64 {
            self.ts
        }
        fn set_ts_ns(&mut self, ts: i64) {
            self.ts = ts;
        }
    }

    const MS: i64 = 1_000_000;

    /// Runs packets with these timestamps (ms) through; (id, ts ms) out, and the warnings.
    fn run(ts_ms: &[i64]) -> (Vec<(u32, i64)>, Vec<String>) {
        let mut input = ts_ms.iter().enumerate().map(|(i, &t)| {
            (
                i as u64 + 1,
                P {
                    ts: t * MS,
                    id: i as u32 + 1,
                },
            )
        });
        let mut r = Reorder::default();
        let mut out = Vec::new();
        while let Some(p) = r.next(|| input.next()) {
            out.push((p.id, p.ts / MS));
        }
        (out, r.warnings())
    }

    #[test]
    fn in_order_packets_pass_unchanged() {
        let (out, w) = run(&[1, 2, 3, 500, 1000]);
        assert_eq!(out, vec![(1, 1), (2, 2), (3, 3), (4, 500), (5, 1000)]);
        assert!(w.is_empty(), "{w:?}");
    }

    #[test]
    fn packets_out_of_order_within_the_window_are_sorted() {
        let (out, w) = run(&[10, 12, 11, 14, 13, 19, 16]);
        let ids: Vec<u32> = out.iter().map(|p| p.0).collect();
        assert_eq!(ids, vec![1, 3, 2, 5, 4, 7, 6]);
        assert!(w.is_empty(), "{w:?}");
    }

    #[test]
    fn one_packet_an_hour_late_takes_its_neighbours_time() {
        let (out, w) = run(&[10, 11, 3_600_012, 13, 14]);
        assert_eq!(out, vec![(1, 10), (2, 11), (3, 11), (4, 13), (5, 14)]);
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(
            w[0].contains("packet 3 ") && w[0].contains("3600.001 s after"),
            "{w:?}"
        );
    }

    #[test]
    fn one_packet_an_hour_early_takes_its_neighbours_time() {
        let (out, w) = run(&[3_600_010, 3_600_011, 12, 3_600_013]);
        assert_eq!(out[2], (3, 3_600_011));
        assert!(
            w[0].contains("packet 3 ") && w[0].contains("before"),
            "{w:?}"
        );
    }

    #[test]
    fn a_wrong_first_packet_takes_the_time_of_the_next() {
        let (out, w) = run(&[7_200_000, 10, 11]);
        assert_eq!(out, vec![(1, 10), (2, 10), (3, 11)]);
        assert!(w[0].contains("packet 1 "), "{w:?}");
    }

    #[test]
    fn a_quiet_gap_is_not_a_wrong_timestamp() {
        let (out, w) = run(&[10, 11, 60_000, 60_001, 120_000]);
        assert_eq!(
            out.iter().map(|p| p.1).collect::<Vec<_>>(),
            vec![10, 11, 60_000, 60_001, 120_000]
        );
        assert!(w.is_empty(), "{w:?}");
    }

    #[test]
    fn time_stepping_back_for_good_is_let_through_with_a_warning() {
        let (out, w) = run(&[5_000, 5_001, 1_000, 1_001, 1_002]);
        assert_eq!(
            out.iter().map(|p| p.0).collect::<Vec<_>>(),
            vec![1, 2, 3, 4, 5]
        );
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(
            w[0].contains("steps back") && w[0].contains("packet 3"),
            "{w:?}"
        );
    }

    #[test]
    fn a_reversed_file_warns() {
        let ts: Vec<i64> = (0..100).rev().map(|i| i * 300).collect();
        let (out, w) = run(&ts);
        assert_eq!(out.len(), 100);
        assert!(!w.is_empty());
    }
}
