//! The human report: counts by cause, one line per verdict, the inferred timeouts, the fix;
//! with `verbose`, each verdict's evidence timeline.

use std::collections::BTreeMap;
use std::fmt::Write;

use super::{rfc3339, CaptureSummary};
use crate::engine::Analysis;

/// Renders the text report.
#[must_use]
pub fn render(a: &Analysis, capture: CaptureSummary, verbose: bool) -> String {
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
        let _ = writeln!(s, "\nverdicts:");
    }
    for v in &a.verdicts {
        s.push_str(&verdict(v, verbose));
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

/// One verdict: a line with its time, status, cause and upstream connection, its sentence,
/// and with `verbose` its evidence timeline.
#[must_use]
pub fn verdict(v: &crate::verdict::Verdict, verbose: bool) -> String {
    let mut s = String::new();
    let status = v.status.map_or_else(|| "---".to_owned(), |s| s.to_string());
    let cause = match v.subcause {
        Some(sc) => format!("{}/{}", v.cause, sc.name()),
        None => v.cause.to_string(),
    };
    let mut line = format!(
        "  {} {status} {cause} ({})",
        rfc3339(v.ts_ns),
        v.confidence.name()
    );
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
    let _ = writeln!(s, "      {}", v.summary);
    if let Some(r) = &v.reason {
        let label = if v.cause == crate::verdict::Cause::Unexplained {
            "unexplained"
        } else {
            "not proven"
        };
        let _ = writeln!(s, "      {label}: {r}");
    }
    if verbose {
        for e in &v.evidence {
            let _ = writeln!(
                s,
                "        {}  {:<45} {}",
                rfc3339(e.ts_ns),
                e.connection,
                e.what
            );
        }
    }
    s
}
