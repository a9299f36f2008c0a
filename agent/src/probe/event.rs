//! Decoding the probe's ring-buffer records into [`SockEvent`]s.
//!
//! Records are untrusted bytes: the length is checked before one `read_unaligned`, and every
//! field is then interpreted without panicking (unknown kinds and families are errors or
//! `None`, never a crash).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use serde::Serialize;
use tracer_common::tls::{op, tls_flags, RawTlsHead, RAW_TLS_HEAD_SIZE, TLS_HEAD_MAX};
use tracer_common::{flags, kind, tcp_state, RawSockEvent, AF_INET, AF_INET6, RAW_SOCK_EVENT_SIZE};

/// What happened to the socket, with the values that matter for each kind.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum SockEventKind {
    /// TCP state change `old` → `new` (kernel numbering, see [`tcp_state`]).
    StateChange { old: u32, new: u32 },
    /// A RST arrived.
    ResetReceived,
    /// The kernel sent a RST; `reason` is the kernel's `sk_rst_reason`.
    ResetSent { reason: u32 },
    /// The application wrote after an idle gap; `ret` is bytes or a negative errno. The
    /// event's `state` is the state the write began in (`CLOSE_WAIT`: the peer's FIN was
    /// already there, unread); `ended_in` the state when it returned.
    SendAfterIdle {
        ret: i64,
        idle_ns: u64,
        ended_in: u32,
    },
    /// The application read EOF (`ret == 0`) or an error (negative errno, -104 = ECONNRESET).
    RecvEofOrError { ret: i64 },
    /// The socket was destroyed.
    Destroy,
    /// A segment was retransmitted; `err` is 0 when it was sent.
    Retransmit { err: i64 },
    /// The process handed its TLS library plaintext to send (`write`) or got plaintext
    /// from it (a read): `len` bytes, of which `data` holds the first (a message head).
    /// `conn` is the library's connection object; `by_conn` says the socket was named by
    /// that object's last socket, not by the call's own socket operation. `close`: the
    /// process ended the TLS session instead (no data).
    TlsData {
        write: bool,
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        close: bool,
        len: u64,
        conn: u64,
        by_conn: bool,
        #[serde(with = "hex")]
        data: Vec<u8>,
    },
}

/// Plaintext bytes in `events.jsonl`, as lowercase hex (HTTP/2 frames are binary).
mod hex {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(b: &[u8], s: S) -> Result<S::Ok, S::Error> {
        let mut out = String::with_capacity(b.len() * 2);
        for byte in b {
            out.push_str(&format!("{byte:02x}"));
        }
        s.serialize_str(&out)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let s = String::deserialize(d)?;
        if s.len() % 2 != 0 {
            return Err(serde::de::Error::custom("odd number of hex digits"));
        }
        (0..s.len())
            .step_by(2)
            .map(|i| {
                s.get(i..i + 2)
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .ok_or_else(|| serde::de::Error::custom("not hex"))
            })
            .collect()
    }
}

/// One kernel event about one TCP socket, as the engine sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct SockEvent {
    /// CLOCK_MONOTONIC ns (see [`super::ClockAlignment`] to turn it into unix time).
    pub ktime_ns: u64,
    /// Identifies the socket while it lives (kernel address of `struct sock`).
    pub skaddr: u64,
    pub kind: SockEventKind,
    /// The TCP state at the event (for a state change: the new state).
    pub state: u32,
    /// Owner process id, when the probe saw the owner in process context.
    pub pid: Option<u32>,
    /// Owner thread id.
    pub tid: Option<u32>,
    /// Owner command name.
    pub comm: Option<String>,
    /// Network namespace inode, when the kernel's BTF told the probe where to read it.
    pub netns: Option<u32>,
    /// Local address and port (port 0 before `connect` has chosen one).
    pub local: Option<SocketAddr>,
    /// Remote address and port.
    pub remote: Option<SocketAddr>,
}

impl SockEvent {
    /// The kernel's name of [`Self::state`] (`"CLOSE_WAIT"`).
    pub fn state_name(&self) -> &'static str {
        tcp_state::name(self.state)
    }
}

/// Why a record could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The record is shorter than the shared layout: the probe and agent disagree.
    #[error("probe record is {0} bytes, expected at least {RAW_SOCK_EVENT_SIZE}: the kernel probe and the agent were built from different sources")]
    TooShort(usize),
    /// The record names an event kind this agent does not know.
    #[error("probe record has unknown event kind {0}")]
    UnknownKind(u32),
}

