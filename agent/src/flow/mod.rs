//! TCP connection tracking: one [`Conn`] per 4-tuple, from the segments of a capture or a
//! live source, turned into [`Event`]s (opened, established, refused, HTTP exchanges,
//! FIN and RST by direction, closed). Memory follows the open connections: a connection is
//! dropped [`LINGER_NS`] after it closed, and the table holds at most
//! [`Tracker::max_connections`] (see [`evict`] for who makes room).

mod evict;
pub mod hash;
pub mod seq;

use std::collections::VecDeque;
use std::net::SocketAddr;

use crate::headroom::Room;
use crate::http::{HttpConn, HttpEvent};
use crate::segment::{flags, Segment};
use hash::FxHashMap;
use seq::{Placement, SeqSpace};

/// How long a closed connection is kept for late segments (retransmitted FINs, ACKs).
pub const LINGER_NS: i64 = 2_000_000_000;
/// The connection table's room is looked at once this many connections have opened (at
/// the lab's 600 a second, every 1.7 s).
const HEADROOM_EVERY: u64 = 1024;
pub use evict::DEFAULT_MAX_CONNECTIONS;

/// Numbers connections in the order they were first seen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId(pub u64);

/// What is known about a connection's endpoints and opening.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnInfo {
    pub id: ConnId,
    /// The side that opened the connection (sent the SYN), or the guess for mid-stream
    /// connections.
    pub client: SocketAddr,
    pub server: SocketAddr,
    /// The SYN or SYN/ACK was seen: `client` is certain and exchange 1 is the first.
    pub opener_known: bool,
    pub first_ns: i64,
    pub syn_ns: Option<i64>,
}

#[cfg(test)]
impl ConnInfo {
    /// A connection seen from its SYN, `client` → `server` (`ip:port` each), for tests.
    pub(crate) fn for_test(client: &str, server: &str) -> Self {
        ConnInfo {
            id: ConnId(1),
            client: client.parse().unwrap(),
            server: server.parse().unwrap(),
            opener_known: true,
            first_ns: 0,
            syn_ns: Some(0),
        }
    }
}

/// Something that happened on a connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// First segment of a connection.
    Opened(ConnInfo),
    /// The client sent its SYN again (`count` SYNs so far) without an answer.
    SynRetransmit { conn: ConnId, ts: i64, count: u32 },
    /// The handshake completed; `rtt_ns` is SYN to the client's ACK.
    Established { conn: ConnId, ts: i64, rtt_ns: i64 },
    /// The SYN was answered by RST.
    Refused { conn: ConnId, ts: i64 },
    /// An HTTP event; for requests, `idle_ns` is the quiet time on the connection before it
    /// (`None` when unknown) and `busy` says another exchange was still in progress.
    Http {
        conn: ConnId,
        ev: HttpEvent,
        idle_ns: Option<i64>,
        busy: bool,
    },
    /// A FIN; `outstanding` requests had no response head yet, `responding` a response was
    /// in progress.
    Fin {
        conn: ConnId,
        ts: i64,
        from_client: bool,
        outstanding: usize,
        responding: bool,
    },
    /// A RST; fields as for [`Event::Fin`].
    Rst {
        conn: ConnId,
        ts: i64,
        from_client: bool,
        outstanding: usize,
        responding: bool,
    },
    /// The capture lost part of this connection: bytes acknowledged or skipped that were
    /// never seen, or a handshake answer that is missing. Emitted once per connection;
    /// what the engine concludes about it must not rest on what is absent.
    Missing {
        conn: ConnId,
        ts: i64,
        what: &'static str,
    },
    /// Sparse capture skipped part of this connection on purpose: exchanges went unseen,
    /// so how long it had been quiet is no longer known. Not a loss (see
    /// [`Tracker::sparse`]).
    Skipped { conn: ConnId, ts: i64 },
    /// The connection table was full: this connection was forgotten to make room
    /// (`forgotten`: an [`Event::Closed`] follows, though it may not have closed), or it
    /// carries on a 4-tuple forgotten that way, so its start is unknown. Either way what it
    /// shows is incomplete.
    Evicted {
        conn: ConnId,
        ts: i64,
        forgotten: bool,
    },
    /// The connection is forgotten (closed and lingered, or the capture ended).
    Closed {
        conn: ConnId,
        ts: i64,
        info: ConnInfo,
    },
}

