//! The HTML report: one self-contained page (inline CSS and SVG, nothing fetched, no
//! script) with the summary, a timeline of each group's clearest verdicts drawn to scale,
//! and each upstream's idle-close distribution against the proxy's reuse times.
//!
//! Every string from the capture goes through [`esc`]; request targets are redacted as in
//! the other reports (see [`super::Options`]).

mod histogram;
mod page;
mod timeline;

use super::{CaptureSummary, Options};
use crate::engine::Analysis;

/// Renders the whole page; `read` names what was read (files, interfaces), as the text
/// report does.
#[must_use]
pub fn render(a: &Analysis, capture: CaptureSummary, opts: Options, read: &[String]) -> String {
    page::render(a, capture, opts, read)
}

/// `s` with every character HTML gives a meaning to replaced by its entity: safe in text
/// and in quoted attribute values.
#[must_use]
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c if c.is_control() && c != '\n' && c != '\t' => out.push('\u{fffd}'),
            c => out.push(c),
        }
    }
    out
}

/// A duration in ns, in the unit that reads best (`850 µs`, `12.3 ms`, `4.02 s`).
#[must_use]
pub fn duration(ns: f64) -> String {
    let a = ns.abs();
    if a >= 1e9 {
        format!("{:.2} s", ns / 1e9)
    } else if a >= 1e6 {
        format!("{:.1} ms", ns / 1e6)
    } else if a >= 1e3 {
        format!("{:.0} µs", ns / 1e3)
    } else {
        format!("{ns:.0} ns")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::timeouts::{IdleSamples, UpstreamTimeouts};
    use crate::verdict::{
        Cause, Confidence, Conn, Downstream, Evidence, Fact, Leg, Party, Upstream, Verdict,
    };

    const EVIL: &str = "<script>alert(1)</script><img src=x onerror=alert(2)>";

    fn evil_analysis() -> Analysis {
        let client = "10.0.0.1:5000".parse().unwrap();
        let proxy = "10.0.0.2:80".parse().unwrap();
        let pside = "10.0.0.2:4000".parse().unwrap();
        let server = "10.0.0.3:8080".parse().unwrap();
        let t = 1_795_638_869_000_000_000;
        let down = Conn {
            client,
            server: proxy,
        };
        let up = Conn {
            client: pside,
            server,
        };
        let request = |by| Fact::Request {
            by,
            method: EVIL.into(),
            target: format!("/{EVIL}?q={EVIL}"),
            exchange: 2,
            fresh: false,
            idle_ms: Some(4000.0),
        };
        let v = Verdict {
            cause: Cause::KeepaliveRace,
            subcause: None,
            confidence: Confidence::Proven,
            status: Some(502),
            ts_ns: t + 2_000_000,
            downstream: Some(Downstream {
                client,
                proxy,
                method: Some(EVIL.into()),
                target: Some(format!("/{EVIL}?q={EVIL}")),
            }),
            upstream: Some(Upstream {
                proxy: pside,
                server,
                exchange_index: Some(2),
                seen_from_start: true,
                idle_ms: Some(4000.0),
                fin_to_request_ms: Some(0.1),
                close_order: EVIL.into(),
            }),
            request_id: Some(EVIL.into()),
            idempotent: Some(false),
            summary: format!("summary {EVIL}"),
            reason: Some(format!("reason {EVIL}")),
            evidence: vec![
                Evidence::new(t, down, Leg::Client, request(Party::Client)),
                Evidence::new(t + 1_000_000, up, Leg::Upstream, request(Party::Proxy)),
                Evidence::new(
                    t + 2_000_000,
                    down,
                    Leg::Client,
                    Fact::Response {
                        by: Party::Proxy,
                        status: 502,
                    },
                ),
                Evidence::new(
                    t + 1_500_000,
                    up,
                    Leg::Upstream,
                    Fact::KernelWriteInCloseWait {
                        process: Some(EVIL.into()),
                        idle_ms: 4000.0,
                    },
                ),
                Evidence::new(
                    t + 1_600_000,
                    up,
                    Leg::Unknown,
                    Fact::CaptureLost { what: EVIL.into() },
                ),
            ],
            process: Some(EVIL.into()),
            link_guessed: false,
        };
        Analysis {
            verdicts: vec![v],
            timeouts: vec![UpstreamTimeouts {
                upstream: server,
                upstream_idle_close_ms: Some(4000.0),
                upstream_samples: 1,
                proxy_idle_close_ms: None,
                proxy_samples: 0,
                closes_after_every_response: false,
                after_response: (0, 0),
                upstream_shorter: true,
            }],
            idle: vec![IdleSamples {
                upstream: server,
                upstream_closes_ns: vec![4_000_000_000],
                proxy_reuses_ns: vec![4_000_100_000, 2_000_000],
                proxy_closes_ns: vec![],
            }],
            proxy_software: vec![EVIL.into()],
            ..Analysis::default()
        }
    }

    #[test]
    fn nothing_from_the_capture_becomes_markup() {
        let a = evil_analysis();
        for show_query in [false, true] {
            let opts = Options {
                show_query,
                ..Options::default()
            };
            let read = [format!("{EVIL}.pcap")];
            let page = render(&a, CaptureSummary::default(), opts, &read);
            let lower = page.to_lowercase();
            assert!(!lower.contains("<script"), "{page}");
            assert!(!lower.contains("<img"), "{page}");
            // Nothing is loaded: no attribute names a source (the text `src=x` above is
            // escaped, inside no tag).
            assert!(
                !lower.contains(" src=\"") && !lower.contains(" href="),
                "{page}"
            );
            assert!(!lower.contains("http://") && !lower.contains("https://"));
            // What was escaped is still there to read.
            assert!(
                page.contains("&lt;script&gt;alert(1)&lt;/script&gt;"),
                "{page}"
            );
            // The drawings are there.
            assert_eq!(page.matches("<svg class=\"tl\"").count(), 1, "{page}");
            assert_eq!(page.matches("<svg class=\"hist\"").count(), 1, "{page}");
        }
    }

    #[test]
    fn escaping_leaves_no_markup() {
        assert_eq!(
            esc("<script>alert('x')</script>&\""),
            "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;&amp;&quot;"
        );
        assert_eq!(esc("a\u{0}b"), "a\u{fffd}b");
    }

    #[test]
    fn durations_pick_their_unit() {
        assert_eq!(duration(850_000.0), "850 µs");
        assert_eq!(duration(12_340_000.0), "12.3 ms");
        assert_eq!(duration(4_020_000_000.0), "4.02 s");
        assert_eq!(duration(12.0), "12 ns");
    }
}
