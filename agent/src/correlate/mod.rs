//! Correlation: learns which connections face the client and which the upstream, pairs each
//! downstream request with the upstream attempts the proxy made for it, and turns errors
//! into [`Verdict`]s once the evidence around them has had time to arrive ([`GRACE_NS`]).

mod evicted;
mod evidence;
#[cfg(test)]
mod forget_tests;
mod judge;
pub mod kernel_roles;
mod late;
mod opaque;
mod orphans;
mod relink;
pub mod roles;
mod rules;
pub mod state;
mod tally;

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::hash::{Hash, Hasher};

use crate::flow::hash::{FxHashMap, FxHasher};
use crate::flow::{ConnId, Event};
use crate::headroom::Room;
use crate::http::HttpEvent;
use crate::verdict::Verdict;
pub use opaque::EncryptedSide;
pub use roles::{Endpoint, Role, Roles};
pub use rules::Rule;
use state::{CConn, ExRef};
pub use tally::Responses;

/// How long after an error the engine waits for late evidence (the proxy's close of the
/// upstream connection, reordered packets) before judging it.
pub const GRACE_NS: i64 = 1_000_000_000;
/// How long a closed connection's record is kept for verdicts that refer to it.
const KEEP_CLOSED_NS: i64 = 4 * GRACE_NS;
/// A downstream request older than this no longer waits for its upstream attempt.
const PENDING_MAX_NS: i64 = 300_000_000_000;
/// Captures merged from several interfaces are out of order by up to ~60 µs.
pub const REORDER_NS: i64 = 1_000_000;
/// Idle-close samples kept per upstream (enough for percentiles, bounded memory).
const MAX_SAMPLES: usize = 4096;
/// A kernel report of a write after idle this close to a request's packet is that
/// request's write.
const KERNEL_IDLE_NEAR_NS: i64 = 5_000_000;
/// Connection troubles (refused, unanswered SYNs) and idle closes kept for matching.
const TROUBLE_KEEP_NS: i64 = 600_000_000_000;
/// Idle closes (and the proxy's closes of them) kept at most, the newest. Each goes with
/// its connection's record (an idle pooled connection is remembered while open, and a few
/// seconds after it closed), and at the latest after [`TROUBLE_KEEP_NS`]; a busy proxy has
/// fresher ones to match (the lab's seed closes 250 a second).
const MAX_IDLE_CLOSES: usize = 16_384;
/// Downstream requests waiting for their upstream attempt, at most (the oldest go first).
const MAX_PENDING: usize = 65_536;
/// How often the waiting requests are swept for age and number.
const PENDING_SWEEP_NS: i64 = 1_000_000_000;
/// A proxy opens its upstream connection within this time of the request that needs it.
const CONNECT_AFTER_REQUEST_NS: i64 = 50_000_000;
/// Times a server's requests must be followed by connections to one upstream before the
/// pair is taken as the proxy's two sides (when no request is ever seen forwarded).
const TIMING_LEARN_MIN: u32 = 3;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Check {
    /// Judge an exchange (an error response, or a request left without one).
    Exchange(ConnId, u32),
    /// Judge a connection that never carried a request (refused, unanswered SYNs).
    Connect(ConnId),
}

/// An upstream connection that went away while idle.
#[derive(Debug, Clone, Copy)]
pub struct IdleClose {
    pub conn: ConnId,
    /// The upstream's FIN (or RST).
    pub upstream_ns: i64,
    pub upstream_rst: bool,
    /// The proxy's FIN or RST on that connection, once seen.
    pub proxy_ns: Option<i64>,
    /// Quiet time before the upstream closed.
    pub idle_ns: Option<i64>,
    pub claimed: bool,
}

/// One idle time observed on an upstream connection, for a live consumer (the node
/// agent's histograms) that wants every sample as it comes, not the inference's bounded
/// sets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sample {
    /// The upstream closed a pooled connection after this long idle.
    UpstreamIdleClose {
        upstream: std::net::SocketAddr,
        idle_ns: i64,
    },
    /// The proxy reused a pooled connection after this long idle.
    ProxyReuse {
        upstream: std::net::SocketAddr,
        idle_ns: i64,
    },
}

/// Samples held for the consumer between two takes; beyond this many the newest are
/// dropped (a consumer that stopped taking must not make the engine grow).
const MAX_PENDING_SAMPLES: usize = 65_536;