#[derive(Debug, Default)]
struct Half {
    seq: SeqSpace,
    fin_ns: Option<i64>,
    rst_ns: Option<i64>,
}

/// One tracked connection.
#[derive(Debug)]
pub struct Conn {
    pub info: ConnInfo,
    syn_count: u32,
    synack_ns: Option<i64>,
    established_ns: Option<i64>,
    c2s: Half,
    s2c: Half,
    /// Created by the first payload byte: a connection that never carries data (a SYN
    /// flood's, a port scan's) does not pay for an HTTP parser.
    http: Option<Box<HttpConn>>,
    /// When the connection last went quiet (established, or the last response ended).
    quiet_since: Option<i64>,
    closed_ns: Option<i64>,
    /// The latest segment's time (which connections the table forgets first).
    last_ns: i64,
    /// Packets of this connection are missing from the capture (see [`Event::Missing`]).
    missing: bool,
}

impl Conn {
    /// Bytes the client sent, from sequence numbers.
    #[must_use]
    pub fn client_bytes(&self) -> u64 {
        self.c2s.seq.bytes()
    }
    /// Bytes the server sent, from sequence numbers.
    #[must_use]
    pub fn server_bytes(&self) -> u64 {
        self.s2c.seq.bytes()
    }
    /// Segments that carried only bytes already seen.
    #[must_use]
    pub fn retransmits(&self) -> u32 {
        self.c2s.seq.retransmits + self.s2c.seq.retransmits
    }
    /// Requests without a response head yet.
    fn outstanding(&self) -> usize {
        self.http.as_ref().map_or(0, |h| h.outstanding())
    }
    /// A response is in progress.
    fn responding(&self) -> bool {
        self.http.as_ref().is_some_and(|h| h.responding().is_some())
    }
    /// FIN times (client's, server's).
    #[must_use]
    pub fn fins(&self) -> (Option<i64>, Option<i64>) {
        (self.c2s.fin_ns, self.s2c.fin_ns)
    }
    /// RST times (client's, server's).
    #[must_use]
    pub fn rsts(&self) -> (Option<i64>, Option<i64>) {
        (self.c2s.rst_ns, self.s2c.rst_ns)
    }
}

/// A 4-tuple ordered so that both directions of a connection give the same key.
pub type Key = (SocketAddr, SocketAddr);

/// The [`Key`] of the connection between `a` and `b`, whichever sent the segment.
#[must_use]
pub fn key(a: SocketAddr, b: SocketAddr) -> Key {
    if a <= b {
        (a, b)
    } else {
        (b, a)
    }
}

/// Counters about what the tracker saw.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FlowStats {
    pub segments: u64,
    /// The earliest and the latest segment's time (ns since the epoch).
    pub first_ns: Option<i64>,
    pub last_ns: Option<i64>,
    pub connections: u64,
    pub retransmits: u64,
    /// Bytes that sequence numbers say were sent but no captured segment carried.
    pub gap_bytes: u64,
    /// Places where sequence numbers jumped over bytes no captured segment carried (not
    /// counted by a sparse tracker, whose gaps are deliberate; nor is `gap_bytes`).
    pub gaps: u64,
    pub unparseable_connections: u64,
    /// Connections forgotten before they closed because the table was full (see
    /// [`Tracker::max_connections`]); verdicts on them are `unexplained`.
    pub evicted: u64,
}

