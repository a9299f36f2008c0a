//! TCP header: ports, sequence numbers, flags, and the payload.

/// A TCP header and the captured part of its payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpHeader<'a> {
    pub src_port: u16,
    pub dst_port: u16,
    pub seq: u32,
    pub ack: u32,
    /// Byte 13 of the header: CWR ECE URG ACK PSH RST SYN FIN.
    pub flags: u8,
    /// Payload bytes on the wire (transport length minus header length).
    pub wire_len: u32,
    /// The captured prefix of the payload (empty when options were cut by the snaplen).
    pub payload: &'a [u8],
}

const SRC_PORT: usize = 0;
const DST_PORT: usize = 2;
const SEQ: usize = 4;
const ACK: usize = 8;
const DATA_OFFSET: usize = 12;
pub(super) const FLAGS: usize = 13;
/// Bytes needed to read every field above.
const FIELDS_END: usize = 14;
const MIN_HEADER: usize = 20;

/// Parses a TCP header from the captured transport bytes.
///
/// `wire_len` is the transport length on the wire, from the IP header.
pub fn tcp(data: &[u8], wire_len: u32) -> Result<TcpHeader<'_>, &'static str> {
    let Some(h) = data.get(..FIELDS_END) else {
        return Err("TCP header cut short");
    };
    let be16 = |at: usize| u16::from_be_bytes([h[at], h[at + 1]]);
    let be32 = |at: usize| u32::from_be_bytes([h[at], h[at + 1], h[at + 2], h[at + 3]]);
    let header_len = usize::from(h[DATA_OFFSET] >> 4) * 4;
    if header_len < MIN_HEADER {
        return Err("TCP data offset below 20 bytes");
    }
    let Some(payload_wire) = wire_len.checked_sub(header_len as u32) else {
        return Err("TCP header longer than the IP payload");
    };
    Ok(TcpHeader {
        src_port: be16(SRC_PORT),
        dst_port: be16(DST_PORT),
        seq: be32(SEQ),
        ack: be32(ACK),
        flags: h[FLAGS],
        wire_len: payload_wire,
        payload: data.get(header_len..).unwrap_or(&[]),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 40000 → 80, seq 1000, ack 2000, 20-byte header, PSH|ACK.
    const HEADER: [u8; 20] = [
        0x9c, 0x40, 0, 80, 0, 0, 0x03, 0xe8, 0, 0, 0x07, 0xd0, 0x50, 0x18, 0xff, 0xff, 0, 0, 0, 0,
    ];

    #[test]
    fn fields_are_read_big_endian() {
        let d = [&HEADER[..], b"GET /"].concat();
        let t = tcp(&d, 25).unwrap();
        assert_eq!(
            (t.src_port, t.dst_port, t.seq, t.ack),
            (40000, 80, 1000, 2000)
        );
        assert_eq!(t.flags, 0x18);
        assert_eq!((t.wire_len, t.payload), (5, &b"GET /"[..]));
    }

    #[test]
    fn snaplen_cut_payload_keeps_wire_length() {
        let d = [&HEADER[..], b"GE"].concat();
        let t = tcp(&d, 1020).unwrap();
        assert_eq!((t.wire_len, t.payload), (1000, &b"GE"[..]));
    }

    #[test]
    fn options_cut_by_snaplen_give_empty_payload() {
        let mut d = HEADER.to_vec();
        d[12] = 0x80; // 32-byte header, only 20 captured
        let t = tcp(&d, 32).unwrap();
        assert_eq!((t.wire_len, t.payload.len()), (0, 0));
    }

    #[test]
    fn data_offset_below_five_words_is_rejected() {
        let mut d = HEADER.to_vec();
        d[12] = 0x40;
        assert!(tcp(&d, 20).is_err());
    }

    #[test]
    fn header_longer_than_ip_payload_is_rejected() {
        assert!(tcp(&HEADER, 19).is_err());
    }

    #[test]
    fn cut_before_flags_is_rejected() {
        assert!(tcp(&HEADER[..13], 20).is_err());
    }
}
