//! HTTP/2 on one connection: frames from both directions, header blocks decoded with the
//! connection's HPACK state, each stream an exchange ([`HttpEvent`]s like HTTP/1.x's).
//!
//! Status codes live in HEADERS frames, HPACK-encoded (RFC 7541): a `:status` the static
//! table lacks (502 is one) is sent as a literal and usually added to the dynamic table, so
//! the next 502 on the connection is one byte that only the connection's table resolves.
//! Every header block of a direction must therefore be decoded, in order; a block that was
//! not seen whole (its bytes cut by the copy, or a frame header lost) ends decoding in that
//! direction for good ([`H2Conn::errors`] counts it), rather than guess from a stale table.
//!
//! Input is what a copy holds: the first bytes of a write or read and the count of the bytes
//! after them (`missing_after`), as for [`super::HttpConn::bytes`]. Payloads that are not
//! header blocks (DATA, most frames) may fall in the missing bytes: only their lengths
//! matter.

use std::collections::HashMap;

use super::{HttpEvent, RequestHead, ResponseHead};

/// The client connection preface (RFC 9113 §3.4).
pub const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// Frame header length.
const FRAME_HEADER: usize = 9;
/// A header block larger than this is not collected (the probe copies message heads).
const MAX_BLOCK: usize = 64 * 1024;

/// Frame types (RFC 9113 §6).
mod frame {
    pub const DATA: u8 = 0x0;
    pub const HEADERS: u8 = 0x1;
    pub const RST_STREAM: u8 = 0x3;
    pub const SETTINGS: u8 = 0x4;
    pub const PUSH_PROMISE: u8 = 0x5;
    pub const CONTINUATION: u8 = 0x9;
}

/// Frame flags.
mod flag {
    pub const END_STREAM: u8 = 0x1;
    pub const ACK: u8 = 0x1;
    pub const END_HEADERS: u8 = 0x4;
    pub const PADDED: u8 = 0x8;
    pub const PRIORITY: u8 = 0x20;
}

/// `SETTINGS_HEADER_TABLE_SIZE`.
const SETTINGS_HEADER_TABLE_SIZE: u16 = 0x1;

/// Whether the first plaintext of a connection is HTTP/2: the client's preface, or (from
/// the server) a SETTINGS frame on stream 0, which a server must send first.
pub fn starts_h2(from_client: bool, data: &[u8]) -> bool {
    if from_client {
        data.starts_with(PREFACE)
    } else {
        data.len() >= FRAME_HEADER
            && data[3] == frame::SETTINGS
            && data[5..9] == [0, 0, 0, 0]
            && u32::from_be_bytes([0, data[0], data[1], data[2]]).is_multiple_of(6)
    }
}

/// One frame's header (RFC 9113 §4.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHead {
    pub len: u32,
    pub kind: u8,
    pub flags: u8,
    pub stream: u32,
}

impl FrameHead {
    /// Reads a frame header from its 9 bytes.
    #[must_use]
    pub fn parse(b: &[u8; FRAME_HEADER]) -> Self {
        Self {
            len: u32::from_be_bytes([0, b[0], b[1], b[2]]),
            kind: b[3],
            flags: b[4],
            stream: u32::from_be_bytes([b[5], b[6], b[7], b[8]]) & 0x7fff_ffff,
        }
    }
}

/// The header block fragment of a HEADERS frame's payload: without padding and priority.
pub fn headers_fragment(flags: u8, payload: &[u8]) -> Option<&[u8]> {
    let mut p = payload;
    let mut pad = 0usize;
    if flags & flag::PADDED != 0 {
        pad = usize::from(*p.first()?);
        p = &p[1..];
    }
    if flags & flag::PRIORITY != 0 {
        p = p.get(5..)?;
    }
    p.get(..p.len().checked_sub(pad)?)
}