/// Reinterprets a record as the shared layout, after a length check.
pub fn decode_raw(bytes: &[u8]) -> Result<RawSockEvent, DecodeError> {
    if bytes.len() < RAW_SOCK_EVENT_SIZE {
        return Err(DecodeError::TooShort(bytes.len()));
    }
    // SAFETY: `bytes` holds at least `size_of::<RawSockEvent>()` bytes (checked above; the
    // size is pinned in tracer-common), `read_unaligned` has no alignment requirement, and
    // every bit pattern is a valid `RawSockEvent` (integers and byte arrays only).
    Ok(unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<RawSockEvent>()) })
}

/// Decodes one ring-buffer record: a socket event, or a TLS plaintext copy (told apart by
/// the `kind` both layouts keep at the same offset).
pub fn decode(bytes: &[u8]) -> Result<SockEvent, DecodeError> {
    let kind_at = std::mem::offset_of!(RawSockEvent, kind);
    let kind = bytes
        .get(kind_at..kind_at + 4)
        .and_then(|b| b.try_into().ok())
        .map(u32::from_ne_bytes);
    if kind == Some(kind::TLS_DATA) {
        let (head, data) = decode_raw_tls(bytes)?;
        return Ok(from_raw_tls(&head, data));
    }
    from_raw(&decode_raw(bytes)?)
}

/// Reads a TLS plaintext record of either size (see [`tracer_common::tls::RawTlsEventOf`]):
/// its head, and the plaintext it holds (its `copied` bytes, no more than it has room for).
pub fn decode_raw_tls(bytes: &[u8]) -> Result<(RawTlsHead, &[u8]), DecodeError> {
    if bytes.len() < RAW_TLS_HEAD_SIZE {
        return Err(DecodeError::TooShort(bytes.len()));
    }
    // SAFETY: `bytes` holds at least `size_of::<RawTlsHead>()` bytes (checked above; the
    // size is pinned in tracer-common), `read_unaligned` has no alignment requirement, and
    // every bit pattern is a valid `RawTlsHead` (integers and byte arrays only).
    let head = unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<RawTlsHead>()) };
    let room = &bytes[RAW_TLS_HEAD_SIZE..];
    let copied = usize::from(head.copied).min(TLS_HEAD_MAX).min(room.len());
    Ok((head, &room[..copied]))
}

/// Turns a TLS plaintext copy (its head and the plaintext it holds) into the engine's event.
pub fn from_raw_tls(raw: &RawTlsHead, data: &[u8]) -> SockEvent {
    SockEvent {
        ktime_ns: raw.ktime_ns,
        skaddr: raw.skaddr,
        kind: SockEventKind::TlsData {
            write: raw.dir == op::WRITE,
            close: raw.dir == op::CLOSE,
            len: raw.len,
            conn: raw.conn,
            by_conn: raw.flags & tls_flags::SOCKET_BY_CONN != 0,
            data: data.to_vec(),
        },
        state: 0,
        pid: Some(raw.pid),
        tid: Some(raw.tid),
        comm: None,
        netns: (raw.netns != 0).then_some(raw.netns),
        local: sockaddr(raw.family, &raw.saddr, raw.sport),
        remote: sockaddr(raw.family, &raw.daddr, raw.dport),
    }
}

/// Turns the shared layout into the engine's event.
pub fn from_raw(raw: &RawSockEvent) -> Result<SockEvent, DecodeError> {
    let kind = match raw.kind {
        kind::STATE_CHANGE => SockEventKind::StateChange {
            old: raw.old_state,
            new: raw.state,
        },
        kind::RESET_RECEIVED => SockEventKind::ResetReceived,
        kind::RESET_SENT => SockEventKind::ResetSent {
            reason: u32::try_from(raw.value).unwrap_or(u32::MAX),
        },
        kind::SEND_AFTER_IDLE => SockEventKind::SendAfterIdle {
            ret: raw.value,
            idle_ns: raw.idle_ns,
            ended_in: raw.old_state,
        },
        kind::RECV_EOF_OR_ERROR => SockEventKind::RecvEofOrError { ret: raw.value },
        kind::DESTROY => SockEventKind::Destroy,
        kind::RETRANSMIT => SockEventKind::Retransmit { err: raw.value },
        other => return Err(DecodeError::UnknownKind(other)),
    };
    let owner = raw.flags & flags::OWNER_KNOWN != 0;
    let (local, remote) = if raw.flags & flags::TUPLE_KNOWN != 0 {
        (
            sockaddr(raw.family, &raw.saddr, raw.sport),
            sockaddr(raw.family, &raw.daddr, raw.dport),
        )
    } else {
        (None, None)
    };
    Ok(SockEvent {
        ktime_ns: raw.ktime_ns,
        skaddr: raw.skaddr,
        kind,
        state: raw.state,
        pid: owner.then_some(raw.pid),
        tid: owner.then_some(raw.tid),
        comm: owner.then(|| comm_str(&raw.comm)),
        netns: (raw.flags & flags::NETNS_KNOWN != 0 && raw.netns != 0).then_some(raw.netns),
        local,
        remote,
    })
}

