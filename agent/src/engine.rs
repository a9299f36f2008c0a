//! The engine: segments in, verdicts out. Streams: memory follows the open connections and
//! the errors awaiting judgement, never the size of the input.

use crate::advice::{advise, Advice};
use crate::correlate::{Correlator, Endpoint, Roles};
use crate::flow::{Event, FlowStats, Tracker};
use crate::segment::Segment;
use crate::timeouts::{infer, UpstreamTimeouts};
use crate::verdict::Verdict;

/// How often (capture time) due checks are run.
const ADVANCE_EVERY_NS: i64 = 10_000_000;

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
    pub advice: Vec<Advice>,
    pub flow: FlowStats,
    /// `Server`/`Via` values of the proxy's own error responses.
    pub proxy_software: Vec<String>,
}

/// Segments → verdicts.
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
        }
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
    /// full capture ignores it).
    pub fn kernel_send_idle(&mut self, idle: crate::kernel::SendIdle) {
        self.corr.kernel_send_idle(idle);
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

    /// Verdicts made since the last call (for live use, to show each as soon as it is
    /// proven); [`Engine::finish`] still returns every verdict.
    pub fn new_verdicts(&mut self) -> &[Verdict] {
        let new = self.verdicts.get(self.handed_out..).unwrap_or_default();
        self.handed_out = self.verdicts.len();
        new
    }

    /// Connections tracked right now.
    #[must_use]
    pub fn open_connections(&self) -> usize {
        self.tracker.open()
    }

    /// The input ended: judge what is pending and infer timeouts and advice.
    #[must_use]
    pub fn finish(mut self) -> Analysis {
        self.plain.release(i64::MAX, &mut self.events);
        self.tracker.finish(&mut self.events);
        self.plain.filter(&mut self.events);
        for ev in self.events.drain(..) {
            self.corr.on_event(ev);
        }
        self.corr.finish();
        self.verdicts.append(&mut self.corr.verdicts_out);
        self.verdicts.sort_by_key(|v| v.ts_ns);
        let timeouts = infer(&self.corr.obs);
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
            advice,
            flow: self.tracker.stats,
            proxy_software: self.corr.obs.proxy_software.clone(),
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
