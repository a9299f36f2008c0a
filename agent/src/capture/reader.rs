//! Streaming pcap / pcapng reader: one [`Frame`] at a time, borrowed from the read buffer.
//!
//! Formats: classic pcap in both byte orders with microsecond or nanosecond timestamps,
//! and pcapng (any number of sections, each in either byte order; interfaces with their
//! own link type, `if_tsresol` and `if_tsoffset`; enhanced, simple and obsolete packet
//! blocks; every other block type is skipped).
//!
//! Problems after the file header never become errors: the frames before them are
//! delivered, and [`CaptureReader::warnings`] says what was wrong and where.

use std::io::Read;

use super::buf::{Buf, DEFAULT_CAPACITY};
use super::error::CaptureError;
use super::link::LinkType;

/// One captured frame, borrowed from the reader's buffer until the next call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame<'a> {
    /// Capture time in nanoseconds since the Unix epoch.
    pub ts_ns: i64,
    /// Framing of `data`.
    pub linktype: LinkType,
    /// pcapng interface index (0 for pcap).
    pub interface: u32,
    /// The captured bytes (may be shorter than `orig_len`: snaplen).
    pub data: &'a [u8],
    /// Length of the frame on the wire.
    pub orig_len: u32,
}

/// Which container the file is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    Pcap,
    Pcapng,
}

impl Format {
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Format::Pcap => "pcap",
            Format::Pcapng => "pcapng",
        }
    }
}

/// A record or block larger than this is taken as corruption rather than buffered.
const MAX_RECORD: usize = 16 << 20;
/// At most this many warnings are kept per file; later ones are only counted.
const MAX_WARNINGS: usize = 16;

const PCAP_HEADER_LEN: usize = 24;
const PCAP_RECORD_HEADER_LEN: usize = 16;
const PCAP_MAGIC_MICRO: u32 = 0xa1b2_c3d4;
const PCAP_MAGIC_NANO: u32 = 0xa1b2_3c4d;

const PCAPNG_SHB: u32 = 0x0a0d_0d0a;
const PCAPNG_BYTE_ORDER_MAGIC: u32 = 0x1a2b_3c4d;
const PCAPNG_IDB: u32 = 1;
const PCAPNG_OPB: u32 = 2;
const PCAPNG_SPB: u32 = 3;
const PCAPNG_EPB: u32 = 6;
/// Block type + total length, before the body.
const PCAPNG_BLOCK_HEAD: usize = 8;
/// Smallest block: type, length, trailing length.
const PCAPNG_MIN_BLOCK: usize = 12;
/// Section header: head, byte-order magic, version, section length.
const PCAPNG_SHB_MIN: usize = 28;
/// Option codes in an interface description block.
const OPT_END: u16 = 0;
const OPT_IF_TSRESOL: u16 = 9;
const OPT_IF_TSOFFSET: u16 = 14;

#[derive(Debug, Clone, Copy)]
struct Endian {
    big: bool,
}

impl Endian {
    fn u16(self, b: &[u8], at: usize) -> Option<u16> {
        let a: [u8; 2] = b.get(at..at + 2)?.try_into().ok()?;
        Some(if self.big {
            u16::from_be_bytes(a)
        } else {
            u16::from_le_bytes(a)
        })
    }

    fn u32(self, b: &[u8], at: usize) -> Option<u32> {
        let a: [u8; 4] = b.get(at..at + 4)?.try_into().ok()?;
        Some(if self.big {
            u32::from_be_bytes(a)
        } else {
            u32::from_le_bytes(a)
        })
    }

    fn i64(self, b: &[u8], at: usize) -> Option<i64> {
        let a: [u8; 8] = b.get(at..at + 8)?.try_into().ok()?;
        Some(if self.big {
            i64::from_be_bytes(a)
        } else {
            i64::from_le_bytes(a)
        })
    }
}

/// How a pcapng interface's timestamp units become nanoseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TsScale {
    /// Units of 10^-n s with n ≤ 9: multiply.
    Mul(u64),
    /// Units of 10^-n s with n > 9: divide.
    Div(u128),
    /// Units of 2^-n s.
    Pow2(u32),
}

impl TsScale {
    fn from_tsresol(r: u8) -> TsScale {
        let n = u32::from(r & 0x7f);
        if r & 0x80 != 0 {
            TsScale::Pow2(n)
        } else if n <= 9 {
            TsScale::Mul(10u64.pow(9 - n))
        } else {
            // 10^38 is the largest power of ten in a u128; anything finer rounds to 0.
            TsScale::Div(10u128.checked_pow(n - 9).unwrap_or(u128::MAX))
        }
    }

