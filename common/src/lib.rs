//! Event layouts shared by the kernel probe (`ebpf/`) and the agent.
//!
//! Everything here is `#[repr(C)]`, uses fixed-width integers (no `bool`, no hidden padding)
//! and has its size pinned by a compile-time assertion, so both sides agree byte for byte.
//!
//! Addresses: `saddr`/`daddr` are 16 bytes. For IPv4 (`family == AF_INET`) the address is
//! in the **first 4 bytes** in network order and the other 12 bytes are zero (this is not
//! the `::ffff:a.b.c.d` v4-mapped form); for IPv6 all 16 bytes are used.
#![no_std]

use core::mem::size_of;

pub mod ipv6;
pub mod select;
pub mod tls;

/// `AF_INET`, as in the kernel's `family` tracepoint fields.
pub const AF_INET: u16 = 2;
/// `AF_INET6`.
pub const AF_INET6: u16 = 10;
/// `IPPROTO_TCP`, as in the `protocol` tracepoint fields.
pub const IPPROTO_TCP: u16 = 6;

/// TCP states as numbered by the kernel (`include/net/tcp_states.h`).
pub mod tcp_state {
    pub const ESTABLISHED: u32 = 1;
    pub const SYN_SENT: u32 = 2;
    pub const SYN_RECV: u32 = 3;
    pub const FIN_WAIT1: u32 = 4;
    pub const FIN_WAIT2: u32 = 5;
    pub const TIME_WAIT: u32 = 6;
    pub const CLOSE: u32 = 7;
    pub const CLOSE_WAIT: u32 = 8;
    pub const LAST_ACK: u32 = 9;
    pub const LISTEN: u32 = 10;
    pub const CLOSING: u32 = 11;
    pub const NEW_SYN_RECV: u32 = 12;

    /// The kernel's name for a state (`"CLOSE_WAIT"`), or `"UNKNOWN"`.
    pub const fn name(state: u32) -> &'static str {
        match state {
            ESTABLISHED => "ESTABLISHED",
            SYN_SENT => "SYN_SENT",
            SYN_RECV => "SYN_RECV",
            FIN_WAIT1 => "FIN_WAIT1",
            FIN_WAIT2 => "FIN_WAIT2",
            TIME_WAIT => "TIME_WAIT",
            CLOSE => "CLOSE",
            CLOSE_WAIT => "CLOSE_WAIT",
            LAST_ACK => "LAST_ACK",
            LISTEN => "LISTEN",
            CLOSING => "CLOSING",
            NEW_SYN_RECV => "NEW_SYN_RECV",
            _ => "UNKNOWN",
        }
    }
}

/// What a [`RawSockEvent`] records (its `kind` field).
pub mod kind {
    /// The socket changed TCP state: `old_state` → `state`.
    pub const STATE_CHANGE: u32 = 1;
    /// A RST arrived on this socket (`tcp:tcp_receive_reset`).
    pub const RESET_RECEIVED: u32 = 2;
    /// The kernel sent a RST (`tcp:tcp_send_reset`); `value` is the kernel's
    /// `sk_rst_reason`, `state` the socket's state (0 when there is no socket).
    pub const RESET_SENT: u32 = 3;
    /// The application wrote after the socket was idle longer than the configured
    /// threshold: `value` = bytes (or negative errno), `idle_ns` = the gap, `state` = the
    /// TCP state when the write began, `old_state` = the state when it returned. A
    /// `CLOSE_WAIT` in `state` proves the peer's FIN was already there unread.
    ///
    /// The tracepoint fires when the write returns. If it accepted data (`value > 0`) yet the
    /// socket is now CLOSE, a RST arrived during the write (on loopback the peer answers
    /// inside the call), so the write began in the state before CLOSE.
    pub const SEND_AFTER_IDLE: u32 = 4;
    /// The application read end of stream or an error: `value` = the return value, 0 for
    /// EOF or a negative errno (-104 = `ECONNRESET`).
    pub const RECV_EOF_OR_ERROR: u32 = 5;
    /// The kernel destroyed the socket (`tcp:tcp_destroy_sock`).
    pub const DESTROY: u32 = 6;
    /// A segment was retransmitted; `value` is the kernel's `err` (0 = sent).
    pub const RETRANSMIT: u32 = 7;
    /// Plaintext the proxy handed its TLS library: a [`crate::tls::RawTlsEvent`], not a
    /// [`crate::RawSockEvent`] (the record is longer).
    pub const TLS_DATA: u32 = 8;