/// Observations the timeout inference uses.
#[derive(Debug, Clone, Default)]
pub struct Observations {
    /// Every idle sample since the last take, when [`Observations::stream_samples`] is on.
    pub samples: Vec<Sample>,
    /// Keep [`Observations::samples`] (the node agent); off by default.
    pub stream_samples: bool,
    /// Per upstream server: idle time before the upstream closed an idle connection.
    pub upstream_idle_closes: HashMap<std::net::SocketAddr, Vec<i64>>,
    /// Per upstream server: idle time before the proxy reused a pooled connection (the
    /// first [`MAX_SAMPLES`]).
    pub proxy_reuses: HashMap<std::net::SocketAddr, Vec<i64>>,
    /// Per upstream server: idle time before the proxy closed an idle connection.
    pub proxy_idle_closes: HashMap<std::net::SocketAddr, Vec<i64>>,
    /// Per upstream server: (responses without `Connection: close` followed within 5 ms by
    /// the upstream's FIN, responses without `Connection: close`).
    pub close_after_response: HashMap<std::net::SocketAddr, (u64, u64)>,
    /// Per upstream server: the `Keep-Alive: timeout=N` its responses carried (the latest).
    pub keep_alive_header: HashMap<std::net::SocketAddr, u32>,
    /// `Server`/`Via` values seen on downstream error responses (the proxy's own) and on
    /// upstream responses.
    pub proxy_software: Vec<String>,
    pub upstream_software: HashMap<std::net::SocketAddr, String>,
}

/// The correlator.
#[derive(Debug)]
pub struct Correlator {
    pub roles: Roles,
    /// Boxed: a connection is 376 bytes, and a table of them at a quarter full (see
    /// [`crate::headroom`]) would hold mostly empty slots of that size.
    conns: FxHashMap<ConnId, Box<CConn>>,
    /// Downstream candidates waiting for their upstream attempt, by request key.
    pending: FxHashMap<u64, Vec<(ExRef, i64)>>,
    /// When `pending` was last swept (a key of a request id is never seen again, so its
    /// candidates would otherwise stay for ever). A queue of keys in arrival order did
    /// this before; behind a request that waited long (its response skipped by a sparse
    /// capture), the keys of answered ones piled up in it to its bound.
    pending_swept: i64,
    /// Downstream requests answered, with when their candidates are dropped: a request
    /// answered is no longer waiting for an attempt, and the capture's order is right
    /// within a second. Without this a busy proxy's every request stayed a candidate for
    /// [`PENDING_MAX_NS`], up to [`MAX_PENDING`] of them.
    answered: VecDeque<(i64, ExRef)>,
    checks: BinaryHeap<Reverse<(i64, u64, Check)>>,
    check_seq: u64,
    closed: VecDeque<(i64, ConnId)>,
    troubles: VecDeque<ConnId>,
    /// Upstream connections that went away while idle, by connection.
    idle_closes: FxHashMap<ConnId, IdleClose>,
    /// The same in the order the upstream closed them (for expiry).
    idle_close_order: VecDeque<(i64, ConnId)>,
    /// Proxy closes of those connections, in time order: a never-sent error looks here
    /// for a close within milliseconds of it.
    proxy_closes: VecDeque<(i64, ConnId)>,
    /// Per upstream: (samples and header it was computed from, idle timer) for `habit`.
    idle_limits: std::cell::RefCell<IdleTimers>,
    /// Requests on connections of unknown role: (time, server, client IP), the last
    /// [`CONNECT_AFTER_REQUEST_NS`] only.
    recent_requests: VecDeque<(i64, std::net::SocketAddr, std::net::IpAddr)>,
    /// (listener candidate, upstream candidate) → connections opened right after requests.
    timing_pairs: HashMap<(std::net::SocketAddr, std::net::SocketAddr), u32>,
    /// (client, server) → connection, for the connections remembered.
    by_tuple: FxHashMap<(std::net::SocketAddr, std::net::SocketAddr), ConnId>,
    /// The capture is sparse: see [`Correlator::set_sparse`].
    pub(crate) sparse: bool,
    /// Kernel idle reports for connections not yet seen, by [`crate::flow::key`].
    kernel_idle_early: FxHashMap<crate::flow::Key, VecDeque<(i64, i64)>>,
    pub obs: Observations,
    pub verdicts_out: Vec<Verdict>,
    now: i64,
    /// Rules switched off (tests show what each decides by switching it off).
    rules_off: Vec<Rule>,
    /// Unreadable (encrypted) client sides.
    opaque: opaque::Opaque,
    /// Upstream requests with an id no client request was seen for yet.
    unpaired_up: late::Unpaired,
    /// Every response's status, per server endpoint (see [`Correlator::responses`]).
    response_tally: tally::ByServer,
    /// The room kept in the tables whose entries come and go (see [`Correlator::keep_room`]).
    rooms: Rooms,
}

/// One [`Room`] per table that churns.
#[derive(Debug, Default)]
struct Rooms {
    pending: Room,
    conns: Room,
    by_tuple: Room,
    idle_closes: Room,
    kernel_idle_early: Room,
}

type IdleTimers =
    HashMap<std::net::SocketAddr, (usize, Option<u32>, Option<crate::timeouts::IdleTimer>)>;

