//! Several capture files → one stream ordered by timestamp (k-way merge on a heap).
//!
//! Within one file, frames keep the file's order: captures on several CPUs step back in
//! time by up to ~60 µs, and that is left for the engine to tolerate rather than hidden by
//! a reordering window here. Across files the merge always takes the file whose next
//! frame is earliest (ties go to the file named first), so the output can step back by
//! as much as any one file does.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::io::Read;

use super::source::{CaptureStats, FileSource, RawPacket};
use crate::segment::Segment;

/// Something the merge can order.
pub trait Timestamped {
    fn ts_ns(&self) -> i64;
}

impl Timestamped for Segment {
    fn ts_ns(&self) -> i64 {
        self.ts_ns
    }
}

impl Timestamped for (Segment, RawPacket) {
    fn ts_ns(&self) -> i64 {
        self.0.ts_ns
    }
}

/// A time-ordered stream of `T` over several [`FileSource`]s.
pub struct Merged<R, T> {
    sources: Vec<FileSource<R>>,
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
        for (i, s) in sources.iter_mut().enumerate() {
            let head = pull(s);
            if let Some(h) = &head {
                heap.push(Reverse((h.ts_ns(), i)));
            }
            heads.push(head);
        }
        Merged {
            sources,
            heads,
            heap,
            pull,
        }
    }

    /// Counts so far, per file and in total (final once the stream has ended).
    #[must_use]
    pub fn stats(&self) -> CaptureStats {
        CaptureStats::from_files(self.sources.iter().map(FileSource::stats).collect())
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
        if let [source] = self.sources.as_mut_slice() {
            // One file: no heap traffic.
            let head = self.heads.first_mut()?;
            return match head.take() {
                Some(item) => {
                    *head = (self.pull)(source);
                    Some(item)
                }
                None => None,
            };
        }
        let Reverse((_, i)) = self.heap.pop()?;
        let item = self.heads.get_mut(i)?.take();
        let next = self.sources.get_mut(i).and_then(|s| (self.pull)(s));
        if let Some(n) = &next {
            self.heap.push(Reverse((n.ts_ns(), i)));
        }
        if let Some(slot) = self.heads.get_mut(i) {
            *slot = next;
        }
        item
    }
}
