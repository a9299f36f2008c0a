//! Link layers: find where the IP packet starts inside a captured frame.
//!
//! Ethernet and its VLAN tags are etherparse's ([`ethernet`]); Linux cooked capture (SLL,
//! SLL2), BSD loopback (NULL, LOOP) and raw IP, which its lax slicing does not take, are a
//! few named offsets here. Each function takes the frame bytes and returns the
//! network-layer protocol and the offset of its first byte, or why the frame carries no IP
//! packet.

use etherparse::{Ethernet2Slice, SingleVlanSlice};

/// A pcap / pcapng LINKTYPE_ number (the framing of every packet on an interface).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
pub struct LinkType(pub u32);

impl LinkType {
    /// BSD loopback: a 4-byte address family in the capturing host's byte order.
    pub const NULL: LinkType = LinkType(0);
    /// Ethernet II, possibly with 802.1Q / 802.1ad VLAN tags.
    pub const ETHERNET: LinkType = LinkType(1);
    /// Raw IP as written by some BSDs (DLT_RAW = 12).
    pub const RAW_12: LinkType = LinkType(12);
    /// Raw IP as written by OpenBSD (DLT_RAW = 14).
    pub const RAW_14: LinkType = LinkType(14);
    /// Raw IPv4 or IPv6, no link header (LINKTYPE_RAW).
    pub const RAW: LinkType = LinkType(101);
    /// OpenBSD loopback: a 4-byte address family in network byte order.
    pub const LOOP: LinkType = LinkType(108);
    /// Linux cooked capture v1 (`tcpdump -i any` before libpcap 1.10, or `-y LINUX_SLL`).
    pub const LINUX_SLL: LinkType = LinkType(113);
    /// Raw IPv4 only.
    pub const IPV4: LinkType = LinkType(228);
    /// Raw IPv6 only.
    pub const IPV6: LinkType = LinkType(229);
    /// Linux cooked capture v2 (`tcpdump -i any` with libpcap ≥ 1.10).
    pub const LINUX_SLL2: LinkType = LinkType(276);

    /// Whether [`network_offset`] can take this framing apart.
    #[must_use]
    pub fn is_supported(self) -> bool {
        matches!(
            self,
            LinkType::NULL
                | LinkType::ETHERNET
                | LinkType::RAW_12
                | LinkType::RAW_14
                | LinkType::RAW
                | LinkType::LOOP
                | LinkType::LINUX_SLL
                | LinkType::IPV4
                | LinkType::IPV6
                | LinkType::LINUX_SLL2
        )
    }

    /// The registered name (tcpdump's spelling), or "unknown".
    #[must_use]
    pub fn name(self) -> &'static str {
        match self.0 {
            0 => "NULL",
            1 => "EN10MB (Ethernet)",
            6 => "IEEE802 (Token Ring)",
            9 => "PPP",
            10 => "FDDI",
            12 | 14 | 101 => "RAW (raw IP)",
            50 => "PPP_HDLC",
            51 => "PPP_ETHER (PPPoE)",
            104 => "C_HDLC (Cisco HDLC)",
            105 => "IEEE802_11 (Wi-Fi)",
            108 => "LOOP",
            113 => "LINUX_SLL",
            127 => "IEEE802_11_RADIO (radiotap)",
            147..=162 => "USER0-15 (private use)",
            192 => "PPI",
            195 => "IEEE802_15_4",
            197 => "ERF",
            220 => "USB_LINUX_MMAPPED",
            228 => "IPV4",
            229 => "IPV6",
            239 => "NFLOG",
            249 => "NETANALYZER",
            252 => "WIRESHARK_UPPER_PDU",
            263 => "BLUETOOTH",
            276 => "LINUX_SLL2",
            _ => "unknown",
        }
    }
}

impl std::fmt::Display for LinkType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.0, self.name())
    }
}

/// The network-layer protocol a frame carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Network {
    Ipv4,
    Ipv6,
}

/// Why a frame carries no IP packet we can read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkSkip {
    /// A valid frame of another protocol (ARP, LLDP, IPX…): counted as non-TCP.
    NotIp,
    /// The frame is shorter than its own link header, or the header is inconsistent.
    Malformed(&'static str),
    /// The link type itself is not one we decode.
    UnsupportedLinkType,
}

/// EtherType values (also used by SLL/SLL2 protocol fields).
mod ethertype {
    pub const IPV4: u16 = 0x0800;
    pub const IPV6: u16 = 0x86dd;
    /// 802.1Q customer VLAN tag.
    pub const VLAN: u16 = 0x8100;
    /// 802.1ad service VLAN tag (QinQ outer tag).
    pub const QINQ: u16 = 0x88a8;
    /// Pre-standard QinQ outer tag used by some switches.
    pub const QINQ_OLD: u16 = 0x9100;
}

