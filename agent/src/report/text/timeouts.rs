//! The inferred timeouts, in words: how long each upstream and the proxy keep an idle
//! connection, or that the upstream keeps none.

use std::fmt::Write;

use super::wrap;
use crate::timeouts::UpstreamTimeouts;

/// A close this soon after the last response is no idle timeout, ms.
const IMMEDIATE_MS: f64 = 1.0;

/// `0.006 s`, `5.000 s`.
fn secs(ms: f64) -> String {
    format!("{:.3} s", ms / 1000.0)
}

/// One upstream's lines.
#[must_use]
pub fn upstream(t: &UpstreamTimeouts) -> String {
    let mut s = String::new();
    let proxy = match t.proxy_idle_close_ms {
        None => "the proxy's idle close was not seen".to_owned(),
        // Not an idle timeout: the proxy closed them as their response ended.
        Some(m) if m < IMMEDIATE_MS => format!(
            "the proxy closed {} right after their response",
            t.proxy_samples
        ),
        Some(m) => format!(
            "the proxy closes idle connections after up to {} ({} samples)",
            secs(m),
            t.proxy_samples
        ),
    };
    let line = if t.closes_after_every_response {
        format!(
            "{} closes every connection after its response (no keep-alive; {} of {} \
             responses), yet the proxy reuses them; {proxy}",
            t.upstream, t.after_response.0, t.after_response.1
        )
    } else {
        let up = t.upstream_idle_close_ms.map_or_else(
            || "its idle close was not seen".to_owned(),
            |m| {
                format!(
                    "closes idle connections after {} ({} samples)",
                    secs(m),
                    t.upstream_samples
                )
            },
        );
        let mut l = format!("{} {up}; {proxy}", t.upstream);
        if t.upstream_shorter {
            let _ = write!(
                l,
                "; the upstream gives up on idle connections first: keep-alive races follow"
            );
        }
        l
    };
    s.push_str(&wrap("  ", "    ", &line));
    s
}

/// The `inferred timeouts:` section (empty when nothing was inferred).
#[must_use]
pub fn section(timeouts: &[UpstreamTimeouts]) -> String {
    if timeouts.is_empty() {
        return String::new();
    }
    let mut s = "\ninferred timeouts:\n".to_owned();
    for t in timeouts {
        s.push_str(&upstream(t));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t() -> UpstreamTimeouts {
        UpstreamTimeouts {
            upstream: "198.18.2.2:9000".parse().unwrap(),
            upstream_idle_close_ms: Some(0.0),
            upstream_samples: 308,
            proxy_idle_close_ms: Some(6.0),
            proxy_samples: 21,
            closes_after_every_response: true,
            after_response: (308, 339),
            upstream_shorter: true,
        }
    }

    /// The lines as one sentence.
    fn said(t: &UpstreamTimeouts) -> String {
        upstream(t).split_whitespace().collect::<Vec<_>>().join(" ")
    }

    #[test]
    fn an_upstream_without_keep_alive_is_said_so_not_zero_seconds() {
        let s = said(&t());
        assert!(
            s.contains("closes every connection after its response (no keep-alive"),
            "{s}"
        );
        assert!(!s.contains("0.000 s"), "{s}");
        assert!(s.contains("308 of 339"), "{s}");
    }

    #[test]
    fn a_proxy_closing_as_the_response_ends_has_no_idle_timeout() {
        let s = said(&UpstreamTimeouts {
            proxy_idle_close_ms: Some(0.2),
            proxy_samples: 18,
            ..t()
        });
        assert!(
            s.contains("the proxy closed 18 right after their response"),
            "{s}"
        );
        assert!(!s.contains("0.000 s"), "{s}");
    }

    #[test]
    fn an_idle_timeout_is_said_in_seconds_with_its_samples() {
        let s = said(&UpstreamTimeouts {
            upstream_idle_close_ms: Some(5000.0),
            upstream_samples: 12,
            proxy_idle_close_ms: None,
            closes_after_every_response: false,
            ..t()
        });
        assert!(
            s.contains("closes idle connections after 5.000 s (12 samples)"),
            "{s}"
        );
        assert!(s.contains("the proxy's idle close was not seen"), "{s}");
        assert!(s.contains("keep-alive races follow"), "{s}");
    }
}