    fn to_ns(self, units: u64) -> i64 {
        let ns: u128 = match self {
            TsScale::Mul(m) => u128::from(units) * u128::from(m),
            TsScale::Div(d) => u128::from(units) / d,
            TsScale::Pow2(n) => (u128::from(units) * 1_000_000_000) >> n.min(127),
        };
        i64::try_from(ns).unwrap_or(i64::MAX)
    }
}

#[derive(Debug, Clone, Copy)]
struct Interface {
    linktype: LinkType,
    scale: TsScale,
    offset_ns: i64,
}

enum State {
    Pcap {
        endian: Endian,
        nanos: bool,
        linktype: LinkType,
    },
    Pcapng {
        endian: Endian,
        interfaces: Vec<Interface>,
        /// Simple packet blocks carry no time: they get the last time seen.
        last_ts: i64,
    },
}

/// Where the frame that [`CaptureReader::next_frame`] returns sits in the buffer.
struct Found {
    ts_ns: i64,
    linktype: LinkType,
    interface: u32,
    start: usize,
    len: usize,
    orig_len: u32,
    /// Bytes to consume once the frame has been handed out.
    record_len: usize,
}

/// Reads frames from a pcap or pcapng stream.
pub struct CaptureReader<R> {
    buf: Buf<R>,
    state: State,
    format: Format,
    /// Bytes of the previous record still to be consumed.
    pending: usize,
    done: bool,
    truncated: bool,
    warnings: Vec<String>,
    warnings_dropped: u64,
    /// pcapng blocks that framed correctly but whose contents were unusable.
    bad_blocks: u64,
}

fn hex_preview(bytes: &[u8]) -> String {
    if bytes.is_empty() {
        return "no bytes at all (the file is empty)".to_string();
    }
    let hex: Vec<String> = bytes.iter().map(|b| format!("{b:02x}")).collect();
    let ascii: String = bytes
        .iter()
        .map(|&b| {
            if b.is_ascii_graphic() || b == b' ' {
                b as char
            } else {
                '.'
            }
        })
        .collect();
    format!("{} (\"{ascii}\")", hex.join(" "))
}

fn not_a_capture(first: &[u8]) -> CaptureError {
    let hint = match first {
        [0x1f, 0x8b, ..] => " (looks like gzip: decompress it first)",
        [0x28, 0xb5, 0x2f, 0xfd, ..] => " (looks like zstd: decompress it first)",
        [b'B', b'Z', b'h', ..] => " (looks like bzip2: decompress it first)",
        [0xfd, b'7', b'z', b'X', ..] => " (looks like xz: decompress it first)",
        [b'P', b'K', 3, 4, ..] => " (looks like a zip archive: extract it first)",
        [0x7f, b'E', b'L', b'F', ..] => " (looks like an executable)",
        [0x34, 0xcd, 0xb2, 0xa1, ..] | [0xa1, 0xb2, 0xcd, 0x34, ..] => {
            " (a Kuznetzov-modified pcap: convert it with `editcap -F pcap`)"
        }
        [b'{', ..] | [b'[', ..] => " (looks like JSON text)",
        b if !b.is_empty()
            && b.iter()
                .all(|c| c.is_ascii_graphic() || c.is_ascii_whitespace()) =>
        {
            " (looks like text)"
        }
        _ => "",
    };
    CaptureError::NotACapture {
        first_bytes: hex_preview(first),
        hint,
    }
}

impl<R: Read> CaptureReader<R> {
    /// Reads the file header and prepares to stream frames.
    ///
    /// # Errors
    /// When the input is not pcap or pcapng, its header is cut short or corrupt, a pcap
    /// header names an unsupported link type or version, or reading fails.
    pub fn new(inner: R) -> Result<Self, CaptureError> {
        Self::with_capacity(inner, DEFAULT_CAPACITY)
    }

