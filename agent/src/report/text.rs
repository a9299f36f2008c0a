//! The human report: counts by cause, one line per verdict, the inferred timeouts, the fix;
//! with `verbose`, each verdict's evidence timeline. Request targets are redacted unless
//! [`Options::show_query`] says otherwise.

use std::collections::BTreeMap;
use std::fmt::Write;

use super::sides::{Missing, OneSide};
use super::{rfc3339, CaptureSummary, Options};
use crate::engine::Analysis;
use crate::verdict::{Cause, Verdict};

/// Renders the text report, query values redacted.
#[must_use]
pub fn render(a: &Analysis, capture: CaptureSummary, verbose: bool) -> String {
    render_with(
        a,
        capture,
        Options {
            verbose,
            ..Options::default()
        },
    )
}

/// What a capture of one side of the proxy means for its verdicts, in one line.
#[must_use]
pub fn one_side_line(o: &OneSide) -> String {
    match (o.missing, o.server) {
        (Missing::Upstream, _) => "one side only: the capture holds the proxy's client side \
            but not its upstream side (no connection from the proxy to an upstream), so no 5xx \
            can be traced to the upstream attempt behind it: each stays unexplained, which \
            does not mean the proxy made it itself. Capture both sides of the proxy (both \
            interfaces, or -i any)"
            .to_owned(),
        (Missing::Client, _) => "one side only: the capture holds the proxy's upstream side \
            but not its client side (no client connection to the proxy), so failed upstream \
            attempts are judged without the status the client got or whether a retry saved \
            it. Capture both sides of the proxy (both interfaces, or -i any)"
            .to_owned(),
        (Missing::Unknown, server) => {
            let who = server.map_or_else(|| "one server".to_owned(), |s| s.to_string());
            format!(
                "one side only: every connection goes to {who}, so tracer cannot tell the \
                 proxy's client side from its upstream side. If {who} is the proxy, its \
                 upstream side is missing and each 5xx stays unexplained; if it is an \
                 upstream, the client side is missing. Name it with --proxy or --upstream, \
                 or capture both sides of the proxy"
            )
        }
    }
}

/// Renders the text report.
#[must_use]
pub fn render_with(a: &Analysis, capture: CaptureSummary, opts: Options) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "tracer: {} packets, {} connections, {} verdicts",
        capture.packets,
        a.flow.connections,
        a.verdicts.len()
    );
    if capture.sparse {
        let _ = writeln!(
            s,
            "sparse capture: the kernel kept control segments, new and reused connections' exchanges and 5xx heads; the middle of busy connections was skipped on purpose"
        );
    }
    if capture.dropped_or_missing > 0 {
        let _ = writeln!(
            s,
            "warning: {} places where the capture is missing segments; evidence there may be incomplete",
            capture.dropped_or_missing
        );
    }
    if a.flow.evicted > 0 {
        let _ = writeln!(
            s,
            "warning: {} connections evicted from the full connection table (oldest idle or half-open first; see --max-connections); verdicts on them are unexplained",
            a.flow.evicted
        );
    }
    if let Some(o) = &capture.one_side {
        let _ = writeln!(s, "{}", one_side_line(o));
    }
    if a.flow.unparseable_connections > 0 {
        let _ = writeln!(
            s,
            "warning: {} connections did not carry readable HTTP/1.x (TLS or another protocol)",
            a.flow.unparseable_connections
        );
    }
    if let Some(e) = &a.encrypted {
        let _ = writeln!(s, "note: {}", e.describe());
    }
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for v in &a.verdicts {
        let k = match v.subcause {
            Some(sc) => format!("{}/{}", v.cause, sc.name()),
            None => v.cause.to_string(),
        };
        *counts.entry(k).or_default() += 1;
    }
    if !counts.is_empty() {
        let _ = writeln!(s, "\ncauses:");
        for (k, n) in &counts {
            let _ = writeln!(s, "  {n:>6}  {k}");
        }
    }
    // A reason shared by several verdicts is said once, not under each of them.
    let mut reasons: BTreeMap<&str, usize> = BTreeMap::new();
    for r in a.verdicts.iter().filter_map(|v| v.reason.as_deref()) {
        *reasons.entry(r).or_default() += 1;
    }
    reasons.retain(|_, n| *n > 1);
    if !reasons.is_empty() {
        let _ = writeln!(
            s,
            "\nreasons shared by several verdicts (not repeated below):"
        );
        for (r, n) in &reasons {
            let _ = writeln!(s, "  {n:>6}  {}", opts.text(r));
        }
    }
    if !counts.is_empty() {
        let _ = writeln!(s, "\nverdicts:");
    }
    for v in &a.verdicts {
        let shared = v.reason.as_deref().is_some_and(|r| reasons.contains_key(r));
        s.push_str(&verdict_line(v, opts, !shared));
    }
    if !a.timeouts.is_empty() {
        let _ = writeln!(s, "\ninferred timeouts:");
        for t in &a.timeouts {
            let up = t.upstream_idle_close_ms.map_or("unknown".into(), |m| {
                format!("{:.3} s ({} samples)", m / 1000.0, t.upstream_samples)
            });
            let px = t.proxy_idle_close_ms.map_or("unknown".into(), |m| {
                format!("{:.3} s ({} samples)", m / 1000.0, t.proxy_samples)
            });
            let _ = writeln!(
                s,
                "  {}: upstream closes idle connections after {up}; proxy after {px}",
                t.upstream
            );
            if t.closes_after_every_response {
                let _ = writeln!(
                    s,
                    "    the upstream closes right after every response without `Connection: close` ({} of {})",
                    t.after_response.0, t.after_response.1
                );
            }
            if t.upstream_shorter {
                let _ = writeln!(s, "    the upstream gives up on idle connections before the proxy does: keep-alive races follow");
            }
        }
    }
    if !a.advice.is_empty() {
        let _ = writeln!(s, "\nfix:");
        for x in &a.advice {
            let _ = writeln!(s, "  - [{}] {}", x.about, x.text);
        }
    }
    if a.verdicts.is_empty() {
        let _ = writeln!(s, "\nno 5xx, 499 or failed upstream attempt found.");
    }
    s
}