/// What one direction is reading.
#[derive(Debug, Default)]
struct Reader {
    /// The client preface is still to come (client direction, before any frame).
    preface_left: usize,
    /// Bytes of a frame header read so far.
    head: Vec<u8>,
    /// The frame whose payload is being read, and the payload bytes still to come.
    cur: Option<(FrameHead, u64)>,
    /// The current frame's payload, when it is collected (HEADERS, CONTINUATION,
    /// SETTINGS, RST_STREAM).
    payload: Vec<u8>,
    /// A header block being assembled across HEADERS and CONTINUATION: its stream, the
    /// HEADERS frame's flags and the fragments so far.
    block: Option<(u32, u8, Vec<u8>)>,
    /// Frame boundaries are lost (a frame header fell in uncopied bytes).
    lost: bool,
}

/// A complete frame as a direction's reader yields it.
enum Piece {
    /// A frame whose payload was collected (or not needed): head and payload.
    Frame(FrameHead, Vec<u8>),
    /// A collected payload was cut short by uncopied bytes.
    Cut(FrameHead),
}

fn collects(kind: u8) -> bool {
    matches!(
        kind,
        frame::HEADERS
            | frame::CONTINUATION
            | frame::SETTINGS
            | frame::RST_STREAM
            | frame::PUSH_PROMISE
    )
}

impl Reader {
    /// Feeds copied bytes, then `missing` uncopied ones; returns the frames completed.
    fn feed(&mut self, mut data: &[u8], mut missing: u64, out: &mut Vec<Piece>) {
        if self.lost {
            return;
        }
        if self.preface_left > 0 {
            let n = self.preface_left.min(data.len());
            self.preface_left -= n;
            data = &data[n..];
            if self.preface_left > 0 {
                let m = usize::try_from(missing)
                    .unwrap_or(usize::MAX)
                    .min(self.preface_left);
                self.preface_left -= m;
                missing -= m as u64;
            }
        }
        while !data.is_empty() {
            match self.cur {
                None => {
                    let need = FRAME_HEADER - self.head.len();
                    let n = need.min(data.len());
                    self.head.extend_from_slice(&data[..n]);
                    data = &data[n..];
                    if self.head.len() == FRAME_HEADER {
                        let mut b = [0u8; FRAME_HEADER];
                        b.copy_from_slice(&self.head);
                        self.head.clear();
                        let h = FrameHead::parse(&b);
                        self.payload.clear();
                        self.cur = Some((h, u64::from(h.len)));
                        self.finish_if_empty(out);
                    }
                }
                Some((h, left)) => {
                    let n = usize::try_from(left).unwrap_or(usize::MAX).min(data.len());
                    if collects(h.kind) && self.payload.len() + n <= MAX_BLOCK {
                        self.payload.extend_from_slice(&data[..n]);
                    }
                    data = &data[n..];
                    self.cur = Some((h, left - n as u64));
                    self.finish_if_empty(out);
                }
            }
        }
        if missing > 0 {
            match self.cur {
                Some((h, left)) if missing <= left => {
                    self.cur = Some((h, left - missing));
                    if collects(h.kind) {
                        // the payload is cut: the frame is known, its content is not
                        self.cur = None;
                        self.payload.clear();
                        if left - missing > 0 {
                            // the rest of the payload is still to come: we cannot follow it
                            self.lost = true;
                        }
                        out.push(Piece::Cut(h));
                    } else {
                        self.finish_if_empty(out);
                    }
                }
                _ => self.lost = true,
            }
        }
    }

    fn finish_if_empty(&mut self, out: &mut Vec<Piece>) {
        if let Some((h, 0)) = self.cur {
            self.cur = None;
            out.push(Piece::Frame(h, std::mem::take(&mut self.payload)));
        }
    }
}

/// One stream's exchange.
#[derive(Debug, Clone, Copy, Default)]
struct Stream {
    index: u32,
    requested: bool,
    responded: bool,
    ended: bool,
}

/// The HTTP/2 state of one connection.
pub struct H2Conn {
    client: Reader,
    server: Reader,
    /// HPACK state of each direction's header blocks.
    client_hpack: loona_hpack::Decoder<'static>,
    server_hpack: loona_hpack::Decoder<'static>,
    /// Header blocks that could not be decoded in each direction (decoding stopped there).
    client_broken: bool,
    server_broken: bool,
    streams: HashMap<u32, Stream>,
    count: u32,
    errors: u64,
}

