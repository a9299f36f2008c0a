//! Several capture files → one stream ordered by timestamp (k-way merge on a heap).
//!
//! Each file's packets are first put back in time order within a window, and timestamps
//! that cannot be right are set aside with a warning naming the packet ([`super::reorder`]).
//! Across files the merge always takes the file whose next packet is earliest (ties go to
//! the file named first).

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::io::Read;

use super::reorder::Reorder;
use super::source::{CaptureStats, FileSource, RawPacket};
use crate::segment::Segment;

/// Something the merge can order.
pub trait Timestamped {
    fn ts_ns(&self) -> i64;
    /// Corrects a timestamp that cannot be right.
    fn set_ts_ns(&mut self, ts_ns: i64);
}

impl Timestamped for Segment {
    fn ts_ns(&self) -> i64 {
        self.ts_ns
    }
    fn set_ts_ns(&mut self, ts_ns: i64) {
        self.ts_ns = ts_ns;
    }
}

impl Timestamped for (Segment, RawPacket) {
    fn ts_ns(&self) -> i64 {
        self.0.ts_ns
    }
    fn set_ts_ns(&mut self, ts_ns: i64) {
        self.0.ts_ns = ts_ns;
        self.1.ts_ns = ts_ns;
    }
}

/// A time-ordered stream of `T` over several [`FileSource`]s.
pub struct Merged<R, T> {
    sources: Vec<FileSource<R>>,
    /// Each source's reorder buffer.
    orders: Vec<Reorder<T>>,
    /// The next item of each source, waiting its turn.
    heads: Vec<Option<T>>,
    /// (time, source index) of every waiting head, earliest on top.
    heap: BinaryHeap<Reverse<(i64, usize)>>,
    pull: fn(&mut FileSource<R>) -> Option<T>,
}

impl<R: Read, T: Timestamped> Merged<R, T> {
    pub(crate) fn new(
        mut sources: Vec<FileSource<R>>,
        pull: fn(&mut FileSource<R>) -> Option<T>,
    ) -> Self {
        let mut heads = Vec::with_capacity(sources.len());
        let mut heap = BinaryHeap::with_capacity(sources.len());
        let mut orders: Vec<Reorder<T>> = sources.iter().map(|_| Reorder::default()).collect();
        for (i, (s, o)) in sources.iter_mut().zip(&mut orders).enumerate() {
            let head = ordered(s, o, pull);
            if let Some(h) = &head {
                heap.push(Reverse((h.ts_ns(), i)));
            }
            heads.push(head);
        }
        Merged {
            sources,
            orders,
            heads,
            heap,
            pull,
        }
    }

    /// Counts so far, per file and in total (final once the stream has ended).
    #[must_use]
    pub fn stats(&self) -> CaptureStats {
        CaptureStats::from_files(
            self.sources
                .iter()
                .zip(&self.orders)
                .map(|(s, o)| {
                    let mut st = s.stats();
                    st.warnings.extend(o.warnings());
                    st
                })
                .collect(),
        )
    }

    /// The link type of every input when all are pcap files (whose link type is fixed in
    /// the header); empty when any is pcapng (its interfaces may appear later).
    #[must_use]
    pub fn link_types_if_fixed(&self) -> Vec<super::LinkType> {
        let mut out = Vec::new();
        for s in &self.sources {
            if s.format() != super::Format::Pcap {
                return Vec::new();
            }
            out.extend(s.link_types());
        }
        out
    }
}

impl<R: Read, T: Timestamped> Iterator for Merged<R, T> {
    type Item = T;

    fn next(&mut self) -> Option<T> {
        if let ([source], [order]) = (self.sources.as_mut_slice(), self.orders.as_mut_slice()) {
            // One file: no heap traffic.
            let head = self.heads.first_mut()?;
            return match head.take() {
                Some(item) => {
                    *head = ordered(source, order, self.pull);
                    Some(item)
                }
                None => None,
            };
        }
        let Reverse((_, i)) = self.heap.pop()?;
        let item = self.heads.get_mut(i)?.take();
        let next = match (self.sources.get_mut(i), self.orders.get_mut(i)) {
            (Some(s), Some(o)) => ordered(s, o, self.pull),
            _ => None,
        };
        if let Some(n) = &next {
            self.heap.push(Reverse((n.ts_ns(), i)));
        }
        if let Some(slot) = self.heads.get_mut(i) {
            *slot = next;
        }
        item
    }
}

/// The next item of `source` in time order, through its reorder buffer.
fn ordered<R: Read, T: Timestamped>(
    source: &mut FileSource<R>,
    order: &mut Reorder<T>,
    pull: fn(&mut FileSource<R>) -> Option<T>,
) -> Option<T> {
    order.next(|| {
        let item = pull(source)?;
        Some((source.packets_read(), item))
    })
}