/// An address from the shared layout: IPv4 in the first 4 bytes, IPv6 in all 16.
fn sockaddr(family: u16, addr: &[u8; 16], port: u16) -> Option<SocketAddr> {
    let ip = match family {
        AF_INET => IpAddr::V4(Ipv4Addr::new(addr[0], addr[1], addr[2], addr[3])),
        AF_INET6 => IpAddr::V6(Ipv6Addr::from(*addr)),
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

/// A NUL-padded kernel `comm`, lossy UTF-8.
fn comm_str(comm: &[u8; 16]) -> String {
    let end = comm.iter().position(|&b| b == 0).unwrap_or(comm.len());
    String::from_utf8_lossy(&comm[..end]).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracer_common::tls::{RawTlsEvent, RAW_TLS_EVENT_SIZE, TLS_SMALL_MAX};

    const TEMPLATE: RawSockEvent = RawSockEvent {
        ktime_ns: 1_000,
        skaddr: 0xffff_8880_0000_1000,
        kind: kind::STATE_CHANGE,
        pid: 4242,
        tid: 4243,
        netns: 0,
        comm: *b"nginx\0\0\0\0\0\0\0\0\0\0\0",
        saddr: [127, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
        daddr: [10, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
        family: AF_INET,
        sport: 40_000,
        dport: 8080,
        _pad0: 0,
        state: tcp_state::SYN_SENT,
        old_state: tcp_state::CLOSE,
        value: 0,
        idle_ns: 0,
        flags: flags::OWNER_KNOWN | flags::TUPLE_KNOWN,
        _pad1: 0,
    };

    /// The record as the kernel writes it: the struct's bytes, little endian.
    fn bytes_of(raw: &RawSockEvent) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(&raw.ktime_ns.to_le_bytes());
        b.extend_from_slice(&raw.skaddr.to_le_bytes());
        for v in [raw.kind, raw.pid, raw.tid, raw.netns] {
            b.extend_from_slice(&v.to_le_bytes());
        }
        b.extend_from_slice(&raw.comm);
        b.extend_from_slice(&raw.saddr);
        b.extend_from_slice(&raw.daddr);
        for v in [raw.family, raw.sport, raw.dport, raw._pad0] {
            b.extend_from_slice(&v.to_le_bytes());
        }
        b.extend_from_slice(&raw.state.to_le_bytes());
        b.extend_from_slice(&raw.old_state.to_le_bytes());
        b.extend_from_slice(&raw.value.to_le_bytes());
        b.extend_from_slice(&raw.idle_ns.to_le_bytes());
        b.extend_from_slice(&raw.flags.to_le_bytes());
        b.extend_from_slice(&raw._pad1.to_le_bytes());
        b
    }

    #[test]
    fn hand_built_bytes_match_the_shared_layout() {
        let b = bytes_of(&TEMPLATE);
        assert_eq!(b.len(), RAW_SOCK_EVENT_SIZE);
        assert_eq!(decode_raw(&b).unwrap(), TEMPLATE);
    }

    #[test]
    fn state_change_decodes_owner_and_v4_tuple() {
        let e = decode(&bytes_of(&TEMPLATE)).unwrap();
        assert_eq!(
            e.kind,
            SockEventKind::StateChange {
                old: tcp_state::CLOSE,
                new: tcp_state::SYN_SENT
            }
        );
        assert_eq!(e.pid, Some(4242));
        assert_eq!(e.comm.as_deref(), Some("nginx"));
        assert_eq!(e.local, Some("127.0.0.1:40000".parse().unwrap()));
        assert_eq!(e.remote, Some("10.0.0.2:8080".parse().unwrap()));
        assert_eq!(e.state_name(), "SYN_SENT");
        assert_eq!(e.netns, None);
    }

    #[test]
    fn unaligned_record_decodes() {
        let mut b = vec![0u8];
        b.extend(bytes_of(&TEMPLATE));
        assert_eq!(decode_raw(&b[1..]).unwrap(), TEMPLATE);
    }

    #[test]
    fn short_record_is_an_error_not_a_panic() {
        let b = bytes_of(&TEMPLATE);
        for len in [0, 1, 64, RAW_SOCK_EVENT_SIZE - 1] {
            assert_eq!(decode(&b[..len]), Err(DecodeError::TooShort(len)));
        }
    }

    #[test]
    fn unknown_kind_is_an_error() {
        let raw = RawSockEvent {
            kind: 99,
            ..TEMPLATE
        };
        assert_eq!(decode(&bytes_of(&raw)), Err(DecodeError::UnknownKind(99)));
    }

    #[test]
    fn send_after_idle_in_close_wait_keeps_gap_and_bytes() {
        let raw = RawSockEvent {
            kind: kind::SEND_AFTER_IDLE,
            state: tcp_state::CLOSE_WAIT,
            old_state: tcp_state::CLOSE,
            value: 517,
            idle_ns: 4_000_000_000,
            ..TEMPLATE
        };
        let e = decode(&bytes_of(&raw)).unwrap();
        assert_eq!(
            e.kind,
            SockEventKind::SendAfterIdle {
                ret: 517,
                idle_ns: 4_000_000_000,
                ended_in: tcp_state::CLOSE,
            }
        );
        assert_eq!(e.state_name(), "CLOSE_WAIT");
    }

    #[test]
    fn recv_econnreset_keeps_negative_errno() {
        let raw = RawSockEvent {
            kind: kind::RECV_EOF_OR_ERROR,
            value: -104,
            ..TEMPLATE
        };
        assert_eq!(
            decode(&bytes_of(&raw)).unwrap().kind,
            SockEventKind::RecvEofOrError { ret: -104 }
        );
    }

    #[test]
    fn unknown_owner_and_tuple_are_none() {
        let raw = RawSockEvent {
            flags: 0,
            ..TEMPLATE
        };
        let e = decode(&bytes_of(&raw)).unwrap();
        assert_eq!((e.pid, e.comm, e.local), (None, None, None));
    }

    #[test]
    fn v6_addresses_use_all_sixteen_bytes() {
        let mut a = [0u8; 16];
        a[15] = 1;
        let raw = RawSockEvent {
            family: AF_INET6,
            saddr: a,
            daddr: a,
            ..TEMPLATE
        };
        let e = decode(&bytes_of(&raw)).unwrap();
        assert_eq!(e.local, Some("[::1]:40000".parse().unwrap()));
    }

    #[test]
    fn tls_plaintext_is_told_apart_by_kind_and_keeps_only_the_copied_bytes() {
        let mut raw = RawTlsEvent {
            ktime_ns: 7,
            skaddr: 0xffff_8880_0000_2000,
            kind: kind::TLS_DATA,
            pid: 10,
            tid: 11,
            dir: op::WRITE,
            len: 4096,
            conn: 0xc000_1000,
            saddr: TEMPLATE.saddr,
            daddr: TEMPLATE.daddr,
            family: AF_INET,
            sport: 443,
            dport: 50_000,
            copied: 12,
            flags: tls_flags::SOCKET_BY_THREAD | tls_flags::TRUNCATED,
            netns: 0,
            data: [0; TLS_HEAD_MAX],
        };
        raw.data[..12].copy_from_slice(b"HTTP/1.1 502");
        // SAFETY: a plain-data struct read as its bytes.
        let b = unsafe {
            std::slice::from_raw_parts(
                (&raw as *const RawTlsEvent).cast::<u8>(),
                RAW_TLS_EVENT_SIZE,
            )
        };
        let e = decode(b).unwrap();
        assert_eq!(
            e.kind,
            SockEventKind::TlsData {
                write: true,
                close: false,
                len: 4096,
                conn: 0xc000_1000,
                by_conn: false,
                data: b"HTTP/1.1 502".to_vec()
            }
        );
        assert_eq!(e.local, Some("127.0.0.1:443".parse().unwrap()));
        // a small record (the probe's choice for short copies) reads the same
        let small = &b[..RAW_TLS_HEAD_SIZE + TLS_SMALL_MAX];
        assert_eq!(decode(small).unwrap(), e);
        // a record with less room than its `copied` keeps only what it holds
        match decode(&b[..RAW_TLS_HEAD_SIZE + 8]).unwrap().kind {
            SockEventKind::TlsData { data, .. } => assert_eq!(data, b"HTTP/1.1"),
            other => panic!("{other:?}"),
        }
        assert_eq!(
            decode(&b[..RAW_TLS_HEAD_SIZE - 1]),
            Err(DecodeError::TooShort(RAW_TLS_HEAD_SIZE - 1))
        );
        // and back from events.jsonl
        let json = serde_json::to_string(&e).unwrap();
        assert!(
            json.contains("\"data\":\"485454502f312e3120353032\""),
            "{json}"
        );
        assert_eq!(serde_json::from_str::<SockEvent>(&json).unwrap(), e);
    }

    #[test]
    fn unknown_family_has_no_address() {
        let raw = RawSockEvent {
            family: 1,
            ..TEMPLATE
        };
        assert_eq!(decode(&bytes_of(&raw)).unwrap().local, None);
    }
}