    /// Like [`CaptureReader::new`] with a chosen buffer size in bytes.
    ///
    /// # Errors
    /// As [`CaptureReader::new`].
    pub fn with_capacity(inner: R, capacity: usize) -> Result<Self, CaptureError> {
        let mut buf = Buf::new(inner, capacity);
        buf.fill(16)?;
        if buf.bytes().is_empty() {
            return Err(CaptureError::Empty);
        }
        let Some(magic4) = buf
            .bytes()
            .get(..4)
            .and_then(|b| <[u8; 4]>::try_from(b).ok())
        else {
            return Err(not_a_capture(buf.bytes()));
        };
        let (state, format) = match (u32::from_le_bytes(magic4), u32::from_be_bytes(magic4)) {
            (PCAPNG_SHB, _) => (Self::read_shb(&mut buf)?, Format::Pcapng),
            (PCAP_MAGIC_MICRO, _) => (
                Self::read_pcap_header(&mut buf, false, false)?,
                Format::Pcap,
            ),
            (_, PCAP_MAGIC_MICRO) => (Self::read_pcap_header(&mut buf, true, false)?, Format::Pcap),
            (PCAP_MAGIC_NANO, _) => (Self::read_pcap_header(&mut buf, false, true)?, Format::Pcap),
            (_, PCAP_MAGIC_NANO) => (Self::read_pcap_header(&mut buf, true, true)?, Format::Pcap),
            _ => {
                let first = buf.bytes();
                return Err(not_a_capture(&first[..first.len().min(16)]));
            }
        };
        Ok(CaptureReader {
            buf,
            state,
            format,
            pending: 0,
            done: false,
            truncated: false,
            warnings: Vec::new(),
            warnings_dropped: 0,
            bad_blocks: 0,
        })
    }

    fn read_pcap_header(buf: &mut Buf<R>, big: bool, nanos: bool) -> Result<State, CaptureError> {
        if !buf.fill(PCAP_HEADER_LEN)? {
            return Err(CaptureError::TruncatedHeader {
                len: buf.available(),
                needed: PCAP_HEADER_LEN,
                format: "pcap",
            });
        }
        let endian = Endian { big };
        let h = buf.bytes();
        let (Some(major), Some(minor), Some(link)) =
            (endian.u16(h, 4), endian.u16(h, 6), endian.u32(h, 20))
        else {
            return Err(CaptureError::TruncatedHeader {
                len: h.len(),
                needed: PCAP_HEADER_LEN,
                format: "pcap",
            });
        };
        if major != 2 {
            return Err(CaptureError::UnsupportedVersion {
                format: "pcap",
                major,
                minor,
            });
        }
        // The upper 16 bits carry FCS information, not the link type.
        let linktype = LinkType(link & 0xffff);
        if !linktype.is_supported() {
            return Err(CaptureError::UnsupportedLinkType {
                linktype: linktype.0,
                name: linktype.name(),
            });
        }
        buf.consume(PCAP_HEADER_LEN);
        Ok(State::Pcap {
            endian,
            nanos,
            linktype,
        })
    }

    /// Reads the first section header block (the reader is positioned at it).
    fn read_shb(buf: &mut Buf<R>) -> Result<State, CaptureError> {
        if !buf.fill(PCAPNG_SHB_MIN)? {
            return Err(CaptureError::TruncatedHeader {
                len: buf.available(),
                needed: PCAPNG_SHB_MIN,
                format: "pcapng",
            });
        }
        let endian = shb_endian(buf.bytes())
            .map_err(|rule| CaptureError::CorruptBlock { offset: 0, rule })?;
        let len = endian.u32(buf.bytes(), 4).unwrap_or(0) as usize;
        check_block_len(len, PCAPNG_SHB_MIN)
            .map_err(|rule| CaptureError::CorruptBlock { offset: 0, rule })?;
        if !buf.fill(len)? {
            return Err(CaptureError::TruncatedHeader {
                len: buf.available(),
                needed: len,
                format: "pcapng",
            });
        }
        let major = endian.u16(buf.bytes(), 12).unwrap_or(0);
        let minor = endian.u16(buf.bytes(), 14).unwrap_or(0);
        if major != 1 {
            return Err(CaptureError::UnsupportedVersion {
                format: "pcapng",
                major,
                minor,
            });
        }
        buf.consume(len);
        Ok(State::Pcapng {
            endian,
            interfaces: Vec::new(),
            last_ts: 0,
        })
    }

    /// The container format.
    #[must_use]
    pub fn format(&self) -> Format {
        self.format
    }

    /// What went wrong after the header, in reading order (at most 16, then a count).
    #[must_use]
    pub fn warnings(&self) -> Vec<String> {
        let mut w = self.warnings.clone();
        if self.warnings_dropped > 0 {
            w.push(format!("… and {} more warnings", self.warnings_dropped));
        }
        w
    }