impl std::fmt::Debug for H2Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("H2Conn")
            .field("streams", &self.streams.len())
            .field("count", &self.count)
            .field("errors", &self.errors)
            .finish_non_exhaustive()
    }
}

impl Default for H2Conn {
    fn default() -> Self {
        Self {
            client: Reader {
                preface_left: PREFACE.len(),
                ..Reader::default()
            },
            server: Reader::default(),
            client_hpack: loona_hpack::Decoder::new(),
            server_hpack: loona_hpack::Decoder::new(),
            client_broken: false,
            server_broken: false,
            streams: HashMap::new(),
            count: 0,
            errors: 0,
        }
    }
}

impl H2Conn {
    /// Header blocks that could not be decoded, or frames lost, so far.
    #[must_use]
    pub fn errors(&self) -> u64 {
        self.errors
    }

    /// Streams with a request and no response head yet.
    #[must_use]
    pub fn outstanding(&self) -> usize {
        self.streams
            .values()
            .filter(|s| s.requested && !s.responded)
            .count()
    }

    /// A response is in progress on some stream.
    #[must_use]
    pub fn responding(&self) -> bool {
        self.streams.values().any(|s| s.responded && !s.ended)
    }

    /// Feeds plaintext the client (`from_client`) or the server sent: `data`, then
    /// `missing_after` bytes that were not copied.
    pub fn bytes(
        &mut self,
        from_client: bool,
        ts: i64,
        data: &[u8],
        missing_after: u64,
        out: &mut Vec<HttpEvent>,
    ) {
        let mut pieces = Vec::new();
        let reader = if from_client {
            &mut self.client
        } else {
            &mut self.server
        };
        let was_lost = reader.lost;
        reader.feed(data, missing_after, &mut pieces);
        if reader.lost && !was_lost {
            self.errors += 1;
        }
        for p in pieces {
            match p {
                Piece::Frame(h, payload) => self.frame(from_client, ts, h, &payload, out),
                Piece::Cut(h) => {
                    if matches!(h.kind, frame::HEADERS | frame::CONTINUATION) {
                        self.break_direction(from_client);
                    }
                }
            }
        }
    }

    fn block_slot(&mut self, from_client: bool) -> &mut Option<(u32, u8, Vec<u8>)> {
        if from_client {
            &mut self.client.block
        } else {
            &mut self.server.block
        }
    }

    fn break_direction(&mut self, from_client: bool) {
        let broken = if from_client {
            &mut self.client_broken
        } else {
            &mut self.server_broken
        };
        if !*broken {
            *broken = true;
            self.errors += 1;
        }
    }

    fn frame(
        &mut self,
        from_client: bool,
        ts: i64,
        h: FrameHead,
        payload: &[u8],
        out: &mut Vec<HttpEvent>,
    ) {
        match h.kind {
            frame::SETTINGS if h.flags & flag::ACK == 0 => {
                // The client's table size bounds what the server's encoder may use.
                for s in payload.chunks_exact(6) {
                    if u16::from_be_bytes([s[0], s[1]]) == SETTINGS_HEADER_TABLE_SIZE {
                        let size = u32::from_be_bytes([s[2], s[3], s[4], s[5]]) as usize;
                        if from_client {
                            self.server_hpack.set_max_allowed_table_size(size.max(4096));
                        } else {
                            self.client_hpack.set_max_allowed_table_size(size.max(4096));
                        }
                    }
                }
            }
            frame::HEADERS => {
                let Some(frag) = headers_fragment(h.flags, payload) else {
                    self.break_direction(from_client);
                    return;
                };
                let block = (h.stream, h.flags, frag.to_vec());
                if h.flags & flag::END_HEADERS != 0 {
                    self.header_block(from_client, ts, block, out);
                } else {
                    *self.block_slot(from_client) = Some(block);
                }
            }
            frame::CONTINUATION => match self.block_slot(from_client).take() {
                Some((stream, flags, mut frag)) if stream == h.stream => {
                    frag.extend_from_slice(payload);
                    if h.flags & flag::END_HEADERS != 0 {
                        self.header_block(from_client, ts, (stream, flags, frag), out);
                    } else {
                        *self.block_slot(from_client) = Some((stream, flags, frag));
                    }
                }
                _ => self.break_direction(from_client),
            },
            frame::PUSH_PROMISE => {
                // its header block changes the table too; tracer does not follow pushes
                self.break_direction(from_client);
            }
            frame::DATA if h.flags & flag::END_STREAM != 0 => {
                self.end_stream(from_client, ts, h.stream, out);
            }
            frame::RST_STREAM => {
                if let Some(s) = self.streams.get_mut(&h.stream) {
                    // the stream is over: no more response will come on it
                    if s.responded && !s.ended {
                        s.ended = true;
                        out.push(HttpEvent::ResponseEnd { ts, index: s.index });
                    }
                }
            }
            _ => {}
        }
    }

