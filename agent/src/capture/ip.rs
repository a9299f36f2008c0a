//! IPv4 and IPv6: addresses, the transport protocol, and where its bytes are.
//!
//! Checksums are never verified: with checksum offload, captured packets on veth and
//! loopback carry wrong ones.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use tracer_common::ipv6 as ipv6_ext;

/// The transport part of one IP packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpPayload<'a> {
    pub src: IpAddr,
    pub dst: IpAddr,
    /// IP protocol number of the transport header (6 = TCP).
    pub protocol: u8,
    /// The captured transport bytes, without link-layer padding or trailers.
    pub data: &'a [u8],
    /// Length of the transport part on the wire, from the IP length field.
    pub wire_len: u32,
}

/// Why an IP packet yields no transport payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IpSkip {
    /// A non-first fragment: its bytes continue a transport header seen earlier.
    LaterFragment,
    /// An IPv6 extension header we cannot walk (ESP, "no next header").
    Opaque,
    /// The header breaks a rule of the format, or was cut by the snaplen.
    Malformed(&'static str),
}

pub const PROTO_TCP: u8 = 6;

const V4_MIN_HEADER: usize = 20;
const V4_TOTAL_LEN: usize = 2;
const V4_FRAG: usize = 6;
/// Low 13 bits of the flags/fragment-offset field.
const V4_FRAG_OFFSET_MASK: u16 = 0x1fff;
const V4_PROTOCOL: usize = 9;
const V4_SRC: usize = 12;
const V4_DST: usize = 16;

const V6_HEADER: usize = 40;
const V6_PAYLOAD_LEN: usize = 4;
const V6_NEXT_HEADER: usize = 6;
const V6_SRC: usize = 8;
const V6_DST: usize = 24;
/// More extension headers than this is treated as malformed.
const V6_MAX_EXTENSIONS: usize = 8;

fn be16(data: &[u8], at: usize) -> Option<u16> {
    let b = data.get(at..at + 2)?;
    Some(u16::from_be_bytes([b[0], b[1]]))
}

fn array<const N: usize>(data: &[u8], at: usize) -> Option<[u8; N]> {
    data.get(at..at + N)?.try_into().ok()
}

/// Parses an IPv4 header.
///
/// `wire_hint` is the packet's length on the wire as the capture header tells it; it is
/// used only when the total-length field is 0 (segmentation offload of very large
/// segments writes 0 there).
pub fn ipv4(data: &[u8], wire_hint: u32) -> Result<IpPayload<'_>, IpSkip> {
    let first = *data.first().ok_or(IpSkip::Malformed("empty IPv4 packet"))?;
    if first >> 4 != 4 {
        return Err(IpSkip::Malformed("IPv4 header without version 4"));
    }
    if data.len() < V4_MIN_HEADER {
        return Err(IpSkip::Malformed("IPv4 header cut short"));
    }
    let header_len = usize::from(first & 0x0f) * 4;
    if header_len < V4_MIN_HEADER {
        return Err(IpSkip::Malformed("IPv4 header length below 20 bytes"));
    }
    if header_len > data.len() {
        return Err(IpSkip::Malformed("IPv4 options cut short"));
    }
    let total = match be16(data, V4_TOTAL_LEN) {
        Some(0) | None => wire_hint,
        Some(n) => u32::from(n),
    };
    let Some(wire_len) = total.checked_sub(header_len as u32) else {
        return Err(IpSkip::Malformed(
            "IPv4 total length shorter than its header",
        ));
    };
    if be16(data, V4_FRAG).unwrap_or(0) & V4_FRAG_OFFSET_MASK != 0 {
        return Err(IpSkip::LaterFragment);
    }
    let end = data.len().min(total as usize);
    let (Some(src), Some(dst)) = (array::<4>(data, V4_SRC), array::<4>(data, V4_DST)) else {
        return Err(IpSkip::Malformed("IPv4 header cut short"));
    };
    Ok(IpPayload {
        src: IpAddr::V4(Ipv4Addr::from(src)),
        dst: IpAddr::V4(Ipv4Addr::from(dst)),
        protocol: data[V4_PROTOCOL],
        data: data.get(header_len..end).unwrap_or(&[]),
        wire_len,
    })
}

