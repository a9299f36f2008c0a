//! The engine: segments in, verdicts out. Streams: memory follows the open connections and
//! the errors awaiting judgement, never the size of the input.

use std::collections::HashSet;
use std::net::SocketAddr;

use crate::advice::{advise, Advice};
use crate::correlate::{Correlator, Endpoint, Roles};
use crate::flow::{Event, FlowStats, Tracker};
use crate::kernel::{self, KernelEvent, Ledger};
use crate::segment::Segment;
use crate::timeouts::{infer, UpstreamTimeouts};
use crate::verdict::Verdict;

/// How often (capture time) due checks are run.
const ADVANCE_EVERY_NS: i64 = 10_000_000;
/// Connections forgotten at a time when the input ends.
const FINISH_BATCH: usize = 1024;

/// What the user said about roles.
#[derive(Debug, Clone, Default)]
pub struct Config {
    pub proxy: Option<Endpoint>,
    pub upstream: Option<Endpoint>,
    /// The packets come from a sparse capture (what `tracer capture` does by default).
    pub sparse: bool,
}

/// Everything an analysis found.
#[derive(Debug, Clone, Default)]
pub struct Analysis {
    /// In time order.
    pub verdicts: Vec<Verdict>,
    pub timeouts: Vec<UpstreamTimeouts>,
    /// The idle times behind `timeouts`, per upstream, for drawing.
    pub idle: Vec<crate::timeouts::IdleSamples>,
    pub advice: Vec<Advice>,
    pub flow: FlowStats,
    /// `Server`/`Via` values of the proxy's own error responses, and the proxy its error
    /// pages name (`HAProxy (its error page)`).
    pub proxy_software: Vec<String>,
    /// What names the upstream servers: their `Server` values, or the name their
    /// `Keep-Alive` header gives away (`Node.js (Keep-Alive: timeout=5, no Server)`).
    pub upstream_software: Vec<String>,
    /// The statuses each side of the proxy answered.
    pub responses: crate::correlate::Responses,
    /// The proxy's client side was encrypted: what could not be seen.
    pub encrypted: Option<crate::correlate::EncryptedSide>,
}

/// Most upstream connections whose kernel records are kept for the verdicts that name them.
const MAX_PINNED: usize = 65_536;

/// Segments and kernel events → verdicts, with the kernel's evidence in them.
#[derive(Debug)]
pub struct Engine {
    tracker: Tracker,
    corr: Correlator,
    events: Vec<Event>,
    verdicts: Vec<Verdict>,
    /// Verdicts already handed out by [`Engine::new_verdicts`].
    handed_out: usize,
    last_advance: i64,
    /// HTTP on encrypted connections, from the probe's plaintext copies.
    plain: crate::plaintext::Plaintext,
    /// What the kernel probe saw, per socket.
    ledger: Ledger,
    /// Upstream connections that kept verdicts name: their kernel records outlive
    /// [`Engine::evict_kernel`], for [`Engine::finish`], which adds the kernel's evidence
    /// to every kept verdict again (facts may come up to a few seconds after a verdict).
    pinned: HashSet<(SocketAddr, SocketAddr)>,
}

impl Engine {
    #[must_use]
    pub fn new(cfg: Config) -> Self {
        Engine {
            tracker: if cfg.sparse {
                Tracker::sparse()
            } else {
                Tracker::new()
            },
            corr: {
                let mut c = Correlator::new(Roles::new(cfg.proxy, cfg.upstream));
                c.set_sparse(cfg.sparse);
                c
            },
            events: Vec::new(),
            verdicts: Vec::new(),
            handed_out: 0,
            last_advance: i64::MIN,
            plain: crate::plaintext::Plaintext::default(),
            ledger: Ledger::new(),
            pinned: HashSet::new(),
        }
    }

    /// Takes a ledger read whole beforehand (a bundle's `events.jsonl`): the sockets it saw
    /// opened and the writes after idle are told to the correlator before any packet.
    pub fn set_ledger(&mut self, ledger: Ledger) {
        for idle in ledger.send_idles() {
            self.corr.kernel_send_idle(idle);
        }
        for open in ledger.opens() {
            self.corr.kernel_socket(open);
        }
        self.ledger = ledger;
    }

