//! Keep-alive timeouts inferred from the traffic: after how long idle the upstream closes a
//! pooled connection, after how long the proxy does, and whether the upstream closes right
//! after every response. [`IdleTimer`] is the upstream's idle-close time as the verdict rules
//! use it.

use std::net::SocketAddr;

use crate::correlate::Observations;

/// Closes within this share of keep-alive responses count as "after every response".
const AFTER_EVERY_RESPONSE: f64 = 0.8;

/// What was inferred for one upstream.
#[derive(Debug, Clone, PartialEq)]
pub struct UpstreamTimeouts {
    pub upstream: SocketAddr,
    /// Median idle time before the upstream closed an idle connection, ms.
    pub upstream_idle_close_ms: Option<f64>,
    pub upstream_samples: usize,
    /// Longest idle time before the proxy closed an idle connection, ms.
    pub proxy_idle_close_ms: Option<f64>,
    pub proxy_samples: usize,
    /// The upstream closes right after responses that did not say `Connection: close`.
    pub closes_after_every_response: bool,
    /// (closes within 5 ms of such a response, such responses).
    pub after_response: (u64, u64),
    /// The upstream gives up on idle connections before the proxy does.
    pub upstream_shorter: bool,
}

/// The idle times one upstream's connections were seen with, for drawing their
/// distribution (the first few thousand of each kind, ns).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdleSamples {
    pub upstream: SocketAddr,
    /// Quiet time before the upstream closed an idle pooled connection.
    pub upstream_closes_ns: Vec<i64>,
    /// Quiet time before the proxy reused a pooled connection.
    pub proxy_reuses_ns: Vec<i64>,
    /// Quiet time before the proxy closed an idle pooled connection.
    pub proxy_closes_ns: Vec<i64>,
}

/// The idle samples of each upstream in `timeouts` (the upstreams the inference speaks of).
#[must_use]
pub fn idle_samples(obs: &Observations, timeouts: &[UpstreamTimeouts]) -> Vec<IdleSamples> {
    let get = |m: &std::collections::HashMap<SocketAddr, Vec<i64>>, s: &SocketAddr| {
        m.get(s).cloned().unwrap_or_default()
    };
    timeouts
        .iter()
        .map(|t| IdleSamples {
            upstream: t.upstream,
            upstream_closes_ns: get(&obs.upstream_idle_closes, &t.upstream),
            proxy_reuses_ns: get(&obs.proxy_reuses, &t.upstream),
            proxy_closes_ns: get(&obs.proxy_idle_closes, &t.upstream),
        })
        .collect()
}

fn median(v: &[i64]) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    let mut s = v.to_vec();
    s.sort_unstable();
    Some(s[s.len() / 2] as f64 / 1e6)
}

/// Infers timeouts per upstream from what the correlator observed.
#[must_use]
pub fn infer(obs: &Observations) -> Vec<UpstreamTimeouts> {
    let mut servers: Vec<SocketAddr> = obs
        .upstream_idle_closes
        .keys()
        .chain(obs.proxy_idle_closes.keys())
        .chain(obs.close_after_response.keys())
        .copied()
        .collect();
    servers.sort();
    servers.dedup();
    let mut out = Vec::new();
    for s in servers {
        let up = obs
            .upstream_idle_closes
            .get(&s)
            .map_or(&[][..], Vec::as_slice);
        let px = obs.proxy_idle_closes.get(&s).map_or(&[][..], Vec::as_slice);
        let after = obs.close_after_response.get(&s).copied().unwrap_or((0, 0));
        let every = after.0 >= 3 && after.0 as f64 >= AFTER_EVERY_RESPONSE * after.1 as f64;
        let up_ms = median(up);
        let px_ms = px.iter().max().map(|m| *m as f64 / 1e6);
        let upstream_shorter = every
            || match (up_ms, px_ms) {
                (Some(u), Some(p)) => u < p,
                (Some(_), None) => true,
                _ => false,
            };
        if up.is_empty() && px.is_empty() && !every {
            continue;
        }
        out.push(UpstreamTimeouts {
            upstream: s,
            upstream_idle_close_ms: up_ms,
            upstream_samples: up.len(),
            proxy_idle_close_ms: px_ms,
            proxy_samples: px.len(),
            closes_after_every_response: every,
            after_response: after,
            upstream_shorter,
        });
    }
    out
}

/// Idle closes needed before their spread is taken as the upstream's idle timer.
const TIMER_MIN_SAMPLES: usize = 3;
/// Slack around the learned idle-close times: at least this much...
const TIMER_SLACK_MIN_NS: i64 = 10_000_000;
/// ...or this share of the earliest close, whichever is larger (timer wheels, busy loops).
const TIMER_SLACK_SHARE: f64 = 0.1;
/// A server that says `Keep-Alive: timeout=N` closes from N s on, and by this much later:
/// Node 20 closes at `keepAliveTimeout` + 1 s and floors the header to whole seconds.
const HEADER_LATE_NS: i64 = 2_000_000_000;

/// Where an [`IdleTimer`] was learned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimerSource {
    /// The quiet times before this many idle connections the upstream closed.
    IdleCloses(usize),
    /// The upstream's `Keep-Alive: timeout=N` response header (seconds).
    Header(u32),
}

