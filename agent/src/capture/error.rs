//! Why a capture file could not be read.

use std::path::PathBuf;

/// An error that stops a capture file from being read at all.
///
/// Problems found *after* the header (a file cut short, a corrupt block in the middle) are
/// not errors: the packets before them are delivered and the problem is recorded as a
/// warning in [`super::FileStats::warnings`].
#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    /// The operating system refused to open, read or write a file or stream. Its message
    /// is this error's own (not repeated as a source).
    #[error(transparent)]
    Io(#[from] std::io::Error),

    /// Another error, with the file it happened in (when several files are read at once).
    #[error("{}: {cause}", path.display())]
    InFile {
        /// The file the error is about.
        path: PathBuf,
        /// What went wrong in it.
        cause: Box<CaptureError>,
    },

    /// The file holds no bytes at all.
    #[error(
        "the file is empty (0 bytes): not even a capture header; was the capture stopped \
         before it wrote anything?"
    )]
    Empty,

    /// The first bytes are neither a pcap nor a pcapng magic number.
    #[error(
        "not a capture file: it starts with {first_bytes}{hint}; a pcap file starts with \
         d4 c3 b2 a1 or a1 b2 c3 d4 (microseconds) or 4d 3c b2 a1 or a1 b2 3c 4d \
         (nanoseconds), a pcapng file with 0a 0d 0d 0a"
    )]
    NotACapture {
        /// The first bytes in hex, with their ASCII reading where printable.
        first_bytes: String,
        /// What the bytes look like instead, e.g. " (looks like gzip: decompress it first)".
        hint: &'static str,
    },

    /// The file ends before its file header (24 bytes for pcap, one section header block
    /// for pcapng) is complete.
    #[error(
        "truncated capture header: the file has {len} bytes but its {format} header needs \
         {needed}"
    )]
    TruncatedHeader {
        /// Bytes available.
        len: usize,
        /// Bytes the header needs.
        needed: usize,
        /// "pcap" or "pcapng".
        format: &'static str,
    },

    /// The file header names a format version this reader does not know.
    #[error(
        "unsupported {format} version {major}.{minor}: tracer reads pcap 2.x and pcapng 1.x \
         (convert with `editcap -F pcap`)"
    )]
    UnsupportedVersion {
        /// "pcap" or "pcapng".
        format: &'static str,
        /// Major version from the file header.
        major: u16,
        /// Minor version from the file header.
        minor: u16,
    },

    /// A pcapng block length breaks the format's rules before any packet was read
    /// (at least 12 bytes, a multiple of 4, repeated identically at the block's end).
    #[error("corrupt pcapng block at byte {offset}: {rule}")]
    CorruptBlock {
        /// Byte offset of the block in the file.
        offset: u64,
        /// The rule that was broken, in words.
        rule: String,
    },

    /// The capture's link type names a framing this reader cannot take apart.
    #[error(
        "unsupported link type {linktype} ({name}): tracer decodes Ethernet (1), Linux \
         cooked SLL (113) and SLL2 (276), raw IP (101, 12, 14, 228, 229) and BSD loopback \
         (0, 108); re-capture on an interface with one of those (`-i any` gives Linux \
         cooked SLL). `editcap -T` would only relabel the frames, not convert them"
    )]
    UnsupportedLinkType {
        /// The LINKTYPE_ number from the file.
        linktype: u32,
        /// Its registered name, or "unknown".
        name: &'static str,
    },

    /// A frame was offered to a [`super::PcapWriter`] of another link type.
    #[error(
        "cannot write a {packet} frame into a pcap file of link type {file}: one pcap \
         file has one link type; write raw IP (LinkType::RAW) to mix sources"
    )]
    LinkTypeMismatch {
        /// Link type of the file being written.
        file: &'static str,
        /// Link type of the frame offered.
        packet: &'static str,
    },
}

impl CaptureError {
    /// Names the file an error happened in.
    #[must_use]
    pub fn in_file(self, path: &std::path::Path) -> Self {
        CaptureError::InFile {
            path: path.to_path_buf(),
            cause: Box::new(self),
        }
    }
}
