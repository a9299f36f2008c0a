//! A live diagnosis session: packets from a proxy's interfaces and events from the kernel
//! probe, merged in time order into one [`Engine`], verdicts out as soon as they are made.
//!
//! `tracer capture` drives one session until a stop condition; `tracer agent` drives one
//! per followed network namespace for as long as a proxy runs there. Both call
//! [`LiveSession::step`] in a loop and [`LiveSession::finish`] at the end; the front ends
//! only print, count and stop.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::bundle::{BundleError, BundleWriter};
use crate::correlate::Endpoint;
use crate::engine::{Analysis, Config, Engine};
use crate::kernel::KernelEvent;
use crate::live::{
    default_filter, full_filter, IfaceStats, LiveCapture, LiveError, LiveOptions, LivePacket,
};
use crate::probe::{ClockAlignment, Probe, ProbeConfig, ResponseCount, Selector};
use crate::report::CaptureSummary;
use crate::verdict::Verdict;

/// Packets are held this long (capture time) so that the interfaces' streams can be merged
/// in time order before the engine sees them.
const REORDER_NS: i64 = 20_000_000;
/// An interface that delivered nothing for this long (wall time) no longer holds the
/// others back: it is quiet, not late. One that delivers is waited for, however far its
/// capture thread fell behind (118 ms was seen on a loaded machine).
const QUIET_IFACE: Duration = Duration::from_millis(500);
/// The kernel hands packets over in blocks at most this late (ms): far fewer wake-ups
/// than one per packet on a busy proxy, and shorter than [`REORDER_NS`], so the
/// interfaces' blocks still merge in time order.
const BATCH_MS: u32 = 10;
/// Destroyed sockets' kernel records are kept this long (a verdict can come up to a few
/// minutes after its connection closed), longer when a verdict names them.
const KERNEL_KEEP_NS: i64 = 600_000_000_000;
/// The same in a session that hands each verdict out once (`tracer agent`), where a record
/// serves only the verdicts still to be made about its connection: the engine forgets a
/// closed connection after a few seconds and judges an attempt within 30 s, so a minute
/// covers them twice over. At 10 minutes the records of every connection of a busy proxy
/// made the agent's memory grow by tens of MiB a minute for its first 10 minutes (about
/// 2 KiB per socket).
const HANDED_OUT_KERNEL_KEEP_NS: i64 = 60_000_000_000;
/// While a batch of packets goes to the engine, the probe's ring buffer is read again
/// whenever this long has passed (checked every [`DRAIN_CHECK_EVERY`] packets): a debug
/// build took 0.9 s for 5000 packets, while Caddy's HTTP/2 plaintext copies filled the
/// 4 MiB ring in under a second.
const DRAIN_EVERY: Duration = Duration::from_millis(20);
const DRAIN_CHECK_EVERY: usize = 64;
/// How often the kernel ledger is trimmed. Each trim costs what it evicts, so trimming
/// often costs nothing more and keeps the records of destroyed sockets within a second of
/// their time: every 10 s, the agent's live heap sawed by 3–5 MiB under the lab's seed.
const EVICT_EVERY: Duration = Duration::from_secs(1);
/// Kernel capture buffer per interface.
const BUFFER_BYTES: u32 = 64 << 20;
/// The same when the kernel selects the packets (the default), handing over a fraction.
const SPARSE_BUFFER_BYTES: u32 = 8 << 20;
/// At most this many packets are taken from the capture threads in one step.
const MAX_BATCH: usize = 65_536;
/// Packets the session keeps room for between steps: a step holds some tens of
/// milliseconds of the proxy's packets (hundreds under the lab's seed); room a burst took
/// beyond this is given back once it has drained ([`crate::headroom::give_back_burst`]).
const HELD_ROOM: usize = 4096;
/// Remote endpoints of connections opened in the followed namespace, remembered with the
/// opener's pid; beyond this many they are all forgotten at once.
const MAX_OPENED: usize = 65_536;

/// Which packets the kernel copies to the session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CopyMode {
    /// The kernel's selection (`select`): control segments, first exchanges, reuses after
    /// `idle` of quiet, 5xx heads, closing connections; each keeps its connection whole
    /// for `hot`.
    Sparse { idle: Duration, hot: Duration },
    /// Every TCP segment with data or SYN/FIN/RST.
    AllData,
    /// Every TCP segment, pure ACKs too.
    Full,
    /// What a tcpdump expression matches.
    Filter(String),
}

