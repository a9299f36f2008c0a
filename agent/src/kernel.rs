//! The kernel's side of the story, per connection: which process owned the socket, when the
//! peer's FIN arrived (ESTABLISHED → CLOSE_WAIT), whether the process wrote after that
//! (the FIN was there, unread: `fin_unread`), and when it read EOF or ECONNRESET.
//!
//! The [`Ledger`] takes probe events (already on the pcap clock) and answers by 4-tuple, so
//! the engine can add kernel evidence to a verdict it made from packets. It also tells the
//! engine how each socket was opened and by which process ([`SocketOpen`]): a connection a
//! process accepted faces its clients, one it connected faces its upstream.

use std::collections::{HashMap, HashSet, VecDeque};
use std::hash::{Hash, Hasher};
use std::net::SocketAddr;

use serde::Serialize;
use smallvec::SmallVec;

use crate::headroom::Room;
use crate::probe::{tcp_state, SockEvent, SockEventKind};
use crate::verdict::{Cause, Confidence, Evidence, Fact, Leg, Subcause, Verdict};

/// How far before a verdict's error the kernel's story of its connection is read.
const LOOK_BACK_NS: i64 = 600_000_000_000;
/// How far after the error (the proxy reads EOF, closes) it is read.
const LOOK_AHEAD_NS: i64 = 2_000_000_000;

/// Events kept per socket; the oldest go first (a socket's story is short).
const MAX_EVENTS_PER_SOCKET: usize = 64;

/// One probe event on the pcap clock (unix nanoseconds).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct KernelEvent {
    pub ts_ns: i64,
    pub event: SockEvent,
}

/// What the kernel saw of one socket.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SocketRecord {
    pub skaddr: u64,
    pub local: Option<SocketAddr>,
    pub remote: Option<SocketAddr>,
    pub pid: Option<u32>,
    pub comm: Option<String>,
    pub events: Vec<Noted>,
    #[serde(skip)]
    destroyed_at: Option<i64>,
    /// How the socket was opened, from its first state change.
    #[serde(skip)]
    opened: Option<Opened>,
    /// The engine was told of the socket's opening (with its owner, once known).
    #[serde(skip)]
    told: (bool, bool),
}

/// One probe event as a socket's record keeps it: the owner and the tuple are the
/// record's, so each event holds only what changes (64 bytes, where a whole
/// [`KernelEvent`] took some 200 and a copy of the process name).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Noted {
    pub ts_ns: i64,
    pub kind: SockEventKind,
    /// The TCP state at the event (see [`SockEvent::state`]).
    pub state: u32,
}

impl Noted {
    fn of(ev: KernelEvent) -> Self {
        Self {
            ts_ns: ev.ts_ns,
            kind: ev.event.kind,
            state: ev.event.state,
        }
    }

    /// The kernel's name of [`Self::state`].
    #[must_use]
    pub fn state_name(&self) -> &'static str {
        tcp_state::name(self.state)
    }
}

/// How a socket came to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Opened {
    /// By `connect` (CLOSE → SYN_SENT): the process opened it towards a server.
    Active,
    /// Accepted from a listener (a SYN_RECV child): a client opened it towards the process.
    Passive,
}

/// A socket's opening, as the engine uses it for roles: its tuple (local, remote), how it
/// was opened, and the process that owns it when the kernel saw it in process context.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SocketOpen {
    pub local: SocketAddr,
    pub remote: SocketAddr,
    pub opened: Opened,
    pub pid: Option<u32>,
}

impl SocketRecord {
    /// The opening, once the tuple is known.
    fn open(&self) -> Option<SocketOpen> {
        Some(SocketOpen {
            local: self.local?,
            remote: self.remote?,
            opened: self.opened?,
            pid: self.pid,
        })
    }
}

/// How the socket was opened, from its first state change: `connect` moves it from CLOSE to
/// SYN_SENT; an accepted socket starts as a SYN_RECV child of its listener.
fn opened_by(kind: &SockEventKind) -> Option<Opened> {
    match *kind {
        SockEventKind::StateChange {
            old: tcp_state::CLOSE,
            new: tcp_state::SYN_SENT,
        } => Some(Opened::Active),
        SockEventKind::StateChange { old, new }
            if old == tcp_state::SYN_RECV
                || new == tcp_state::SYN_RECV
                || old == tcp_state::NEW_SYN_RECV =>
        {
            Some(Opened::Passive)
        }
        _ => None,
    }
}

/// Kernel facts about one connection in a time window, for a verdict's evidence.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct KernelFacts {
    /// The process that owned the socket.
    pub pid: Option<u32>,
    pub comm: Option<String>,
    /// When the peer's FIN arrived (the socket entered CLOSE_WAIT).
    pub fin_received_ns: Option<i64>,
    /// The process wrote on the socket while it was in CLOSE_WAIT: the FIN had arrived and
    /// the process had not read it. (time, idle gap before the write in ns)
    pub write_in_close_wait: Option<(i64, u64)>,
    /// A write after an idle gap, in any state: (time, idle gap ns, state name).
    pub write_after_idle: Option<(i64, u64, &'static str)>,
    /// The process read EOF.
    pub eof_read_ns: Option<i64>,
    /// The process read ECONNRESET (or another error: (time, errno)).
    pub read_error: Option<(i64, i64)>,
    /// A RST arrived.
    pub reset_received_ns: Option<i64>,
    /// The kernel sent a RST.
    pub reset_sent_ns: Option<i64>,
}

