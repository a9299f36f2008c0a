//! Sparse capture: which packets the kernel hands to `tracer capture` (its default).
//!
//! Copying every data segment to userspace costs a busy proxy far more than tracer's
//! 3% budget, and almost all of them belong to healthy exchanges. A socket filter
//! (`select` in `ebpf/`) keeps per-connection marks in an LRU map and accepts only:
//!
//! - control segments (SYN, FIN, RST); a FIN or RST makes the rest of the connection
//!   *hot* (kept whole), a SYN makes its first [`SelectConfig::hot_ns`] hot, so short
//!   connections (one request each, refused, crashed, timed out) are kept whole;
//! - the first data segment seen on a connection, and the first after the connection was
//!   quiet for at least [`SelectConfig::idle_ns`] (a pooled connection being reused: where
//!   keep-alive races happen); each makes the next `hot_ns` hot, for the exchange it starts;
//! - a response head with a 5xx status, and [`SelectConfig::error_hot_ns`] after it, even
//!   inside a hot window (errors come in runs, and the engine needs each request of a run
//!   to pair it with its response);
//! - every data segment while the connection is hot;
//! - the first data segment the other side sends after a kept one (the reply, however
//!   slow), and `hot_ns` after it.
//!
//! Pure ACKs are never kept. What is dropped are data segments of busy connections in
//! the middle of their life: the engine treats the gaps as a capture that starts again
//! (it resynchronises on the next message head and forgets idle times it cannot know).
//!
//! [`decide`] is the whole rule, shared by the kernel program and its unit tests.

/// Thresholds of the selection, part of [`crate::Config`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SelectConfig {
    /// A data segment after at least this much quiet on its connection is kept.
    pub idle_ns: u64,
    /// How long a connection stays hot after a SYN, its first data or a reuse (and after
    /// the reply to a kept segment): long enough for the exchange it starts. The cost of
    /// sparse capture grows with it, since a busy connection is kept whole for that long.
    pub hot_ns: u64,
    /// How long a connection stays hot after a 5xx response head.
    pub error_hot_ns: u64,
}

/// What the filter remembers per connection: a slot of the array map `FLOWS`, chosen by
/// [`slot`] (a collision only makes a connection look new, so more is kept, never less).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowMark {
    /// Last data segment seen, kept or not (CLOCK_MONOTONIC ns); 0 until the connection's
    /// first data segment (a mark made by its SYN).
    pub last_data_ns: u64,
    /// Keep every segment until this time; `u64::MAX` once the connection is closing.
    pub hot_until_ns: u64,
    /// The side whose next data segment is kept (the reply to a kept one): [`FROM_LO`],
    /// [`FROM_HI`] or 0.
    pub awaiting: u32,
    /// Which connection holds the slot ([`slot`]'s tag; never 0).
    pub tag: u32,
}

/// [`FlowMark::awaiting`]: the lower endpoint of the [`FlowKey`] sends next.
pub const FROM_LO: u32 = 1;
/// [`FlowMark::awaiting`]: the higher endpoint sends next.
pub const FROM_HI: u32 = 2;

/// Size of [`FlowMark`] in bytes.
pub const FLOW_MARK_SIZE: usize = 24;
const _: () = assert!(core::mem::size_of::<FlowMark>() == FLOW_MARK_SIZE);

/// A connection, the same for both directions: the lower (address, port) endpoint first.
/// IPv4 addresses use the first 4 bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowKey {
    pub addr_lo: [u8; 16],
    pub addr_hi: [u8; 16],
    pub port_lo: u16,
    pub port_hi: u16,
}

/// Size of [`FlowKey`] in bytes.
pub const FLOW_KEY_SIZE: usize = 36;
const _: () = assert!(core::mem::size_of::<FlowKey>() == FLOW_KEY_SIZE);

impl FlowKey {
    /// The key of the segment from `(src, sport)` to `(dst, dport)`, and the sender's side
    /// ([`FROM_LO`] or [`FROM_HI`]).
    #[inline(always)]
    pub fn new(src: [u8; 16], sport: u16, dst: [u8; 16], dport: u16) -> (Self, u32) {
        if lower(&src, sport, &dst, dport) {
            let k = Self {
                addr_lo: src,
                addr_hi: dst,
                port_lo: sport,
                port_hi: dport,
            };
            (k, FROM_LO)
        } else {
            let k = Self {
                addr_lo: dst,
                addr_hi: src,
                port_lo: dport,
                port_hi: sport,
            };
            (k, FROM_HI)
        }
    }
}

