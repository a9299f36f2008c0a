//! One captured frame → one TCP segment (or the reason there is none).
//!
//! etherparse takes apart Ethernet with its VLAN tags, IPv4 and IPv6 with its extension
//! headers laxly ([`LaxIpSlice`], made for packets cut short by the snaplen), and TCP,
//! one layer at a time: its all-layers `LaxSlicedPacket`, a 328-byte value moved from
//! layer to layer, cost ~25% of `tracer analyze`'s time in `cargo xtask bench-analyze`.
//! Kept by hand, because etherparse lacks them:
//! - the link headers of Linux cooked capture (SLL, SLL2) and BSD loopback (NULL, LOOP),
//!   a few named offsets each ([`super::link`]);
//! - the length on the wire of a segment whose IP length field is 0 (segmentation
//!   offload), taken from the capture record; etherparse falls back to the captured length;
//! - a TCP header cut inside its options by the snaplen, and the TCP header of a first
//!   IP fragment, which etherparse does not slice ([`super::tcp`]).
//!
//! Checksums are never checked (offload makes them wrong in real captures). Nothing here
//! allocates except [`TcpView::to_segment`], which copies the captured payload prefix.

use std::net::{IpAddr, SocketAddr};

use etherparse::err::ip::LaxHeaderSliceError;
use etherparse::err::tcp as tcp_err;
use etherparse::{ip_number, Ipv6ExtensionSlice, LaxIpPayloadSlice, LaxIpSlice, TcpSlice};

use super::link::{self, LinkSkip, LinkType, Network};
use super::tcp;
use crate::segment::Segment;

/// A decoded TCP segment that still borrows the frame it came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpView<'a> {
    pub src: SocketAddr,
    pub dst: SocketAddr,
    pub flags: u8,
    pub seq: u32,
    pub ack: u32,
    /// Payload length on the wire (IP length minus IP and TCP headers).
    pub wire_len: u32,
    /// Captured payload prefix.
    pub payload: &'a [u8],
}

impl TcpView<'_> {
    /// An owned [`Segment`]; the only allocation is the payload copy (none when empty).
    #[must_use]
    pub fn to_segment(&self, ts_ns: i64) -> Segment {
        Segment {
            ts_ns,
            src: self.src,
            dst: self.dst,
            flags: self.flags,
            seq: self.seq,
            ack: self.ack,
            wire_len: self.wire_len,
            payload: self.payload.to_vec(),
        }
    }
}

/// Why a frame produced no segment. Each kind is counted separately in the statistics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Skip {
    /// A well-formed packet of another protocol (ARP, UDP, ICMP, IPsec…).
    NotTcp,
    /// A non-first IP fragment.
    Fragment,
    /// A header that breaks its format's rules or was cut by the snaplen.
    Malformed(&'static str),
    /// A frame from an interface whose link type we do not decode.
    UnsupportedLinkType,
}

impl From<LinkSkip> for Skip {
    fn from(e: LinkSkip) -> Self {
        match e {
            LinkSkip::NotIp => Skip::NotTcp,
            LinkSkip::Malformed(why) => Skip::Malformed(why),
            LinkSkip::UnsupportedLinkType => Skip::UnsupportedLinkType,
        }
    }
}

/// Where the IP packet starts inside a frame, for re-encoding it as raw IP.
pub fn ip_packet(linktype: LinkType, frame: &[u8]) -> Option<&[u8]> {
    let (_, offset) = link::network_offset(linktype, frame).ok()?;
    frame.get(offset..)
}

/// Byte offset of `inner` (a subslice) within `outer`.
fn offset_in(outer: &[u8], inner: &[u8]) -> usize {
    (inner.as_ptr() as usize).saturating_sub(outer.as_ptr() as usize)
}

