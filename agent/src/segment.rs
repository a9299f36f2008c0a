//! The unit every packet source produces and the engine consumes: one TCP segment.

use std::net::SocketAddr;

/// TCP flag bits, as on the wire (byte 13 of the TCP header).
pub mod flags {
    pub const FIN: u8 = 0x01;
    pub const SYN: u8 = 0x02;
    pub const RST: u8 = 0x04;
    pub const PSH: u8 = 0x08;
    pub const ACK: u8 = 0x10;
}

/// One TCP segment seen on the wire, from a capture file or a live interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment {
    /// Capture timestamp, nanoseconds since the Unix epoch (CLOCK_REALTIME).
    pub ts_ns: i64,
    pub src: SocketAddr,
    pub dst: SocketAddr,
    /// TCP flags, see [`flags`].
    pub flags: u8,
    pub seq: u32,
    pub ack: u32,
    /// Payload length on the wire, from the IP length fields; may exceed `payload.len()`
    /// when the capture was cut by snaplen.
    pub wire_len: u32,
    /// The payload bytes that were captured (a prefix of the segment's payload).
    pub payload: Vec<u8>,
}

impl Segment {
    #[must_use]
    pub fn has(&self, flag: u8) -> bool {
        self.flags & flag != 0
    }
}