/// Whether `(a, ap)` sorts before or equal to `(b, bp)`.
#[inline(always)]
fn lower(a: &[u8; 16], ap: u16, b: &[u8; 16], bp: u16) -> bool {
    let mut i = 0;
    while i < 16 {
        if a[i] != b[i] {
            return a[i] < b[i];
        }
        i += 1;
    }
    ap <= bp
}

/// What the filter knows of one segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SegmentFacts {
    pub syn: bool,
    /// FIN or RST.
    pub fin_or_rst: bool,
    /// TCP payload bytes.
    pub payload_len: u32,
    /// The payload starts with an HTTP/1.x status line whose code is 5xx.
    pub head_5xx: bool,
    /// The ACK flag (a SYN with it answers one).
    pub ack: bool,
    /// The sender's side: [`FROM_LO`] or [`FROM_HI`].
    pub from: u32,
}

/// The filter's answer for one segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decision {
    pub keep: bool,
    /// The connection's new mark, or `None` to leave the map alone.
    pub mark: Option<FlowMark>,
}

/// The selection rule (see the module docs). `mark` is the connection's current mark,
/// `None` when the filter has not seen it.
#[inline(always)]
pub fn decide(mark: Option<FlowMark>, now: u64, seg: SegmentFacts, cfg: &SelectConfig) -> Decision {
    // 0 means "no data yet" in a mark's `last_data_ns`; the clock is past it in any real run.
    let now = now.max(1);
    let hot_for = now.saturating_add(cfg.hot_ns);
    let other = if seg.from == FROM_LO {
        FROM_HI
    } else {
        FROM_LO
    };
    if seg.fin_or_rst || seg.syn {
        let mut m = mark.unwrap_or_default();
        if seg.fin_or_rst {
            m.hot_until_ns = u64::MAX;
        } else if m.hot_until_ns < hot_for {
            m.hot_until_ns = hot_for;
        }
        if seg.syn && !seg.ack {
            m.awaiting = other; // the server's first reply, however slow
        }
        if seg.payload_len > 0 {
            m.last_data_ns = now;
        }
        return Decision {
            keep: true,
            mark: Some(m),
        };
    }
    if seg.payload_len == 0 {
        return Decision {
            keep: false,
            mark: None,
        };
    }
    let Some(mut m) = mark else {
        return Decision {
            keep: true,
            mark: Some(FlowMark {
                last_data_ns: now,
                hot_until_ns: hot_for,
                awaiting: other,
                tag: 0,
            }),
        };
    };
    // A mark made by the SYN has seen no data: this segment is the connection's first. It
    // must not be taken for a reuse by its quiet since boot, which is under `idle_ns` on a
    // machine up for less than that (a fresh CI machine, with the tests' hour-long idle).
    let first_data = m.last_data_ns == 0;
    let quiet = now.saturating_sub(m.last_data_ns);
    m.last_data_ns = now;
    let mut keep = if m.awaiting == seg.from {
        // the reply to a kept segment, and the rest of it
        m.awaiting = 0;
        if m.hot_until_ns < hot_for {
            m.hot_until_ns = hot_for;
        }
        true
    } else if now < m.hot_until_ns {
        true
    } else if first_data || quiet >= cfg.idle_ns {
        m.hot_until_ns = hot_for;
        m.awaiting = other;
        true
    } else {
        false
    };
    if seg.head_5xx {
        let until = now.saturating_add(cfg.error_hot_ns);
        if m.hot_until_ns < until {
            m.hot_until_ns = until;
        }
        m.awaiting = other; // the next request, however late
        keep = true;
    }
    Decision {
        keep,
        mark: Some(m),
    }
}

/// Slots of the `FLOWS` array (a power of two).
pub const FLOW_SLOTS: u32 = 1 << 16;

/// The slot of `FLOWS` for a connection, and the tag that says the slot holds it.
#[inline(always)]
pub fn slot(k: &FlowKey) -> (u32, u32) {
    const M: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut h: u64 = 0;
    let mut i = 0;
    while i < 16 {
        let a = u32::from_ne_bytes([
            k.addr_lo[i],
            k.addr_lo[i + 1],
            k.addr_lo[i + 2],
            k.addr_lo[i + 3],
        ]);
        let b = u32::from_ne_bytes([
            k.addr_hi[i],
            k.addr_hi[i + 1],
            k.addr_hi[i + 2],
            k.addr_hi[i + 3],
        ]);
        h = (h ^ u64::from(a)).wrapping_mul(M).rotate_left(29);
        h = (h ^ u64::from(b)).wrapping_mul(M).rotate_left(29);
        i += 4;
    }
    h = (h ^ (u64::from(k.port_lo) << 16 | u64::from(k.port_hi))).wrapping_mul(M);
    h ^= h >> 31;
    ((h >> 32) as u32 & (FLOW_SLOTS - 1), (h as u32) | 1)
}