/// What to follow.
pub struct SessionOptions {
    /// Interfaces to capture on; empty means `any`.
    pub interfaces: Vec<String>,
    /// The network namespace to capture in (`/proc/PID/ns/net`, `/run/netns/NAME`).
    pub netns: Option<PathBuf>,
    /// Follow only this process's sockets in the probe.
    pub pid: Option<u32>,
    /// Only these TCP ports (capture filter and probe).
    pub ports: Vec<u16>,
    /// Bytes kept of each packet.
    pub snaplen: u32,
    pub copy: CopyMode,
    /// Load the kernel probe (when permitted).
    pub probe: bool,
    pub proxy: Option<Endpoint>,
    pub upstream: Option<Endpoint>,
    /// Keep each packet's frame and every kernel event in this bundle.
    pub bundle: Option<BundleWriter>,
    /// Keep every verdict for the final report (`tracer capture`); a long-running session
    /// hands each out once and forgets it (`tracer agent`).
    pub keep_verdicts: bool,
    /// Bound of the engine's connection table (see [`Engine::set_max_connections`]).
    pub max_connections: usize,
    /// Attach uprobes to the followed servers' TLS libraries, so that the responses they
    /// encrypt are seen (see `docs/tls.md`).
    pub tls: bool,
}

/// Something the front end should tell the user at start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice {
    /// Works, with a limitation.
    Warning(String),
    /// For information.
    Note(String),
}

impl std::fmt::Display for Notice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Notice::Warning(w) => write!(f, "warning: {w}"),
            Notice::Note(n) => write!(f, "note: {n}"),
        }
    }
}

/// Why a session could not start or go on.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// The packet capture could not start.
    #[error("cannot start the capture: {0}")]
    Live(#[from] LiveError),
    /// Writing the evidence bundle failed.
    #[error(transparent)]
    Bundle(#[from] BundleError),
}

/// Counters of a running session.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SessionStats {
    /// Packets handed to the engine.
    pub packets: u64,
    /// Kernel events taken from the probe.
    pub events: u64,
    /// Verdicts made so far.
    pub verdicts: u64,
    /// Connections the engine tracks now.
    pub connections: usize,
    /// Connections forgotten because the table was full.
    pub connections_evicted: u64,
    /// Packets the kernel, the interfaces or a slow engine dropped.
    pub packets_dropped: u64,
    /// Events the probe could not queue (ring buffer full).
    pub events_lost: u64,
}

/// What a finished session found.
pub struct SessionEnd {
    /// Verdicts enriched with the kernel's evidence; timeouts and advice.
    pub analysis: Analysis,
    pub capture: CaptureSummary,
    /// Per interface counters.
    pub interfaces: Vec<IfaceStats>,
    pub stats: SessionStats,
    /// The bundle, for the front end to finish with the report it writes.
    pub bundle: Option<BundleWriter>,
}

/// The loaded probe and its clock, its ring buffer drained by the session itself just
/// before it hands packets to the engine. The kernel writes each event synchronously, so
/// every event up to the packets' release time is in the ring by then and verdicts find
/// their kernel evidence; and no thread wakes on a timer to read it (a reader thread
/// polling every 20 ms was half of tracer's wake-ups on a busy proxy).
struct ProbeSource {
    probe: Probe,
    clock: ClockAlignment,
    /// The last count of events the kernel could not queue.
    lost: u64,
}

impl ProbeSource {
    /// Every event waiting now, on the pcap clock.
    fn drain(&mut self) -> impl Iterator<Item = KernelEvent> + '_ {
        let clock = &self.clock;
        self.probe.drain().map(|ev| KernelEvent {
            ts_ns: clock.to_unix_ns(ev.ktime_ns),
            event: ev,
        })
    }

    /// Events the kernel could not queue since load (a map read: call it now and then).
    fn lost(&mut self) -> u64 {
        if let Ok(n) = self.probe.lost() {
            self.lost = n;
        }
        self.lost
    }
}