/// Kernel idle reports kept per connection.
const KERNEL_IDLE_KEPT: usize = 8;
/// Kernel idle reports kept per tuple before (or without) its connection on the wire: a
/// bundle read again hands over every report of every connection that used the tuple.
const KERNEL_IDLE_EARLY_KEPT: usize = 256;
/// Connections with kernel idle reports kept before they are seen on the wire.
const KERNEL_IDLE_EARLY_MAX: usize = 1 << 20;

/// A pairing key: the hash of `parts` (each ends in its own separator) under `salt`.
fn key_of(parts: &[&str], salt: u8) -> u64 {
    let mut h = FxHasher::default();
    salt.hash(&mut h);
    for p in parts {
        p.hash(&mut h);
    }
    h.finish()
}

/// The keys a request is paired under: its request id and trace id (unique: `true`), and
/// its method and target.
fn request_keys(req: &crate::http::RequestHead) -> [Option<(u64, bool)>; 3] {
    [
        req.request_id.as_deref().map(|v| (key_of(&[v], 1), true)),
        req.traceparent
            .as_deref()
            .and_then(|v| v.split('-').nth(1))
            .map(|v| (key_of(&[v], 2), true)),
        // hashed in parts: this runs for every request, and again once it is answered
        Some((key_of(&[&req.method, &req.target], 3), false)),
    ]
}

impl Observations {
    fn sample(&mut self, s: Sample) {
        if self.stream_samples && self.samples.len() < MAX_PENDING_SAMPLES {
            self.samples.push(s);
        }
    }
}

impl Correlator {
    /// How many entries each of the correlator's tables holds now (self-monitoring: a long
    /// run's memory must follow the open connections, not the traffic seen).
    #[must_use]
    pub fn tables(&self) -> Vec<(&'static str, usize)> {
        vec![
            ("correlate_conns", self.conns.len()),
            (
                "correlate_pending",
                self.pending.values().map(Vec::len).sum(),
            ),
            ("correlate_answered", self.answered.len()),
            ("correlate_checks", self.checks.len()),
            ("correlate_closed", self.closed.len()),
            ("correlate_troubles", self.troubles.len()),
            ("correlate_idle_closes", self.idle_closes.len()),
            ("correlate_idle_close_order", self.idle_close_order.len()),
            ("correlate_proxy_closes", self.proxy_closes.len()),
            ("correlate_recent_requests", self.recent_requests.len()),
            ("correlate_timing_pairs", self.timing_pairs.len()),
            ("correlate_by_tuple", self.by_tuple.len()),
            ("correlate_kernel_idle_early", self.kernel_idle_early.len()),
            ("correlate_kernel_roles", self.roles.kernel.remembered()),
            ("correlate_verdicts_out", self.verdicts_out.len()),
            (
                "correlate_exchanges",
                self.conns.values().map(|c| c.exchanges.len()).sum(),
            ),
        ]
    }

    /// The kernel saw a write after idle (a probe event, in capture time). A sparse
    /// capture uses it for the idle time of a request whose predecessors were skipped; a
    /// full one times every request itself, and ignores it.
    pub fn kernel_send_idle(&mut self, idle: crate::kernel::SendIdle) {
        if !self.sparse {
            return;
        }
        let crate::kernel::SendIdle {
            local: a,
            remote: b,
            ts_ns: ts,
            idle_ns,
        } = idle;
        let id = self
            .by_tuple
            .get(&(a, b))
            .or_else(|| self.by_tuple.get(&(b, a)));
        let (list, kept) = match id.and_then(|id| self.conns.get_mut(id)) {
            Some(c) => (&mut c.kernel_idle, KERNEL_IDLE_KEPT),
            None => {
                // not seen on the wire yet (or a bundle's events read before its packets)
                if self.kernel_idle_early.len() >= KERNEL_IDLE_EARLY_MAX {
                    self.kernel_idle_early.clear();
                }
                let list = self
                    .kernel_idle_early
                    .entry(crate::flow::key(a, b))
                    .or_default();
                (list, KERNEL_IDLE_EARLY_KEPT)
            }
        };
        if list.len() >= kept {
            list.pop_front();
        }
        list.push_back((ts, idle_ns));
    }

    /// The kernel's idle reports for `c` that came before its packets (see
    /// [`Correlator::kernel_send_idle`]).
    pub(super) fn early_idle(&self, c: &CConn) -> Option<&VecDeque<(i64, i64)>> {
        self.kernel_idle_early
            .get(&crate::flow::key(c.info.client, c.info.server))
    }

    /// The kernel saw a socket opened (connect or accept) and, once known, by which process:
    /// what the roles of connections rest on where addresses say nothing.
    pub fn kernel_socket(&mut self, open: crate::kernel::SocketOpen) {
        self.roles.kernel.saw(open);
    }