    /// Whether the file ended in the middle of a record or block.
    #[must_use]
    pub fn truncated(&self) -> bool {
        self.truncated
    }

    /// pcapng packet blocks that were framed correctly but unusable (bad interface
    /// number, captured length past the block end); they are skipped.
    #[must_use]
    pub fn bad_blocks(&self) -> u64 {
        self.bad_blocks
    }

    /// Link type of a pcap file, or of each pcapng interface seen so far.
    #[must_use]
    pub fn link_types(&self) -> Vec<LinkType> {
        match &self.state {
            State::Pcap { linktype, .. } => vec![*linktype],
            State::Pcapng { interfaces, .. } => interfaces.iter().map(|i| i.linktype).collect(),
        }
    }

    fn warn(&mut self, msg: String) {
        if self.warnings.len() < MAX_WARNINGS {
            self.warnings.push(msg);
        } else {
            self.warnings_dropped += 1;
        }
    }

    fn stop_truncated(&mut self, what: &str) {
        let at = self.buf.offset();
        let have = self.buf.available();
        self.warn(format!(
            "truncated: the file ends {have} bytes into {what} at byte {at}; the packets \
             before it were read"
        ));
        self.truncated = true;
        self.done = true;
    }

    fn stop_corrupt(&mut self, rule: String) {
        let at = self.buf.offset();
        self.warn(format!(
            "corrupt at byte {at}: {rule}; reading stopped there, the packets before it were \
             read"
        ));
        self.done = true;
    }