    /// Feeds one kernel event (live, in time order with the packets, give or take the
    /// reorder window): a plaintext copy goes to the HTTP reader of its connection; any
    /// other goes into the engine's ledger, and what the correlator needs of it — a socket
    /// opened and by whom, a write after idle — goes on at once.
    pub fn kernel_event(&mut self, ev: KernelEvent) {
        // the plaintext the proxy handed its TLS library is the engine's to read
        if self.kernel_plaintext(&ev) {
            return;
        }
        if let Some(idle) = self.ledger.push(ev) {
            self.corr.kernel_send_idle(idle);
        }
        for open in self.ledger.take_opens() {
            self.corr.kernel_socket(open);
        }
    }

    /// Forgets the kernel records of sockets destroyed more than `keep_ns` before `now_ns`,
    /// except those kept verdicts name.
    pub fn evict_kernel(&mut self, now_ns: i64, keep_ns: i64) {
        self.ledger.evict(now_ns, keep_ns, &self.pinned);
    }

    /// How many entries each of the engine's tables holds now (see
    /// [`Correlator::tables`]).
    #[must_use]
    pub fn tables(&self) -> Vec<(&'static str, usize)> {
        let mut t = self.corr.tables();
        t.push(("flow_connections", self.tracker.open()));
        t.push(("kernel_sockets", self.ledger.sockets()));
        t.push(("kernel_tuples", self.ledger.tuples()));
        t.push(("kernel_pinned", self.pinned.len()));
        t.push(("verdicts_kept", self.verdicts.len()));
        t.extend(self.plain.tables());
        t
    }

    /// Kernel events taken so far, and sockets whose records are kept.
    #[must_use]
    pub fn kernel_stats(&self) -> (u64, usize) {
        (self.ledger.events(), self.ledger.sockets())
    }

    /// Feeds one segment (segments should come in time order, give or take a few ms).
    pub fn push(&mut self, seg: &Segment) {
        self.plain.release(seg.ts_ns, &mut self.events);
        self.tracker.push(seg, &mut self.events);
        self.plain.filter(&mut self.events);
        for ev in self.events.drain(..) {
            self.corr.on_event(ev);
        }
        let now = self.tracker.now();
        if now.saturating_sub(self.last_advance) >= ADVANCE_EVERY_NS {
            self.last_advance = now;
            self.corr.advance(now);
            self.verdicts.append(&mut self.corr.verdicts_out);
        }
    }

    /// The kernel saw a write after idle: what a sparse capture cannot time itself (a
    /// full capture ignores it). [`Engine::kernel_event`] does this itself.
    pub fn kernel_send_idle(&mut self, idle: crate::kernel::SendIdle) {
        self.corr.kernel_send_idle(idle);
    }

    /// The kernel saw a socket opened (connect or accept), and by which process: roles of
    /// connections where addresses say nothing (one loopback), and which connections are
    /// not the proxy's at all. [`Engine::kernel_event`] does this itself.
    pub fn kernel_socket(&mut self, open: crate::kernel::SocketOpen) {
        self.corr.kernel_socket(open);
    }

    /// A kernel event the engine reads itself: the plaintext the proxy handed its TLS
    /// library ([`crate::plaintext`]), applied to its connection once the packets reach its
    /// time. False for every other event (the ledger's).
    pub fn kernel_plaintext(&mut self, ke: &crate::kernel::KernelEvent) -> bool {
        match crate::plaintext::PlainRecord::of(ke) {
            Some(rec) => {
                self.plaintext(rec);
                true
            }
            None => matches!(ke.event.kind, crate::probe::SockEventKind::TlsData { .. }),
        }
    }

    /// One plaintext copy (from [`Engine::kernel_plaintext`], or read from a bundle).
    pub fn plaintext(&mut self, rec: crate::plaintext::PlainRecord) {
        self.plain.push(rec);
    }

    /// What became of the plaintext copies.
    #[must_use]
    pub fn plaintext_stats(&self) -> crate::plaintext::PlainStats {
        self.plain.stats
    }

    /// Verdicts made since the last call, with the kernel's evidence so far (for live use,
    /// to show each as soon as it is proven); [`Engine::finish`] still returns every
    /// verdict, with the kernel's evidence as it stands then.
    pub fn new_verdicts(&mut self) -> Vec<Verdict> {
        let new = self.verdicts.get(self.handed_out..).unwrap_or_default();
        self.handed_out = self.verdicts.len();
        let mut out = Vec::with_capacity(new.len());
        for v in new {
            if let Some(u) = &v.upstream {
                if self.pinned.len() >= MAX_PINNED {
                    self.pinned.clear();
                }
                self.pinned.insert((u.proxy, u.server));
            }
            let mut shown = v.clone();
            kernel::enrich(&mut shown, &self.ledger);
            out.push(shown);
        }
        out
    }