/// Whether `p` (at least [`HEAD_PREFIX`] bytes of payload) starts with `HTTP/1.x 5`.
#[inline(always)]
pub fn is_5xx_head(p: &[u8; HEAD_PREFIX]) -> bool {
    status_class(p) == 5
}

/// The status class (1 to 5) of the HTTP/1.x status line `p` starts with, 0 when it does
/// not start with one.
#[inline(always)]
pub fn status_class(p: &[u8; HEAD_PREFIX]) -> u8 {
    let head = p[0] == b'H'
        && p[1] == b'T'
        && p[2] == b'T'
        && p[3] == b'P'
        && p[4] == b'/'
        && p[5] == b'1'
        && p[6] == b'.'
        && p[8] == b' ';
    if head && (b'1'..=b'5').contains(&p[9]) {
        p[9] - b'0'
    } else {
        0
    }
}

/// Who sent a counted response and its status class: the key of the `RESPONSES` map,
/// which `select` fills for every response head it sees (kept or not), so that the node
/// agent has the denominator of its error rates at no copying cost. IPv4 addresses use
/// the first 4 bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct ResponseKey {
    pub addr: [u8; 16],
    pub port: u16,
    /// 1 to 5.
    pub class: u8,
    /// 4 or 6.
    pub family: u8,
}

/// Size of [`ResponseKey`] in bytes.
pub const RESPONSE_KEY_SIZE: usize = 20;
const _: () = assert!(core::mem::size_of::<ResponseKey>() == RESPONSE_KEY_SIZE);

/// Distinct (sender, class) pairs counted; the least recently counted go first.
pub const RESPONSE_SLOTS: u32 = 4096;

/// Payload bytes [`is_5xx_head`] looks at.
pub const HEAD_PREFIX: usize = 10;

/// At most this many IPv6 extension headers are walked before the TCP header; a packet
/// with more is not kept (none of Linux's own TCP packets carries even one).
pub const V6_MAX_EXTENSIONS: usize = 4;

#[cfg(test)]
mod tests {
    use super::*;

    const CFG: SelectConfig = SelectConfig {
        idle_ns: 1_000,
        hot_ns: 100,
        error_hot_ns: 300,
    };

    fn data(len: u32) -> SegmentFacts {
        SegmentFacts {
            syn: false,
            fin_or_rst: false,
            payload_len: len,
            head_5xx: false,
            ack: true,
            from: FROM_LO,
        }
    }

    fn reply(len: u32) -> SegmentFacts {
        SegmentFacts {
            from: FROM_HI,
            ..data(len)
        }
    }

    /// Runs a connection's segments through `decide`, returning what was kept.
    fn run(segs: &[(u64, SegmentFacts)]) -> [bool; 16] {
        let mut mark = None;
        let mut kept = [false; 16];
        for (i, (t, s)) in segs.iter().enumerate() {
            let d = decide(mark, *t, *s, &CFG);
            if d.mark.is_some() {
                mark = d.mark;
            }
            kept[i] = d.keep;
        }
        kept
    }

    #[test]
    fn busy_connection_keeps_only_its_first_exchange() {
        let k = run(&[
            (0, data(10)),
            (50, data(10)),
            (150, data(10)),
            (200, data(10)),
        ]);
        assert_eq!(&k[..4], &[true, true, false, false]);
    }

    #[test]
    fn reuse_after_quiet_is_kept_with_its_exchange() {
        let k = run(&[
            (0, data(10)),
            (500, data(10)),
            (1_600, data(10)), // 1 100 quiet: a reuse
            (1_650, data(10)), // hot
            (1_800, data(10)), // hot expired, 150 quiet
        ]);
        assert_eq!(&k[..5], &[true, false, true, true, false]);
    }

    #[test]
    fn fin_or_rst_makes_the_rest_hot_and_acks_are_dropped() {
        let fin = SegmentFacts {
            fin_or_rst: true,
            ..data(0)
        };
        let k = run(&[
            (0, data(10)),
            (500, data(10)),
            (510, fin),
            (520, data(0)),
            (10_000, data(10)),
        ]);
        assert_eq!(&k[..5], &[true, false, true, false, true]);
    }

    #[test]
    fn syn_makes_a_short_connection_hot_and_5xx_heads_are_kept() {
        let syn = SegmentFacts {
            syn: true,
            ..data(0)
        };
        let k = run(&[
            (0, syn),
            (10, data(10)),
            (90, data(10)),
            (150, data(10)),
            (
                160,
                SegmentFacts {
                    head_5xx: true,
                    ..data(10)
                },
            ),
            (200, data(10)),
            (300, data(10)),
            (470, data(10)),
        ]);
        assert_eq!(&k[..8], &[true, true, true, false, true, true, true, false]);
    }