    /// The next frame, or `None` at the end of the input (or at the first corruption, see
    /// [`CaptureReader::warnings`]). An I/O error while reading also ends the stream with
    /// a warning.
    pub fn next_frame(&mut self) -> Option<Frame<'_>> {
        self.buf.consume(self.pending);
        self.pending = 0;
        if self.done {
            return None;
        }
        let found = match self.find_next() {
            Ok(Some(f)) => f,
            Ok(None) => {
                self.done = true;
                return None;
            }
            Err(e) => {
                self.warn(format!("read error after byte {}: {e}", self.buf.offset()));
                self.done = true;
                return None;
            }
        };
        self.pending = found.record_len;
        let data = self.buf.bytes().get(found.start..found.start + found.len)?;
        Some(Frame {
            ts_ns: found.ts_ns,
            linktype: found.linktype,
            interface: found.interface,
            data,
            orig_len: found.orig_len,
        })
    }

    fn find_next(&mut self) -> std::io::Result<Option<Found>> {
        match self.state {
            State::Pcap {
                endian,
                nanos,
                linktype,
            } => self.next_pcap(endian, nanos, linktype),
            State::Pcapng { .. } => self.next_pcapng(),
        }
    }

    fn next_pcap(
        &mut self,
        endian: Endian,
        nanos: bool,
        linktype: LinkType,
    ) -> std::io::Result<Option<Found>> {
        if !self.buf.fill(PCAP_RECORD_HEADER_LEN)? {
            if self.buf.available() > 0 {
                self.stop_truncated("a 16-byte packet record header");
            }
            return Ok(None);
        }
        let h = self.buf.bytes();
        let (Some(sec), Some(frac), Some(caplen), Some(orig_len)) = (
            endian.u32(h, 0),
            endian.u32(h, 4),
            endian.u32(h, 8),
            endian.u32(h, 12),
        ) else {
            return Ok(None);
        };
        let caplen = caplen as usize;
        if caplen > MAX_RECORD {
            self.stop_corrupt(format!(
                "a packet record claims {caplen} captured bytes, more than the {MAX_RECORD}-byte \
                 limit for one packet (the file is damaged here)"
            ));
            return Ok(None);
        }
        let record_len = PCAP_RECORD_HEADER_LEN + caplen;
        if !self.buf.fill(record_len)? {
            self.stop_truncated("a packet record");
            return Ok(None);
        }
        let frac_ns = if nanos {
            i64::from(frac)
        } else {
            i64::from(frac) * 1_000
        };
        Ok(Some(Found {
            ts_ns: i64::from(sec) * 1_000_000_000 + frac_ns,
            linktype,
            interface: 0,
            start: PCAP_RECORD_HEADER_LEN,
            len: caplen,
            orig_len,
            record_len,
        }))
    }

    fn next_pcapng(&mut self) -> std::io::Result<Option<Found>> {
        loop {
            let State::Pcapng { endian, .. } = self.state else {
                return Ok(None);
            };
            if !self.buf.fill(PCAPNG_BLOCK_HEAD)? {
                if self.buf.available() > 0 {
                    self.stop_truncated("a pcapng block header");
                }
                return Ok(None);
            }
            let h = self.buf.bytes();
            let block_type = endian.u32(h, 0).unwrap_or(0);
            let endian = if block_type == PCAPNG_SHB {
                // A new section may switch byte order.
                if !self.buf.fill(12)? {
                    self.stop_truncated("a section header block");
                    return Ok(None);
                }
                match shb_endian(self.buf.bytes()) {
                    Ok(e) => e,
                    Err(rule) => {
                        self.stop_corrupt(rule);
                        return Ok(None);
                    }
                }
            } else {
                endian
            };
            let len = endian.u32(self.buf.bytes(), 4).unwrap_or(0) as usize;
            if let Err(rule) = check_block_len(len, PCAPNG_MIN_BLOCK) {
                self.stop_corrupt(rule);
                return Ok(None);
            }
            let is_packet = matches!(block_type, PCAPNG_EPB | PCAPNG_SPB | PCAPNG_OPB);
            let is_needed = is_packet || matches!(block_type, PCAPNG_SHB | PCAPNG_IDB);
            if !is_needed {
                // Unknown, statistics, name resolution, custom… blocks: skip unread.
                if !self.buf.skip(len as u64)? {
                    self.stop_truncated("a pcapng block");
                }
                continue;
            }
            if len > MAX_RECORD {
                self.stop_corrupt(format!(
                    "a block of type {block_type} claims {len} bytes, more than the \
                     {MAX_RECORD}-byte limit"
                ));
                return Ok(None);
            }
            if !self.buf.fill(len)? {
                self.stop_truncated("a pcapng block");
                return Ok(None);
            }
            let block = &self.buf.bytes()[..len];
            if endian.u32(block, len - 4) != Some(len as u32) {
                self.stop_corrupt(format!(
                    "block length {len} at the start of a block does not match the copy at \
                     its end; pcapng repeats every block's length after its body"
                ));
                return Ok(None);
            }
            match block_type {
                PCAPNG_SHB => {
                    let major = endian.u16(block, 12).unwrap_or(0);
                    if major != 1 {
                        self.stop_corrupt(format!(
                            "a section header of pcapng version {major}; only 1.x is defined"
                        ));
                        return Ok(None);
                    }
                    self.state = State::Pcapng {
                        endian,
                        interfaces: Vec::new(),
                        last_ts: 0,
                    };
                    self.buf.consume(len);
                }
                PCAPNG_IDB => {
                    let iface = parse_idb(endian, block);
                    let State::Pcapng { interfaces, .. } = &mut self.state else {
                        return Ok(None);
                    };
                    interfaces.push(iface);
                    let index = interfaces.len() - 1;
                    if !iface.linktype.is_supported() {
                        self.warn(format!(
                            "interface {index} has unsupported link type {}: its packets are \
                             skipped",
                            iface.linktype
                        ));
                    }
                    self.buf.consume(len);
                }
                _ => match self.packet_block(endian, block_type, len) {
                    Some(found) => return Ok(Some(found)),
                    None => {
                        self.bad_blocks += 1;
                        self.buf.consume(len);
                    }
                },
            }
        }
    }

    /// The frame inside an EPB, SPB or OPB of `len` bytes that is fully buffered, or
    /// `None` (with a warning) when the block is unusable.
    fn packet_block(&mut self, endian: Endian, block_type: u32, len: usize) -> Option<Found> {
        let located = self
            .buf
            .bytes()
            .get(..len)
            .ok_or_else(|| "block not buffered".to_string())
            .and_then(|block| locate_packet(endian, block_type, block));
        let (interface, units, start, caplen, orig_len) = match located {
            Ok(l) => l,
            Err(why) => {
                let at = self.buf.offset();
                self.warn(format!("packet block at byte {at} skipped: {why}"));
                return None;
            }
        };
        let State::Pcapng {
            interfaces,
            last_ts,
            ..
        } = &mut self.state
        else {
            return None;
        };
        let Some(iface) = interfaces.get(interface as usize).copied() else {
            let known = interfaces.len();
            let at = self.buf.offset();
            self.warn(format!(
                "packet block at byte {at} skipped: it names interface {interface}, but only \
                 {known} interface description blocks came before it"
            ));
            return None;
        };
        let ts_ns = match units {
            Some(u) => iface.scale.to_ns(u).saturating_add(iface.offset_ns),
            None => *last_ts,
        };
        *last_ts = ts_ns;
        Some(Found {
            ts_ns,
            linktype: iface.linktype,
            interface,
            start,
            len: caplen,
            orig_len,
            record_len: len,
        })
    }
}

