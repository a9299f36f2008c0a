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
        }
    }

    /// Feeds one segment (segments should come in time order, give or take a few ms).
    pub fn push(&mut self, seg: &Segment) {
        self.tracker.push(seg, &mut self.events);
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

    /// Verdicts made since the last call (for live use, to show each as soon as it is
    /// proven); [`Engine::finish`] still returns every verdict.
    pub fn new_verdicts(&mut self) -> &[Verdict] {
        let new = self.verdicts.get(self.handed_out..).unwrap_or_default();
        self.handed_out = self.verdicts.len();
        new
    }

    /// Verdicts made since the last call, handed over and forgotten: a long-running
    /// session (the node agent) must not keep every verdict it ever made. After this,
    /// [`Engine::finish`] returns only the verdicts made since.
    pub fn take_verdicts(&mut self) -> Vec<Verdict> {
        self.handed_out = 0;
        std::mem::take(&mut self.verdicts)
    }

    /// The timeouts inferred from what was seen so far.
    #[must_use]
    pub fn timeouts(&self) -> Vec<UpstreamTimeouts> {
        infer(&self.corr.obs)
    }

    /// Connections tracked right now.
    #[must_use]
    pub fn open_connections(&self) -> usize {
        self.tracker.open()
    }

    /// The input ended: judge what is pending and infer timeouts and advice.
    #[must_use]
    pub fn finish(mut self) -> Analysis {
        self.tracker.finish(&mut self.events);
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