    /// A short name for a kind (`"state_change"`), or `"unknown"`.
    pub const fn name(kind: u32) -> &'static str {
        match kind {
            STATE_CHANGE => "state_change",
            RESET_RECEIVED => "reset_received",
            RESET_SENT => "reset_sent",
            SEND_AFTER_IDLE => "send_after_idle",
            RECV_EOF_OR_ERROR => "recv_eof_or_error",
            DESTROY => "destroy",
            RETRANSMIT => "retransmit",
            TLS_DATA => "tls_data",
            _ => "unknown",
        }
    }
}

/// Bits of [`RawSockEvent::flags`].
pub mod flags {
    /// `pid`/`tid`/`comm` name the process that owns the socket (learned in process
    /// context: at connect, send or receive). Without it they are zero.
    pub const OWNER_KNOWN: u32 = 1 << 0;
    /// The addresses and ports are known (the socket was seen in `inet_sock_set_state`
    /// or the tracepoint itself carries them).
    pub const TUPLE_KNOWN: u32 = 1 << 1;
    /// `netns` holds the socket's network namespace inode.
    pub const NETNS_KNOWN: u32 = 1 << 2;
}

/// One event from the kernel probe, as written to the `EVENTS` ring buffer.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RawSockEvent {
    /// `bpf_ktime_get_ns()`: CLOCK_MONOTONIC in nanoseconds.
    pub ktime_ns: u64,
    /// Kernel address of the `struct sock`; identifies the socket while it lives.
    pub skaddr: u64,
    /// One of [`kind`].
    pub kind: u32,
    /// Owner's process id (the kernel's tgid), 0 when unknown.
    pub pid: u32,
    /// Owner's thread id (the kernel's pid), 0 when unknown.
    pub tid: u32,
    /// Network namespace inode of the socket, 0 when unknown.
    pub netns: u32,
    /// Owner's command name, NUL padded.
    pub comm: [u8; 16],
    /// Local address (see the crate docs for the IPv4 layout).
    pub saddr: [u8; 16],
    /// Remote address.
    pub daddr: [u8; 16],
    /// [`AF_INET`] or [`AF_INET6`], 0 when unknown.
    pub family: u16,
    /// Local port, host order.
    pub sport: u16,
    /// Remote port, host order.
    pub dport: u16,
    pub _pad0: u16,
    /// TCP state: the new state for [`kind::STATE_CHANGE`], else the state at the event.
    pub state: u32,
    /// The previous state for [`kind::STATE_CHANGE`], else 0.
    pub old_state: u32,
    /// Kind-specific value (bytes, return value, reset reason, error); see [`kind`].
    pub value: i64,
    /// Idle gap before a [`kind::SEND_AFTER_IDLE`] in nanoseconds, else 0.
    pub idle_ns: u64,
    /// Bits of [`flags`].
    pub flags: u32,
    pub _pad1: u32,
}

/// Size of [`RawSockEvent`] in bytes.
pub const RAW_SOCK_EVENT_SIZE: usize = 120;
const _: () = assert!(size_of::<RawSockEvent>() == RAW_SOCK_EVENT_SIZE);

impl RawSockEvent {
    /// An all-zero event.
    pub const ZERO: Self = Self {
        ktime_ns: 0,
        skaddr: 0,
        kind: 0,
        pid: 0,
        tid: 0,
        netns: 0,
        comm: [0; 16],
        saddr: [0; 16],
        daddr: [0; 16],
        family: 0,
        sport: 0,
        dport: 0,
        _pad0: 0,
        state: 0,
        old_state: 0,
        value: 0,
        idle_ns: 0,
        flags: 0,
        _pad1: 0,
    };
}

/// How many ports the port filter holds.
pub const MAX_FILTER_PORTS: usize = 8;