    fn header_block(
        &mut self,
        from_client: bool,
        ts: i64,
        (stream, flags, block): (u32, u8, Vec<u8>),
        out: &mut Vec<HttpEvent>,
    ) {
        let broken = if from_client {
            self.client_broken
        } else {
            self.server_broken
        };
        if broken {
            return;
        }
        let decoded = if from_client {
            self.client_hpack.decode(&block)
        } else {
            self.server_hpack.decode(&block)
        };
        let Ok(headers) = decoded else {
            self.break_direction(from_client);
            return;
        };
        let get = |name: &str| {
            headers
                .iter()
                .find(|(n, _)| n.as_slice() == name.as_bytes())
                .map(|(_, v)| String::from_utf8_lossy(v).trim().to_owned())
        };
        if from_client {
            let s = self.streams.entry(stream).or_default();
            if s.requested {
                // trailers
                if flags & flag::END_STREAM != 0 {
                    out.push(HttpEvent::RequestEnd { ts, index: s.index });
                }
                return;
            }
            self.count += 1;
            s.index = self.count;
            s.requested = true;
            let head = RequestHead {
                method: get(":method").unwrap_or_default(),
                target: get(":path").unwrap_or_default(),
                minor: 1,
                host: get(":authority").or_else(|| get("host")),
                request_id: get("x-request-id"),
                traceparent: get("traceparent"),
                via: get("via"),
                connection: None,
                content_length: get("content-length").and_then(|v| v.parse().ok()),
                chunked: false,
            };
            out.push(HttpEvent::Request {
                ts,
                index: s.index,
                head,
                partial: false,
            });
            if flags & flag::END_STREAM != 0 {
                out.push(HttpEvent::RequestEnd { ts, index: s.index });
            }
        } else {
            let Some(status) = get(":status").and_then(|v| v.parse::<u16>().ok()) else {
                return; // trailers
            };
            if (100..200).contains(&status) {
                return; // interim
            }
            let s = self.streams.entry(stream).or_default();
            if s.responded {
                return;
            }
            if !s.requested {
                // a response to a request not seen
                self.count += 1;
                s.index = self.count;
            }
            s.responded = true;
            let index = s.index;
            let head = ResponseHead {
                status,
                minor: 1,
                server: get("server"),
                via: get("via"),
                connection: None,
                content_length: get("content-length").and_then(|v| v.parse().ok()),
                chunked: false,
                // HTTP/2 has no Keep-Alive header
                keep_alive_timeout_s: None,
                keep_alive_max: None,
                // a DATA frame of its own, not read here
                body_start: None,
            };
            out.push(HttpEvent::Response {
                ts,
                index,
                head,
                partial: false,
            });
            if flags & flag::END_STREAM != 0 {
                self.end_stream(false, ts, stream, out);
            }
        }
    }

    fn end_stream(&mut self, from_client: bool, ts: i64, stream: u32, out: &mut Vec<HttpEvent>) {
        let Some(s) = self.streams.get_mut(&stream) else {
            return;
        };
        if from_client {
            if s.requested {
                out.push(HttpEvent::RequestEnd { ts, index: s.index });
            }
        } else if s.responded && !s.ended {
            s.ended = true;
            out.push(HttpEvent::ResponseEnd { ts, index: s.index });
            self.streams.remove(&stream);
        }
    }
}

#[cfg(test)]
mod tests;
