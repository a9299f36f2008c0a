//! Room kept in hash tables whose entries come and go.
//!
//! A table that churns at a steady size leaves tombstones behind; once they use up its
//! room, the table is rehashed in place if it is at most half full and otherwise doubled.
//! A table between half and seven eighths full therefore doubles one day, at whatever
//! moment its tombstones run out — in the node agent, a step of megabytes after many
//! quiet minutes. Sizing it by its count of the moment moves the step, not the chance of
//! it: a count that wanders around a steady level crosses any threshold again, later, at
//! its next high. A [`Room`] sizes its table by the count's average over about the last
//! minute (the last 64 calls), which a steady load holds still, and rebuilds it before
//! its tombstones can force a resize; the size changes when the load does.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hash};

/// Tables smaller than this are left to themselves (their steps are a few KiB).
const SMALL: usize = 1024;
/// Calls over which the count is averaged.
const SPAN: f64 = 64.0;

/// The room one table is given: see the module's note.
#[derive(Debug, Clone, Copy, Default)]
pub struct Room {
    /// The table's count, averaged over about the last [`SPAN`] calls.
    typical: f64,
}

impl Room {
    /// Called at a steady pace (once a second, or every so many insertions): the table is
    /// rebuilt, tombstones gone, with room for 2.5 times its typical count, when its room
    /// has fallen below twice that count or below 1.25 times its count of the moment.
    pub fn keep<K: Eq + Hash, V, S: BuildHasher + Clone>(&mut self, m: &mut HashMap<K, V, S>) {
        let n = m.len();
        self.typical += (n as f64 - self.typical) / SPAN;
        // whole entries: the average of counts is a count
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let typical = self.typical.max(0.0).round() as usize;
        if n.max(typical) < SMALL {
            return;
        }
        // `capacity` counts tombstones against the table
        let room = m.capacity();
        if room >= 2 * typical && room >= n + n / 4 {
            return;
        }
        let want = (typical * 5 / 2).max(n + n / 2);
        let mut fresh = HashMap::with_capacity_and_hasher(want, m.hasher().clone());
        fresh.extend(m.drain());
        *m = fresh;
    }
}

/// A buffer refilled and emptied over and over (a session's packets waiting to be put in
/// time order) keeps the capacity of its largest burst: a vector of at least 256 KiB is
/// mapped apart, and its pages stay resident up to the longest it has been, so every new
/// record burst (a stall of the machine, a flood) steps the process's memory up for good.
/// After a burst has drained, this gives back all but room for `floor` entries or twice
/// what it still holds, whichever is more.
pub fn give_back_burst<T>(v: &mut Vec<T>, floor: usize) {
    let keep = floor.max(2 * v.len());
    if v.capacity() > 2 * keep {
        v.shrink_to(keep);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A table churned at a count that wanders a little around 6,300 and, once, for three
    /// calls after call 1,000, reaches 7,300 (a high of the load): its size at each call
    /// (the largest room it has shown so far).
    fn churn(mut keep: impl FnMut(&mut HashMap<u64, u64>), calls: usize) -> Vec<usize> {
        let mut m: HashMap<u64, u64> = HashMap::new();
        let (mut next, mut oldest) = (0u64, 0u64);
        let mut rng = 0x9e37_79b9_7f4a_7c15_u64;
        let mut sizes = Vec::with_capacity(calls);
        let mut size = 0;
        for call in 0..calls {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            let target = if (1_000..1_003).contains(&call) {
                7_300
            } else {
                6_250 + usize::try_from(rng % 101).unwrap()
            };
            // 600 entries come and go between two calls, and the count moves to target
            for _ in 0..600 {
                m.remove(&oldest);
                oldest += 1;
                m.insert(next, next);
                next += 1;
            }
            while m.len() < target {
                m.insert(next, next);
                next += 1;
            }
            while m.len() > target {
                m.remove(&oldest);
                oldest += 1;
            }
            keep(&mut m);
            size = size.max(m.capacity());
            sizes.push(size);
        }
        sizes
    }

    #[test]
    fn a_buffer_gives_back_what_a_burst_took_once_it_has_drained() {
        let mut v: Vec<u64> = Vec::new();
        v.extend(0..100_000);
        let burst = v.capacity();
        give_back_burst(&mut v, 4096);
        assert_eq!(v.capacity(), burst, "still full: nothing is given back");
        v.truncate(30_000);
        give_back_burst(&mut v, 4096);
        assert_eq!(v.capacity(), burst, "holds more than a quarter of it: kept");
        v.truncate(100);
        give_back_burst(&mut v, 4096);
        assert!(
            v.capacity() >= 4096 && v.capacity() < 8192,
            "{}",
            v.capacity()
        );
        assert_eq!(
            v.iter().copied().sum::<u64>(),
            (0..100).sum::<u64>(),
            "entries survive"
        );
        // a buffer at its floor is left alone: no reallocation at every call
        let room = v.capacity();
        v.clear();
        give_back_burst(&mut v, 4096);
        assert_eq!(v.capacity(), room);
    }

    #[test]
    fn a_table_sized_by_its_typical_count_stops_growing() {
        let (calls, warm) = (1_500, 300);
        // sized by the count of the moment: it grows again at the load's high
        let moment = churn(
            |m| {
                if m.capacity() < 2 * m.len() {
                    let mut f = HashMap::with_capacity(2 * m.len() + m.len() / 4);
                    f.extend(m.drain());
                    *m = f;
                }
            },
            calls,
        );
        let mut room = Room::default();
        let typical = churn(|m| room.keep(m), calls);
        assert!(
            moment[calls - 1] > moment[warm],
            "the count of the moment grows it after warming up: {} then {}",
            moment[warm],
            moment[calls - 1]
        );
        assert_eq!(
            typical[calls - 1],
            typical[warm],
            "its typical count does not"
        );
        assert!(typical[warm] >= 14_600, "room for twice the count's high");
    }

    #[test]
    fn entries_survive_the_rebuild() {
        let mut m: HashMap<u32, String> = (0..5000).map(|i| (i, i.to_string())).collect();
        for i in 0..2000 {
            m.remove(&i);
        }
        let mut room = Room::default();
        room.keep(&mut m);
        assert_eq!(m.len(), 3000);
        assert!((2000..5000).all(|i| m[&i] == i.to_string()));
        assert!(m.capacity() >= 3000 + 3000 / 4);
    }
}