/// A write after idle on a known connection: what a sparse capture cannot time itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SendIdle {
    pub local: SocketAddr,
    pub remote: SocketAddr,
    /// When the write returned (capture time).
    pub ts_ns: i64,
    pub idle_ns: i64,
}

impl SendIdle {
    /// `ev` on the socket of `rec`, if it is a write after idle and the tuple is known.
    fn of(rec: &SocketRecord, ev: &Noted) -> Option<Self> {
        let SockEventKind::SendAfterIdle { idle_ns, .. } = ev.kind else {
            return None;
        };
        Some(Self {
            local: rec.local?,
            remote: rec.remote?,
            ts_ns: ev.ts_ns,
            idle_ns: i64::try_from(idle_ns).unwrap_or(i64::MAX),
        })
    }
}

/// Where a socket's record is: alive (by kernel address), or gone (by its sequence number
/// in the order sockets were destroyed or replaced).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Slot {
    Live(u64),
    Gone(u64),
}

/// A 4-tuple as a 64-bit key (SipHash with fixed keys): an index holds 8 bytes per tuple,
/// not the 64 of two `SocketAddr`s. Two tuples that share a key share an entry; the
/// ledger checks each record's own tuple, so a collision costs a comparison, not a
/// wrong answer.
#[must_use]
pub fn tuple_key(local: SocketAddr, remote: SocketAddr) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    (local, remote).hash(&mut h);
    h.finish()
}

/// The records a tuple had: almost always one, so it is kept inline.
type Slots = SmallVec<[Slot; 1]>;

/// Records that the socket at `slot` had `tuple` (once, however many events say so).
fn index_tuple(
    by_tuple: &mut HashMap<u64, Slots>,
    (local, remote): (SocketAddr, SocketAddr),
    slot: Slot,
) {
    let slots = by_tuple.entry(tuple_key(local, remote)).or_default();
    if !slots.contains(&slot) {
        slots.push(slot);
    }
}

/// Destroyed sockets' records kept at most, the newest (see [`Ledger::evict`]): at the
/// lab's 600 new sockets a second, a minute of them; a busier proxy keeps less time.
pub const MAX_GONE: usize = 49_152;

/// Tuples the index has room for from the start: [`MAX_GONE`] and some thousands of open
/// sockets fit, so it is allocated once (7/8 of 65,536 buckets, about 2 MiB) rather than
/// doubled at whatever moment the count of distinct tuples, creeping up as ports are
/// reused, first crosses a power of two (a step in the node agent's memory after many
/// quiet minutes). A proxy with more open sockets than that grows it, once.
const TUPLE_INDEX: usize = 57_344;

/// Probe events indexed by socket and by 4-tuple.
///
/// Memory follows the sockets: records of live sockets are in a map by kernel address,
/// which holds only the open ones; a socket destroyed (or replaced by a new one at its
/// address) moves to a queue in that order, from which [`Ledger::evict`] takes the old ones
/// off the front. A map that held destroyed records as well churned at tens of thousands of
/// entries and grew its capacity at a random later moment (a step of ~10 MiB in the node
/// agent's memory after a quarter of an hour). Records are boxed, so the queue and the
/// maps hold a pointer each: a queue of whole records (160 bytes) doubled its capacity by
/// 5 MiB at the moment a minute's destroyed sockets first passed 32,768.
#[derive(Debug)]
pub struct Ledger {
    live: HashMap<u64, Box<SocketRecord>>,
    /// The room kept in `live` (see [`crate::headroom`]).
    live_room: Room,
    /// Destroyed or replaced, oldest first, with the time they went; the front's sequence
    /// number is `gone_base`.
    gone: VecDeque<(i64, Box<SocketRecord>)>,
    gone_base: u64,
    /// Gone records a verdict names, kept past [`Ledger::evict`]'s time, by sequence number.
    kept: HashMap<u64, Box<SocketRecord>>,
    /// [`tuple_key`] of (local, remote) → the records that had that tuple (a tuple is
    /// reused by later connections, not always at the same kernel address).
    by_tuple: HashMap<u64, Slots>,
    events: u64,
    /// Openings learned since [`Ledger::take_opens`] was last called.
    opens: Vec<SocketOpen>,
}

impl Default for Ledger {
    fn default() -> Self {
        Self::new()
    }
}

impl Ledger {
    #[must_use]
    pub fn new() -> Self {
        Self {
            live: HashMap::new(),
            live_room: Room::default(),
            gone: VecDeque::with_capacity(MAX_GONE + 1),
            gone_base: 0,
            kept: HashMap::new(),
            by_tuple: HashMap::with_capacity(TUPLE_INDEX),
            events: 0,
            opens: Vec::new(),
        }
    }

    /// Events taken so far.
    #[must_use]
    pub fn events(&self) -> u64 {
        self.events
    }