/// The inode of a network namespace file (this process's when `None`), as the probe's
/// namespace filter wants it.
#[must_use]
pub fn netns_inode(path: Option<&Path>) -> Option<u32> {
    use std::os::unix::fs::MetadataExt;
    let p = path.map_or_else(|| PathBuf::from("/proc/self/ns/net"), Path::to_path_buf);
    std::fs::metadata(p)
        .ok()
        .and_then(|m| u32::try_from(m.ino()).ok())
}

fn probe_config(opts: &SessionOptions) -> ProbeConfig {
    let (sparse_idle, sparse_hot) = match opts.copy {
        CopyMode::Sparse { idle, hot } => (idle, hot),
        _ => {
            let d = ProbeConfig::default();
            (d.sparse_idle, d.sparse_hot)
        }
    };
    ProbeConfig {
        ports: opts.ports.clone(),
        netns: netns_inode(opts.netns.as_deref()),
        pid: opts.pid,
        // Reuse after a short idle is what races; writes in CLOSE_WAIT are always reported.
        idle_threshold: Duration::from_millis(1),
        sparse_idle,
        sparse_hot,
        tls: opts.tls,
    }
}

/// Loads the probe unless told not to; without it, says which proofs are weaker.
fn start_probe(opts: &SessionOptions, notices: &mut Vec<Notice>) -> Option<ProbeSource> {
    let weaker = "packets only: verdicts cannot name the proxy's process, and a keep-alive \
                  race cannot be shown as fin_unread (the proxy wrote with the FIN already \
                  in its kernel)";
    if !opts.probe {
        notices.push(Notice::Note(format!("--no-probe: {weaker}")));
        return None;
    }
    let probe = match Probe::load(&probe_config(opts)) {
        Ok(p) => p,
        Err(e) => {
            notices.push(Notice::Warning(format!("kernel probe not loaded: {e}")));
            notices.push(Notice::Note(weaker.to_owned()));
            return None;
        }
    };
    for w in probe.warnings() {
        notices.push(Notice::Warning(w.clone()));
    }
    for t in probe.tls() {
        let line = format!("TLS: {t}");
        notices.push(if t.error.is_some() {
            Notice::Warning(line)
        } else {
            Notice::Note(line)
        });
    }
    for a in probe.attached().iter().filter(|a| a.error.is_some()) {
        notices.push(Notice::Warning(format!(
            "tracepoint {} not attached: {}",
            a.tracepoint,
            a.error.as_deref().unwrap_or("")
        )));
    }
    let Some(clock) = ClockAlignment::sample(64) else {
        notices.push(Notice::Warning(
            "cannot align the kernel's clock with the capture's; probe not used".into(),
        ));
        return None;
    };
    Some(ProbeSource {
        probe,
        clock,
        lost: 0,
    })
}

/// The kernel's selection when asked for: from the probe's object when it loaded, else
/// loaded on its own. `None` (with a warning) falls back to copying every data segment.
fn start_selector(
    opts: &SessionOptions,
    probe: Option<&mut ProbeSource>,
    notices: &mut Vec<Notice>,
) -> Option<Selector> {
    if !matches!(opts.copy, CopyMode::Sparse { .. }) {
        return None;
    }
    let loaded = match probe {
        Some(p) => p.probe.selector(),
        None => Selector::load(&probe_config(opts)),
    };
    match loaded {
        Ok(s) => Some(s),
        Err(e) => {
            notices.push(Notice::Warning(format!(
                "the kernel's packet selection did not load ({e}); copying every data \
                 segment instead (as --all-data)"
            )));
            None
        }
    }
}

/// A running session. Dropping it stops the capture and detaches the probe.
pub struct LiveSession {
    live: LiveCapture,
    probe: Option<ProbeSource>,
    /// The kernel's selection, for its response counts.
    selector: Option<Selector>,
    engine: Engine,
    bundle: Option<BundleWriter>,
    sparse: bool,
    last_evict: Instant,
    held: Vec<LivePacket>,
    newest: i64,
    /// Per interface: the newest packet's time, and when it was taken.
    ifaces: Vec<(i64, Instant)>,
    stats: SessionStats,
    keep_verdicts: bool,
    /// Remote endpoint → the process that last opened a connection to it (probe).
    opened: std::collections::HashMap<SocketAddr, u32>,
    /// The server ends seen, to tell a capture of one side of the proxy (a session that
    /// keeps its verdicts for a report; a long-running one keeps none).
    sides: Option<crate::report::sides::Sides>,
    /// What the user said of the roles.
    roles: (Option<Endpoint>, Option<Endpoint>),
}