    /// The packets come from a sparse capture: a 5xx whose request was skipped may be
    /// linked to the one failed upstream attempt that ended just before it.
    pub fn set_sparse(&mut self, sparse: bool) {
        self.sparse = sparse;
    }

    #[must_use]
    pub fn new(roles: Roles) -> Self {
        Correlator {
            roles,
            conns: FxHashMap::default(),
            pending: FxHashMap::default(),
            checks: BinaryHeap::new(),
            check_seq: 0,
            closed: VecDeque::new(),
            troubles: VecDeque::new(),
            idle_closes: FxHashMap::default(),
            idle_close_order: VecDeque::new(),
            pending_swept: i64::MIN,
            answered: VecDeque::new(),
            proxy_closes: VecDeque::new(),
            idle_limits: std::cell::RefCell::new(HashMap::new()),
            recent_requests: VecDeque::new(),
            timing_pairs: HashMap::new(),
            by_tuple: FxHashMap::default(),
            kernel_idle_early: FxHashMap::default(),
            sparse: false,
            obs: Observations::default(),
            verdicts_out: Vec::new(),
            now: i64::MIN,
            rules_off: Vec::new(),
            opaque: opaque::Opaque::default(),
            unpaired_up: late::Unpaired::default(),
            response_tally: HashMap::new(),
            rooms: Rooms::default(),
        }
    }

    /// Switches `rule` off: its cause is no longer concluded (to show what a rule decides).
    #[cfg(test)]
    pub(crate) fn switch_off(&mut self, rule: Rule) {
        self.roles.kernel_off |= rule == Rule::KernelRoles;
        self.rules_off.push(rule);
    }

    /// Connections currently remembered.
    #[must_use]
    pub fn remembered(&self) -> usize {
        self.conns.len()
    }

    fn schedule(&mut self, due: i64, c: Check) {
        self.check_seq += 1;
        self.checks.push(Reverse((due, self.check_seq, c)));
    }

    /// Applies one flow event.
    pub fn on_event(&mut self, ev: Event) {
        match ev {
            Event::Opened(info) => {
                self.roles.saw(&info);
                self.learn_by_timing(&info);
                self.by_tuple.insert((info.client, info.server), info.id);
                // Kernel reports that came before the packets stay under the tuple, looked
                // up by time: a bundle's events all come first, and a tuple used by several
                // connections in turn must not hand the first one the others' reports.
                self.conns.insert(info.id, Box::new(CConn::new(info)));
            }
            Event::SynRetransmit { conn, ts, count } => {
                if let Some(c) = self.conns.get_mut(&conn) {
                    c.syn_count = count;
                    c.last_syn_ns = Some(ts);
                    if count == 2 {
                        self.troubles.push_back(conn);
                    }
                }
            }
            Event::Missing { conn, ts, what } => {
                if let Some(c) = self.conns.get_mut(&conn) {
                    c.missing.get_or_insert((ts, what));
                }
            }
            Event::Evicted {
                conn,
                ts,
                forgotten,
            } => self.on_evicted(conn, ts, forgotten),
            Event::Skipped { conn, .. } => {
                if let Some(c) = self.conns.get_mut(&conn) {
                    c.quiet_since = None;
                    c.skipped = true;
                    for e in c.exchanges.iter_mut().filter(|e| !e.judged) {
                        if e.req.is_some() && (e.res.is_none() || e.res_end_ns.is_none()) {
                            e.unseen_end = true;
                        }
                    }
                }
            }
            Event::Established { conn, ts, rtt_ns } => {
                if let Some(c) = self.conns.get_mut(&conn) {
                    c.established_ns = Some(ts);
                    c.rtt_ns = Some(rtt_ns);
                    c.quiet_since = Some(ts);
                    c.syn_count = c.syn_count.max(1);
                }
            }
            Event::Refused { conn, ts } => {
                if let Some(c) = self.conns.get_mut(&conn) {
                    c.refused_ns = Some(ts);
                    c.syn_count = c.syn_count.max(1);
                    self.troubles.push_back(conn);
                } else {
                    return;
                }
                self.schedule(ts + 2 * GRACE_NS, Check::Connect(conn));
            }
            Event::Http {
                conn,
                ev,
                idle_ns,
                busy,
            } => self.on_http(conn, ev, idle_ns, busy),
            Event::Fin {
                conn,
                ts,
                from_client,
                outstanding,
                responding,
            } => self.on_close(conn, ts, from_client, false, outstanding, responding),
            Event::Rst {
                conn,
                ts,
                from_client,
                outstanding,
                responding,
            } => self.on_close(conn, ts, from_client, true, outstanding, responding),
            Event::Closed { conn, ts, .. } => {
                let mut connect = false;
                let mut waiting: Vec<u32> = Vec::new();
                if let Some(c) = self.conns.get_mut(&conn) {
                    c.closed_ns.get_or_insert(ts);
                    connect =
                        c.established_ns.is_none() && c.refused_ns.is_none() && c.syn_count >= 2;
                    // requests still waiting when the capture or connection ended
                    waiting = c
                        .exchanges
                        .iter()
                        .filter(|e| e.req.is_some() && e.res.is_none() && !e.judged)
                        .map(|e| e.index)
                        .collect();
                }
                if connect {
                    self.schedule(ts + 2 * GRACE_NS, Check::Connect(conn));
                }
                for i in waiting {
                    self.schedule(ts + GRACE_NS, Check::Exchange(conn, i));
                }
                self.closed.push_back((ts, conn));
            }
        }
    }

