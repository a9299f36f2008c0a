//! Writing classic pcap files (nanosecond timestamps) for the evidence bundle.
//!
//! Design: the reader can hand out each frame as it was captured ([`RawPacket`]); the
//! writer copies it byte for byte when the file's link type is the frame's own, so the
//! evidence is exactly what was captured. When frames of several link types must share one
//! file (several inputs, or a pcapng with mixed interfaces), create the writer with
//! [`LinkType::RAW`]: every frame is then re-encoded as its bare IP packet, which every
//! tool opens.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use super::decode::ip_packet;
use super::error::CaptureError;
use super::link::LinkType;
use super::source::RawPacket;

/// Magic number of a pcap file with nanosecond timestamps.
const PCAP_MAGIC_NANO: u32 = 0xa1b2_3c4d;
/// Wireshark refuses packets larger than this in most link types; longer frames are cut
/// (their original length is kept).
pub const WRITE_SNAPLEN: u32 = 262_144;

/// Writes frames into a classic pcap file of one link type.
pub struct PcapWriter<W: Write> {
    out: W,
    linktype: LinkType,
    written: u64,
}

impl PcapWriter<BufWriter<File>> {
    /// Creates (or truncates) `path` and writes the file header. A new file is readable by
    /// its owner only (0600): captures hold full headers, cookies and tokens included.
    ///
    /// # Errors
    /// When the file cannot be created or written (the error names `path`).
    pub fn create(path: &Path, linktype: LinkType) -> Result<Self, CaptureError> {
        let file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(path)
            .map_err(|e| CaptureError::from(e).in_file(path))?;
        PcapWriter::new(BufWriter::with_capacity(1 << 16, file), linktype)
            .map_err(|e| e.in_file(path))
    }
}

impl<W: Write> PcapWriter<W> {
    /// Writes the file header to `out`.
    ///
    /// # Errors
    /// When writing fails.
    pub fn new(mut out: W, linktype: LinkType) -> Result<Self, CaptureError> {
        let mut h = [0u8; 24];
        h[0..4].copy_from_slice(&PCAP_MAGIC_NANO.to_le_bytes());
        h[4..6].copy_from_slice(&2u16.to_le_bytes());
        h[6..8].copy_from_slice(&4u16.to_le_bytes());
        // thiszone and sigfigs stay 0.
        h[16..20].copy_from_slice(&WRITE_SNAPLEN.to_le_bytes());
        h[20..24].copy_from_slice(&linktype.0.to_le_bytes());
        out.write_all(&h)?;
        Ok(PcapWriter {
            out,
            linktype,
            written: 0,
        })
    }

    /// The link type of the file.
    #[must_use]
    pub fn linktype(&self) -> LinkType {
        self.linktype
    }

    /// Packets written so far.
    #[must_use]
    pub fn written(&self) -> u64 {
        self.written
    }

    /// Writes one packet: byte for byte when its link type is the file's, as its bare IP
    /// packet when the file is [`LinkType::RAW`].
    ///
    /// # Errors
    /// [`CaptureError::LinkTypeMismatch`] when the frame can be neither copied nor
    /// re-encoded (another link type into a non-RAW file, or a frame without an IP
    /// packet into a RAW file); an I/O error when writing fails.
    pub fn write(&mut self, p: &RawPacket) -> Result<(), CaptureError> {
        self.write_frame(p.ts_ns, p.linktype, &p.data, p.orig_len)
    }

    /// [`PcapWriter::write`] from borrowed parts.
    ///
    /// # Errors
    /// As [`PcapWriter::write`].
    pub fn write_frame(
        &mut self,
        ts_ns: i64,
        linktype: LinkType,
        data: &[u8],
        orig_len: u32,
    ) -> Result<(), CaptureError> {
        let (bytes, orig_len) = frame_bytes(self.linktype, linktype, data, orig_len)?;
        let caplen = bytes.len().min(WRITE_SNAPLEN as usize);
        let sec = ts_ns.div_euclid(1_000_000_000);
        let nsec = ts_ns.rem_euclid(1_000_000_000) as u32;
        let mut h = [0u8; 16];
        h[0..4].copy_from_slice(&u32::try_from(sec).unwrap_or(0).to_le_bytes());
        h[4..8].copy_from_slice(&nsec.to_le_bytes());
        h[8..12].copy_from_slice(&(caplen as u32).to_le_bytes());
        h[12..16].copy_from_slice(&orig_len.max(caplen as u32).to_le_bytes());
        self.out.write_all(&h)?;
        self.out.write_all(&bytes[..caplen])?;
        self.written += 1;
        Ok(())
    }

    /// The underlying writer.
    #[must_use]
    pub fn get_ref(&self) -> &W {
        &self.out
    }

    /// Hands everything written so far to the underlying writer's destination (whole
    /// records only: each record is written in one piece before this can run).
    ///
    /// # Errors
    /// When flushing fails.
    pub fn flush(&mut self) -> Result<(), CaptureError> {
        Ok(self.out.flush()?)
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

/// A frame's bytes and original length as a file of link type `file` holds them: as
/// captured when the link types agree, its bare IP packet when the file is
/// [`LinkType::RAW`].
///
/// # Errors
/// [`CaptureError::LinkTypeMismatch`] when the frame can be neither copied nor re-encoded.
pub(super) fn frame_bytes(
    file: LinkType,
    linktype: LinkType,
    data: &[u8],
    orig_len: u32,
) -> Result<(&[u8], u32), CaptureError> {
    if linktype == file {
        Ok((data, orig_len))
    } else if file == LinkType::RAW {
        let ip = ip_packet(linktype, data).ok_or(CaptureError::LinkTypeMismatch {
            file: LinkType::RAW.name(),
            packet: "non-IP",
        })?;
        let header = (data.len() - ip.len()) as u32;
        Ok((ip, orig_len.saturating_sub(header)))
    } else {
        Err(CaptureError::LinkTypeMismatch {
            file: file.name(),
            packet: linktype.name(),
        })
    }
}