/// More than this many stacked VLAN tags is treated as malformed (QinQ uses two).
const MAX_VLAN_TAGS: usize = 4;
/// Linux cooked v1: packet type, ARPHRD, address length, 8-byte address, protocol.
const SLL_HEADER_LEN: usize = 16;
const SLL_PROTOCOL_OFFSET: usize = 14;
/// Linux cooked v2: protocol, reserved, ifindex, ARPHRD, packet type, address length,
/// 8-byte address.
const SLL2_HEADER_LEN: usize = 20;
const SLL2_PROTOCOL_OFFSET: usize = 0;
/// BSD loopback: a 4-byte address family.
const NULL_HEADER_LEN: usize = 4;
/// Address family numbers seen in DLT_NULL / DLT_LOOP headers.
const AF_INET: u32 = 2;
/// AF_INET6 differs between systems: Linux 10, NetBSD/OpenBSD 24, FreeBSD 28, macOS 30.
const AF_INET6: [u32; 4] = [10, 24, 28, 30];

fn be16(data: &[u8], at: usize) -> Option<u16> {
    let b = data.get(at..at + 2)?;
    Some(u16::from_be_bytes([b[0], b[1]]))
}

/// Finds the IP packet inside a frame of the given link type.
///
/// Returns the protocol and the offset of the first IP byte in `frame`.
pub fn network_offset(linktype: LinkType, frame: &[u8]) -> Result<(Network, usize), LinkSkip> {
    match linktype {
        LinkType::ETHERNET => ethernet_offset(frame),
        LinkType::LINUX_SLL => by_ethertype(
            be16(frame, SLL_PROTOCOL_OFFSET).ok_or(LinkSkip::Malformed("short SLL header"))?,
            SLL_HEADER_LEN,
            frame,
        ),
        LinkType::LINUX_SLL2 => by_ethertype(
            be16(frame, SLL2_PROTOCOL_OFFSET).ok_or(LinkSkip::Malformed("short SLL2 header"))?,
            SLL2_HEADER_LEN,
            frame,
        ),
        LinkType::RAW | LinkType::RAW_12 | LinkType::RAW_14 => raw_ip(frame),
        LinkType::IPV4 => Ok((Network::Ipv4, 0)),
        LinkType::IPV6 => Ok((Network::Ipv6, 0)),
        LinkType::NULL => null_loopback(frame, false),
        LinkType::LOOP => null_loopback(frame, true),
        _ => Err(LinkSkip::UnsupportedLinkType),
    }
}

fn by_ethertype(ty: u16, offset: usize, frame: &[u8]) -> Result<(Network, usize), LinkSkip> {
    if frame.len() < offset {
        return Err(LinkSkip::Malformed("frame shorter than its link header"));
    }
    match ty {
        ethertype::IPV4 => Ok((Network::Ipv4, offset)),
        ethertype::IPV6 => Ok((Network::Ipv6, offset)),
        _ => Err(LinkSkip::NotIp),
    }
}

/// Ethernet II with up to [`MAX_VLAN_TAGS`] 802.1Q / 802.1ad tags, read by etherparse:
/// the network protocol and the IP packet, or why the frame carries none.
pub fn ethernet(frame: &[u8]) -> Result<(Network, &[u8]), LinkSkip> {
    let eth = Ethernet2Slice::from_slice_without_fcs(frame)
        .map_err(|_| LinkSkip::Malformed("short Ethernet header"))?;
    let mut ty = eth.ether_type().0;
    let mut payload = eth.payload().payload;
    for _ in 0..MAX_VLAN_TAGS {
        match ty {
            ethertype::IPV4 => return Ok((Network::Ipv4, payload)),
            ethertype::IPV6 => return Ok((Network::Ipv6, payload)),
            ethertype::VLAN | ethertype::QINQ | ethertype::QINQ_OLD => {
                let tag = SingleVlanSlice::from_slice(payload)
                    .map_err(|_| LinkSkip::Malformed("short VLAN tag"))?;
                ty = tag.ether_type().0;
                payload = tag.payload_slice();
            }
            _ => return Err(LinkSkip::NotIp),
        }
    }
    Err(LinkSkip::Malformed("too many stacked VLAN tags"))
}

/// Where the IP packet of an Ethernet frame starts.
fn ethernet_offset(frame: &[u8]) -> Result<(Network, usize), LinkSkip> {
    let (network, ip) = ethernet(frame)?;
    Ok((
        network,
        (ip.as_ptr() as usize).saturating_sub(frame.as_ptr() as usize),
    ))
}

/// Raw IP: the version nibble of the first byte says which.
fn raw_ip(frame: &[u8]) -> Result<(Network, usize), LinkSkip> {
    match frame.first().map(|b| b >> 4) {
        Some(4) => Ok((Network::Ipv4, 0)),
        Some(6) => Ok((Network::Ipv6, 0)),
        Some(_) => Err(LinkSkip::NotIp),
        None => Err(LinkSkip::Malformed("empty frame")),
    }
}