/// Tracks every open connection.
#[derive(Debug)]
pub struct Tracker {
    /// Boxed (320 bytes a connection), and kept with room (see [`crate::headroom`]).
    conns: FxHashMap<Key, Box<Conn>>,
    closing: VecDeque<(i64, Key, ConnId)>,
    next_id: u64,
    now: i64,
    http_out: Vec<HttpEvent>,
    /// The capture keeps only some data segments (what `tracer capture` does by default): bytes skipped
    /// or acknowledged unseen are expected, and the connection simply starts again at the
    /// next segment (as a capture that began mid-stream does) instead of counting as lost.
    sparse: bool,
    /// Most connections tracked at once (see [`Tracker::max_connections`]).
    max_conns: usize,
    /// 4-tuples of connections evicted lately (see [`evict::Evicted`]).
    evicted: evict::Evicted,
    /// Connections still to forget once the capture ended, last first.
    finishing: Vec<(ConnId, Key)>,
    pub stats: FlowStats,
    /// The room kept in `conns` (see [`crate::headroom`]).
    room: Room,
}

impl Default for Tracker {
    fn default() -> Self {
        Tracker {
            conns: FxHashMap::default(),
            closing: VecDeque::new(),
            next_id: 0,
            now: 0,
            http_out: Vec::new(),
            sparse: false,
            max_conns: DEFAULT_MAX_CONNECTIONS,
            evicted: evict::Evicted::default(),
            finishing: Vec::new(),
            stats: FlowStats::default(),
            room: Room::default(),
        }
    }
}

impl Tracker {
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// A tracker for a sparse capture (see [`Tracker::sparse`]).
    #[must_use]
    pub fn sparse() -> Self {
        Self {
            sparse: true,
            ..Self::default()
        }
    }

    /// Bounds the connection table to `n` connections (at least 1). When a new
    /// connection finds it full, the table first forgets closed connections still lingering,
    /// then those never established that carried no data (half-open: a SYN flood's), then
    /// the least recently active; each forgotten connection that had not closed is counted
    /// in [`FlowStats::evicted`] and reported by [`Event::Evicted`].
    #[must_use]
    pub fn max_connections(mut self, n: usize) -> Self {
        self.set_max_connections(n);
        self
    }

    /// As [`Tracker::max_connections`], in place (it applies from the next new connection).
    pub fn set_max_connections(&mut self, n: usize) {
        self.max_conns = n.max(1);
    }

    /// Latest timestamp seen.
    #[must_use]
    pub fn now(&self) -> i64 {
        self.now
    }

    /// Open (or lingering) connections.
    #[must_use]
    pub fn open(&self) -> usize {
        self.conns.len()
    }

    /// The connection between two endpoints, if tracked.
    #[must_use]
    pub fn get(&self, a: SocketAddr, b: SocketAddr) -> Option<&Conn> {
        self.conns.get(&key(a, b)).map(AsRef::as_ref)
    }

    /// Feeds one segment; events go to `out`.
    pub fn push(&mut self, seg: &Segment, out: &mut Vec<Event>) {
        self.stats.segments += 1;
        self.stats.first_ns = Some(self.stats.first_ns.map_or(seg.ts_ns, |f| f.min(seg.ts_ns)));
        self.now = self.now.max(seg.ts_ns);
        self.stats.last_ns = Some(self.now);
        self.evict(self.now, out);
        let k = key(seg.src, seg.dst);
        let syn = seg.has(flags::SYN);
        let ack = seg.has(flags::ACK);
        // a new SYN on a closed 4-tuple starts a new connection
        if syn && !ack {
            if let Some(c) = self.conns.get(&k) {
                if c.closed_ns.is_some() || c.c2s.seq.started() && c.info.syn_ns.is_none() {
                    let c = self.conns.remove(&k).expect("present");
                    self.forget(c, seg.ts_ns, out);
                }
            }
        }
        if !self.conns.contains_key(&k) {
            let wants = syn || seg.wire_len > 0 || seg.has(flags::FIN);
            if !wants {
                return;
            }
            if self.conns.len() >= self.max_conns {
                self.make_room(out);
            }
            let c = self.open_conn(seg);
            out.push(Event::Opened(c.info));
            // A connection that goes on where an evicted one was cut off: its start is lost.
            if self.evicted.take(&k) && (!syn || ack) {
                out.push(Event::Evicted {
                    conn: c.info.id,
                    ts: seg.ts_ns,
                    forgotten: false,
                });
            }
            self.conns.insert(k, Box::new(c));
            if self.stats.connections.is_multiple_of(HEADROOM_EVERY) {
                self.room.keep(&mut self.conns);
            }
        }
        let Some(c) = self.conns.get_mut(&k) else {
            return;
        };
        c.last_ns = c.last_ns.max(seg.ts_ns);
        let before = c.c2s.seq.gap_bytes + c.s2c.seq.gap_bytes;
        let rtx = c.retransmits();
        let gaps = c.c2s.seq.gaps + c.s2c.seq.gaps;
        let closed = step(c, seg, self.sparse, &mut self.http_out, out);
        self.stats.retransmits += u64::from(c.retransmits() - rtx);
        if !self.sparse {
            // a sparse capture's gaps are deliberate, not capture loss
            self.stats.gap_bytes += c.c2s.seq.gap_bytes + c.s2c.seq.gap_bytes - before;
            self.stats.gaps += u64::from(c.c2s.seq.gaps + c.s2c.seq.gaps - gaps);
        }
        if closed {
            self.closing.push_back((seg.ts_ns, k, c.info.id));
        }
    }