/// The probe's configuration: a read-only global (`CONFIG`) that userspace sets before
/// load. Zero everywhere means "trace every TCP socket, emit a send after 1 s idle".
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Config {
    /// Emit [`kind::SEND_AFTER_IDLE`] when a write follows at least this much idle time.
    pub idle_threshold_ns: u64,
    /// Keep a socket when its local or remote port is one of these; all zero = any port.
    pub ports: [u16; MAX_FILTER_PORTS],
    /// Keep a socket only in this network namespace (inode); 0 = any.
    pub netns: u32,
    /// Keep a socket only when its owner process id is this; 0 = any.
    pub pid: u32,
    /// Byte offset of `skc_net` (a `struct net *`) in `struct sock`, from the kernel's BTF;
    /// 0 = unknown (then netns is not read and the netns filter is ignored).
    pub sk_net_offset: u32,
    /// Byte offset of `ns.inum` in `struct net`; 0 = unknown.
    pub net_inum_offset: u32,
    /// Sparse capture: a data segment after this much quiet on its connection is kept
    /// (see [`select`]).
    pub select_idle_ns: u64,
    /// Sparse capture: how long a connection stays hot after a SYN, its first data or a
    /// reuse.
    pub select_hot_ns: u64,
    /// Sparse capture: how long a connection stays hot after a 5xx response head.
    pub select_error_hot_ns: u64,
}

/// Size of [`Config`] in bytes.
pub const CONFIG_SIZE: usize = 64;
const _: () = assert!(size_of::<Config>() == CONFIG_SIZE);

impl Config {
    /// Default idle threshold: 1 s.
    pub const DEFAULT_IDLE_THRESHOLD_NS: u64 = 1_000_000_000;

    /// Every TCP socket, 1 s idle threshold, netns not read.
    pub const DEFAULT: Self = Self {
        idle_threshold_ns: Self::DEFAULT_IDLE_THRESHOLD_NS,
        ports: [0; MAX_FILTER_PORTS],
        netns: 0,
        pid: 0,
        sk_net_offset: 0,
        net_inum_offset: 0,
        select_idle_ns: Self::DEFAULT_IDLE_THRESHOLD_NS,
        select_hot_ns: Self::DEFAULT_SELECT_HOT_NS,
        select_error_hot_ns: Self::DEFAULT_SELECT_ERROR_HOT_NS,
    };

    /// Default time a connection stays hot in sparse capture after a SYN, its first data
    /// or a reuse: 25 ms. A busy keep-alive connection is copied whole for that long, so
    /// this sets most of what sparse capture costs; the reply to a kept request is kept
    /// however late it comes, and 25 ms after it covers the rest of most responses.
    pub const DEFAULT_SELECT_HOT_NS: u64 = 25_000_000;

    /// Default time a connection stays hot after a 5xx response head: 250 ms.
    pub const DEFAULT_SELECT_ERROR_HOT_NS: u64 = 250_000_000;

    /// The sparse-capture thresholds.
    #[inline(always)]
    pub fn select(&self) -> select::SelectConfig {
        select::SelectConfig {
            idle_ns: self.select_idle_ns,
            hot_ns: self.select_hot_ns,
            error_hot_ns: self.select_error_hot_ns,
        }
    }

    /// Whether a socket with these ports passes the port filter.
    #[inline(always)]
    pub fn port_matches(&self, sport: u16, dport: u16) -> bool {
        let mut any = true;
        let mut i = 0;
        while i < MAX_FILTER_PORTS {
            let p = self.ports[i];
            if p != 0 {
                any = false;
                if p == sport || p == dport {
                    return true;
                }
            }
            i += 1;
        }
        any
    }
}

impl Default for Config {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// What the kernel remembers per socket (map `SOCKS`, keyed by `skaddr`).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SockInfo {
    /// Last send or receive (or connect) in CLOCK_MONOTONIC ns; 0 = none yet.
    pub last_activity_ns: u64,
    /// Owner process id (tgid), 0 = unknown.
    pub pid: u32,
    /// Owner thread id, 0 = unknown.
    pub tid: u32,
    pub comm: [u8; 16],
    pub saddr: [u8; 16],
    pub daddr: [u8; 16],
    pub family: u16,
    pub sport: u16,
    pub dport: u16,
    pub _pad0: u16,
    /// Last TCP state seen.
    pub state: u32,
    /// Network namespace inode, 0 = unknown.
    pub netns: u32,
    /// Bits of [`flags`].
    pub flags: u32,
    /// The state before `state` (to tell the state a write began in from the one it
    /// ended in, when a RST arrived during the write).
    pub prev_state: u32,
}

