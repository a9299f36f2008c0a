//! Keep-alive timeouts inferred from the traffic: after how long idle the upstream closes a
//! pooled connection, after how long the proxy does, and whether the upstream closes right
//! after every response.

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

#[cfg(test)]
mod tests {
    use super::*;

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