    fn open_conn(&mut self, seg: &Segment) -> Conn {
        self.next_id += 1;
        self.stats.connections += 1;
        let syn = seg.has(flags::SYN);
        let ack = seg.has(flags::ACK);
        let src_is_client = if syn {
            !ack
        } else {
            let p = &seg.payload;
            if crate::http::head::looks_like_request(p) {
                true
            } else if crate::http::head::looks_like_response(p) {
                false
            } else {
                // ports: servers listen on the lower port (80, 8080, 9000 vs ephemeral)
                seg.src.port() > seg.dst.port()
            }
        };
        let (client, server) = if src_is_client {
            (seg.src, seg.dst)
        } else {
            (seg.dst, seg.src)
        };
        Conn {
            info: ConnInfo {
                id: ConnId(self.next_id),
                client,
                server,
                opener_known: syn,
                first_ns: seg.ts_ns,
                syn_ns: None,
            },
            syn_count: 0,
            synack_ns: None,
            established_ns: None,
            c2s: Half::default(),
            s2c: Half::default(),
            http: None,
            quiet_since: None,
            closed_ns: None,
            last_ns: seg.ts_ns,
            missing: false,
        }
    }

    fn evict(&mut self, now: i64, out: &mut Vec<Event>) {
        while let Some(&(ts, k, id)) = self.closing.front() {
            if ts + LINGER_NS > now {
                break;
            }
            self.closing.pop_front();
            if self.conns.get(&k).is_some_and(|c| c.info.id == id) {
                let c = self.conns.remove(&k).expect("present");
                self.forget(c, now, out);
            }
        }
    }

    fn forget(&mut self, c: Box<Conn>, ts: i64, out: &mut Vec<Event>) {
        if c.http.as_ref().is_some_and(|h| h.unparseable.is_some()) {
            self.stats.unparseable_connections += 1;
        }
        out.push(Event::Closed {
            conn: c.info.id,
            ts,
            info: c.info,
        });
    }

    /// The capture ended: forget every connection.
    pub fn finish(&mut self, out: &mut Vec<Event>) {
        while self.finish_some(usize::MAX, out) {}
    }

    /// The capture ended: forgets up to `max` connections, in the order they were first
    /// seen; false once none is left. Lets the caller take the events in batches, so that
    /// they never all wait at once.
    pub fn finish_some(&mut self, max: usize, out: &mut Vec<Event>) -> bool {
        if self.finishing.is_empty() {
            if self.conns.is_empty() {
                return false;
            }
            self.closing.clear();
            // (id, key) is a fifth of a connection's size: the order costs little
            self.finishing = self.conns.iter().map(|(k, c)| (c.info.id, *k)).collect();
            self.finishing
                .sort_unstable_by_key(|&(id, _)| std::cmp::Reverse(id));
        }
        let now = self.now;
        for _ in 0..max {
            let Some((_, k)) = self.finishing.pop() else {
                break;
            };
            if let Some(c) = self.conns.remove(&k) {
                self.forget(c, now, out);
            }
        }
        if self.finishing.is_empty() {
            self.finishing = Vec::new();
            self.conns = FxHashMap::default();
        }
        true
    }
}