impl SockInfo {
    /// An all-zero record.
    pub const ZERO: Self = Self {
        last_activity_ns: 0,
        pid: 0,
        tid: 0,
        comm: [0; 16],
        saddr: [0; 16],
        daddr: [0; 16],
        family: 0,
        sport: 0,
        dport: 0,
        _pad0: 0,
        state: 0,
        netns: 0,
        flags: 0,
        prev_state: 0,
    };
}

/// Size of [`SockInfo`] in bytes.
pub const SOCK_INFO_SIZE: usize = 88;
const _: () = assert!(size_of::<SockInfo>() == SOCK_INFO_SIZE);

/// Size of the `EVENTS` ring buffer: 4 MiB, about 32k events (a power of two, a multiple of
/// the page size): a lab proxy opening a connection per request makes ~13 events a request.
pub const EVENTS_RING_BYTES: u32 = 4 * 1024 * 1024;

/// Names of the maps and globals, shared so both sides spell them the same.
pub mod names {
    pub const EVENTS: &str = "EVENTS";
    pub const LOST: &str = "LOST";
    pub const SOCKS: &str = "SOCKS";
    pub const CONFIG: &str = "CONFIG";
    pub const FLOWS: &str = "FLOWS";
    /// Responses counted by `select`, by sender and status class.
    pub const RESPONSES: &str = "RESPONSES";
    /// The sparse-capture socket filter program.
    pub const SELECT: &str = "select";
}

/// One tracepoint the probe attaches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tracepoint {
    /// The program's name in the object.
    pub program: &'static str,
    pub category: &'static str,
    pub event: &'static str,
    /// Attached as a raw tracepoint (the program reads the `TP_PROTO` arguments, and the
    /// kernel builds no trace record): for the events that fire on every send and receive.
    pub raw: bool,
    /// A raw tracepoint's `TP_PROTO` as the program reads it, in C spelling (checked against
    /// the kernel's BTF before load); empty for a classic one (its record's offsets are
    /// checked instead, [`tp::FIELDS`]).
    pub args: &'static [&'static str],
}

const fn classic(program: &'static str, category: &'static str) -> Tracepoint {
    Tracepoint {
        program,
        category,
        event: program,
        raw: false,
        args: &[],
    }
}

const fn raw(
    program: &'static str,
    category: &'static str,
    args: &'static [&'static str],
) -> Tracepoint {
    Tracepoint {
        program,
        category,
        event: program,
        raw: true,
        args,
    }
}

/// `TP_PROTO` of `sock:sock_send_length` and `sock:sock_recv_length`.
pub const SOCK_MSG_LENGTH_ARGS: &[&str] = &["struct sock *", "int", "int"];

/// The tracepoints the probe attaches.
pub const TRACEPOINTS: [Tracepoint; 7] = [
    classic("inet_sock_set_state", "sock"),
    classic("tcp_receive_reset", "tcp"),
    classic("tcp_send_reset", "tcp"),
    classic("tcp_destroy_sock", "tcp"),
    raw("sock_send_length", "sock", SOCK_MSG_LENGTH_ARGS),
    raw("sock_recv_length", "sock", SOCK_MSG_LENGTH_ARGS),
    classic("tcp_retransmit_skb", "tcp"),
];

