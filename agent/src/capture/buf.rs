//! A read buffer that hands out slices of itself, so records are parsed in place.
//!
//! `std::io::BufReader` would need a copy of every packet into a second buffer; this one
//! lets the reader borrow packet bytes directly and only moves the unread tail to the
//! front when a record would run past the end.

use std::io::{self, Read};

/// Default capacity: large enough that refills are rare, small enough to stay in L2/L3.
pub const DEFAULT_CAPACITY: usize = 1 << 20;

pub struct Buf<R> {
    inner: R,
    buf: Vec<u8>,
    start: usize,
    end: usize,
    /// File offset of `buf[start]`.
    offset: u64,
    eof: bool,
}

impl<R: Read> Buf<R> {
    pub fn new(inner: R, capacity: usize) -> Self {
        Buf {
            inner,
            buf: vec![0; capacity.max(64)],
            start: 0,
            end: 0,
            offset: 0,
            eof: false,
        }
    }

    /// Makes at least `n` bytes available; `Ok(false)` when the input ends first
    /// (then [`Buf::available`] tells how many there are).
    pub fn fill(&mut self, n: usize) -> io::Result<bool> {
        if self.end - self.start >= n {
            return Ok(true);
        }
        if self.start + n > self.buf.len() {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
            if n > self.buf.len() {
                self.buf.resize(n, 0);
            }
        }
        while self.end - self.start < n && !self.eof {
            match self.inner.read(&mut self.buf[self.end..]) {
                Ok(0) => self.eof = true,
                Ok(k) => self.end += k,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(self.end - self.start >= n)
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
    fn skip_past_end_reports_short_input() {
        let data = vec![1u8; 300];
        let mut b = Buf::new(&data[..], 64);
        assert!(b.skip(200).unwrap());
        assert_eq!(b.offset(), 200);
        assert!(!b.skip(200).unwrap());
    }
}