    /// Sockets currently tracked.
    #[must_use]
    pub fn sockets(&self) -> usize {
        self.live.len() + self.gone.len() + self.kept.len()
    }

    /// Distinct tuples indexed.
    #[must_use]
    pub fn tuples(&self) -> usize {
        self.by_tuple.len()
    }

    /// Every record held.
    fn records(&self) -> impl Iterator<Item = &SocketRecord> {
        self.live
            .values()
            .chain(self.gone.iter().map(|(_, r)| r))
            .chain(self.kept.values())
            .map(AsRef::as_ref)
    }

    fn record(&self, slot: Slot) -> Option<&SocketRecord> {
        let rec = match slot {
            Slot::Live(sk) => self.live.get(&sk),
            Slot::Gone(seq) => match seq.checked_sub(self.gone_base) {
                Some(i) => usize::try_from(i)
                    .ok()
                    .and_then(|i| self.gone.get(i))
                    .map(|(_, r)| r),
                None => self.kept.get(&seq),
            },
        };
        rec.map(AsRef::as_ref)
    }

    /// Moves the live record at `sk` to the gone queue, at `ts_ns`.
    fn retire(&mut self, sk: u64, ts_ns: i64) {
        let Some(rec) = self.live.remove(&sk) else {
            return;
        };
        let seq = self.gone_base + self.gone.len() as u64;
        if let (Some(l), Some(r)) = (rec.local, rec.remote) {
            if let Some(slots) = self.by_tuple.get_mut(&tuple_key(l, r)) {
                for s in slots.iter_mut().filter(|s| **s == Slot::Live(sk)) {
                    *s = Slot::Gone(seq);
                }
            }
        }
        self.gone.push_back((ts_ns, rec));
    }

    /// Takes one event. For a write after idle on a socket whose tuple is known, returns
    /// what a sparse capture needs of it (see [`SendIdle`]).
    pub fn push(&mut self, ev: KernelEvent) -> Option<SendIdle> {
        if matches!(ev.event.kind, SockEventKind::TlsData { .. }) {
            // the engine's ([`crate::plaintext`]), not a socket's story
            return None;
        }
        self.events += 1;
        let sk = ev.event.skaddr;
        // A new socket at a kernel address that was used before: start a new record. A
        // connect begins at CLOSE, an accepted socket as a listener's SYN_RECV child (a
        // destroyed socket's record has already gone).
        let starts_new = matches!(
            ev.event.kind,
            SockEventKind::StateChange {
                old: tcp_state::CLOSE,
                ..
            } | SockEventKind::StateChange {
                new: tcp_state::SYN_RECV,
                ..
            }
        );
        if starts_new {
            self.retire(sk, ev.ts_ns);
        }
        let rec = self.live.entry(sk).or_insert_with(|| {
            Box::new(SocketRecord {
                skaddr: sk,
                ..SocketRecord::default()
            })
        });
        if let (Some(l), Some(r)) = (ev.event.local, ev.event.remote) {
            if l.port() != 0 && r.port() != 0 && rec.local.is_none() {
                rec.local = Some(l);
                rec.remote = Some(r);
                index_tuple(&mut self.by_tuple, (l, r), Slot::Live(sk));
            }
        }
        if rec.pid.is_none() {
            rec.pid = ev.event.pid;
            rec.comm.clone_from(&ev.event.comm);
        }
        let destroyed = matches!(ev.event.kind, SockEventKind::Destroy);
        if destroyed {
            rec.destroyed_at = Some(ev.ts_ns);
        }
        if rec.events.is_empty() {
            rec.opened = opened_by(&ev.event.kind);
        }
        // Tell the engine once the tuple is known, and again once the owner is.
        if let Some(open) = rec.open() {
            let told = (true, open.pid.is_some());
            if rec.told != told && (!rec.told.0 || told.1) {
                rec.told = told;
                self.opens.push(open);
            }
        }
        if rec.events.len() == MAX_EVENTS_PER_SOCKET {
            rec.events.remove(0);
        }
        let ts_ns = ev.ts_ns;
        let noted = Noted::of(ev);
        let idle = SendIdle::of(rec, &noted);
        rec.events.push(noted);
        if destroyed {
            // nothing follows a destroy on the same socket
            self.retire(sk, ts_ns);
        }
        idle
    }

    /// Socket openings learned since the last call (each socket once its tuple is known,
    /// and again once its owner is).
    pub fn take_opens(&mut self) -> Vec<SocketOpen> {
        std::mem::take(&mut self.opens)
    }

    /// Every socket opening held (for a bundle read again).
    #[must_use]
    pub fn opens(&self) -> Vec<SocketOpen> {
        self.records().filter_map(SocketRecord::open).collect()
    }

    /// Every write after idle held, as [`Ledger::push`] returned them.
    #[must_use]
    pub fn send_idles(&self) -> Vec<SendIdle> {
        let mut v: Vec<SendIdle> = self
            .records()
            .flat_map(|rec| rec.events.iter().filter_map(|ev| SendIdle::of(rec, ev)))
            .collect();
        v.sort_by_key(|s| s.ts_ns);
        v
    }