/// Byte offsets of the tracepoint context fields, from
/// `/sys/kernel/tracing/events/<category>/<event>/format` on Linux 6.18. The agent checks
/// them against the running kernel's format files before loading (`probe::layout`).
pub mod tp {
    /// `events/sock/inet_sock_set_state/format`
    pub mod inet_sock_set_state {
        pub const SKADDR: usize = 8;
        pub const OLDSTATE: usize = 16;
        pub const NEWSTATE: usize = 20;
        pub const SPORT: usize = 24;
        pub const DPORT: usize = 26;
        pub const FAMILY: usize = 28;
        pub const PROTOCOL: usize = 30;
        pub const SADDR: usize = 32;
        pub const DADDR: usize = 36;
        pub const SADDR_V6: usize = 40;
        pub const DADDR_V6: usize = 56;
    }
    /// `events/tcp/tcp_receive_reset/format` (same layout as `tcp_destroy_sock`)
    pub mod tcp_receive_reset {
        pub const SKADDR: usize = 8;
        pub const SPORT: usize = 16;
        pub const DPORT: usize = 18;
        pub const FAMILY: usize = 20;
        pub const SADDR: usize = 22;
        pub const DADDR: usize = 26;
        pub const SADDR_V6: usize = 30;
        pub const DADDR_V6: usize = 46;
    }
    /// `events/tcp/tcp_destroy_sock/format`
    pub mod tcp_destroy_sock {
        pub use super::tcp_receive_reset::*;
    }
    /// `events/tcp/tcp_send_reset/format`: addresses are 28-byte `sockaddr_in`/`sockaddr_in6`.
    pub mod tcp_send_reset {
        pub const SKBADDR: usize = 8;
        pub const SKADDR: usize = 16;
        pub const STATE: usize = 24;
        pub const REASON: usize = 28;
        pub const SADDR: usize = 32;
        pub const DADDR: usize = 60;
        /// Size of each sockaddr field.
        pub const SOCKADDR_LEN: usize = 28;
    }
    /// `events/tcp/tcp_retransmit_skb/format`
    pub mod tcp_retransmit_skb {
        pub const SKBADDR: usize = 8;
        pub const SKADDR: usize = 16;
        pub const STATE: usize = 24;
        pub const SPORT: usize = 28;
        pub const DPORT: usize = 30;
        pub const FAMILY: usize = 32;
        pub const SADDR: usize = 34;
        pub const DADDR: usize = 38;
        pub const SADDR_V6: usize = 42;
        pub const DADDR_V6: usize = 58;
        pub const ERR: usize = 76;
    }