    #[test]
    fn a_5xx_head_inside_a_hot_window_keeps_the_run_that_follows() {
        let err = SegmentFacts {
            head_5xx: true,
            ..reply(10)
        };
        let k = run(&[
            (0, data(10)),   // first seen: hot until 100
            (10, err),       // a 5xx inside that window: hot until 310
            (150, data(10)), // the next request: past the short window, kept
            (160, err),      // its 5xx: hot until 460
            (450, data(10)), // kept
            (452, reply(10)),
            (600, data(10)), // the run is over: busy, dropped
        ]);
        assert_eq!(&k[..7], &[true, true, true, true, true, true, false]);
    }

    #[test]
    fn a_slow_reply_to_a_kept_request_is_kept_once() {
        let k = run(&[
            (0, data(10)),      // first seen: kept, the reply awaited
            (5_000, reply(10)), // the reply, long after the hot window
            (5_050, reply(10)), // the rest of it, hot again
            (5_200, data(10)),  // a request 150 after: busy, dropped
            (5_210, reply(10)), // its reply: nothing awaited
        ]);
        assert_eq!(&k[..5], &[true, true, true, false, false]);
    }

    #[test]
    fn a_new_connections_slow_first_reply_is_kept() {
        let syn = SegmentFacts {
            syn: true,
            ack: false,
            ..data(0)
        };
        let synack = SegmentFacts {
            syn: true,
            ..reply(0)
        };
        let k = run(&[
            (0, syn),
            (1, synack),
            (2, data(10)),      // the request, hot
            (3_000, reply(10)), // its reply, long after
            (3_200, data(10)),  // busy: dropped
        ]);
        assert_eq!(&k[..5], &[true, true, true, true, false]);
    }

    #[test]
    fn the_first_data_after_a_syn_is_kept_however_soon_after_boot() {
        // The clock is the time since boot: here the request comes after the SYN's hot
        // window but before `idle_ns` has passed since boot, so its quiet (since the
        // mark's zero) cannot tell a first exchange from a busy connection.
        let syn = SegmentFacts {
            syn: true,
            ack: false,
            ..data(0)
        };
        let k = run(&[
            (10, syn),
            (500, data(10)), // a pooled connection's first request, after the hot window
            (510, reply(10)), // its reply
            (700, data(10)), // busy: dropped
        ]);
        assert_eq!(&k[..4], &[true, true, true, false]);
    }

    #[test]
    fn slots_spread_connections_and_tags_tell_them_apart() {
        let mut seen = [0u8; 1 << 16];
        let mut tags = 0u32;
        for port in 30_000u16..34_000 {
            let (k, _) = FlowKey::new(
                [10, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
                port,
                [10, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
                80,
            );
            let (i, t) = slot(&k);
            assert!(i < FLOW_SLOTS && t != 0);
            seen[i as usize] = seen[i as usize].saturating_add(1);
            tags ^= t;
        }
        // 4 000 connections in 65 536 slots: a handful may share one, not more
        let shared = seen.iter().filter(|&&n| n > 1).count();
        assert!(shared < 400, "{shared} slots shared");
        assert_ne!(tags, 0);
        let (k, _) = FlowKey::new([1; 16], 1, [2; 16], 2);
        assert_eq!(slot(&k), slot(&FlowKey::new([2; 16], 2, [1; 16], 1).0));
    }

    #[test]
    fn key_is_the_same_both_ways_and_heads_are_recognised() {
        let a = [1u8; 16];
        let b = [2u8; 16];
        assert_eq!(
            FlowKey::new(a, 80, b, 5000).0,
            FlowKey::new(b, 5000, a, 80).0
        );
        assert_eq!(
            FlowKey::new(a, 80, a, 5000).0,
            FlowKey::new(a, 5000, a, 80).0
        );
        assert_eq!(FlowKey::new(a, 80, b, 5000).1, FROM_LO);
        assert_eq!(FlowKey::new(b, 5000, a, 80).1, FROM_HI);
        assert!(is_5xx_head(b"HTTP/1.1 5"));
        assert!(!is_5xx_head(b"HTTP/1.1 2"));
        assert!(!is_5xx_head(b"GET / HTTP"));
        assert_eq!(status_class(b"HTTP/1.0 2"), 2);
        assert_eq!(status_class(b"HTTP/1.1 1"), 1);
        assert_eq!(status_class(b"HTTP/1.1 6"), 0);
        assert_eq!(status_class(b"HTTP/2.0 2"), 0);
        assert_eq!(status_class(b"POST /a?x="), 0);
    }
}