    fn on_http(&mut self, conn: ConnId, ev: HttpEvent, idle_ns: Option<i64>, busy: bool) {
        match ev {
            HttpEvent::Request {
                ts, index, head, ..
            } => {
                let Some(c) = self.conns.get_mut(&conn) else {
                    return;
                };
                c.quiet_since = None;
                self.roles.saw_readable(c.info.server);
                let role = self.roles.role(&c.info);
                if role == Role::Unknown {
                    let info = c.info;
                    self.learn_after_unreadable(&info, ts);
                }
                let Some(c) = self.conns.get_mut(&conn) else {
                    return;
                };
                if role == Role::Unknown {
                    // Bounded here too: on kept-alive connections no new one may open
                    // (where learn_by_timing prunes) for a long time.
                    while self
                        .recent_requests
                        .front()
                        .is_some_and(|&(r, ..)| ts - r > CONNECT_AFTER_REQUEST_NS)
                    {
                        self.recent_requests.pop_front();
                    }
                    self.recent_requests
                        .push_back((ts, c.info.server, c.info.client.ip()));
                }
                // The previous response on this connection was kept alive: one more
                // keep-alive response that the upstream did not close after.
                if matches!(role, Role::Up | Role::Unknown) && c.missing.is_none() && index > 1 {
                    let kept = c
                        .ex(index - 1)
                        .and_then(|p| p.res.as_ref())
                        .is_some_and(|r| !r.closes() && r.status >= 200);
                    if kept {
                        self.obs
                            .close_after_response
                            .entry(c.info.server)
                            .or_default()
                            .1 += 1;
                    }
                }
                if role == Role::Up && index >= 2 {
                    // The proxy reused a pooled connection: after how long idle (the
                    // kernel's figure when a sparse capture could not time it).
                    let idle = idle_ns.or_else(|| {
                        c.kernel_idle
                            .iter()
                            .filter(|&&(t, _)| (t - ts).abs() <= KERNEL_IDLE_NEAR_NS)
                            .min_by_key(|&&(t, _)| (t - ts).abs())
                            .map(|&(_, i)| i)
                    });
                    if let Some(idle_ns) = idle {
                        let upstream = c.info.server;
                        let reuses = self.obs.proxy_reuses.entry(upstream).or_default();
                        if reuses.len() < MAX_SAMPLES {
                            reuses.push(idle_ns);
                        }
                        self.obs.sample(Sample::ProxyReuse { upstream, idle_ns });
                    }
                }
                let Some(c) = self.conns.get_mut(&conn) else {
                    return;
                };
                let e = c.ex_entry(index);
                e.req_ns = Some(ts);
                e.idle_ns = idle_ns;
                e.busy = busy;
                e.req = Some(head);
                self.pair(conn, index, ts);
            }
            HttpEvent::RequestEnd { ts, index } => {
                if let Some(e) = self.conns.get_mut(&conn).and_then(|c| c.ex_mut(index)) {
                    e.req_end_ns = Some(ts);
                }
            }
            HttpEvent::Response {
                ts, index, head, ..
            } => {
                let Some(c) = self.conns.get_mut(&conn) else {
                    return;
                };
                let status = head.status;
                tally::count(&mut self.response_tally, &c.info, status);
                let role = self.roles.role(&c.info);
                if matches!(role, Role::Up | Role::Unknown) {
                    // Node names itself nowhere but in its `Keep-Alive` header's shape.
                    let said = head.server.clone().or_else(|| {
                        let t = head.keep_alive_timeout_s?;
                        crate::advice::recognise::Upstream::from_response(
                            None,
                            Some(t),
                            head.keep_alive_max,
                        )
                        .map(|u| format!("{} (Keep-Alive: timeout={t}, no Server)", u.name()))
                    });
                    if let Some(s) = said {
                        self.obs.upstream_software.entry(c.info.server).or_insert(s);
                    }
                    if let Some(t) = head.keep_alive_timeout_s {
                        self.obs.keep_alive_header.insert(c.info.server, t);
                    }
                }
                let e = c.ex_entry(index);
                e.res_ns = Some(ts);
                e.res = Some(head);
                if matches!(role, Role::Down | Role::Unknown)
                    && e.req.is_some()
                    && self.answered.len() < MAX_PENDING
                {
                    self.answered.push_back((ts + GRACE_NS, (conn, index)));
                }
                if status >= 500 {
                    self.schedule(ts + GRACE_NS, Check::Exchange(conn, index));
                }
            }
            HttpEvent::ResponseEnd { ts, index } => {
                let Some(c) = self.conns.get_mut(&conn) else {
                    return;
                };
                c.quiet_since = Some(ts);
                if let Some(e) = c.ex_mut(index) {
                    e.res_end_ns = Some(ts);
                }
            }
            HttpEvent::Garbage {
                ts,
                from_client: true,
                ..
            } => self.saw_unreadable(conn, ts),
            HttpEvent::Garbage { .. } => {}
        }
    }