/// After how long idle an upstream closes a keep-alive connection: the window its idle
/// closes fell in (the 10th to the 90th percentile), or, without enough of them, what its
/// `Keep-Alive: timeout=N` header promises.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdleTimer {
    pub lo_ns: i64,
    pub hi_ns: i64,
    pub source: TimerSource,
}

impl IdleTimer {
    /// The timer learned from `samples` (quiet times before idle closes, ns), else from the
    /// `Keep-Alive` header's timeout; `None` when neither says anything.
    #[must_use]
    pub fn learn(samples: &[i64], header_s: Option<u32>) -> Option<IdleTimer> {
        if samples.len() >= TIMER_MIN_SAMPLES {
            let mut v = samples.to_vec();
            v.sort_unstable();
            let at = |q: usize| v[(v.len() * q / 10).min(v.len() - 1)];
            return Some(IdleTimer {
                lo_ns: at(1),
                hi_ns: at(9),
                source: TimerSource::IdleCloses(v.len()),
            });
        }
        let n = header_s?;
        let lo_ns = i64::from(n) * 1_000_000_000;
        Some(IdleTimer {
            lo_ns,
            hi_ns: lo_ns + HEADER_LATE_NS,
            source: TimerSource::Header(n),
        })
    }

    /// How far outside the window a close still counts as the timer's.
    #[must_use]
    pub fn slack_ns(&self) -> i64 {
        TIMER_SLACK_MIN_NS.max((self.lo_ns as f64 * TIMER_SLACK_SHARE) as i64)
    }

    /// A close after `idle_ns` of quiet is when this timer fires (`extra_ns`: one round trip).
    /// A timer never fires early, but a stalled server (gunicorn closes expired connections
    /// only when its loop wakes) fires it late: up to half its time again.
    #[must_use]
    pub fn fires_at(&self, idle_ns: i64, extra_ns: i64) -> bool {
        let slack = self.slack_ns() + extra_ns;
        let late = slack.max(self.hi_ns / 2);
        idle_ns >= self.lo_ns - slack && idle_ns <= self.hi_ns + late
    }

    /// A close after `idle_ns` of quiet came before this timer can fire: it was not the
    /// timer's.
    #[must_use]
    pub fn too_early(&self, idle_ns: i64, extra_ns: i64) -> bool {
        idle_ns < self.lo_ns - self.slack_ns() - extra_ns
    }

    /// e.g. `1001.2-1002.0 ms (from 163 idle closes)`, `1000-3000 ms (its Keep-Alive: timeout=1)`.
    #[must_use]
    pub fn describe(&self) -> String {
        let ms = |ns: i64| ns as f64 / 1e6;
        match self.source {
            TimerSource::IdleCloses(n) => format!(
                "{:.1}-{:.1} ms (from {n} idle closes)",
                ms(self.lo_ns),
                ms(self.hi_ns)
            ),
            TimerSource::Header(s) => format!(
                "{:.0}-{:.0} ms (its Keep-Alive: timeout={s})",
                ms(self.lo_ns),
                ms(self.hi_ns)
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idle_closes_make_a_window_with_slack() {
        let samples: Vec<i64> = (0..20).map(|i| 1_001_000_000 + i * 50_000).collect();
        let t = IdleTimer::learn(&samples, Some(0)).unwrap();
        assert_eq!(t.source, TimerSource::IdleCloses(20));
        assert!(t.fires_at(1_002_400_000, 0));
        assert!(t.fires_at(1_130_000_000, 0), "a loop that woke late");
        assert!(!t.fires_at(2_500_000_000, 0));
        assert!(t.too_early(500_000_000, 0));
        assert!(!t.too_early(950_000_000, 0), "inside the 10% slack");
        assert!(
            t.describe().contains("from 20 idle closes"),
            "{}",
            t.describe()
        );
    }

    #[test]
    fn the_keep_alive_header_stands_in_for_missing_closes() {
        let t = IdleTimer::learn(&[1_000_000_000], Some(1)).unwrap();
        assert_eq!(t.source, TimerSource::Header(1));
        // Node 20 with keepAliveTimeout 1000 says timeout=1 and closes after 2 s.
        assert!(t.fires_at(2_001_000_000, 0));
        assert!(t.too_early(300_000_000, 0));
        assert_eq!(IdleTimer::learn(&[], None), None);
    }

    #[test]
    fn upstream_closing_after_every_response_is_recognised() {
        let mut o = Observations::default();
        let s: SocketAddr = "10.0.0.3:9000".parse().unwrap();
        o.close_after_response.insert(s, (9, 10));
        o.upstream_idle_closes.insert(s, vec![500_000; 9]);
        let t = infer(&o);
        assert!(t[0].closes_after_every_response);
        assert!(t[0].upstream_shorter);
        assert_eq!(t[0].upstream_idle_close_ms, Some(0.5));
    }

    #[test]
    fn proxy_shorter_is_not_flagged() {
        let mut o = Observations::default();
        let s: SocketAddr = "10.0.0.3:9000".parse().unwrap();
        o.upstream_idle_closes.insert(s, vec![75_000_000_000]);
        o.proxy_idle_closes.insert(s, vec![60_000_000_000]);
        let t = infer(&o);
        assert!(!t[0].upstream_shorter);
    }
}
