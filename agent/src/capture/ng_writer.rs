//! Writing pcapng files with packet comments, for the evidence file an engineer opens in
//! Wireshark: each packet can carry `opt_comment`s (Wireshark's `frame.comment`) saying
//! which verdict it belongs to.
//!
//! One section, one interface of one link type, nanosecond timestamps (`if_tsresol` = 9),
//! one Enhanced Packet Block per packet; little-endian, as the byte-order magic says.
//! Frames are copied or re-encoded as by [`super::PcapWriter`].

use std::io::Write;

use super::error::CaptureError;
use super::link::LinkType;
use super::source::RawPacket;
use super::writer::{frame_bytes, WRITE_SNAPLEN};

const SHB: u32 = 0x0A0D_0D0A;
const IDB: u32 = 0x0000_0001;
const EPB: u32 = 0x0000_0006;
const BYTE_ORDER_MAGIC: u32 = 0x1A2B_3C4D;
const OPT_END: u16 = 0;
const OPT_COMMENT: u16 = 1;
const SHB_USERAPPL: u16 = 4;
const IF_TSRESOL: u16 = 9;

/// One option: code, length, value padded to 32 bits.
fn option(buf: &mut Vec<u8>, code: u16, value: &[u8]) {
    // An option's length is 16 bits: a longer value is cut (never the case for a comment
    // tracer writes, but a request target could make one long).
    let value = &value[..value.len().min(usize::from(u16::MAX) - 3)];
    buf.extend_from_slice(&code.to_le_bytes());
    buf.extend_from_slice(&(value.len() as u16).to_le_bytes());
    buf.extend_from_slice(value);
    pad(buf);
}

fn pad(buf: &mut Vec<u8>) {
    while !buf.len().is_multiple_of(4) {
        buf.push(0);
    }
}

/// A block: type, total length, `body`, total length again.
fn block(out: &mut impl Write, kind: u32, body: &[u8]) -> std::io::Result<()> {
    let len = (body.len() + 12) as u32;
    out.write_all(&kind.to_le_bytes())?;
    out.write_all(&len.to_le_bytes())?;
    out.write_all(body)?;
    out.write_all(&len.to_le_bytes())
}

/// Writes frames and their comments into a pcapng file of one link type.
pub struct PcapngWriter<W: Write> {
    out: W,
    linktype: LinkType,
    written: u64,
    body: Vec<u8>,
}

impl<W: Write> PcapngWriter<W> {
    /// Writes the section header and the one interface's description to `out`.
    ///
    /// # Errors
    /// When writing fails.
    pub fn new(mut out: W, linktype: LinkType) -> Result<Self, CaptureError> {
        let mut b = Vec::with_capacity(64);
        b.extend_from_slice(&BYTE_ORDER_MAGIC.to_le_bytes());
        b.extend_from_slice(&1u16.to_le_bytes());
        b.extend_from_slice(&0u16.to_le_bytes());
        // Section length not given.
        b.extend_from_slice(&(-1i64).to_le_bytes());
        option(&mut b, SHB_USERAPPL, b"tracer");
        option(&mut b, OPT_END, &[]);
        block(&mut out, SHB, &b)?;
        b.clear();
        let lt = u16::try_from(linktype.0).unwrap_or(u16::MAX);
        b.extend_from_slice(&lt.to_le_bytes());
        b.extend_from_slice(&0u16.to_le_bytes());
        b.extend_from_slice(&WRITE_SNAPLEN.to_le_bytes());
        option(&mut b, IF_TSRESOL, &[9]);
        option(&mut b, OPT_END, &[]);
        block(&mut out, IDB, &b)?;
        Ok(PcapngWriter {
            out,
            linktype,
            written: 0,
            body: Vec::new(),
        })
    }

    /// Packets written so far.
    #[must_use]
    pub fn written(&self) -> u64 {
        self.written
    }

    /// Writes one packet with `comments` (each its own `opt_comment`): byte for byte when
    /// its link type is the file's, as its bare IP packet when the file is
    /// [`LinkType::RAW`].
    ///
    /// # Errors
    /// As [`super::PcapWriter::write`].
    pub fn write(&mut self, p: &RawPacket, comments: &[String]) -> Result<(), CaptureError> {
        let (bytes, orig_len) = frame_bytes(self.linktype, p.linktype, &p.data, p.orig_len)?;
        let caplen = bytes.len().min(WRITE_SNAPLEN as usize);
        let ts = p.ts_ns.max(0) as u64;
        let b = &mut self.body;
        b.clear();
        b.extend_from_slice(&0u32.to_le_bytes());
        b.extend_from_slice(&((ts >> 32) as u32).to_le_bytes());
        b.extend_from_slice(&(ts as u32).to_le_bytes());
        b.extend_from_slice(&(caplen as u32).to_le_bytes());
        b.extend_from_slice(&orig_len.max(caplen as u32).to_le_bytes());
        b.extend_from_slice(&bytes[..caplen]);
        pad(b);
        if !comments.is_empty() {
            for c in comments {
                option(b, OPT_COMMENT, c.as_bytes());
            }
            option(b, OPT_END, &[]);
        }
        block(&mut self.out, EPB, &self.body)?;
        self.written += 1;
        Ok(())
    }

    /// Flushes and returns the underlying writer.
    ///
    /// # Errors
    /// When flushing fails.
    pub fn finish(mut self) -> Result<W, CaptureError> {
        self.out.flush()?;
        Ok(self.out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capture::CaptureReader;

    fn packet(ts_ns: i64) -> RawPacket {
        // A bare IPv4 header is enough for the reader: it copies frames, it does not judge.
        RawPacket {
            ts_ns,
            linktype: LinkType::RAW,
            data: vec![
                0x45, 0, 0, 20, 0, 0, 0, 0, 64, 6, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2,
            ],
            orig_len: 20,
        }
    }

    #[test]
    fn blocks_are_aligned_and_read_back_with_their_times() {
        let mut w = PcapngWriter::new(Vec::new(), LinkType::RAW).unwrap();
        w.write(
            &packet(1_795_638_869_996_817_801),
            &["a".into(), "bcdef".into()],
        )
        .unwrap();
        w.write(&packet(5), &[]).unwrap();
        assert_eq!(w.written(), 2);
        let bytes = w.finish().unwrap();
        assert_eq!(bytes.len() % 4, 0);
        let mut r = CaptureReader::new(&bytes[..]).unwrap();
        let f = r.next_frame().unwrap();
        assert_eq!(f.ts_ns, 1_795_638_869_996_817_801);
        assert_eq!(f.linktype, LinkType::RAW);
        assert_eq!(f.data.len(), 20);
        let f = r.next_frame().unwrap();
        assert_eq!(f.ts_ns, 5);
        assert!(r.next_frame().is_none());
        // The comments are in the file, each padded to 32 bits.
        let text = String::from_utf8_lossy(&bytes);
        assert!(text.contains("bcdef\0\0\0"), "{text:?}");
    }
}