/// Parses an IPv6 header and walks the extension headers it can.
///
/// `wire_hint` is used when the payload-length field is 0 (jumbograms, offload).
pub fn ipv6(data: &[u8], wire_hint: u32) -> Result<IpPayload<'_>, IpSkip> {
    if data.first().map(|b| b >> 4) != Some(6) {
        return Err(IpSkip::Malformed("IPv6 header without version 6"));
    }
    let (Some(payload_len), Some(src), Some(dst)) = (
        be16(data, V6_PAYLOAD_LEN),
        array::<16>(data, V6_SRC),
        array::<16>(data, V6_DST),
    ) else {
        return Err(IpSkip::Malformed("IPv6 header cut short"));
    };
    let total = match payload_len {
        0 => wire_hint,
        n => V6_HEADER as u32 + u32::from(n),
    };
    let mut next = data[V6_NEXT_HEADER];
    let mut offset = V6_HEADER;
    for _ in 0..V6_MAX_EXTENSIONS {
        if ipv6_ext::is_opaque(next) {
            return Err(IpSkip::Opaque);
        }
        if !ipv6_ext::is_extension(next) {
            let Some(wire_len) = total.checked_sub(offset as u32) else {
                return Err(IpSkip::Malformed(
                    "IPv6 extension headers longer than the payload length",
                ));
            };
            let end = data.len().min(total as usize);
            return Ok(IpPayload {
                src: IpAddr::V6(Ipv6Addr::from(src)),
                dst: IpAddr::V6(Ipv6Addr::from(dst)),
                protocol: next,
                data: data.get(offset..end).unwrap_or(&[]),
                wire_len,
            });
        }
        let (after, len) = ipv6_ext::extension(next, extension_head(data, offset, next)?)
            .ok_or(IpSkip::LaterFragment)?;
        next = after;
        offset += len as usize;
    }
    Err(IpSkip::Malformed("too many IPv6 extension headers"))
}