/// Decodes one frame. `orig_len` is the frame's length on the wire from the capture
/// record header (used only when the IP length field is 0).
pub fn decode_frame(linktype: LinkType, frame: &[u8], orig_len: u32) -> Result<TcpView<'_>, Skip> {
    let (network, data) = if linktype == LinkType::ETHERNET {
        link::ethernet(frame)?
    } else {
        let (network, offset) = link::network_offset(linktype, frame)?;
        (network, frame.get(offset..).unwrap_or(&[]))
    };
    let (ip, stop) = LaxIpSlice::from_slice(data).map_err(|e| {
        Skip::Malformed(match e {
            LaxHeaderSliceError::Len(_) => "IP header cut short",
            LaxHeaderSliceError::Content(_) => "IP header breaks its format",
        })
    })?;
    if stop.is_some() {
        return Err(Skip::Malformed(
            "IP extension header cut short or malformed",
        ));
    }
    let (src, dst, ip_header, total) = match &ip {
        LaxIpSlice::Ipv4(v4) => {
            let h = v4.header();
            if network != Network::Ipv4 {
                return Err(Skip::Malformed("IPv4 header where IPv6 was announced"));
            }
            if h.fragments_offset().value() != 0 {
                return Err(Skip::Fragment);
            }
            let header_len = usize::from(h.ihl()) * 4;
            let total = match h.total_len() {
                0 => None,
                n if usize::from(n) < header_len => {
                    return Err(Skip::Malformed("IPv4 total length shorter than its header"))
                }
                n => Some(u32::from(n)),
            };
            let src = IpAddr::V4(h.source_addr());
            let dst = IpAddr::V4(h.destination_addr());
            (src, dst, h.slice(), total)
        }
        LaxIpSlice::Ipv6(v6) => {
            let h = v6.header();
            if network != Network::Ipv6 {
                return Err(Skip::Malformed("IPv6 header where IPv4 was announced"));
            }
            let later = v6.extensions().clone().into_iter().any(|x| {
                matches!(x, Ipv6ExtensionSlice::Fragment(f) if f.fragment_offset().value() != 0)
            });
            if later {
                return Err(Skip::Fragment);
            }
            let total = match h.payload_length() {
                0 => None,
                n => Some(40 + u32::from(n)),
            };
            let src = IpAddr::V6(h.source_addr());
            let dst = IpAddr::V6(h.destination_addr());
            (src, dst, h.slice(), total)
        }
    };
    let payload = ip.payload();
    let ip = ip_header;
    if payload.ip_number != ip_number::TCP {
        return Err(Skip::NotTcp);
    }
    let ip_start = offset_in(frame, ip);
    // a zero length field (segmentation offload): the length on the wire from the record
    let total = total.unwrap_or_else(|| orig_len.saturating_sub(ip_start as u32));
    let transport_at = offset_in(ip, payload.payload) as u32;
    let Some(transport_wire) = total.checked_sub(transport_at) else {
        return Err(Skip::Malformed(
            "IP extension headers longer than the payload length",
        ));
    };
    let sliced = if payload.fragmented {
        None // etherparse does not slice a fragment's transport header
    } else {
        match TcpSlice::from_slice(payload.payload) {
            Ok(t) => Some(t),
            Err(tcp_err::HeaderSliceError::Len(_)) => None,
            Err(tcp_err::HeaderSliceError::Content(_)) => {
                return Err(Skip::Malformed("TCP data offset below 20 bytes"))
            }
        }
    };
    let t = match sliced {
        Some(t) => {
            let header_len = u32::from(t.data_offset()) * 4;
            let Some(wire_len) = transport_wire.checked_sub(header_len) else {
                return Err(Skip::Malformed("TCP header longer than the IP payload"));
            };
            tcp::TcpHeader {
                src_port: t.source_port(),
                dst_port: t.destination_port(),
                seq: t.sequence_number(),
                ack: t.acknowledgment_number(),
                flags: t.header_slice().get(tcp::FLAGS).copied().unwrap_or(0),
                wire_len,
                payload: t.payload(),
            }
        }
        None => by_hand(payload, transport_wire)?,
    };
    // Never more payload than the wire carried: with a zero IP length field the captured
    // bytes may run past what the capture record says was on the wire.
    let captured = t.payload.len().min(t.wire_len as usize);
    Ok(TcpView {
        src: SocketAddr::new(src, t.src_port),
        dst: SocketAddr::new(dst, t.dst_port),
        flags: t.flags,
        seq: t.seq,
        ack: t.ack,
        wire_len: t.wire_len,
        payload: t.payload.get(..captured).unwrap_or_default(),
    })
}