impl std::fmt::Debug for LiveSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LiveSession")
            .field("sparse", &self.sparse)
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl LiveSession {
    /// Loads the probe and the kernel's selection (as permitted) and starts capturing.
    /// The notices say what works with a limitation; they are the front end's to print.
    ///
    /// # Errors
    /// When the capture cannot start, or the bundle cannot be marked.
    pub fn start(mut opts: SessionOptions) -> Result<(LiveSession, Vec<Notice>), SessionError> {
        let mut notices = Vec::new();
        let interfaces = if opts.interfaces.is_empty() {
            vec!["any".to_owned()]
        } else {
            opts.interfaces.clone()
        };
        let filter = match &opts.copy {
            CopyMode::Filter(f) => f.clone(),
            CopyMode::Full => full_filter(&opts.ports),
            CopyMode::Sparse { .. } | CopyMode::AllData => default_filter(&opts.ports),
        };
        let mut probe = start_probe(&opts, &mut notices);
        let selector = start_selector(&opts, probe.as_mut(), &mut notices);
        let sparse = selector.is_some();
        let counter = selector.clone();
        let bundle = opts.bundle.take();
        let live = LiveCapture::start(&LiveOptions {
            interfaces,
            netns: opts.netns.clone(),
            snaplen: opts.snaplen,
            buffer_bytes: if sparse {
                SPARSE_BUFFER_BYTES
            } else {
                BUFFER_BYTES
            },
            filter,
            selector,
            keep_frames: bundle.is_some(),
            batch_ms: Some(BATCH_MS),
        })?;
        if let (Some(b), true) = (&bundle, sparse) {
            b.mark_sparse()?;
        }
        let mut engine = Engine::new(Config {
            proxy: opts.proxy,
            upstream: opts.upstream,
            sparse,
        });
        engine.set_max_connections(opts.max_connections);
        // A long-running session hands its idle samples out (the agent's histograms).
        engine.stream_samples(!opts.keep_verdicts);
        let session = LiveSession {
            live,
            probe,
            selector: counter,
            engine,
            bundle,
            sparse,
            last_evict: Instant::now(),
            held: Vec::new(),
            newest: i64::MIN,
            ifaces: Vec::new(),
            stats: SessionStats::default(),
            keep_verdicts: opts.keep_verdicts,
            opened: std::collections::HashMap::new(),
            sides: opts.keep_verdicts.then(crate::report::sides::Sides::new),
            roles: (opts.proxy, opts.upstream),
        };
        Ok((session, notices))
    }

    /// The kernel probe is attached.
    #[must_use]
    pub fn has_probe(&self) -> bool {
        self.probe.is_some()
    }

    /// The kernel selects the packets.
    #[must_use]
    pub fn is_sparse(&self) -> bool {
        self.sparse
    }

    /// One turn: waits up to `wait` for packets, takes the kernel's events, hands the
    /// packets old enough to be in order to the engine, and returns the verdicts made,
    /// enriched with the kernel's evidence.
    ///
    /// # Errors
    /// When writing the bundle fails.
    pub fn step(&mut self, wait: Duration) -> Result<Vec<Verdict>, SessionError> {
        self.take_packets(wait);
        self.release(false)?;
        Ok(self.new_verdicts())
    }

    /// The responses the kernel's selection counted so far (totals since start, by sender
    /// and status class; empty without the selection).
    #[must_use]
    pub fn responses(&self) -> Vec<ResponseCount> {
        self.selector
            .as_ref()
            .map(Selector::responses)
            .unwrap_or_default()
    }

    /// The process (pid) that last opened a connection to `remote`, as the probe saw it.
    #[must_use]
    pub fn opener_of(&self, remote: SocketAddr) -> Option<u32> {
        self.opened.get(&remote).copied()
    }

    /// The idle samples observed since the last call (a session that keeps its verdicts
    /// for a final report streams none).
    pub fn take_samples(&mut self) -> Vec<crate::correlate::Sample> {
        self.engine.take_samples()
    }

    /// How many entries each of the engine's tables holds now.
    #[must_use]
    pub fn tables(&self) -> Vec<(&'static str, usize)> {
        self.engine.tables()
    }

    /// The timeouts inferred so far, per upstream.
    #[must_use]
    pub fn timeouts(&self) -> Vec<crate::timeouts::UpstreamTimeouts> {
        self.engine.timeouts()
    }

    /// Counters so far (the drop and loss counters are read from the kernel here).
    pub fn stats(&mut self) -> SessionStats {
        self.stats.connections = self.engine.open_connections();
        self.stats.connections_evicted = self.engine.evicted_connections();
        self.stats.packets_dropped = dropped(&self.live.stats());
        if let Some(p) = &mut self.probe {
            self.stats.events_lost = p.lost();
        }
        self.stats.clone()
    }

    /// Stops capturing, hands every held packet and event to the engine, and judges what
    /// is pending.
    ///
    /// # Errors
    /// When writing the bundle fails.
    pub fn finish(mut self) -> Result<SessionEnd, SessionError> {
        self.live.stop();
        // Whatever the capture threads queued before they stopped.
        loop {
            let before = self.held.len();
            self.take_packets(Duration::ZERO);
            if self.held.len() == before {
                break;
            }
            self.release(true)?;
        }
        self.release(true)?;
        // The events of the last moments, for the verdicts `finish` still makes.
        self.take_events()?;
        let stats = self.stats();
        let interfaces = self.live.stats();
        let analysis = self.engine.finish();
        let capture = CaptureSummary {
            packets: stats.packets,
            dropped_or_missing: analysis.flow.gaps + stats.packets_dropped,
            sparse: self.sparse,
            one_side: self
                .sides
                .as_ref()
                .and_then(|s| s.one_side(self.roles.0, self.roles.1)),
        };
        let bundle = self.bundle.take();
        Ok(SessionEnd {
            analysis,
            capture,
            interfaces,
            stats,
            bundle,
        })
    }

    /// Packets: waits a little for the first, then takes what is there.
    fn take_packets(&mut self, wait: Duration) {
        let first = if wait.is_zero() {
            self.live.packets().try_recv().ok()
        } else {
            self.live.packets().recv_timeout(wait).ok()
        };
        let Some(first) = first else {
            return;
        };
        let now = Instant::now();
        self.hold(first, now);
        while let Ok(next) = self.live.packets().try_recv() {
            self.hold(next, now);
            if self.held.len() >= MAX_BATCH {
                break;
            }
        }
    }

    fn hold(&mut self, lp: LivePacket, now: Instant) {
        let ts = lp.segment.ts_ns;
        self.newest = self.newest.max(ts);
        if self.ifaces.len() <= lp.iface {
            self.ifaces.resize(lp.iface + 1, (i64::MIN, now));
        }
        let i = &mut self.ifaces[lp.iface];
        *i = (i.0.max(ts), now);
        self.held.push(lp);
    }

    /// The time up to which every interface that is still delivering has handed its
    /// packets over: the oldest of their newest packets.
    fn watermark(&self) -> i64 {
        release_watermark(&self.ifaces, self.newest, Instant::now())
    }

    /// Kernel events first (a verdict made below may need them), then the packets that no
    /// other interface can still precede (all of them when `all`).
    fn release(&mut self, all: bool) -> Result<(), SessionError> {
        self.take_events()?;
        // Usually already in order (one interface delivers in order): the stable sort
        // would still take a scratch buffer of half the batch at every step.
        if !self.held.is_sorted_by_key(|lp| lp.segment.ts_ns) {
            self.held.sort_by_key(|lp| lp.segment.ts_ns);
        }
        let cut = if all {
            self.held.len()
        } else {
            let mark = self.watermark().saturating_sub(REORDER_NS);
            self.held.partition_point(|lp| lp.segment.ts_ns <= mark)
        };
        // Taken out while it is handed over (the loop below needs `self`), then put back
        // with its capacity, so the next steps' packets do not grow a new vector.
        let mut held = std::mem::take(&mut self.held);
        let mut done = Ok(());
        let mut drained = Instant::now();
        for (i, lp) in held.drain(..cut).enumerate() {
            // A long batch (a slow machine, a burst) must not leave the probe's ring buffer
            // unread until it is done: the kernel drops what does not fit.
            if i % DRAIN_CHECK_EVERY == DRAIN_CHECK_EVERY - 1 && drained.elapsed() >= DRAIN_EVERY {
                done = self.take_events();
                drained = Instant::now();
            }
            done = done.and_then(|()| self.hand_over(&lp));
            if done.is_err() {
                break;
            }
        }
        crate::headroom::give_back_burst(&mut held, HELD_ROOM);
        self.held = held;
        done?;
        if self.last_evict.elapsed() >= EVICT_EVERY {
            self.last_evict = Instant::now();
            let keep = if self.keep_verdicts {
                KERNEL_KEEP_NS
            } else {
                HANDED_OUT_KERNEL_KEEP_NS
            };
            self.engine.evict_kernel(self.newest, keep);
        }
        Ok(())
    }

    /// One packet to the bundle, the side detector and the engine.
    fn hand_over(&mut self, lp: &LivePacket) -> Result<(), SessionError> {
        if let (Some(b), Some(raw)) = (&mut self.bundle, &lp.raw) {
            b.packet(raw)?;
        }
        if let Some(sides) = &mut self.sides {
            sides.push(&lp.segment);
        }
        self.engine.push(&lp.segment);
        self.stats.packets += 1;
        Ok(())
    }

    /// Moves the probe's waiting events into the ledger (and the bundle), telling the
    /// engine of the writes after an idle gap.
    fn take_events(&mut self) -> Result<(), SessionError> {
        let Some(pr) = &mut self.probe else {
            return Ok(());
        };
        for ke in pr.drain() {
            if let Some(b) = &mut self.bundle {
                b.event(&ke)?;
            }
            if let (
                crate::probe::SockEventKind::StateChange {
                    new: crate::probe::tcp_state::SYN_SENT,
                    ..
                },
                Some(remote),
                Some(pid),
            ) = (&ke.event.kind, ke.event.remote, ke.event.pid)
            {
                if self.opened.len() >= MAX_OPENED {
                    self.opened.clear();
                }
                self.opened.insert(remote, pid);
            }
            self.stats.events += 1;
            // packets' and plaintext copies' kernel facts alike: the engine sorts them
            self.engine.kernel_event(ke);
        }
        Ok(())
    }

    /// The engine's new verdicts, enriched with the kernel's evidence.
    fn new_verdicts(&mut self) -> Vec<Verdict> {
        // A verdict handed out once (the agent) is taken, with the kernel's evidence, and
        // forgotten; a kept one is shown now and reported again at the end.
        let out = if self.keep_verdicts {
            self.engine.new_verdicts()
        } else {
            self.engine.take_verdicts()
        };
        self.stats.verdicts += out.len() as u64;
        out
    }
}