/// Interface, timestamp units, data start, captured and original length of a packet
/// block, checked against the block's own length.
fn locate_packet(
    endian: Endian,
    block_type: u32,
    block: &[u8],
) -> Result<(u32, Option<u64>, usize, usize, u32), String> {
    const CUT: &str = "block too short for its fixed fields";
    let body_end = block.len().saturating_sub(4);
    let field = |at: usize| endian.u32(block, at).ok_or_else(|| CUT.to_string());
    let (interface, units, start, caplen, orig_len) = match block_type {
        PCAPNG_EPB | PCAPNG_OPB => {
            let interface = if block_type == PCAPNG_EPB {
                field(8)?
            } else {
                u32::from(endian.u16(block, 8).ok_or_else(|| CUT.to_string())?)
            };
            let ts = (u64::from(field(12)?) << 32) | u64::from(field(16)?);
            (interface, Some(ts), 28, field(20)? as usize, field(24)?)
        }
        _ => {
            // Simple packet block: interface 0, no timestamp, captured length implied.
            let orig = field(8)?;
            let room = body_end.saturating_sub(12);
            (0, None, 12, (orig as usize).min(room), orig)
        }
    };
    if start + caplen > body_end {
        return Err(format!(
            "it claims {caplen} captured bytes but has room for {}",
            body_end.saturating_sub(start)
        ));
    }
    Ok((interface, units, start, caplen, orig_len))
}

/// Byte order of a section, from the magic at offset 8 of its header block.
fn shb_endian(b: &[u8]) -> Result<Endian, String> {
    let magic: [u8; 4] = b
        .get(8..12)
        .and_then(|m| m.try_into().ok())
        .ok_or_else(|| "section header block cut short".to_string())?;
    if u32::from_le_bytes(magic) == PCAPNG_BYTE_ORDER_MAGIC {
        Ok(Endian { big: false })
    } else if u32::from_be_bytes(magic) == PCAPNG_BYTE_ORDER_MAGIC {
        Ok(Endian { big: true })
    } else {
        Err(format!(
            "the section header's byte-order magic is {}, not 1a2b3c4d in either byte order",
            hex_preview(&magic)
        ))
    }
}

fn check_block_len(len: usize, min: usize) -> Result<(), String> {
    if len < min {
        Err(format!(
            "block length {len} is below the {min} bytes every block of this type needs"
        ))
    } else if !len.is_multiple_of(4) {
        Err(format!("block length {len} is not a multiple of 4"))
    } else {
        Ok(())
    }
}

/// Link type, timestamp resolution and offset of an interface description block.
fn parse_idb(endian: Endian, block: &[u8]) -> Interface {
    let linktype = LinkType(u32::from(endian.u16(block, 8).unwrap_or(u16::MAX)));
    let mut iface = Interface {
        linktype,
        scale: TsScale::Mul(1_000),
        offset_ns: 0,
    };
    // Options start after type, length, link type, reserved, snaplen; end before the
    // trailing length.
    let end = block.len().saturating_sub(4);
    let mut at = 16;
    while at + 4 <= end {
        let (Some(code), Some(olen)) = (endian.u16(block, at), endian.u16(block, at + 2)) else {
            break;
        };
        let olen = usize::from(olen);
        let value = block.get(at + 4..(at + 4 + olen).min(end)).unwrap_or(&[]);
        match code {
            OPT_END => break,
            OPT_IF_TSRESOL => {
                if let Some(&r) = value.first() {
                    iface.scale = TsScale::from_tsresol(r);
                }
            }
            OPT_IF_TSOFFSET => {
                if let Some(s) = endian.i64(value, 0) {
                    iface.offset_ns = s.saturating_mul(1_000_000_000);
                }
            }
            _ => {}
        }
        at += 4 + olen.div_ceil(4) * 4;
    }
    iface
}

#[cfg(test)]
mod tests;