/// Applies one segment to its connection; returns true when the connection just closed.
fn step(
    c: &mut Conn,
    seg: &Segment,
    sparse: bool,
    http_out: &mut Vec<HttpEvent>,
    out: &mut Vec<Event>,
) -> bool {
    let id = c.info.id;
    let ts = seg.ts_ns;
    let from_client = seg.src == c.info.client;
    let syn = seg.has(flags::SYN);
    let ack = seg.has(flags::ACK);
    let was_closed = c.closed_ns.is_some();

    if syn {
        if from_client && !ack {
            c.c2s.seq.syn(seg.seq);
            c.info.opener_known = true;
            c.syn_count += 1;
            if c.info.syn_ns.is_none() {
                c.info.syn_ns = Some(ts);
            } else if c.synack_ns.is_none() {
                out.push(Event::SynRetransmit {
                    conn: id,
                    ts,
                    count: c.syn_count,
                });
            }
        } else if !from_client {
            c.s2c.seq.syn(seg.seq);
            c.info.opener_known = true;
            c.synack_ns.get_or_insert(ts);
        }
    } else if from_client
        && ack
        && c.synack_ns.is_none()
        && c.info.syn_ns.is_some()
        && c.established_ns.is_none()
    {
        // The client acknowledges a SYN/ACK the capture never saw: the handshake completed.
        c.established_ns = Some(ts);
        c.quiet_since = Some(ts);
        missing(c, ts, "the server's SYN/ACK", out);
    } else if from_client && ack && c.synack_ns.is_some() && c.established_ns.is_none() {
        c.established_ns = Some(ts);
        c.quiet_since = Some(ts);
        let rtt_ns = c.info.syn_ns.map_or(0, |s| ts - s);
        out.push(Event::Established {
            conn: id,
            ts,
            rtt_ns,
        });
    }

    if sparse {
        if lost_before(c, seg, from_client).is_some() {
            // unseen exchanges: what was in progress ended unseen, and the quiet time
            // before the next request is unknown
            c.quiet_since = None;
            if let Some(h) = &mut c.http {
                h.skipped();
            }
            out.push(Event::Skipped { conn: id, ts });
            // what the sender acknowledges was sent before this segment: a later segment of
            // the peer starting there follows no gap
            if ack && !seg.has(flags::RST) {
                let peer = if from_client { &mut c.s2c } else { &mut c.c2s };
                peer.seq.skip_to(seg.ack);
            }
        }
    } else if !c.missing {
        if let Some(what) = lost_before(c, seg, from_client) {
            missing(c, ts, what, out);
        }
    }

    if seg.has(flags::RST) {
        let half = if from_client { &mut c.c2s } else { &mut c.s2c };
        if half.rst_ns.is_none() {
            half.rst_ns = Some(ts);
            if !from_client && c.established_ns.is_none() && c.info.syn_ns.is_some() {
                out.push(Event::Refused { conn: id, ts });
            } else {
                out.push(Event::Rst {
                    conn: id,
                    ts,
                    from_client,
                    outstanding: c.outstanding(),
                    responding: c.responding(),
                });
            }
        }
        if c.closed_ns.is_none() {
            c.closed_ns = Some(ts);
        }
        return !was_closed;
    }

    if seg.wire_len > 0 && !syn {
        payload(c, seg, from_client, http_out, out);
    }

    if seg.has(flags::FIN) {
        let half = if from_client { &mut c.c2s } else { &mut c.s2c };
        if half.fin_ns.is_none() {
            half.fin_ns = Some(ts);
            if !from_client {
                if let Some(h) = &mut c.http {
                    h.server_closed(ts, http_out);
                }
                translate(c, http_out, out);
            }
            out.push(Event::Fin {
                conn: id,
                ts,
                from_client,
                outstanding: c.outstanding(),
                responding: c.responding(),
            });
        }
        if c.c2s.fin_ns.is_some() && c.s2c.fin_ns.is_some() && c.closed_ns.is_none() {
            c.closed_ns = Some(ts);
            return true;
        }
    }
    false
}

