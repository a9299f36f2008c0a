//! A read buffer that hands out slices of itself, so records are parsed in place.
//!
//! `std::io::BufReader` would need a copy of every packet into a second buffer; this one
//! lets the reader borrow packet bytes directly and only moves the unread tail to the
//! front when a record would run past the end.

use std::io::{self, Read};

/// Default capacity: large enough that refills are rare, small enough to stay in L2/L3.
pub const DEFAULT_CAPACITY: usize = 1 << 20;
/// The buffer starts this small and doubles on each refill up to its capacity, so tiny
/// inputs (tests, fuzzing, short captures) do not pay for zeroing a megabyte.
const INITIAL_CAPACITY: usize = 64 << 10;

pub struct Buf<R> {
    inner: R,
    buf: Vec<u8>,
    /// Size the buffer grows to on refills (larger only for a record that needs it).
    capacity: usize,
    start: usize,
    end: usize,
    /// File offset of `buf[start]`.
    offset: u64,
    eof: bool,
}

impl<R: Read> Buf<R> {
    pub fn new(inner: R, capacity: usize) -> Self {
        let capacity = capacity.max(64);
        Buf {
            inner,
            buf: vec![0; capacity.min(INITIAL_CAPACITY)],
            capacity,
            start: 0,
            end: 0,
            offset: 0,
            eof: false,
        }
    }

    /// Makes at least `n` bytes available; `Ok(false)` when the input ends first
    /// (then [`Buf::available`] tells how many there are).
    ///
    /// A record larger than the buffer grows it only as the record's bytes arrive, so a
    /// corrupt length field in a short file costs no more memory than the file.
    pub fn fill(&mut self, n: usize) -> io::Result<bool> {
        if self.available() >= n {
            return Ok(true);
        }
        if self.start + n > self.buf.len() {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
            if self.buf.len() < self.capacity {
                let grown = (self.buf.len() * 2).min(self.capacity);
                self.buf.resize(grown, 0);
            }
        }
        while self.available() < n && !self.eof {
            if self.end == self.buf.len() {
                let grown = (self.buf.len() * 2).min(n.max(self.capacity));
                self.buf.resize(grown.max(self.end + 1), 0);
            }
            match self.inner.read(&mut self.buf[self.end..]) {
                Ok(0) => self.eof = true,
                Ok(k) => self.end += k,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(self.available() >= n)
    }

    /// The buffered, unconsumed bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.buf[self.start..self.end]
    }

    pub fn available(&self) -> usize {
        self.end - self.start
    }

    /// Drops `n` buffered bytes (at most what is available).
    pub fn consume(&mut self, n: usize) {
        let n = n.min(self.available());
        self.start += n;
        self.offset += n as u64;
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
    }

    /// Skips `n` bytes without buffering them all; `Ok(false)` when the input ends first.
    pub fn skip(&mut self, mut n: u64) -> io::Result<bool> {
        loop {
            let here = (self.available() as u64).min(n);
            self.consume(here as usize);
            n -= here;
            if n == 0 {
                return Ok(true);
            }
            let chunk = usize::try_from(n).unwrap_or(usize::MAX).min(self.buf.len());
            if !self.fill(chunk)? && self.available() == 0 {
                return Ok(false);
            }
        }
    }

    /// File offset of the first unconsumed byte.
    pub fn offset(&self) -> u64 {
        self.offset
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fill_across_refills_keeps_bytes_in_order() {
        let data: Vec<u8> = (0..=255).collect();
        let mut b = Buf::new(&data[..], 64);
        assert!(b.fill(10).unwrap());
        b.consume(60);
        assert!(b.fill(10).unwrap());
        assert_eq!(&b.bytes()[..3], &[60, 61, 62]);
        assert_eq!(b.offset(), 60);
    }

    #[test]
    fn fill_larger_than_capacity_grows() {
        let data = vec![7u8; 1000];
        let mut b = Buf::new(&data[..], 64);
        assert!(b.fill(1000).unwrap());
        assert!(!b.fill(1001).unwrap());
        assert_eq!(b.available(), 1000);
    }

    #[test]
    fn claimed_length_beyond_input_does_not_allocate_it() {
        let data = [0u8; 100];
        let mut b = Buf::new(&data[..], 64);
        assert!(!b.fill(16 << 20).unwrap());
        assert!(b.buf.len() < 1024, "buffer grew to {}", b.buf.len());
    }

    #[test]
    fn skip_past_end_reports_short_input() {
        let data = vec![1u8; 300];
        let mut b = Buf::new(&data[..], 64);
        assert!(b.skip(200).unwrap());
        assert_eq!(b.offset(), 200);
        assert!(!b.skip(200).unwrap());
    }
}