    /// When no request is ever seen forwarded (the upstream refuses every connection, or
    /// never answers), the proxy's two sides still show in time: each request to its
    /// listener is followed within milliseconds by a connection from the proxy to its
    /// upstream. After [`TIMING_LEARN_MIN`] such pairs, learn them.
    fn learn_by_timing(&mut self, info: &crate::flow::ConnInfo) {
        let t = info.syn_ns.unwrap_or(info.first_ns);
        while self
            .recent_requests
            .front()
            .is_some_and(|&(r, ..)| t - r > CONNECT_AFTER_REQUEST_NS)
        {
            self.recent_requests.pop_front();
        }
        if !info.opener_known || self.roles.role(info) != Role::Unknown {
            return;
        }
        let mut seen = Vec::new();
        for &(r, server, client_ip) in &self.recent_requests {
            if r > t
                || server == info.server
                || client_ip == info.client.ip()
                || seen.contains(&server)
            {
                continue;
            }
            seen.push(server);
            let n = self.timing_pairs.entry((server, info.server)).or_insert(0);
            *n += 1;
            if *n == TIMING_LEARN_MIN {
                self.roles.learn_by_timing(server, info.server);
            }
        }
    }

    /// Pairs a new request with a downstream request it mirrors, or registers it as a
    /// downstream candidate.
    fn pair(&mut self, conn: ConnId, index: u32, ts: i64) {
        let Some(c) = self.conns.get(&conn) else {
            return;
        };
        let info = c.info;
        let Some(req) = c.ex(index).and_then(|e| e.req.clone()) else {
            return;
        };
        let role = self.roles.role(&info);
        let keys = request_keys(&req);
        if matches!(role, Role::Up | Role::Unknown) {
            for (k, by_id) in keys.iter().flatten().copied() {
                if let Some((down, unique)) = self.find_down(k, &info, ts) {
                    let proven = by_id || unique;
                    self.link(down, (conn, index), proven);
                    return;
                }
            }
            // Merged captures are out of order under load: the client's request may come
            // after the attempt it caused. Ids are unique, so wait for it a little.
            for (k, _) in keys.iter().flatten().copied().filter(|&(_, by_id)| by_id) {
                self.unpaired_up.push(k, (conn, index), ts);
            }
        }
        if matches!(role, Role::Down | Role::Unknown) {
            for (k, _) in keys.iter().flatten().copied().filter(|&(_, by_id)| by_id) {
                if let Some(up) = self.unpaired_up.take(k, ts) {
                    let free = self
                        .conns
                        .get(&up.0)
                        .and_then(|c| c.ex(up.1))
                        .is_some_and(|e| e.serves.is_none() && !e.judged && up.0 != conn);
                    if free {
                        self.link((conn, index), up, true);
                        return;
                    }
                }
            }
            for (k, _) in keys.iter().flatten().copied() {
                let v = self.pending.entry(k).or_default();
                v.retain(|&(_, t)| ts - t < PENDING_MAX_NS);
                if v.len() >= 256 {
                    v.remove(0);
                }
                v.push(((conn, index), ts));
            }
        }
    }

    /// The best downstream candidate under key `k` for an upstream request of `up` at `ts`.
    fn find_down(&mut self, k: u64, up: &crate::flow::ConnInfo, ts: i64) -> Option<(ExRef, bool)> {
        let cands = self.pending.get_mut(&k)?;
        let conns = &self.conns;
        let roles = &self.roles;
        // Still waiting when this request went upstream: no response yet, or one stamped
        // after it (captures merged out of order hand over a response before the upstream
        // request that came first).
        let waiting =
            |e: &state::Ex| e.res.is_none() || e.res_ns.is_some_and(|r| r + REORDER_NS >= ts);
        cands.retain(|&((dc, di), t)| {
            ts - t < PENDING_MAX_NS && conns.get(&dc).and_then(|c| c.ex(di)).is_some_and(waiting)
        });
        let valid: Vec<(ExRef, i64, bool)> = cands
            .iter()
            .filter_map(|&((dc, di), t)| {
                let c = conns.get(&dc)?;
                let ok = dc != up.id
                    && c.info.server != up.server
                    && t <= ts + REORDER_NS
                    && matches!(roles.role(&c.info), Role::Down | Role::Unknown);
                let fresh = c.ex(di).is_some_and(|e| e.attempts.is_empty());
                ok.then_some(((dc, di), t, fresh))
            })
            .collect();
        let unique = valid.len() == 1;
        // prefer requests not yet forwarded, then the most recent
        let best = valid
            .iter()
            .max_by_key(|(_, t, fresh)| (*fresh, *t))
            .map(|(r, _, _)| *r)?;
        Some((best, unique))
    }