/// DLT_NULL (host byte order, which we do not know: try both) and DLT_LOOP (big-endian).
fn null_loopback(frame: &[u8], big_endian_only: bool) -> Result<(Network, usize), LinkSkip> {
    let b: [u8; NULL_HEADER_LEN] = frame
        .get(..NULL_HEADER_LEN)
        .and_then(|s| s.try_into().ok())
        .ok_or(LinkSkip::Malformed("short loopback header"))?;
    let be = u32::from_be_bytes(b);
    // A family is a small number, so the byte order whose value is small is the right one.
    let family = if big_endian_only || be <= 0xffff {
        be
    } else {
        u32::from_le_bytes(b)
    };
    if family == AF_INET {
        Ok((Network::Ipv4, NULL_HEADER_LEN))
    } else if AF_INET6.contains(&family) {
        Ok((Network::Ipv6, NULL_HEADER_LEN))
    } else {
        Err(LinkSkip::NotIp)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// dst MAC, src MAC, then the caller's EtherType and payload.
    const MACS: [u8; 12] = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11];

    fn eth(rest: &[u8]) -> Vec<u8> {
        [&MACS[..], rest].concat()
    }

    #[test]
    fn ethernet_ipv4_starts_after_14_bytes() {
        let f = eth(&[0x08, 0x00, 0x45]);
        assert_eq!(
            network_offset(LinkType::ETHERNET, &f),
            Ok((Network::Ipv4, 14))
        );
    }

    #[test]
    fn ethernet_single_vlan_tag_is_skipped() {
        let f = eth(&[0x81, 0x00, 0x00, 0x64, 0x86, 0xdd, 0x60]);
        assert_eq!(
            network_offset(LinkType::ETHERNET, &f),
            Ok((Network::Ipv6, 18))
        );
    }

    #[test]
    fn ethernet_qinq_double_tag_is_skipped() {
        let f = eth(&[
            0x88, 0xa8, 0x00, 0x0a, 0x81, 0x00, 0x00, 0x64, 0x08, 0x00, 0x45,
        ]);
        assert_eq!(
            network_offset(LinkType::ETHERNET, &f),
            Ok((Network::Ipv4, 22))
        );
    }

    #[test]
    fn ethernet_arp_is_not_ip() {
        let f = eth(&[0x08, 0x06, 0, 1]);
        assert_eq!(network_offset(LinkType::ETHERNET, &f), Err(LinkSkip::NotIp));
    }

    #[test]
    fn ethernet_cut_inside_vlan_tag_is_malformed() {
        let f = eth(&[0x81, 0x00, 0x00]);
        assert!(matches!(
            network_offset(LinkType::ETHERNET, &f),
            Err(LinkSkip::Malformed(_))
        ));
    }

    #[test]
    fn ethernet_endless_vlan_tags_are_malformed() {
        let mut rest = vec![];
        for _ in 0..8 {
            rest.extend_from_slice(&[0x81, 0x00, 0x00, 0x01]);
        }
        let f = eth(&rest);
        assert!(matches!(
            network_offset(LinkType::ETHERNET, &f),
            Err(LinkSkip::Malformed(_))
        ));
    }

    #[test]
    fn sll_protocol_field_selects_ipv4() {
        let mut f = [0u8; 17];
        f[14] = 0x08;
        f[16] = 0x45;
        assert_eq!(
            network_offset(LinkType::LINUX_SLL, &f),
            Ok((Network::Ipv4, 16))
        );
    }

    #[test]
    fn sll2_protocol_field_selects_ipv6() {
        let mut f = [0u8; 21];
        f[0] = 0x86;
        f[1] = 0xdd;
        assert_eq!(
            network_offset(LinkType::LINUX_SLL2, &f),
            Ok((Network::Ipv6, 20))
        );
    }

    #[test]
    fn sll2_shorter_than_header_is_malformed() {
        let f = [0x08, 0x00, 0, 0];
        assert!(matches!(
            network_offset(LinkType::LINUX_SLL2, &f),
            Err(LinkSkip::Malformed(_))
        ));
    }

    #[test]
    fn raw_ip_uses_version_nibble() {
        assert_eq!(
            network_offset(LinkType::RAW, &[0x45]),
            Ok((Network::Ipv4, 0))
        );
        assert_eq!(
            network_offset(LinkType::RAW_12, &[0x60]),
            Ok((Network::Ipv6, 0))
        );
        assert_eq!(
            network_offset(LinkType::RAW_14, &[0x10]),
            Err(LinkSkip::NotIp)
        );
    }

    #[test]
    fn null_loopback_accepts_either_host_byte_order() {
        assert_eq!(
            network_offset(LinkType::NULL, &[2, 0, 0, 0, 0x45]),
            Ok((Network::Ipv4, 4))
        );
        assert_eq!(
            network_offset(LinkType::NULL, &[0, 0, 0, 30, 0x60]),
            Ok((Network::Ipv6, 4))
        );
    }

    #[test]
    fn loop_is_big_endian() {
        assert_eq!(
            network_offset(LinkType::LOOP, &[0, 0, 0, 2, 0x45]),
            Ok((Network::Ipv4, 4))
        );
        assert_eq!(
            network_offset(LinkType::LOOP, &[2, 0, 0, 0]),
            Err(LinkSkip::NotIp)
        );
    }

    #[test]
    fn unsupported_link_type_is_named() {
        assert_eq!(
            network_offset(LinkType(105), &[0; 40]),
            Err(LinkSkip::UnsupportedLinkType)
        );
        assert_eq!(LinkType(105).name(), "IEEE802_11 (Wi-Fi)");
    }
}
