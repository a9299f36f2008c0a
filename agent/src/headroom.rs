//! Room kept in hash tables whose entries come and go.
//!
//! A table that churns at a steady size leaves tombstones behind; once they use up its
//! room, the table is rehashed in place if it is at most half full and otherwise doubled.
//! A table between half and seven eighths full therefore doubles one day, at whatever
//! moment its tombstones run out — in the node agent, a step of megabytes after many
//! quiet minutes. [`Headroom::keep_headroom`] takes that step at once, as soon as the table
//! is past half full, so it comes when the load does and a steady load keeps a steady size.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hash};

/// Tables smaller than this are left alone (their steps are a few KiB).
const SMALL: usize = 1024;

pub trait Headroom {
    /// Makes sure the table can hold twice its entries (and then some) without resizing:
    /// rebuilt, tombstones gone, at a size it will not outgrow by churn alone. A table whose
    /// tombstones run out while it is far emptier than its size is rebuilt smaller; it grows
    /// back at the next call once its entries do.
    fn keep_headroom(&mut self);
}

impl<K: Eq + Hash, V, S: BuildHasher + Clone> Headroom for HashMap<K, V, S> {
    fn keep_headroom(&mut self) {
        let n = self.len();
        // `capacity` counts tombstones against the table: under twice the entries, churn
        // may soon double it
        if n < SMALL || self.capacity() >= 2 * n {
            return;
        }
        let mut fresh = HashMap::with_capacity_and_hasher(2 * n + n / 4, self.hasher().clone());
        fresh.extend(self.drain());
        *self = fresh;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Churn at a steady size between half and seven eighths full: without headroom the
    /// table doubles at some point; with it, it doubles once at the start and never again.
    #[test]
    fn a_churning_table_stops_growing_once_it_has_room() {
        let run = |headroom: bool| {
            let mut m: HashMap<u64, u64> = HashMap::with_capacity(14_336);
            let n = 10_000u64;
            for k in 0..n {
                m.insert(k, k);
            }
            let mut caps = Vec::new();
            for k in n..n + 400_000 {
                m.remove(&(k - n));
                m.insert(k, k);
                if k % 1000 == 0 {
                    if headroom {
                        m.keep_headroom();
                    }
                    caps.push(m.capacity());
                }
            }
            assert_eq!(m.len(), 10_000);
            caps
        };
        // capacity() counts tombstones, so compare the largest it reached: the table's size
        let plain = run(false);
        let kept = run(true);
        let first_max = |c: &[usize]| *c[..10].iter().max().unwrap();
        let max = |c: &[usize]| *c.iter().max().unwrap();
        assert!(
            max(&plain) > first_max(&plain),
            "churn alone doubled it later: {:?}",
            &plain[..20]
        );
        assert_eq!(max(&kept), first_max(&kept), "headroom: no later step");
        assert!(
            kept.iter().all(|&c| c >= 20_000),
            "room for twice the entries throughout"
        );
    }

    #[test]
    fn entries_survive_the_rebuild() {
        let mut m: HashMap<u32, String> = (0..5000).map(|i| (i, i.to_string())).collect();
        for i in 0..2000 {
            m.remove(&i);
        }
        m.keep_headroom();
        assert_eq!(m.len(), 3000);
        assert!((2000..5000).all(|i| m[&i] == i.to_string()));
        assert!(m.capacity() >= 6000);
    }
}
