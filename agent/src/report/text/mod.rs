//! The human report, summary first: what was read and how many client responses failed,
//! the verdicts by cause and upstream, a few clear examples of each (every verdict with
//! [`super::Limit::All`]), the inferred timeouts, the fix; with `verbose`, each listed verdict's
//! evidence timeline. Request targets are redacted unless [`Options::show_query`] says
//! otherwise.

mod groups;
mod key;
mod summary;
mod timeouts;
mod wrap;

use std::collections::BTreeMap;
use std::fmt::Write;

use super::sides::{Missing, OneSide};
use super::{rfc3339, CaptureSummary, Options};
use crate::engine::Analysis;
use crate::verdict::{Cause, Upstream, Verdict};
pub use wrap::{wrap, WIDTH};

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

/// Renders the text report, saying nothing of where its packets came from: see
/// [`render_read`].
#[must_use]
pub fn render_with(a: &Analysis, capture: CaptureSummary, opts: Options) -> String {
    render_read(a, capture, opts, &[])
}

/// Renders the text report, summary first: what was read (`read`: the files or
/// interfaces), the share of client responses that failed, the verdicts by cause and
/// upstream, the clearest examples of each group (every verdict with
/// [`super::Limit::All`]), the
/// inferred timeouts and the fix.
#[must_use]
pub fn render_read(
    a: &Analysis,
    capture: CaptureSummary,
    opts: Options,
    read: &[String],
) -> String {
    let mut s = summary::header(a, capture, read);
    s.push_str(&notes(a, capture));
    let groups = groups::group(&a.verdicts);
    if !groups.is_empty() {
        s.push_str(&groups::table(&groups, a.verdicts.len()));
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
            s.push_str(&wrap(&format!("  {n:>6}  "), "          ", &opts.text(r)));
        }
    }
    if !groups.is_empty() {
        s.push_str(&groups::examples(&groups, opts, &|r| {
            reasons.contains_key(r)
        }));
    }
    s.push_str(&timeouts::section(&a.timeouts));
    s.push_str(&fix(a, opts));
    if a.verdicts.is_empty() {
        let _ = writeln!(s, "\nno 5xx, 499 or failed upstream attempt found.");
    }
    s
}

/// Warnings about the capture and what it could not show.
fn notes(a: &Analysis, capture: CaptureSummary) -> String {
    let mut s = String::new();
    if capture.sparse {
        s.push_str(&wrap(
            "",
            "  ",
            "sparse capture: the kernel kept control segments, new and reused connections' \
             exchanges and 5xx heads; the middle of busy connections was skipped on purpose",
        ));
    }
    if capture.dropped_or_missing > 0 {
        s.push_str(&wrap(
            "",
            "  ",
            &format!(
                "warning: {} places where the capture is missing segments; evidence there may \
                 be incomplete",
                capture.dropped_or_missing
            ),
        ));
    }
    if a.flow.evicted > 0 {
        s.push_str(&wrap(
            "",
            "  ",
            &format!(
                "warning: {} connections evicted from the full connection table (oldest idle or \
                 half-open first; see --max-connections); verdicts on them are unexplained",
                a.flow.evicted
            ),
        ));
    }
    if let Some(o) = &capture.one_side {
        s.push_str(&wrap("", "  ", &one_side_line(o)));
    }
    if a.flow.unparseable_connections > 0 {
        s.push_str(&wrap(
            "",
            "  ",
            &format!(
                "warning: {} connections did not carry readable HTTP/1.x (TLS or another \
                 protocol)",
                a.flow.unparseable_connections
            ),
        ));
    }
    if let Some(e) = &a.encrypted {
        s.push_str(&wrap("note: ", "  ", &e.describe()));
    }
    s
}

/// The settings to change: for the proxy and upstream recognised, or every one tracer
/// knows with [`super::Limit::All`].
fn fix(a: &Analysis, opts: Options) -> String {
    let mut s = String::new();
    if a.advice.is_empty() {
        return s;
    }
    let all = opts.limit == super::Limit::All;
    let _ = writeln!(s, "\nfix:");
    for x in a.advice.iter().filter(|x| all || x.shown) {
        s.push_str(&wrap(&format!("  - [{}]", x.about), "    ", &x.text));
    }
    let more = a.advice.iter().filter(|x| !x.shown).count();
    if !all && more > 0 {
        let _ = writeln!(
            s,
            "  ({more} more for other proxies, upstreams and Kubernetes: --all)"
        );
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
/// claims none), request id and request, its sentence, its reason, the fact it rests on
/// most, and with `verbose` its whole evidence timeline.
#[must_use]
pub fn verdict_with(v: &Verdict, opts: Options) -> String {
    verdict_block(v, opts, true, true)
}

/// The indentation of a verdict's sentences.
const BODY: &str = "      ";

/// A verdict's lines; `with_cause` false under a heading that names its cause.
fn verdict_block(v: &Verdict, opts: Options, with_reason: bool, with_cause: bool) -> String {
    let mut s = String::new();
    let status = v.status.map_or_else(|| "---".to_owned(), |s| s.to_string());
    let mut line = format!("  {} {status}", rfc3339(v.ts_ns));
    if with_cause {
        let _ = write!(line, " {}", v.cause_name());
    }
    match (v.claimed_confidence(), with_cause) {
        (Some(c), true) => {
            let _ = write!(line, " ({})", c.name());
        }
        (Some(c), false) => {
            let _ = write!(line, " {}", c.name());
        }
        (None, _) => {}
    }
    if let Some(r) = &v.request_id {
        let _ = write!(line, " rid={r}");
    }
    if let Some(d) = &v.downstream {
        if let (Some(m), Some(t)) = (&d.method, &d.target) {
            let _ = write!(line, " {m} {}", opts.target(t));
        }
    }
    if let Some(p) = &v.process {
        let _ = write!(line, " by {p}");
    }
    let _ = writeln!(s, "{line}");
    s.push_str(&wrap(BODY, BODY, &opts.text(&v.summary)));
    if let Some(r) = v.reason.as_deref().filter(|_| with_reason) {
        let label = if v.cause == Cause::Unexplained {
            "unexplained:"
        } else {
            "not proven:"
        };
        s.push_str(&wrap(&format!("{BODY}{label}"), BODY, &opts.text(r)));
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
    } else if let Some(e) = key::evidence(v) {
        // The upstream connection goes without saying: the sentence above names it.
        let on = if v.upstream.as_ref().map(Upstream::conn) == Some(e.connection) {
            String::new()
        } else {
            format!(" on {}", e.connection)
        };
        s.push_str(&wrap(
            &format!("{BODY}evidence:"),
            BODY,
            &format!("{} {}{on}", time_of_day(e.ts_ns), opts.text(&e.to_string())),
        ));
    }
    s
}

/// `12:49:46.416149` (UTC), for lines that already say the day.
fn time_of_day(ts_ns: i64) -> String {
    let t = rfc3339(ts_ns);
    t.get(11..t.len() - 1).unwrap_or(&t).to_owned()
}
