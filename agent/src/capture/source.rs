//! One capture file → TCP segments, with the counts of what was skipped.

use std::io::Read;

use serde::Serialize;

use super::decode::{decode_frame, Skip};
use super::link::LinkType;
use super::reader::{CaptureReader, Format, Frame};
use crate::segment::Segment;

/// A frame copied out of the capture, kept with its framing so it can be written back
/// byte for byte (see [`super::PcapWriter`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawPacket {
    /// Capture time in nanoseconds since the Unix epoch.
    pub ts_ns: i64,
    /// Framing of `data`.
    pub linktype: LinkType,
    /// The captured bytes.
    pub data: Vec<u8>,
    /// Length of the frame on the wire.
    pub orig_len: u32,
}

impl From<&Frame<'_>> for RawPacket {
    fn from(f: &Frame<'_>) -> Self {
        RawPacket {
            ts_ns: f.ts_ns,
            linktype: f.linktype,
            data: f.data.to_vec(),
            orig_len: f.orig_len,
        }
    }
}

/// What was read from one file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct FileStats {
    /// The file's name as given.
    pub path: String,
    /// "pcap" or "pcapng".
    pub format: &'static str,
    /// Frames read.
    pub packets: u64,
    /// Frames that became a [`Segment`].
    pub tcp_segments: u64,
    /// Well-formed frames of other protocols (ARP, UDP, ICMP, …), skipped.
    pub non_tcp: u64,
    /// Non-first IP fragments, skipped.
    pub fragments: u64,
    /// Frames or blocks whose headers were malformed or cut short, or whose interface
    /// has an unsupported link type, skipped.
    pub undecodable: u64,
    /// The file ended inside a record: the results are partial.
    pub truncated: bool,
    /// What went wrong after the header, in reading order.
    pub warnings: Vec<String>,
}

/// What was read from all files of one run.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct CaptureStats {
    pub packets: u64,
    pub tcp_segments: u64,
    pub non_tcp: u64,
    pub fragments: u64,
    pub undecodable: u64,
    /// Whether any file was truncated.
    pub truncated: bool,
    pub files: Vec<FileStats>,
}

impl CaptureStats {
    /// Sums per-file statistics.
    #[must_use]
    pub fn from_files(files: Vec<FileStats>) -> Self {
        let mut s = CaptureStats::default();
        for f in &files {
            s.packets += f.packets;
            s.tcp_segments += f.tcp_segments;
            s.non_tcp += f.non_tcp;
            s.fragments += f.fragments;
            s.undecodable += f.undecodable;
            s.truncated |= f.truncated;
        }
        s.files = files;
        s
    }
}

/// Reads one capture and decodes its TCP segments, counting everything it skips.
pub struct FileSource<R> {
    reader: CaptureReader<R>,
    stats: FileStats,
}

impl<R: Read> FileSource<R> {
    /// Wraps a reader; `name` appears in the statistics.
    #[must_use]
    pub fn new(reader: CaptureReader<R>, name: String) -> Self {
        let stats = FileStats {
            path: name,
            format: reader.format().name(),
            ..FileStats::default()
        };
        FileSource { reader, stats }
    }

    /// The next TCP segment.
    pub fn next_segment(&mut self) -> Option<Segment> {
        self.next_with(|frame, view| view.to_segment(frame.ts_ns))
    }

    /// The next TCP segment with a copy of the frame it came from.
    pub fn next_with_frame(&mut self) -> Option<(Segment, RawPacket)> {
        self.next_with(|frame, view| (view.to_segment(frame.ts_ns), RawPacket::from(frame)))
    }

    fn next_with<T>(
        &mut self,
        make: impl Fn(&Frame<'_>, &super::decode::TcpView<'_>) -> T,
    ) -> Option<T> {
        loop {
            let frame = self.reader.next_frame()?;
            self.stats.packets += 1;
            match decode_frame(frame.linktype, frame.data, frame.orig_len) {
                Ok(view) => {
                    self.stats.tcp_segments += 1;
                    return Some(make(&frame, &view));
                }
                Err(Skip::NotTcp) => self.stats.non_tcp += 1,
                Err(Skip::Fragment) => self.stats.fragments += 1,
                Err(Skip::Malformed(_) | Skip::UnsupportedLinkType) => {
                    self.stats.undecodable += 1;
                }
            }
        }
    }

    /// Frames read so far: the number (from 1) of the frame the latest segment came from.
    #[must_use]
    pub fn packets_read(&self) -> u64 {
        self.stats.packets
    }

    /// The statistics so far (final once the source returned `None`).
    #[must_use]
    pub fn stats(&self) -> FileStats {
        let mut s = self.stats.clone();
        s.truncated = self.reader.truncated();
        s.undecodable += self.reader.bad_blocks();
        s.warnings = self.reader.warnings();
        s
    }

    /// Link types seen so far (see [`CaptureReader::link_types`]).
    #[must_use]
    pub fn link_types(&self) -> Vec<LinkType> {
        self.reader.link_types()
    }

    /// The container format of the file.
    #[must_use]
    pub fn format(&self) -> Format {
        self.reader.format()
    }
}