/// The TCP header etherparse did not slice: cut inside its options, or in a first fragment.
fn by_hand<'a>(
    payload: &LaxIpPayloadSlice<'a>,
    transport_wire: u32,
) -> Result<tcp::TcpHeader<'a>, Skip> {
    tcp::tcp(payload.payload, transport_wire).map_err(Skip::Malformed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::segment::flags;

    /// Ethernet + IPv4 + TCP SYN 10.0.0.1:40000 → 10.0.0.2:80, seq 1, no payload.
    const ETH_SYN: [u8; 54] = [
        // Ethernet: dst, src, IPv4
        2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1, 0x08, 0x00, //
        // IPv4: total 40, proto 6
        0x45, 0, 0, 40, 0, 1, 0x40, 0, 64, 6, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2, //
        // TCP: ports, seq 1, ack 0, doff 5, SYN
        0x9c, 0x40, 0, 80, 0, 0, 0, 1, 0, 0, 0, 0, 0x50, 0x02, 0xff, 0xff, 0, 0, 0, 0,
    ];

    #[test]
    fn ethernet_syn_becomes_segment() {
        let v = decode_frame(LinkType::ETHERNET, &ETH_SYN, 54).unwrap();
        let s = v.to_segment(7);
        assert_eq!(s.src, "10.0.0.1:40000".parse().unwrap());
        assert_eq!(s.dst, "10.0.0.2:80".parse().unwrap());
        assert!(s.has(flags::SYN));
        assert_eq!((s.ts_ns, s.seq, s.wire_len, s.payload.len()), (7, 1, 0, 0));
    }

    #[test]
    fn vlan_tagged_frame_decodes_like_untagged() {
        let mut f = ETH_SYN[..12].to_vec();
        f.extend_from_slice(&[0x81, 0x00, 0x00, 0x2a]);
        f.extend_from_slice(&ETH_SYN[12..]);
        let tagged = decode_frame(LinkType::ETHERNET, &f, 58).unwrap();
        let plain = decode_frame(LinkType::ETHERNET, &ETH_SYN, 54).unwrap();
        assert_eq!(tagged, plain);
    }

    #[test]
    fn minimum_size_padding_is_not_payload() {
        let mut f = ETH_SYN.to_vec();
        f.extend_from_slice(&[0; 6]); // padded to 60 bytes
        let v = decode_frame(LinkType::ETHERNET, &f, 60).unwrap();
        assert_eq!((v.wire_len, v.payload.len()), (0, 0));
    }

    #[test]
    fn udp_is_not_tcp() {
        let mut f = ETH_SYN.to_vec();
        f[23] = 17;
        assert_eq!(decode_frame(LinkType::ETHERNET, &f, 54), Err(Skip::NotTcp));
    }

    #[test]
    fn raw_ip_frame_decodes() {
        let v = decode_frame(LinkType::RAW, &ETH_SYN[14..], 40).unwrap();
        assert_eq!(v.dst.port(), 80);
    }

    #[test]
    fn ip_packet_strips_link_header() {
        assert_eq!(
            ip_packet(LinkType::ETHERNET, &ETH_SYN),
            Some(&ETH_SYN[14..])
        );
    }

    #[test]
    fn every_prefix_of_a_frame_is_handled_without_panic() {
        for n in 0..ETH_SYN.len() {
            let _ = decode_frame(LinkType::ETHERNET, &ETH_SYN[..n], 54);
        }
    }

    // The IP layer's cases, as raw IP frames carrying a 20-byte TCP header.

    /// TCP 40000 → 80, seq 1, PSH|ACK, 20-byte header.
    const TCP: [u8; 20] = [
        0x9c, 0x40, 0, 80, 0, 0, 0, 1, 0, 0, 0, 0, 0x50, 0x18, 0xff, 0xff, 0, 0, 0, 0,
    ];

    /// 127.0.0.1 → 127.0.0.2, TCP, total length 44: the TCP header and 4 payload bytes.
    fn v4(rest: &[u8]) -> Vec<u8> {
        let mut p = vec![
            0x45, 0, 0, 44, 0x12, 0x34, 0x40, 0, 64, 6, 0xde, 0xad, 127, 0, 0, 1, 127, 0, 0, 2,
        ];
        p.extend_from_slice(rest);
        p
    }

    fn tcp_and(payload: &[u8]) -> Vec<u8> {
        [&TCP[..], payload].concat()
    }

    fn raw(p: &[u8]) -> Result<TcpView<'_>, Skip> {
        decode_frame(LinkType::RAW, p, p.len() as u32)
    }

    #[test]
    fn ipv4_payload_and_addresses() {
        let p = v4(&tcp_and(b"abcd"));
        let v = raw(&p).unwrap();
        assert_eq!(v.src, "127.0.0.1:40000".parse().unwrap());
        assert_eq!(v.dst, "127.0.0.2:80".parse().unwrap());
        assert_eq!((v.wire_len, v.payload), (4, &b"abcd"[..]));
    }

    #[test]
    fn ipv4_ethernet_padding_is_trimmed_by_total_length() {
        let p = v4(&tcp_and(b"abcd\0\0\0\0\0\0"));
        assert_eq!(raw(&p).unwrap().payload, b"abcd");
    }

    #[test]
    fn ipv4_snaplen_cut_keeps_wire_length() {
        let p = v4(&tcp_and(b"ab"));
        let v = decode_frame(LinkType::RAW, &p, 44).unwrap();
        assert_eq!((v.wire_len, v.payload), (4, &b"ab"[..]));
    }

    #[test]
    fn ipv4_options_are_skipped() {
        let mut p = v4(&[]);
        p[0] = 0x46; // 24-byte header
        p[3] = 48;
        p.extend_from_slice(&[1, 1, 1, 0]); // NOP NOP NOP EOL
        p.extend_from_slice(&tcp_and(b"wxyz"));
        let v = raw(&p).unwrap();
        assert_eq!((v.wire_len, v.payload), (4, &b"wxyz"[..]));
    }

    #[test]
    fn ipv4_zero_total_length_uses_capture_length() {
        let mut p = v4(&tcp_and(b"abcd"));
        p[2] = 0;
        p[3] = 0;
        assert_eq!(
            decode_frame(LinkType::RAW, &p, 4000).unwrap().wire_len,
            3960
        );
    }

    #[test]
    fn ipv4_first_fragment_is_decoded_later_ones_skipped() {
        let mut p = v4(&tcp_and(b"abcd"));
        p[6] = 0x20; // MF, offset 0
        assert_eq!(raw(&p).unwrap().payload, b"abcd");
        p[7] = 0x10; // offset 16 × 8 bytes
        assert_eq!(raw(&p), Err(Skip::Fragment));
    }

    #[test]
    fn ipv4_header_length_below_minimum_is_malformed() {
        let mut p = v4(&tcp_and(b"abcd"));
        p[0] = 0x44;
        assert!(matches!(raw(&p), Err(Skip::Malformed(_))));
    }

    #[test]
    fn ipv4_total_length_shorter_than_header_is_malformed() {
        let mut p = v4(&tcp_and(b"abcd"));
        p[3] = 10;
        assert!(matches!(raw(&p), Err(Skip::Malformed(_))));
    }

    #[test]
    fn ipv4_cut_inside_header_is_malformed() {
        let p = v4(&[]);
        assert!(matches!(raw(&p[..19]), Err(Skip::Malformed(_))));
    }

    #[test]
    fn tcp_options_cut_by_the_snaplen_still_give_the_segment() {
        let mut t = TCP.to_vec();
        t[12] = 0x80; // 32-byte header, only 20 captured
        let mut p = v4(&t);
        p[3] = 52;
        let v = decode_frame(LinkType::RAW, &p, 52).unwrap();
        assert_eq!((v.dst.port(), v.wire_len, v.payload.len()), (80, 0, 0));
    }

    /// ::1 → ::2, next header as given, payload length 24 (28 with a hop-by-hop header).
    fn v6(next: u8, rest: &[u8]) -> Vec<u8> {
        let mut h = vec![0x60, 0, 0, 0, 0, rest.len().min(255) as u8, next, 64];
        h.extend_from_slice(&[0; 15]);
        h.push(1);
        h.extend_from_slice(&[0; 15]);
        h.push(2);
        h.extend_from_slice(rest);
        h
    }

    const HOP_BY_HOP: u8 = 0;
    const ROUTING: u8 = 43;
    const FRAGMENT: u8 = 44;
    const ESP: u8 = 50;
    const DEST_OPTS: u8 = 60;

    #[test]
    fn ipv6_tcp_payload() {
        let p = v6(6, &tcp_and(b"abcd"));
        let v = raw(&p).unwrap();
        assert_eq!(v.src, "[::1]:40000".parse().unwrap());
        assert_eq!((v.wire_len, v.payload), (4, &b"abcd"[..]));
    }

    #[test]
    fn ipv6_hop_by_hop_then_tcp() {
        let mut rest = vec![6, 0, 1, 4, 0, 0, 0, 0];
        rest.extend_from_slice(&tcp_and(b"abcd"));
        let p = v6(HOP_BY_HOP, &rest);
        let v = raw(&p).unwrap();
        assert_eq!((v.wire_len, v.payload), (4, &b"abcd"[..]));
    }

    #[test]
    fn ipv6_later_fragment_is_skipped() {
        let mut rest = vec![6, 0, 0x00, 0x08, 0, 0, 0, 1];
        rest.extend_from_slice(&tcp_and(b"abcd"));
        assert_eq!(raw(&v6(FRAGMENT, &rest)), Err(Skip::Fragment));
    }

    #[test]
    fn ipv6_first_fragment_is_decoded() {
        let mut rest = vec![6, 0, 0x00, 0x01, 0, 0, 0, 1]; // offset 0, more fragments
        rest.extend_from_slice(&tcp_and(b"abcd"));
        let p = v6(FRAGMENT, &rest);
        assert_eq!(raw(&p).unwrap().payload, b"abcd");
    }

    #[test]
    fn ipv6_esp_is_not_tcp() {
        assert_eq!(raw(&v6(ESP, &[0; 24])), Err(Skip::NotTcp));
    }

    #[test]
    fn ipv6_extension_cut_short_is_malformed() {
        let mut p = v6(ROUTING, &[]);
        p[5] = 24;
        assert!(matches!(raw(&p), Err(Skip::Malformed(_))));
    }

    #[test]
    fn ipv6_extensions_longer_than_payload_are_malformed() {
        let mut rest = vec![6, 4, 0, 0, 0, 0, 0, 0];
        rest.extend_from_slice(&[0; 40]);
        let mut p = v6(DEST_OPTS, &rest);
        p[5] = 24;
        assert!(matches!(raw(&p), Err(Skip::Malformed(_))));
    }

    #[test]
    fn zero_ip_length_never_gives_more_payload_than_the_wire_carried() {
        // found by the decode fuzz target: a record whose original length is below its
        // captured length, an IPv4 length field of 0, and a 40-byte TCP header
        let mut t = TCP.to_vec();
        t[12] = 0xa0;
        t.extend_from_slice(&[1; 22]); // 20 bytes of options, 2 of payload
        let mut p = v4(&t);
        p[2] = 0;
        p[3] = 0;
        let v = decode_frame(LinkType::RAW, &p, 60).unwrap();
        assert_eq!((v.wire_len, v.payload.len()), (0, 0));
    }

    #[test]
    fn sll_sll2_and_loopback_frames_decode() {
        let ip = v4(&tcp_and(b"abcd"));
        let mut sll = vec![0u8; 16];
        sll[14] = 0x08;
        sll.extend_from_slice(&ip);
        let mut sll2 = vec![0x08, 0x00];
        sll2.extend_from_slice(&[0; 18]);
        sll2.extend_from_slice(&ip);
        let mut null = vec![2, 0, 0, 0];
        null.extend_from_slice(&ip);
        for (lt, f) in [
            (LinkType::LINUX_SLL, sll),
            (LinkType::LINUX_SLL2, sll2),
            (LinkType::NULL, null),
        ] {
            let v = decode_frame(lt, &f, f.len() as u32).unwrap();
            assert_eq!(v.payload, b"abcd", "{lt}");
        }
    }
}