    /// Verdicts made since the last call, with the kernel's evidence, handed over and
    /// forgotten: a long-running session (the node agent) must not keep every verdict it
    /// ever made, nor the kernel records they name. After this, [`Engine::finish`]
    /// returns only the verdicts made since.
    pub fn take_verdicts(&mut self) -> Vec<Verdict> {
        self.handed_out = 0;
        let mut out = std::mem::take(&mut self.verdicts);
        for v in &mut out {
            kernel::enrich(v, &self.ledger);
        }
        out
    }

    /// The timeouts inferred from what was seen so far.
    #[must_use]
    pub fn timeouts(&self) -> Vec<UpstreamTimeouts> {
        let mut t = infer(&self.corr.obs);
        // Idle closes are noted before a connection's side is known: the proxy's own
        // listener is no upstream.
        t.retain(|t| self.corr.server_role(t.upstream) != crate::correlate::Role::Down);
        t
    }

    /// Bounds the connection table (default [`crate::flow::DEFAULT_MAX_CONNECTIONS`]; see
    /// [`Tracker::max_connections`]).
    pub fn set_max_connections(&mut self, n: usize) {
        self.tracker.set_max_connections(n);
    }

    /// Keep every idle sample for [`Engine::take_samples`] (the node agent's histograms).
    pub fn stream_samples(&mut self, on: bool) {
        self.corr.obs.stream_samples = on;
    }

    /// The idle samples observed since the last call (empty unless streamed).
    pub fn take_samples(&mut self) -> Vec<crate::correlate::Sample> {
        std::mem::take(&mut self.corr.obs.samples)
    }

    /// Connections forgotten so far because the table was full.
    #[must_use]
    pub fn evicted_connections(&self) -> u64 {
        self.tracker.stats.evicted
    }

    /// Connections tracked right now.
    #[must_use]
    pub fn open_connections(&self) -> usize {
        self.tracker.open()
    }

    /// The input ended: judge what is pending and infer timeouts and advice.
    #[must_use]
    pub fn finish(mut self) -> Analysis {
        // the plaintext still held goes first, then the closing events of every open
        // connection, in batches so that they never wait all at once
        self.plain.release(i64::MAX, &mut self.events);
        loop {
            self.plain.filter(&mut self.events);
            for ev in self.events.drain(..) {
                self.corr.on_event(ev);
            }
            if !self.tracker.finish_some(FINISH_BATCH, &mut self.events) {
                break;
            }
        }
        self.corr.finish();
        let mut encrypted = self.corr.encrypted_side();
        self.verdicts.append(&mut self.corr.verdicts_out);
        if let Some(e) = &mut encrypted {
            e.from_upstream_leg = self
                .verdicts
                .iter()
                .filter(|v| {
                    v.upstream.is_some()
                        && v.downstream
                            .as_ref()
                            .is_none_or(|d| e.listeners.contains(&d.proxy))
                })
                .count();
        }
        self.verdicts.sort_by_key(|v| v.ts_ns);
        // the kernel's evidence before the advice, which names the proxy's process
        for v in &mut self.verdicts {
            kernel::enrich(v, &self.ledger);
        }
        let timeouts = self.timeouts();
        let idle = crate::timeouts::idle_samples(&self.corr.obs, &timeouts);
        let mut ups: Vec<String> = self.corr.obs.upstream_software.values().cloned().collect();
        ups.sort();
        ups.dedup();
        let advice = advise(
            &self.verdicts,
            &timeouts,
            &self.corr.obs.proxy_software,
            &ups,
        );
        Analysis {
            verdicts: self.verdicts,
            timeouts,
            idle,
            advice,
            flow: self.tracker.stats,
            proxy_software: self.corr.obs.proxy_software.clone(),
            upstream_software: ups,
            responses: self.corr.responses(),
            encrypted,
        }
    }
}

/// Runs the engine over segments.
pub fn analyze(cfg: Config, segments: impl IntoIterator<Item = Segment>) -> Analysis {
    let mut e = Engine::new(cfg);
    for s in segments {
        e.push(&s);
    }
    e.finish()
}