    /// Every (category, event, field, offset) above, for checking against the running
    /// kernel's format files.
    pub const FIELDS: &[(&str, &str, &str, usize)] = &[
        (
            "sock",
            "inet_sock_set_state",
            "skaddr",
            inet_sock_set_state::SKADDR,
        ),
        (
            "sock",
            "inet_sock_set_state",
            "oldstate",
            inet_sock_set_state::OLDSTATE,
        ),
        (
            "sock",
            "inet_sock_set_state",
            "newstate",
            inet_sock_set_state::NEWSTATE,
        ),
        (
            "sock",
            "inet_sock_set_state",
            "sport",
            inet_sock_set_state::SPORT,
        ),
        (
            "sock",
            "inet_sock_set_state",
            "dport",
            inet_sock_set_state::DPORT,
        ),
        (
            "sock",
            "inet_sock_set_state",
            "family",
            inet_sock_set_state::FAMILY,
        ),
        (
            "sock",
            "inet_sock_set_state",
            "protocol",
            inet_sock_set_state::PROTOCOL,
        ),
        (
            "sock",
            "inet_sock_set_state",
            "saddr",
            inet_sock_set_state::SADDR,
        ),
        (
            "sock",
            "inet_sock_set_state",
            "daddr",
            inet_sock_set_state::DADDR,
        ),
        (
            "sock",
            "inet_sock_set_state",
            "saddr_v6",
            inet_sock_set_state::SADDR_V6,
        ),
        (
            "sock",
            "inet_sock_set_state",
            "daddr_v6",
            inet_sock_set_state::DADDR_V6,
        ),
        (
            "tcp",
            "tcp_receive_reset",
            "skaddr",
            tcp_receive_reset::SKADDR,
        ),
        (
            "tcp",
            "tcp_receive_reset",
            "sport",
            tcp_receive_reset::SPORT,
        ),
        (
            "tcp",
            "tcp_receive_reset",
            "dport",
            tcp_receive_reset::DPORT,
        ),
        (
            "tcp",
            "tcp_receive_reset",
            "family",
            tcp_receive_reset::FAMILY,
        ),
        (
            "tcp",
            "tcp_receive_reset",
            "saddr",
            tcp_receive_reset::SADDR,
        ),
        (
            "tcp",
            "tcp_receive_reset",
            "daddr",
            tcp_receive_reset::DADDR,
        ),
        (
            "tcp",
            "tcp_receive_reset",
            "saddr_v6",
            tcp_receive_reset::SADDR_V6,
        ),
        (
            "tcp",
            "tcp_receive_reset",
            "daddr_v6",
            tcp_receive_reset::DADDR_V6,
        ),
        (
            "tcp",
            "tcp_destroy_sock",
            "skaddr",
            tcp_destroy_sock::SKADDR,
        ),
        ("tcp", "tcp_destroy_sock", "sport", tcp_destroy_sock::SPORT),
        ("tcp", "tcp_destroy_sock", "dport", tcp_destroy_sock::DPORT),
        (
            "tcp",
            "tcp_destroy_sock",
            "family",
            tcp_destroy_sock::FAMILY,
        ),
        ("tcp", "tcp_destroy_sock", "saddr", tcp_destroy_sock::SADDR),
        ("tcp", "tcp_destroy_sock", "daddr", tcp_destroy_sock::DADDR),
        (
            "tcp",
            "tcp_destroy_sock",
            "saddr_v6",
            tcp_destroy_sock::SADDR_V6,
        ),
        (
            "tcp",
            "tcp_destroy_sock",
            "daddr_v6",
            tcp_destroy_sock::DADDR_V6,
        ),
        ("tcp", "tcp_send_reset", "skbaddr", tcp_send_reset::SKBADDR),
        ("tcp", "tcp_send_reset", "skaddr", tcp_send_reset::SKADDR),
        ("tcp", "tcp_send_reset", "state", tcp_send_reset::STATE),
        ("tcp", "tcp_send_reset", "reason", tcp_send_reset::REASON),
        ("tcp", "tcp_send_reset", "saddr", tcp_send_reset::SADDR),
        ("tcp", "tcp_send_reset", "daddr", tcp_send_reset::DADDR),
        (
            "tcp",
            "tcp_retransmit_skb",
            "skbaddr",
            tcp_retransmit_skb::SKBADDR,
        ),
        (
            "tcp",
            "tcp_retransmit_skb",
            "skaddr",
            tcp_retransmit_skb::SKADDR,
        ),
        (
            "tcp",
            "tcp_retransmit_skb",
            "state",
            tcp_retransmit_skb::STATE,
        ),
        (
            "tcp",
            "tcp_retransmit_skb",
            "sport",
            tcp_retransmit_skb::SPORT,
        ),
        (
            "tcp",
            "tcp_retransmit_skb",
            "dport",
            tcp_retransmit_skb::DPORT,
        ),
        (
            "tcp",
            "tcp_retransmit_skb",
            "family",
            tcp_retransmit_skb::FAMILY,
        ),
        (
            "tcp",
            "tcp_retransmit_skb",
            "saddr",
            tcp_retransmit_skb::SADDR,
        ),
        (
            "tcp",
            "tcp_retransmit_skb",
            "daddr",
            tcp_retransmit_skb::DADDR,
        ),
        (
            "tcp",
            "tcp_retransmit_skb",
            "saddr_v6",
            tcp_retransmit_skb::SADDR_V6,
        ),
        (
            "tcp",
            "tcp_retransmit_skb",
            "daddr_v6",
            tcp_retransmit_skb::DADDR_V6,
        ),
        ("tcp", "tcp_retransmit_skb", "err", tcp_retransmit_skb::ERR),
    ];
}

/// `MSG_PEEK`: a receive with this flag does not consume data; the probe ignores it.
pub const MSG_PEEK: u32 = 2;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_port_filter_matches_any_port() {
        assert!(Config::DEFAULT.port_matches(1234, 80));
    }

    #[test]
    fn port_filter_matches_either_side() {
        let mut c = Config::DEFAULT;
        c.ports[3] = 8080;
        assert!(c.port_matches(8080, 40000));
        assert!(c.port_matches(40000, 8080));
        assert!(!c.port_matches(40000, 80));
    }

    #[test]
    fn names_cover_every_kind() {
        for k in 1..=8 {
            assert_ne!(kind::name(k), "unknown");
        }
        assert_eq!(tcp_state::name(tcp_state::CLOSE_WAIT), "CLOSE_WAIT");
    }
}
