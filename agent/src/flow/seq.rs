//! One direction's sequence space: turns 32-bit sequence numbers into 64-bit offsets from the
//! first byte, across wraparound, and counts bytes from sequence numbers rather than from
//! what was captured (snaplen, missing segments).

/// Where a segment's payload falls relative to what this direction already carried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement {
    /// Starts exactly at the next expected byte.
    InOrder,
    /// Starts beyond the next expected byte: `missing` bytes were never seen (yet).
    Gap { missing: u64 },
    /// Entirely old bytes (a retransmission, or an out-of-order segment filling a gap).
    Old,
    /// Starts before the next expected byte but carries `fresh` new bytes at its end.
    Overlap { fresh: u64 },
}

/// Sequence bookkeeping for one direction of a connection.
#[derive(Debug, Clone, Default)]
pub struct SeqSpace {
    /// Sequence number of offset 0 (the byte after the SYN when the SYN was seen).
    base: Option<u32>,
    /// Offset one past the highest byte seen (the "next expected" offset).
    end: u64,
    /// Segments that carried only old bytes.
    pub retransmits: u32,
    /// Bytes skipped over by gaps (later filled or never seen).
    pub gap_bytes: u64,
    /// Gaps: places where bytes were skipped over (lost or reordered segments).
    pub gaps: u32,
}

/// Largest distance a segment may sit behind `end` and still count as a retransmission;
/// anything further back is treated as garbage rather than as a wrap.
const MAX_BACK: i64 = 1 << 30;

impl SeqSpace {
    /// Sets offset 0 from a SYN: the first data byte is `isn + 1`.
    pub fn syn(&mut self, isn: u32) {
        if self.base.is_none() {
            self.base = Some(isn.wrapping_add(1));
        }
    }

    /// True once offset 0 is known.
    #[must_use]
    pub fn started(&self) -> bool {
        self.base.is_some()
    }

    /// Bytes carried in this direction, from sequence numbers (the highest offset seen).
    #[must_use]
    pub fn bytes(&self) -> u64 {
        self.end
    }

    /// The 64-bit offset of `seq`, relative to the highest offset seen so that wraparound
    /// is followed; `None` for a sequence number far behind (garbage or before offset 0).
    #[must_use]
    pub fn offset(&self, seq: u32) -> Option<u64> {
        let base = self.base?;
        let anchor = base.wrapping_add(self.end as u32);
        let diff = i64::from(seq.wrapping_sub(anchor) as i32);
        let off = self.end as i64 + diff;
        (off >= 0 && diff > -MAX_BACK).then_some(off as u64)
    }

    /// Places a segment of `len` payload bytes starting at `seq` and advances the end.
    pub fn place(&mut self, seq: u32, len: u32) -> Placement {
        if self.base.is_none() {
            self.base = Some(seq);
        }
        let Some(start) = self.offset(seq) else {
            self.retransmits += 1;
            return Placement::Old;
        };
        let stop = start + u64::from(len);
        if start == self.end {
            self.end = stop;
            Placement::InOrder
        } else if start > self.end {
            let missing = start - self.end;
            self.gap_bytes += missing;
            self.gaps += 1;
            self.end = stop;
            Placement::Gap { missing }
        } else if stop <= self.end {
            if len > 0 {
                self.retransmits += 1;
            }
            Placement::Old
        } else {
            let fresh = stop - self.end;
            self.end = stop;
            Placement::Overlap { fresh }
        }
    }

    /// The peer acknowledged up to `ack`: bytes before it were sent even if never seen.
    /// A sparse capture moves the end there, so that a later segment starting at `ack` is
    /// in order rather than past a gap.
    pub fn skip_to(&mut self, ack: u32) {
        if let Some(off) = self.offset(ack) {
            if off > self.end {
                self.end = off;
            }
        }
    }

    /// Offset of a FIN at `seq` (the FIN occupies the sequence number after the data).
    #[must_use]
    pub fn fin_offset(&self, seq: u32, len: u32) -> Option<u64> {
        self.offset(seq).map(|o| o + u64::from(len))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_order_segments_count_bytes() {
        let mut s = SeqSpace::default();
        s.syn(1000);
        assert_eq!(s.place(1001, 100), Placement::InOrder);
        assert_eq!(s.place(1101, 50), Placement::InOrder);
        assert_eq!(s.bytes(), 150);
    }

    #[test]
    fn retransmit_is_old_and_counts_once() {
        let mut s = SeqSpace::default();
        s.syn(0);
        s.place(1, 100);
        assert_eq!(s.place(1, 100), Placement::Old);
        assert_eq!(s.bytes(), 100);
        assert_eq!(s.retransmits, 1);
    }

    #[test]
    fn out_of_order_leaves_a_gap_then_fills_it() {
        let mut s = SeqSpace::default();
        s.syn(0);
        s.place(1, 10);
        assert_eq!(s.place(21, 10), Placement::Gap { missing: 10 });
        assert_eq!(s.place(11, 10), Placement::Old);
        assert_eq!(s.bytes(), 30);
    }

    #[test]
    fn partial_overlap_counts_fresh_bytes() {
        let mut s = SeqSpace::default();
        s.syn(0);
        s.place(1, 10);
        assert_eq!(s.place(6, 10), Placement::Overlap { fresh: 5 });
        assert_eq!(s.bytes(), 15);
    }

    #[test]
    fn wraparound_is_followed() {
        let mut s = SeqSpace::default();
        s.syn(u32::MAX - 10);
        assert_eq!(s.place(u32::MAX - 9, 20), Placement::InOrder);
        assert_eq!(s.place(10, 5), Placement::InOrder);
        assert_eq!(s.bytes(), 25);
        assert_eq!(s.offset(u32::MAX - 9), Some(0));
    }

    #[test]
    fn mid_stream_start_uses_first_seq() {
        let mut s = SeqSpace::default();
        assert_eq!(s.place(5_000_000, 100), Placement::InOrder);
        assert_eq!(s.bytes(), 100);
        assert_eq!(s.place(4_999_000, 100), Placement::Old);
    }

    #[test]
    fn snaplen_cut_segment_counts_wire_length() {
        let mut s = SeqSpace::default();
        s.syn(7);
        // wire_len 3000 though only 512 bytes were captured
        s.place(8, 3000);
        assert_eq!(s.bytes(), 3000);
    }
}