    fn link(&mut self, down: ExRef, up: ExRef, proven: bool) {
        let (Some(dinfo), Some(uinfo)) = (
            self.conns.get(&down.0).map(|c| c.info),
            self.conns.get(&up.0).map(|c| c.info),
        ) else {
            return;
        };
        self.roles.learn(&dinfo, &uinfo);
        if let Some(e) = self.conns.get_mut(&down.0).and_then(|c| c.ex_mut(down.1)) {
            e.attempts.push(up);
        }
        if let Some(e) = self.conns.get_mut(&up.0).and_then(|c| c.ex_mut(up.1)) {
            e.serves = Some((down, proven));
        }
    }

    fn on_close(
        &mut self,
        conn: ConnId,
        ts: i64,
        from_client: bool,
        rst: bool,
        outstanding: usize,
        responding: bool,
    ) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        let first_close = c.client_close().is_none() && c.server_close().is_none();
        tally::note(&mut self.response_tally, &c.info);
        match (from_client, rst) {
            (true, false) => c.fin_client = Some(ts),
            (true, true) => c.rst_client = Some(ts),
            (false, false) => c.fin_server = Some(ts),
            (false, true) => c.rst_server = Some(ts),
        }
        let role = self.roles.role(&c.info);
        let idle = outstanding == 0 && !responding;
        if !idle {
            // judge the oldest exchange left without a complete response
            let target = c
                .exchanges
                .iter()
                .find(|e| e.req.is_some() && (e.res.is_none() || e.res_end_ns.is_none()))
                .map(|e| e.index);
            if let Some(i) = target {
                self.schedule(ts + GRACE_NS, Check::Exchange(conn, i));
            }
            return;
        }
        if matches!(role, Role::Down | Role::Other) {
            return;
        }
        let idle_ns = c.quiet_since.map(|q| ts - q);
        if !from_client && first_close {
            // the upstream closed an idle connection (a timeout unless it had said close)
            let said_close = c
                .exchanges
                .back()
                .and_then(|e| e.res.as_ref())
                .is_some_and(crate::http::ResponseHead::closes);
            if let Some(v) = idle_ns.filter(|_| !said_close) {
                let samples = self
                    .obs
                    .upstream_idle_closes
                    .entry(c.info.server)
                    .or_default();
                if samples.len() < MAX_SAMPLES {
                    samples.push(v);
                }
                if role == Role::Up {
                    let upstream = c.info.server;
                    self.obs.sample(Sample::UpstreamIdleClose {
                        upstream,
                        idle_ns: v,
                    });
                }
            }
            // How the upstream ends a keep-alive response: counted only on connections the
            // capture saw whole, so lost packets cannot fake or hide the habit.
            let last = c.exchanges.back();
            if let Some(res) = last
                .and_then(|e| e.res.as_ref())
                .filter(|_| c.missing.is_none() && !c.skipped)
            {
                if !res.closes() && res.status >= 200 {
                    let end = last.and_then(|e| e.res_end_ns).unwrap_or(ts);
                    let entry = self
                        .obs
                        .close_after_response
                        .entry(c.info.server)
                        .or_default();
                    entry.1 += 1;
                    if ts - end <= 5_000_000 {
                        entry.0 += 1;
                    }
                }
            }
            self.idle_close_order.push_back((ts, conn));
            self.idle_closes.insert(
                conn,
                IdleClose {
                    conn,
                    upstream_ns: ts,
                    upstream_rst: rst,
                    proxy_ns: None,
                    idle_ns,
                    claimed: false,
                },
            );
        } else if from_client {
            if first_close {
                if let Some(v) = idle_ns {
                    let samples = self.obs.proxy_idle_closes.entry(c.info.server).or_default();
                    if samples.len() < MAX_SAMPLES {
                        samples.push(v);
                    }
                }
            }
            if let Some(ic) = self.idle_closes.get_mut(&conn) {
                if ic.proxy_ns.is_none() {
                    ic.proxy_ns = Some(ts);
                    self.proxy_closes.push_back((ts, conn));
                }
            }
        }
    }

    /// Runs the checks due by `now`; verdicts go to `verdicts_out`.
    pub fn advance(&mut self, now: i64) {
        self.now = self.now.max(now);
        let made = self.verdicts_out.len();
        while let Some(Reverse((due, _, check))) = self.checks.peek().copied() {
            if due > self.now {
                break;
            }
            self.checks.pop();
            self.run_check(check, false);
        }
        self.vet_evicted(made);
        self.forget_old();
    }

    /// The input ended: judge everything still pending.
    pub fn finish(&mut self) {
        let made = self.verdicts_out.len();
        while let Some(Reverse((_, _, check))) = self.checks.pop() {
            self.run_check(check, true);
        }
        self.vet_evicted(made);
        self.conns.clear();
        self.by_tuple.clear();
        self.pending.clear();
        self.answered.clear();
    }

    /// Drops candidates older than [`PENDING_MAX_NS`] and, beyond [`MAX_PENDING`], the
    /// oldest; once a second (the pending map holds the requests in flight, and those
    /// whose answer was not seen).
    fn sweep_pending(&mut self) {
        let now = self.now;
        if now.saturating_sub(self.pending_swept) < PENDING_SWEEP_NS {
            return;
        }
        self.pending_swept = now;
        let young = |v: &mut Vec<(ExRef, i64)>, from: i64| {
            v.retain(|&(_, t)| t > from);
            !v.is_empty()
        };
        self.pending
            .retain(|_, v| young(v, now.saturating_sub(PENDING_MAX_NS)));
        let total: usize = self.pending.values().map(Vec::len).sum();
        if total > MAX_PENDING {
            let mut times: Vec<i64> = self.pending.values().flatten().map(|&(_, t)| t).collect();
            let (_, &mut cutoff, _) = times.select_nth_unstable(total - MAX_PENDING - 1);
            self.pending.retain(|_, v| young(v, cutoff));
        }
        self.keep_room();
    }

    /// Room in the tables whose entries come and go with the connections (see
    /// [`crate::headroom`]); once a second, with the sweep of the waiting requests.
    fn keep_room(&mut self) {
        let r = &mut self.rooms;
        r.pending.keep(&mut self.pending);
        r.conns.keep(&mut self.conns);
        r.by_tuple.keep(&mut self.by_tuple);
        r.idle_closes.keep(&mut self.idle_closes);
        r.kernel_idle_early.keep(&mut self.kernel_idle_early);
    }

    /// Drops the candidates of requests answered more than [`GRACE_NS`] ago.
    fn forget_answered(&mut self) {
        while let Some(&(due, (dc, di))) = self.answered.front() {
            if due > self.now {
                break;
            }
            self.answered.pop_front();
            let Some(req) = self
                .conns
                .get(&dc)
                .and_then(|c| c.ex(di))
                .and_then(|e| e.req.as_ref())
            else {
                continue; // its candidates expire with time
            };
            for (k, _) in request_keys(req).into_iter().flatten() {
                if let Some(v) = self.pending.get_mut(&k) {
                    v.retain(|&(r, _)| r != (dc, di));
                    if v.is_empty() {
                        self.pending.remove(&k);
                    }
                }
            }
        }
    }

    fn forget_old(&mut self) {
        while let Some(&(ts, id)) = self.closed.front() {
            if ts + KEEP_CLOSED_NS > self.now {
                break;
            }
            self.closed.pop_front();
            // an idle close serves errors while its connection is remembered
            self.idle_closes.remove(&id);
            if let Some(c) = self.conns.remove(&id) {
                let t = (c.info.client, c.info.server);
                if self.by_tuple.get(&t) == Some(&id) {
                    self.by_tuple.remove(&t);
                }
                // its kernel reports, which no later connection of the tuple needs
                let key = crate::flow::key(t.0, t.1);
                if let Some(early) = self.kernel_idle_early.get_mut(&key) {
                    early.retain(|&(r, _)| r > ts);
                    if early.is_empty() {
                        self.kernel_idle_early.remove(&key);
                    }
                }
            }
        }
        while self
            .troubles
            .front()
            .is_some_and(|id| !self.conns.contains_key(id))
        {
            self.troubles.pop_front();
        }
        let now = self.now;
        while let Some(&(t, id)) = self.idle_close_order.front() {
            if now - t <= TROUBLE_KEEP_NS
                && self.idle_close_order.len() <= MAX_IDLE_CLOSES
                && self.idle_closes.contains_key(&id)
            {
                break;
            }
            self.idle_close_order.pop_front();
            self.idle_closes.remove(&id);
        }
        while self.proxy_closes.front().is_some_and(|&(t, id)| {
            now - t > TROUBLE_KEEP_NS
                || self.proxy_closes.len() > MAX_IDLE_CLOSES
                || !self.idle_closes.contains_key(&id)
        }) {
            self.proxy_closes.pop_front();
        }
        self.forget_answered();
        self.sweep_pending();
    }
}