/// Marks the connection as missing packets, once.
fn missing(c: &mut Conn, ts: i64, what: &'static str, out: &mut Vec<Event>) {
    if !c.missing {
        c.missing = true;
        out.push(Event::Missing {
            conn: c.info.id,
            ts,
            what,
        });
    }
}

/// What this segment proves the capture lost, if anything: it acknowledges bytes (or a FIN)
/// of the peer that were never seen, or its own data or FIN starts beyond what this side
/// was seen to send.
fn lost_before(c: &Conn, seg: &Segment, from_client: bool) -> Option<&'static str> {
    let (own, peer) = if from_client {
        (&c.c2s, &c.s2c)
    } else {
        (&c.s2c, &c.c2s)
    };
    if seg.has(flags::ACK) && !seg.has(flags::RST) && peer.seq.started() {
        let peer_end = peer.seq.bytes() + u64::from(peer.fin_ns.is_some());
        if peer.seq.offset(seg.ack).is_some_and(|a| a > peer_end) {
            return Some(if from_client {
                "server bytes the client acknowledged"
            } else {
                "client bytes the server acknowledged"
            });
        }
    }
    let data_or_fin = seg.wire_len > 0 || seg.has(flags::FIN);
    if data_or_fin
        && !seg.has(flags::SYN)
        && own.seq.started()
        && own.seq.offset(seg.seq).is_some_and(|o| o > own.seq.bytes())
    {
        return Some(if from_client {
            "client bytes skipped over"
        } else {
            "server bytes skipped over"
        });
    }
    None
}

fn payload(
    c: &mut Conn,
    seg: &Segment,
    from_client: bool,
    http_out: &mut Vec<HttpEvent>,
    out: &mut Vec<Event>,
) {
    let half = if from_client { &mut c.c2s } else { &mut c.s2c };
    let wire = seg.wire_len;
    let captured = seg.payload.len().min(wire as usize);
    let (missing_before, skip, start) = match half.seq.place(seg.seq, wire) {
        Placement::InOrder => (0u64, 0usize, true),
        Placement::Gap { missing } => (missing, 0, true),
        Placement::Overlap { fresh } => (0, (u64::from(wire) - fresh) as usize, false),
        Placement::Old => return,
    };
    let data = seg.payload.get(skip.min(captured)..captured).unwrap_or(&[]);
    let missing_after = u64::from(wire) - (skip.max(captured) as u64);
    let ts = seg.ts_ns;
    c.http.get_or_insert_default().bytes(
        from_client,
        ts,
        missing_before,
        data,
        missing_after,
        start,
        http_out,
    );
    translate(c, http_out, out);
}

/// Turns HTTP events into flow events, adding the idle time before each request.
fn translate(c: &mut Conn, http_out: &mut Vec<HttpEvent>, out: &mut Vec<Event>) {
    for ev in http_out.drain(..) {
        let mut idle_ns = None;
        let mut busy = false;
        match &ev {
            HttpEvent::Request { ts, .. } => {
                // the request itself is already counted as outstanding
                busy = c.outstanding() > 1 || c.responding();
                if !busy {
                    idle_ns = c.quiet_since.map(|q| (ts - q).max(0));
                }
                c.quiet_since = None;
            }
            HttpEvent::ResponseEnd { ts, .. } if c.outstanding() == 0 => {
                c.quiet_since = Some(*ts);
            }
            _ => {}
        }
        out.push(Event::Http {
            conn: c.info.id,
            ev,
            idle_ns,
            busy,
        });
    }
}

#[cfg(test)]
mod tests;