/// The first four bytes of the extension header of type `kind` at `offset`, for
/// [`ipv6_ext::extension`]: it reads the next-header and length bytes of each, and the
/// fragment offset (bytes 2-3) of a fragment header; bytes it does not read may be cut by
/// the snaplen and read as 0.
fn extension_head(data: &[u8], offset: usize, kind: u8) -> Result<[u8; 4], IpSkip> {
    let (need, why) = if kind == ipv6_ext::FRAGMENT {
        (4, "IPv6 fragment header cut short")
    } else {
        (2, "IPv6 extension header cut short")
    };
    let b = data
        .get(offset..)
        .filter(|b| b.len() >= need)
        .ok_or(IpSkip::Malformed(why))?;
    let mut head = [0u8; 4];
    for (d, s) in head.iter_mut().zip(b) {
        *d = *s;
    }
    Ok(head)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 127.0.0.1 → 127.0.0.2, TCP, total length 44 (20 IP + 24 transport).
    const V4: [u8; 20] = [
        0x45, 0, 0, 44, 0x12, 0x34, 0x40, 0, 64, 6, 0xde, 0xad, 127, 0, 0, 1, 127, 0, 0, 2,
    ];

    fn v4_with(transport: &[u8]) -> Vec<u8> {
        [&V4[..], transport].concat()
    }

    #[test]
    fn ipv4_payload_and_addresses() {
        let p = v4_with(&[7; 24]);
        let ip = ipv4(&p, 0).unwrap();
        assert_eq!(ip.src, "127.0.0.1".parse::<IpAddr>().unwrap());
        assert_eq!(ip.dst, "127.0.0.2".parse::<IpAddr>().unwrap());
        assert_eq!(ip.protocol, PROTO_TCP);
        assert_eq!(ip.data.len(), 24);
        assert_eq!(ip.wire_len, 24);
    }

    #[test]
    fn ipv4_ethernet_padding_is_trimmed_by_total_length() {
        let p = v4_with(&[7; 30]);
        assert_eq!(ipv4(&p, 0).unwrap().data.len(), 24);
    }

    #[test]
    fn ipv4_snaplen_cut_keeps_wire_length() {
        let p = v4_with(&[7; 10]);
        let ip = ipv4(&p, 0).unwrap();
        assert_eq!((ip.data.len(), ip.wire_len), (10, 24));
    }

    #[test]
    fn ipv4_options_are_skipped() {
        let mut p = V4.to_vec();
        p[0] = 0x46; // 24-byte header
        p[3] = 48;
        p.extend_from_slice(&[1, 1, 1, 0]); // NOP NOP NOP EOL
        p.extend_from_slice(&[9; 24]);
        let ip = ipv4(&p, 0).unwrap();
        assert_eq!((ip.data, ip.wire_len), (&[9u8; 24][..], 24));
    }

    #[test]
    fn ipv4_zero_total_length_uses_capture_length() {
        let mut p = v4_with(&[7; 24]);
        p[2] = 0;
        p[3] = 0;
        assert_eq!(ipv4(&p, 4000).unwrap().wire_len, 3980);
    }

    #[test]
    fn ipv4_first_fragment_is_decoded_later_ones_skipped() {
        let mut p = v4_with(&[7; 24]);
        p[6] = 0x20; // MF, offset 0
        assert!(ipv4(&p, 0).is_ok());
        p[7] = 0x10; // offset 16 × 8 bytes
        assert_eq!(ipv4(&p, 0), Err(IpSkip::LaterFragment));
    }

    #[test]
    fn ipv4_header_length_below_minimum_is_malformed() {
        let mut p = v4_with(&[7; 24]);
        p[0] = 0x44;
        assert!(matches!(ipv4(&p, 0), Err(IpSkip::Malformed(_))));
    }

    #[test]
    fn ipv4_total_length_shorter_than_header_is_malformed() {
        let mut p = v4_with(&[7; 24]);
        p[3] = 10;
        assert!(matches!(ipv4(&p, 0), Err(IpSkip::Malformed(_))));
    }

    #[test]
    fn ipv4_cut_inside_header_is_malformed() {
        assert!(matches!(ipv4(&V4[..19], 0), Err(IpSkip::Malformed(_))));
    }

    /// ::1 → ::2, next header as given, payload length 24.
    fn v6(next: u8, rest: &[u8]) -> Vec<u8> {
        let mut h = vec![0x60, 0, 0, 0, 0, 24, next, 64];
        h.extend_from_slice(&[0; 15]);
        h.push(1);
        h.extend_from_slice(&[0; 15]);
        h.push(2);
        h.extend_from_slice(rest);
        h
    }

    #[test]
    fn ipv6_tcp_payload() {
        let p = v6(PROTO_TCP, &[5; 24]);
        let ip = ipv6(&p, 0).unwrap();
        assert_eq!(ip.src, "::1".parse::<IpAddr>().unwrap());
        assert_eq!((ip.protocol, ip.data.len(), ip.wire_len), (6, 24, 24));
    }

    #[test]
    fn ipv6_hop_by_hop_then_tcp() {
        let mut rest = vec![PROTO_TCP, 0, 1, 4, 0, 0, 0, 0];
        rest.extend_from_slice(&[5; 16]);
        let p = v6(ipv6_ext::HOP_BY_HOP, &rest);
        let ip = ipv6(&p, 0).unwrap();
        assert_eq!((ip.protocol, ip.data.len(), ip.wire_len), (6, 16, 16));
    }

    #[test]
    fn ipv6_later_fragment_is_skipped() {
        let rest = [PROTO_TCP, 0, 0x00, 0x08, 0, 0, 0, 1];
        assert_eq!(
            ipv6(&v6(ipv6_ext::FRAGMENT, &rest), 0),
            Err(IpSkip::LaterFragment)
        );
    }

    #[test]
    fn ipv6_esp_is_opaque() {
        assert_eq!(ipv6(&v6(ipv6_ext::ESP, &[0; 24]), 0), Err(IpSkip::Opaque));
    }

    #[test]
    fn ipv6_extension_cut_short_is_malformed() {
        assert!(matches!(
            ipv6(&v6(ipv6_ext::ROUTING, &[]), 0),
            Err(IpSkip::Malformed(_))
        ));
    }

    #[test]
    fn ipv6_extensions_longer_than_payload_are_malformed() {
        let mut rest = vec![PROTO_TCP, 4, 0, 0, 0, 0, 0, 0];
        rest.extend_from_slice(&[0; 40]);
        assert!(matches!(
            ipv6(&v6(ipv6_ext::DEST_OPTS, &rest), 0),
            Err(IpSkip::Malformed(_))
        ));
    }
}
