//! The report's first lines: what was read, over what time, and the share of the client
//! responses that were errors (counted from the responses themselves, not the verdicts).

use std::fmt::Write;

use super::wrap;
use crate::engine::Analysis;
use crate::report::{rfc3339, CaptureSummary};

/// `read: …`, the time span, and the error rate.
#[must_use]
pub fn header(a: &Analysis, capture: CaptureSummary, read: &[String]) -> String {
    let mut s = String::new();
    let what = format!(
        "{} packets, {} connections, {} verdicts",
        capture.packets,
        a.flow.connections,
        a.verdicts.len()
    );
    // The first line is what scripts read the packet count from.
    let _ = writeln!(s, "tracer: {what}");
    if !read.is_empty() {
        s.push_str(&wrap("  read", "    ", &read.join(", ")));
    }
    if let (Some(from), Some(to)) = (a.flow.first_ns, a.flow.last_ns) {
        let _ = writeln!(
            s,
            "  from {} to {} ({:.3} s)",
            rfc3339(from),
            rfc3339(to),
            (to - from) as f64 / 1e9
        );
    }
    s.push_str(&rate(a));
    s
}

/// `client requests: 400 (400 answered); 68 errors (17.0 %): 68 × 502`, or what stands in
/// for it when the client side could not be seen or read.
fn rate(a: &Analysis) -> String {
    let r = &a.responses;
    // Client requests that got no response at all: client aborts (nginx's 499) and
    // connections the proxy closed.
    let unanswered = a
        .verdicts
        .iter()
        .filter(|v| v.downstream.is_some() && v.status.is_none())
        .count() as u64;
    let total = r.client_total() + unanswered;
    if r.client_total() == 0 && (total == 0 || a.encrypted.is_some()) {
        let attempts: u64 = r.upstream.values().sum();
        return if attempts == 0 {
            "client requests: no response seen\n".to_owned()
        } else {
            wrap(
                "",
                "  ",
                &format!(
                    "client requests: no response seen; the upstreams answered {attempts} \
                     requests ({} of them 5xx)",
                    r.upstream.range(500..=599).map(|(_, n)| n).sum::<u64>()
                ),
            )
        };
    }
    let errors: Vec<(String, u64)> = r
        .client
        .range(500..=599)
        .map(|(s, n)| (s.to_string(), *n))
        .chain((unanswered > 0).then(|| ("no response (499)".to_owned(), unanswered)))
        .collect();
    let failed: u64 = errors.iter().map(|(_, n)| n).sum();
    let mut line = format!(
        "client requests: {total} ({} answered); {failed} error{} ({})",
        r.client_total(),
        if failed == 1 { "" } else { "s" },
        share(failed, total)
    );
    if !errors.is_empty() {
        let each: Vec<String> = errors.iter().map(|(s, n)| format!("{n} × {s}")).collect();
        let _ = write!(line, ": {}", each.join(", "));
    }
    wrap("", "  ", &line)
}

/// `17.0 %`.
#[must_use]
pub fn share(n: u64, of: u64) -> String {
    if of == 0 {
        return "-".to_owned();
    }
    format!("{:.1} %", n as f64 * 100.0 / of as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_are_percent_with_one_decimal() {
        assert_eq!(share(68, 400), "17.0 %");
        assert_eq!(share(1, 3), "33.3 %");
        assert_eq!(share(0, 0), "-");
    }
}
