//! The input layer: capture files → time-ordered [`Segment`]s, and the evidence pcap
//! writer.
//!
//! ```text
//! file ─► reader (pcap / pcapng, streaming) ─► Frame ─► decode (link → IP → TCP) ─► Segment
//!                                             reorder each file, merge by time ─┘
//! ```
//!
//! - [`open_many`] reads any number of pcap / pcapng files and yields their TCP segments
//!   merged by timestamp; [`Merged::stats`] counts what was read and skipped.
//! - [`open_many_with_frames`] yields each segment with a copy of its frame, for writing
//!   the evidence pcap of chosen connections with [`PcapWriter`].
//! - Decoding is pure functions over `&[u8]` ([`decode_frame`]); checksums are never
//!   checked (offload makes them wrong in real captures).
//! - Problems after a file's header (cut short, corrupt block) end that file early with a
//!   warning in [`FileStats::warnings`]; only unreadable headers are errors.

mod buf;
mod decode;
mod dedup;
mod error;
mod link;
mod merge;
mod ng_writer;
mod reader;
mod reorder;
mod source;
mod tcp;
mod writer;

use std::fs::File;
use std::io::Read;
use std::path::Path;

pub use decode::{decode_frame, ip_packet, Skip, TcpView};
pub use dedup::{Dedup, DEFAULT_DEDUP_WINDOW_NS};
pub use error::CaptureError;
pub use link::LinkType;
pub use merge::{Merged, Timestamped};
pub use ng_writer::PcapngWriter;
pub use reader::{CaptureReader, Format, Frame};
pub use source::{CaptureStats, FileSource, FileStats, RawPacket};
pub use writer::{PcapWriter, WRITE_SNAPLEN};

use crate::segment::Segment;

/// Time-ordered TCP segments from several files.
pub type SegmentStream = Merged<File, Segment>;
/// Time-ordered TCP segments, each with the frame it came from.
pub type FrameStream = Merged<File, (Segment, RawPacket)>;

fn open_sources<P: AsRef<Path>>(paths: &[P]) -> Result<Vec<FileSource<File>>, CaptureError> {
    paths
        .iter()
        .map(|p| {
            let path = p.as_ref();
            let file = File::open(path).map_err(|e| CaptureError::from(e).in_file(path))?;
            let reader = CaptureReader::new(file).map_err(|e| e.in_file(path))?;
            Ok(FileSource::new(reader, path.display().to_string()))
        })
        .collect()
}

/// Opens capture files and merges their TCP segments by timestamp.
///
/// # Errors
/// When a file cannot be opened or its header is not pcap / pcapng (the error names the
/// file). Problems later in a file are warnings in [`Merged::stats`].
pub fn open_many<P: AsRef<Path>>(paths: &[P]) -> Result<SegmentStream, CaptureError> {
    Ok(Merged::new(open_sources(paths)?, FileSource::next_segment))
}

/// Like [`open_many`], but each segment comes with a copy of its frame (for
/// [`PcapWriter`]). Costs one more allocation per packet.
///
/// # Errors
/// As [`open_many`].
pub fn open_many_with_frames<P: AsRef<Path>>(paths: &[P]) -> Result<FrameStream, CaptureError> {
    Ok(Merged::new(
        open_sources(paths)?,
        FileSource::next_with_frame,
    ))
}

/// Writes the frames of `inputs` whose segment `keep` accepts into a new pcap at `out`,
/// in time order; returns how many were written.
///
/// The file keeps the captured frames byte for byte when every input is a pcap of one
/// link type; otherwise (several link types, or any pcapng, whose interfaces may differ)
/// it is raw IP ([`LinkType::RAW`]). Either way it opens in Wireshark and tshark.
///
/// # Errors
/// When an input cannot be opened (see [`open_many`]) or `out` cannot be written.
pub fn write_evidence<P: AsRef<Path>>(
    inputs: &[P],
    out: &Path,
    mut keep: impl FnMut(&Segment) -> bool,
) -> Result<u64, CaptureError> {
    let stream = open_many_with_frames(inputs)?;
    let mut linktypes = stream.link_types_if_fixed();
    linktypes.dedup();
    let linktype = match linktypes.as_slice() {
        [one] => *one,
        _ => LinkType::RAW,
    };
    let mut writer = PcapWriter::create(out, linktype)?;
    for (segment, raw) in stream {
        if keep(&segment) {
            writer.write(&raw).map_err(|e| e.in_file(out))?;
        }
    }
    let written = writer.written();
    writer.finish().map_err(|e| e.in_file(out))?;
    Ok(written)
}

/// Reads TCP segments from an in-memory or streamed capture (`name` is used in the
/// statistics).
///
/// # Errors
/// When the header is not pcap / pcapng.
pub fn segments_from_reader<R: Read>(
    reader: R,
    name: &str,
) -> Result<Merged<R, Segment>, CaptureError> {
    let source = FileSource::new(CaptureReader::new(reader)?, name.to_string());
    Ok(Merged::new(vec![source], FileSource::next_segment))
}