    /// The socket whose local end is `local` and remote end `remote` (or the reverse).
    #[must_use]
    pub fn socket(&self, a: SocketAddr, b: SocketAddr) -> Option<&SocketRecord> {
        self.socket_at(a, b, i64::MIN, i64::MAX)
    }

    /// The socket between `a` and `b` (either way round) that was alive between `from_ns`
    /// and `to_ns`: the latest to start, when the tuple was used more than once.
    #[must_use]
    pub fn socket_at(
        &self,
        a: SocketAddr,
        b: SocketAddr,
        from_ns: i64,
        to_ns: i64,
    ) -> Option<&SocketRecord> {
        let records = |l: SocketAddr, r: SocketAddr| {
            self.by_tuple
                .get(&tuple_key(l, r))
                .into_iter()
                .flatten()
                .filter_map(|&slot| self.record(slot))
                .filter(move |s| s.local == Some(l) && s.remote == Some(r))
        };
        let started = |s: &&SocketRecord| s.events.first().map(|e| e.ts_ns);
        let pick = |l, r| {
            records(l, r)
                .filter(|s| {
                    started(s).is_some_and(|t| t <= to_ns)
                        && s.destroyed_at.is_none_or(|d| d >= from_ns)
                })
                .max_by_key(started)
                // none alive then: the latest, whose events the window will filter
                .or_else(|| records(l, r).max_by_key(started))
        };
        pick(a, b).or_else(|| pick(b, a))
    }

    /// Kernel facts about the connection between `a` and `b` from `from_ns` to `to_ns`.
    #[must_use]
    pub fn facts(
        &self,
        a: SocketAddr,
        b: SocketAddr,
        from_ns: i64,
        to_ns: i64,
    ) -> Option<KernelFacts> {
        let rec = self.socket_at(a, b, from_ns, to_ns)?;
        let mut f = KernelFacts {
            pid: rec.pid,
            comm: rec.comm.clone(),
            ..KernelFacts::default()
        };
        for e in rec
            .events
            .iter()
            .filter(|e| e.ts_ns >= from_ns && e.ts_ns <= to_ns)
        {
            match &e.kind {
                SockEventKind::StateChange { new, .. } if *new == tcp_state::CLOSE_WAIT => {
                    f.fin_received_ns.get_or_insert(e.ts_ns);
                }
                SockEventKind::SendAfterIdle { idle_ns, .. } => {
                    if e.state == tcp_state::CLOSE_WAIT && f.write_in_close_wait.is_none() {
                        f.write_in_close_wait = Some((e.ts_ns, *idle_ns));
                    }
                    f.write_after_idle
                        .get_or_insert((e.ts_ns, *idle_ns, e.state_name()));
                }
                SockEventKind::RecvEofOrError { ret } if *ret == 0 => {
                    f.eof_read_ns.get_or_insert(e.ts_ns);
                }
                SockEventKind::RecvEofOrError { ret } => {
                    f.read_error.get_or_insert((e.ts_ns, -*ret));
                }
                SockEventKind::ResetReceived => {
                    f.reset_received_ns.get_or_insert(e.ts_ns);
                }
                SockEventKind::ResetSent { .. } => {
                    f.reset_sent_ns.get_or_insert(e.ts_ns);
                }
                _ => {}
            }
        }
        Some(f)
    }

    /// Forgets sockets destroyed more than `keep_ns` before `now_ns` (and, past
    /// [`MAX_GONE`] destroyed ones, the oldest), except those whose connection a verdict
    /// names (`pinned`, either direction): memory follows the open sockets and the
    /// verdicts, and a verdict's kernel evidence stays.
    pub fn evict(&mut self, now_ns: i64, keep_ns: i64, pinned: &HashSet<(SocketAddr, SocketAddr)>) {
        let named = |r: &SocketRecord| matches!((r.local, r.remote), (Some(l), Some(m)) if pinned.contains(&(l, m)) || pinned.contains(&(m, l)));
        while let Some((gone_at, _)) = self.gone.front() {
            if now_ns - gone_at < keep_ns && self.gone.len() <= MAX_GONE {
                break;
            }
            let seq = self.gone_base;
            self.gone_base += 1;
            let Some((_, rec)) = self.gone.pop_front() else {
                break;
            };
            if named(&rec) {
                self.kept.insert(seq, rec);
            } else {
                unindex(&mut self.by_tuple, &rec, Slot::Gone(seq));
            }
        }
        let by_tuple = &mut self.by_tuple;
        self.kept.retain(|&seq, r| {
            let keep = named(r);
            if !keep {
                unindex(by_tuple, r, Slot::Gone(seq));
            }
            keep
        });
        self.live_room.keep(&mut self.live);
    }
}

/// Takes the record at `slot` out of the tuple index, and its tuple with it when no other
/// record had that tuple. Evicting costs what is evicted: the index is not rebuilt from
/// every record held (45,000 under the lab's seed), so the ledger can be trimmed often
/// and its memory saw in small teeth.
fn unindex(by_tuple: &mut HashMap<u64, Slots>, rec: &SocketRecord, slot: Slot) {
    let (Some(l), Some(r)) = (rec.local, rec.remote) else {
        return;
    };
    let key = tuple_key(l, r);
    if let Some(slots) = by_tuple.get_mut(&key) {
        slots.retain(|s| *s != slot);
        if slots.is_empty() {
            by_tuple.remove(&key);
        }
    }
}