/// The capture time up to which packets may go to the engine: the oldest newest packet
/// of the interfaces heard from within [`QUIET_IFACE`] of `now`; `newest` when none is.
fn release_watermark(ifaces: &[(i64, Instant)], newest: i64, now: Instant) -> i64 {
    ifaces
        .iter()
        .filter(|(ts, heard)| *ts != i64::MIN && now.duration_since(*heard) < QUIET_IFACE)
        .map(|(ts, _)| *ts)
        .min()
        .unwrap_or(newest)
}

/// Every packet lost on the way: by the kernel, the interface, or a slow engine.
fn dropped(stats: &[IfaceStats]) -> u64 {
    stats
        .iter()
        .map(|s| s.dropped + s.if_dropped + s.backlog_dropped)
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lagging_interface_holds_the_others_back_until_it_goes_quiet() {
        let now = Instant::now();
        let ms = |n: i64| n * 1_000_000;
        // interface 0 is at 1000 ms, interface 1 (its thread behind) only at 882 ms
        let ifaces = [(ms(1000), now), (ms(882), now)];
        assert_eq!(release_watermark(&ifaces, ms(1000), now), ms(882));
        // interface 1 has said nothing for a second: quiet, not late
        let long_ago = now - Duration::from_secs(1);
        let ifaces = [(ms(1000), now), (ms(882), long_ago)];
        assert_eq!(release_watermark(&ifaces, ms(1000), now), ms(1000));
        // one interface (`any`): its own newest
        assert_eq!(release_watermark(&[(ms(5), now)], ms(5), now), ms(5));
        assert_eq!(release_watermark(&[], ms(7), now), ms(7));
    }
}