/// One verdict, query values redacted: see [`verdict_with`].
#[must_use]
pub fn verdict(v: &Verdict, verbose: bool) -> String {
    verdict_with(
        v,
        Options {
            verbose,
            ..Options::default()
        },
    )
}

/// One verdict: a line with its time, status, cause (with its confidence; `unexplained`
/// claims none) and upstream connection, its sentence, its reason, and with `verbose` its
/// evidence timeline.
#[must_use]
pub fn verdict_with(v: &Verdict, opts: Options) -> String {
    verdict_line(v, opts, true)
}

fn verdict_line(v: &Verdict, opts: Options, with_reason: bool) -> String {
    let mut s = String::new();
    let status = v.status.map_or_else(|| "---".to_owned(), |s| s.to_string());
    let cause = match v.subcause {
        Some(sc) => format!("{}/{}", v.cause, sc.name()),
        None => v.cause.to_string(),
    };
    let mut line = format!("  {} {status} {cause}", rfc3339(v.ts_ns));
    if v.cause != Cause::Unexplained {
        let _ = write!(line, " ({})", v.confidence.name());
    }
    if let Some(u) = &v.upstream {
        let _ = write!(line, " upstream {}", u.connection());
        if let Some(i) = u.exchange_index {
            let _ = write!(line, " #{i}");
        }
        if let Some(i) = u.idle_ms {
            let _ = write!(line, " idle {i:.1} ms");
        }
        let _ = write!(line, " [{}]", u.close_order);
    }
    if let Some(r) = &v.request_id {
        let _ = write!(line, " rid={r}");
    }
    if let Some(p) = &v.process {
        let _ = write!(line, " by {p}");
    }
    let _ = writeln!(s, "{line}");
    let _ = writeln!(s, "      {}", opts.text(&v.summary));
    if let Some(r) = v.reason.as_deref().filter(|_| with_reason) {
        let label = if v.cause == Cause::Unexplained {
            "unexplained"
        } else {
            "not proven"
        };
        let _ = writeln!(s, "      {label}: {}", opts.text(r));
    }
    if opts.verbose {
        for e in &v.evidence {
            let _ = writeln!(
                s,
                "        {}  {:<45} {}",
                rfc3339(e.ts_ns),
                e.connection,
                opts.text(&e.to_string())
            );
        }
    }
    s
}