/// Adds what the kernel saw of a verdict's upstream connection: the owning process, a write
/// on a socket already in CLOSE_WAIT (a keep-alive race becomes `fin_unread`, proven), the
/// moment the process read EOF or ECONNRESET.
pub fn enrich(v: &mut Verdict, ledger: &Ledger) {
    let Some(u) = &v.upstream else { return };
    let conn = u.conn();
    let Some(f) = ledger.facts(
        u.proxy,
        u.server,
        v.ts_ns - LOOK_BACK_NS,
        v.ts_ns + LOOK_AHEAD_NS,
    ) else {
        return;
    };
    if let (Some(pid), Some(comm)) = (f.pid, &f.comm) {
        v.process = Some(format!("{comm}[{pid}]"));
    }
    let process = v.process.clone();
    let mut add = |ts_ns: i64, fact: Fact| {
        v.evidence
            .push(Evidence::new(ts_ns, conn, Leg::Upstream, fact));
    };
    if let Some(t) = f.fin_received_ns {
        add(t, Fact::KernelFinReceived);
    }
    if let Some((t, idle)) = f.write_in_close_wait {
        add(
            t,
            Fact::KernelWriteInCloseWait {
                process: process.clone(),
                idle_ms: idle as f64 / 1e6,
            },
        );
    } else if let Some((t, idle, state)) = f.write_after_idle {
        add(
            t,
            Fact::KernelWriteAfterIdle {
                process: process.clone(),
                idle_ms: idle as f64 / 1e6,
                state: state.to_string(),
            },
        );
    }
    if let Some(t) = f.eof_read_ns {
        add(
            t,
            Fact::KernelReadEof {
                process: process.clone(),
            },
        );
    }
    if let Some((t, errno)) = f.read_error {
        add(
            t,
            Fact::KernelReadError {
                process: process.clone(),
                errno,
            },
        );
    }
    if let Some(t) = f.reset_received_ns {
        add(t, Fact::KernelRstReceived);
    }
    let who = process.unwrap_or_else(|| "the proxy".into());
    v.evidence.sort_by_key(|e| e.ts_ns);
    if v.cause == Cause::KeepaliveRace && f.write_in_close_wait.is_some() {
        v.subcause = Some(Subcause::FinUnread);
        if !v.link_guessed {
            v.confidence = Confidence::Proven;
        }
        v.summary = format!(
            "{}; the kernel saw {who} write with the upstream's FIN already received and unread",
            v.summary
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PROXY: &str = "198.18.2.1:40000";
    const UPSTREAM: &str = "198.18.2.2:9000";

    fn ev(ts_ns: i64, kind: SockEventKind, state: u32) -> KernelEvent {
        KernelEvent {
            ts_ns,
            event: SockEvent {
                ktime_ns: 0,
                skaddr: 0xffff_0001,
                kind,
                state,
                pid: Some(42),
                tid: Some(42),
                comm: Some("caddy".into()),
                netns: None,
                local: Some(PROXY.parse().unwrap()),
                remote: Some(UPSTREAM.parse().unwrap()),
            },
        }
    }

    fn ledger(events: Vec<KernelEvent>) -> Ledger {
        let mut l = Ledger::new();
        for e in events {
            l.push(e);
        }
        l
    }

    /// The upstream's FIN arrives at 1 µs; the proxy writes 300 bytes after 5 ms idle at
    /// 2 µs, with the socket in CLOSE_WAIT, the write ending in `ended_in`.
    fn fin_then_write(ended_in: u32) -> [KernelEvent; 2] {
        [
            ev(
                1_000,
                SockEventKind::StateChange {
                    old: tcp_state::ESTABLISHED,
                    new: tcp_state::CLOSE_WAIT,
                },
                tcp_state::CLOSE_WAIT,
            ),
            ev(
                2_000,
                SockEventKind::SendAfterIdle {
                    ret: 300,
                    idle_ns: 5_000_000,
                    ended_in,
                },
                tcp_state::CLOSE_WAIT,
            ),
        ]
    }

    #[test]
    fn write_after_the_fin_arrived_is_fin_unread() {
        let [fin, write] = fin_then_write(tcp_state::CLOSE);
        let l = ledger(vec![
            fin,
            write,
            ev(
                3_000,
                SockEventKind::RecvEofOrError { ret: -104 },
                tcp_state::CLOSE,
            ),
        ]);
        let f = l
            .facts(UPSTREAM.parse().unwrap(), PROXY.parse().unwrap(), 0, 10_000)
            .unwrap();
        assert_eq!(f.fin_received_ns, Some(1_000));
        assert_eq!(f.write_in_close_wait, Some((2_000, 5_000_000)));
        assert_eq!(f.read_error, Some((3_000, 104)));
        assert_eq!(f.comm.as_deref(), Some("caddy"));
    }

    #[test]
    fn a_race_with_a_write_in_close_wait_becomes_fin_unread() {
        let l = ledger(vec![
            ev(
                1_000,
                SockEventKind::StateChange {
                    old: tcp_state::ESTABLISHED,
                    new: tcp_state::CLOSE_WAIT,
                },
                tcp_state::CLOSE_WAIT,
            ),
            ev(
                2_000,
                SockEventKind::SendAfterIdle {
                    ret: 300,
                    idle_ns: 5_000_000,
                    ended_in: tcp_state::CLOSE,
                },
                tcp_state::CLOSE_WAIT,
            ),
        ]);
        let mut v = Verdict {
            cause: Cause::KeepaliveRace,
            subcause: Some(Subcause::FinCrossed),
            confidence: Confidence::Probable,
            status: Some(502),
            ts_ns: 3_000,
            downstream: None,
            upstream: Some(crate::verdict::Upstream {
                proxy: PROXY.parse().unwrap(),
                server: UPSTREAM.parse().unwrap(),
                exchange_index: Some(2),
                seen_from_start: true,
                idle_ms: Some(5.0),
                fin_to_request_ms: Some(0.001),
                close_order: String::new(),
            }),
            request_id: None,
            idempotent: Some(false),
            summary: "race".into(),
            reason: None,
            evidence: Vec::new(),
            process: None,
            link_guessed: false,
        };
        enrich(&mut v, &l);
        assert_eq!(v.subcause, Some(Subcause::FinUnread));
        assert_eq!(v.confidence, Confidence::Proven);
        assert_eq!(v.process.as_deref(), Some("caddy[42]"));
        assert!(
            v.evidence
                .iter()
                .any(|e| e.to_string().contains("CLOSE_WAIT (FIN unread)")),
            "{:?}",
            v.evidence
        );
        // The kernel proves the race, not which client it hit: a guessed link stays a guess.
        let mut guessed = Verdict {
            subcause: Some(Subcause::FinCrossed),
            confidence: Confidence::Probable,
            link_guessed: true,
            evidence: Vec::new(),
            ..v.clone()
        };
        enrich(&mut guessed, &l);
        assert_eq!(guessed.subcause, Some(Subcause::FinUnread));
        assert_eq!(guessed.confidence, Confidence::Probable);
        // Another cause keeps its name; it only gains the kernel's evidence.
        let mut other = Verdict {
            cause: Cause::UpstreamReset,
            subcause: None,
            evidence: Vec::new(),
            ..v
        };
        enrich(&mut other, &l);
        assert_eq!(other.subcause, None);
        assert!(!other.evidence.is_empty());
    }

    #[test]
    fn write_while_established_is_not_fin_unread() {
        let l = ledger(vec![
            ev(
                2_000,
                SockEventKind::SendAfterIdle {
                    ret: 300,
                    idle_ns: 5_000_000,
                    ended_in: tcp_state::ESTABLISHED,
                },
                tcp_state::ESTABLISHED,
            ),
            ev(
                2_500,
                SockEventKind::StateChange {
                    old: tcp_state::ESTABLISHED,
                    new: tcp_state::CLOSE_WAIT,
                },
                tcp_state::CLOSE_WAIT,
            ),
            ev(
                3_000,
                SockEventKind::RecvEofOrError { ret: 0 },
                tcp_state::CLOSE_WAIT,
            ),
        ]);
        let f = l
            .facts(PROXY.parse().unwrap(), UPSTREAM.parse().unwrap(), 0, 10_000)
            .unwrap();
        assert_eq!(f.write_in_close_wait, None);
        assert_eq!(f.write_after_idle, Some((2_000, 5_000_000, "ESTABLISHED")));
        assert_eq!(f.eof_read_ns, Some(3_000));
    }

    #[test]
    fn events_outside_the_window_do_not_count() {
        let l = ledger(vec![ev(
            50_000,
            SockEventKind::RecvEofOrError { ret: 0 },
            tcp_state::CLOSE_WAIT,
        )]);
        let f = l
            .facts(PROXY.parse().unwrap(), UPSTREAM.parse().unwrap(), 0, 10_000)
            .unwrap();
        assert_eq!(f.eof_read_ns, None);
    }

    #[test]
    fn unknown_connection_has_no_facts() {
        let l = ledger(vec![]);
        assert!(l
            .facts(PROXY.parse().unwrap(), UPSTREAM.parse().unwrap(), 0, 1)
            .is_none());
    }

    /// Socket `i`: connected at `ts` from a port of its own (up to 20 000 sockets per
    /// address), destroyed 1 µs later when `dies`.
    fn connection(i: u32, ts: i64, dies: bool) -> Vec<KernelEvent> {
        let local = local_of(i);
        let at = |mut e: KernelEvent| {
            e.event.skaddr = 0x1000 + u64::from(i % 7); // kernel addresses are reused
            e.event.local = Some(local);
            e
        };
        let mut v = vec![at(ev(
            ts,
            SockEventKind::StateChange {
                old: tcp_state::CLOSE,
                new: tcp_state::SYN_SENT,
            },
            tcp_state::SYN_SENT,
        ))];
        if dies {
            v.push(at(ev(ts + 1_000, SockEventKind::Destroy, tcp_state::CLOSE)));
        }
        v
    }

    fn local_of(i: u32) -> SocketAddr {
        format!("198.18.{}.1:{}", 10 + i / 20_000, 40_000 + i % 20_000)
            .parse()
            .unwrap()
    }

    fn found(l: &Ledger, i: u32) -> bool {
        let local = local_of(i);
        l.socket(local, UPSTREAM.parse().unwrap())
            .is_some_and(|r| r.local == Some(local))
    }

    #[test]
    fn a_socket_is_found_alive_destroyed_and_after_an_eviction() {
        let mut l = ledger([connection(1, 1_000, false), connection(2, 5_000, true)].concat());
        assert!(found(&l, 1) && found(&l, 2));
        l.evict(6_000, 1_000_000, &HashSet::new());
        assert!(
            found(&l, 1) && found(&l, 2),
            "nothing evicted, nothing unindexed"
        );
        for e in connection(3, 7_000, true) {
            l.push(e);
        }
        assert!(found(&l, 3));
        // socket 2 went at 6 µs, socket 3 at 8 µs
        l.evict(1_007_000, 1_000_000, &HashSet::new());
        assert!(found(&l, 1), "alive: kept however old");
        assert!(!found(&l, 2) && found(&l, 3));
        assert_eq!(l.sockets(), 2);
    }

    /// The index of tuples is allocated at its bound once: a minute of sockets, each with
    /// a tuple of its own, neither grows it nor (pruned on eviction) shrinks it.
    #[test]
    fn the_tuple_index_is_allocated_once() {
        let mut l = Ledger::new();
        let room = l.by_tuple.capacity();
        assert!(room >= TUPLE_INDEX);
        let total = u32::try_from(MAX_GONE).unwrap();
        for i in 0..total {
            for e in connection(i, i64::from(i) * 10_000, true) {
                l.push(e);
            }
        }
        assert_eq!(l.tuples(), MAX_GONE);
        assert_eq!(l.by_tuple.capacity(), room, "no growth");
        l.evict(i64::from(total) * 10_000, i64::MAX / 2, &HashSet::new());
        assert_eq!(l.by_tuple.capacity(), room, "no shrinking either");
        assert!(found(&l, 0) && found(&l, total - 1));
    }

    /// Eviction takes what it evicts out of the tuple index, nothing more: a tuple used
    /// again by a live socket stays found, a record a verdict names stays until it no
    /// longer does, and once every record has gone the index is empty.
    #[test]
    fn eviction_prunes_the_tuple_index_to_what_is_held() {
        let (p, u): (SocketAddr, SocketAddr) = (PROXY.parse().unwrap(), UPSTREAM.parse().unwrap());
        let opened = |ts: i64, skaddr: u64| {
            let mut e = ev(
                ts,
                SockEventKind::StateChange {
                    old: tcp_state::CLOSE,
                    new: tcp_state::SYN_SENT,
                },
                tcp_state::SYN_SENT,
            );
            e.event.skaddr = skaddr;
            e
        };
        let mut gone = ev(2_000, SockEventKind::Destroy, tcp_state::CLOSE);
        gone.event.skaddr = 0x10;
        // the same tuple twice (destroyed, then alive at another address), and others
        let mut events = vec![opened(1_000, 0x10), gone, opened(3_000, 0x20)];
        for i in 0..10 {
            events.extend(connection(i, 4_000 + i64::from(i) * 10, true));
        }
        let mut l = ledger(events);
        assert_eq!(l.tuples(), 11);
        assert_eq!(l.by_tuple[&tuple_key(p, u)].len(), 2);
        let none = HashSet::new();
        l.evict(1_000_000_000, 1_000, &none);
        assert_eq!(l.sockets(), 1, "only the live one is left");
        assert_eq!(l.tuples(), 1);
        assert_eq!(l.by_tuple[&tuple_key(p, u)].len(), 1);
        let live = l.socket(p, u).expect("the live socket is still found");
        assert_eq!(live.skaddr, 0x20);
        assert!(!found(&l, 0) && !found(&l, 9));

        // A destroyed socket a verdict names outlives its time, then goes with its entry.
        let mut l = ledger(connection(1, 1_000, true));
        let pinned: HashSet<_> = [(local_of(1), UPSTREAM.parse().unwrap())].into();
        l.evict(1_000_000_000, 1_000, &pinned);
        assert!(found(&l, 1) && l.tuples() == 1, "kept while named");
        l.evict(1_000_000_001, 1_000, &none);
        assert!(!found(&l, 1));
        assert_eq!((l.sockets(), l.tuples()), (0, 0));
    }

    #[test]
    fn destroyed_sockets_beyond_the_bound_go_oldest_first() {
        let total = u32::try_from(MAX_GONE).unwrap() + 10;
        let mut l = Ledger::new();
        for i in 0..total {
            for e in connection(i, i64::from(i) * 10_000, true) {
                l.push(e);
            }
        }
        assert_eq!(l.sockets(), MAX_GONE + 10);
        l.evict(i64::from(total) * 10_000, i64::MAX / 2, &HashSet::new());
        assert_eq!(l.sockets(), MAX_GONE, "bounded however recent");
        assert!(!found(&l, 0) && !found(&l, 9), "the oldest went");
        assert!(found(&l, 10) && found(&l, total - 1), "the newest stay");
    }

    #[test]
    fn destroyed_sockets_are_evicted_after_the_grace_period() {
        let mut l = ledger(vec![
            ev(
                1_000,
                SockEventKind::StateChange {
                    old: tcp_state::CLOSE,
                    new: tcp_state::SYN_SENT,
                },
                tcp_state::SYN_SENT,
            ),
            ev(2_000, SockEventKind::Destroy, tcp_state::CLOSE),
        ]);
        const KEEP: i64 = 30_000_000_000;
        let none = HashSet::new();
        l.evict(2_000 + KEEP - 1, KEEP, &none);
        assert_eq!(l.sockets(), 1);
        // A connection a verdict names keeps its kernel evidence.
        let pinned: HashSet<_> = [(UPSTREAM.parse().unwrap(), PROXY.parse().unwrap())].into();
        l.evict(2_000 + KEEP + 1, KEEP, &pinned);
        assert_eq!(l.sockets(), 1);
        assert!(l
            .socket(PROXY.parse().unwrap(), UPSTREAM.parse().unwrap())
            .is_some());
        l.evict(2_000 + KEEP + 1, KEEP, &none);
        assert_eq!(l.sockets(), 0);
        assert!(l
            .socket(PROXY.parse().unwrap(), UPSTREAM.parse().unwrap())
            .is_none());
    }

    #[test]
    fn a_reused_kernel_address_starts_a_new_record() {
        let mut first = ev(
            1_000,
            SockEventKind::StateChange {
                old: tcp_state::CLOSE,
                new: tcp_state::SYN_SENT,
            },
            tcp_state::SYN_SENT,
        );
        first.event.local = Some("198.18.2.1:40001".parse().unwrap());
        let second = ev(
            5_000,
            SockEventKind::StateChange {
                old: tcp_state::CLOSE,
                new: tcp_state::SYN_SENT,
            },
            tcp_state::SYN_SENT,
        );
        let l = ledger(vec![first, second]);
        assert_eq!(l.sockets(), 2);
        assert!(l
            .socket(
                "198.18.2.1:40001".parse().unwrap(),
                UPSTREAM.parse().unwrap()
            )
            .is_some());
        assert!(l
            .socket(PROXY.parse().unwrap(), UPSTREAM.parse().unwrap())
            .is_some());
    }

    #[test]
    fn an_accepted_socket_at_a_reused_address_starts_its_own_record() {
        // An outgoing connection's socket is destroyed; the kernel reuses its address for a
        // socket accepted from a listener, which must not bury the first one's events.
        let mut first = ev(
            1_000,
            SockEventKind::SendAfterIdle {
                ret: 300,
                idle_ns: 5_000_000,
                ended_in: tcp_state::ESTABLISHED,
            },
            tcp_state::ESTABLISHED,
        );
        first.event.local = Some(PROXY.parse().unwrap());
        let mut events = vec![first, ev(2_000, SockEventKind::Destroy, tcp_state::CLOSE)];
        for i in 0..MAX_EVENTS_PER_SOCKET as i64 {
            let mut accepted = ev(
                3_000 + i,
                SockEventKind::StateChange {
                    old: tcp_state::LISTEN,
                    new: tcp_state::SYN_RECV,
                },
                tcp_state::SYN_RECV,
            );
            accepted.event.local = Some("198.18.1.2:8080".parse().unwrap());
            accepted.event.remote = Some(format!("198.18.1.1:{}", 40_000 + i).parse().unwrap());
            events.push(accepted);
        }
        let l = ledger(events);
        assert_eq!(
            l.send_idles().len(),
            1,
            "the first socket's report survives"
        );
        let opens = l.opens();
        assert!(opens
            .iter()
            .any(|o| o.opened == Opened::Passive && o.remote.port() == 40_000));
    }

    #[test]
    fn a_reused_tuple_gives_the_facts_of_the_socket_alive_then() {
        // Two connections with the same ports at different kernel addresses: the first
        // wrote in CLOSE_WAIT, the second (much later) did not.
        let [fin, write] = fin_then_write(tcp_state::CLOSE_WAIT);
        let mut events = vec![
            fin,
            write,
            ev(3_000, SockEventKind::Destroy, tcp_state::CLOSE),
        ];
        let mut later = ev(
            900_000,
            SockEventKind::StateChange {
                old: tcp_state::SYN_SENT,
                new: tcp_state::ESTABLISHED,
            },
            tcp_state::ESTABLISHED,
        );
        later.event.skaddr += 4096;
        events.push(later);
        let l = ledger(events);
        let (p, u) = (PROXY.parse().unwrap(), UPSTREAM.parse().unwrap());
        let f = l.facts(p, u, 0, 10_000).unwrap();
        assert_eq!(f.write_in_close_wait, Some((2_000, 5_000_000)));
        assert_eq!(
            l.socket_at(p, u, 800_000, 1_000_000).unwrap().events.len(),
            1
        );
    }
}
