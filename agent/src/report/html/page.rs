//! The page around the drawings: head and style, the summary, the table of causes, each
//! group's examples, the idle-time distributions, the timeouts and the fix.

use std::collections::BTreeMap;
use std::fmt::Write;

use super::{esc, histogram, timeline};
use crate::engine::Analysis;
use crate::report::{rfc3339, CaptureSummary, Limit, Options};
use crate::verdict::{Cause, Confidence, Verdict};

/// Most examples drawn per group, whatever the limit asks.
const MAX_DRAWN: usize = 20;
/// Verdicts listed in the table of all verdicts unless every one is asked for.
const LISTED: usize = 500;

/// Examples drawn per group: as many as the text report lists (two by default).
fn drawn(opts: Options) -> usize {
    match opts.limit {
        Limit::PerGroup(n) => n.clamp(1, MAX_DRAWN),
        Limit::All => MAX_DRAWN,
    }
}

const STYLE: &str = "\
body{font:14px/1.45 system-ui,-apple-system,'Segoe UI',sans-serif;color:#1f2937;\
background:#fff;margin:24px auto;max-width:1080px;padding:0 16px}\
h1{font-size:24px;margin:0 0 4px}h2{font-size:19px;margin:28px 0 8px;\
border-bottom:1px solid #e5e7eb;padding-bottom:4px}h3{font-size:15px;margin:18px 0 6px}\
.sub{color:#6b7280}.warn{color:#92400e;background:#fef3c7;padding:6px 10px;border-radius:4px}\
.kpi{display:flex;gap:14px;flex-wrap:wrap;margin:14px 0}.kpi div{background:#f3f4f6;\
border-radius:6px;padding:8px 14px}.kpi b{display:block;font-size:22px}\
.kpi .bad b{color:#b91c1c}table{border-collapse:collapse;margin:6px 0}\
td,th{border-bottom:1px solid #e5e7eb;padding:3px 10px;text-align:left;vertical-align:top}\
th{background:#f9fafb}td.n{text-align:right;font-variant-numeric:tabular-nums}\
code,.mono{font:12px ui-monospace,'DejaVu Sans Mono',monospace}\
.ex{border:1px solid #e5e7eb;border-radius:6px;padding:8px 12px;margin:10px 0}\
.cause{font-weight:600}.proven{color:#047857}.probable{color:#b45309}\
svg{display:block;max-width:100%;height:auto;font:11px system-ui,sans-serif}\
.lane{fill:#f9fafb}.ln{font-weight:600;fill:#374151}.pt{font-weight:600;fill:#111827}\
.axis{stroke:#9ca3af;stroke-width:1}.lead{stroke:#d1d5db;stroke-dasharray:2 2}\
.tk{fill:#6b7280}.idle{fill:#e5e7eb;stroke:#9ca3af}.il{fill:#4b5563}\
.m{stroke:#fff;stroke-width:1.5}.m.syn{fill:#6b7280}.m.req{fill:#2563eb}\
.m.res{fill:#16a34a}.m.err{fill:#dc2626}.m.fin{fill:#ea580c}.m.rst{fill:#7f1d1d}\
.m.krn{fill:#7c3aed}.m.oth{fill:#9ca3af}.lb{fill:#374151}.lb.err{fill:#b91c1c;\
font-weight:600}.lb.fin,.lb.rst{fill:#9a3412}.lb.krn{fill:#6d28d9}\
.bu{fill:#ea580c}.bp{fill:#2563eb}.grid{stroke:#e5e7eb}.grid.minor{stroke-dasharray:2 3}\
.hl{font-weight:600}.hl.up{fill:#c2410c}.hl.px{fill:#1d4ed8}.mk{stroke-width:2}\
.mk.up{stroke:#c2410c}.mk.px{stroke:#1d4ed8;stroke-dasharray:5 3}.ml{font-weight:600}\
.ml.up{fill:#c2410c}.ml.px{fill:#1d4ed8}details{margin:8px 0}\
.legend span{margin-right:12px}.dot{display:inline-block;width:10px;height:10px;\
border-radius:5px;margin-right:4px;vertical-align:-1px}";

/// The whole page.
pub(super) fn render(
    a: &Analysis,
    capture: CaptureSummary,
    opts: Options,
    read: &[String],
) -> String {
    let mut s = String::with_capacity(64 * 1024);
    let title = format!("tracer report: {} verdicts", a.verdicts.len());
    let _ = write!(
        s,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{}</title><style>{STYLE}</style></head><body>\n<h1>{}</h1>\n",
        esc(&title),
        esc(&title)
    );
    summary(&mut s, a, capture, read, opts);
    let groups = groups(&a.verdicts);
    causes(&mut s, &groups, a.verdicts.len());
    examples(&mut s, &groups, opts);
    distributions(&mut s, a);
    fix(&mut s, a);
    all(&mut s, &a.verdicts, opts);
    if !a.verdicts.is_empty() {
        s.push_str(
            "<p class=\"sub\">The packets behind these verdicts are in \
             <code>evidence.pcapng</code> (<code>--evidence DIR</code> or a capture bundle), \
             each commented: filter on <code>frame.comment</code> in Wireshark.</p>\n",
        );
    }
    s.push_str("</body></html>\n");
    s
}

fn summary(s: &mut String, a: &Analysis, capture: CaptureSummary, read: &[String], opts: Options) {
    let span = match (a.flow.first_ns, a.flow.last_ns) {
        (Some(f), Some(l)) => format!(
            "; from {} to {} ({})",
            rfc3339(f),
            rfc3339(l),
            super::duration((l - f) as f64)
        ),
        _ => String::new(),
    };
    let read = if read.is_empty() {
        String::new()
    } else {
        format!("read {}: ", read.join(", "))
    };
    let _ = writeln!(
        s,
        "<p class=\"sub\">{}{} packets, {} connections{}</p>",
        esc(&read),
        capture.packets,
        a.flow.connections,
        esc(&span)
    );
    // The error rate from the responses themselves (not the verdicts), as the text
    // report counts it: client 5xx, and client requests that got no response.
    let r = &a.responses;
    let unanswered = a
        .verdicts
        .iter()
        .filter(|v| v.downstream.is_some() && v.status.is_none())
        .count() as u64;
    let total = r.client_total() + unanswered;
    let failed = r.client_in(500..=599) + unanswered;
    let proven = a
        .verdicts
        .iter()
        .filter(|v| v.cause != Cause::Unexplained && v.confidence == Confidence::Proven)
        .count();
    let unexplained = a
        .verdicts
        .iter()
        .filter(|v| v.cause == Cause::Unexplained)
        .count();
    s.push_str("<div class=\"kpi\">");
    if r.client_total() == 0 && (total == 0 || a.encrypted.is_some()) {
        let attempts: u64 = r.upstream.values().sum();
        let up5xx: u64 = r.upstream.range(500..=599).map(|(_, n)| n).sum();
        let _ = write!(
            s,
            "<div><b>—</b>client responses not seen</div>\
             <div><b>{attempts}</b>upstream responses</div>\
             <div{}><b>{up5xx}</b>upstream 5xx</div>",
            if up5xx > 0 { " class=\"bad\"" } else { "" }
        );
    } else {
        let share = if total == 0 {
            "–".to_owned()
        } else {
            format!("{:.1}%", failed as f64 * 100.0 / total as f64)
        };
        let each: Vec<String> = r
            .client
            .range(500..=599)
            .map(|(st, n)| format!("{n} × {st}"))
            .chain((unanswered > 0).then(|| format!("{unanswered} × no response")))
            .collect();
        let _ = write!(
            s,
            "<div><b>{total}</b>client requests</div>\
             <div{}><b>{share}</b>failed: {failed}{}</div>",
            if failed > 0 { " class=\"bad\"" } else { "" },
            if each.is_empty() {
                String::new()
            } else {
                format!(" ({})", esc(&each.join(", ")))
            }
        );
    }
    let _ = writeln!(
        s,
        "<div><b>{}</b>verdicts</div><div><b>{proven}</b>proven</div>\
         <div><b>{unexplained}</b>unexplained</div></div>",
        a.verdicts.len()
    );
    let mut warn = Vec::new();
    if capture.sparse {
        warn.push(
            "sparse capture: the middle of busy connections was skipped on purpose".to_owned(),
        );
    }
    if capture.dropped_or_missing > 0 {
        warn.push(format!(
            "{} places where the capture is missing segments; evidence there may be incomplete",
            capture.dropped_or_missing
        ));
    }
    if a.flow.evicted > 0 {
        warn.push(format!(
            "{} connections evicted from the full connection table; verdicts on them are unexplained",
            a.flow.evicted
        ));
    }
    if let Some(o) = &capture.one_side {
        warn.push(crate::report::text::one_side_line(o));
    }
    if let Some(e) = &a.encrypted {
        warn.push(e.describe());
    }
    for w in warn {
        let _ = writeln!(s, "<p class=\"warn\">{}</p>", esc(&opts.text(&w)));
    }
}

/// A group of verdicts: cause (with subcause) and upstream.
type Groups<'a> = BTreeMap<(String, String), Vec<&'a Verdict>>;

fn cause_name(v: &Verdict) -> String {
    match v.subcause {
        Some(sc) => format!("{}/{}", v.cause, sc.name()),
        None => v.cause.to_string(),
    }
}

fn groups(vs: &[Verdict]) -> Groups<'_> {
    let mut g: Groups<'_> = BTreeMap::new();
    for v in vs {
        let up = v
            .upstream
            .as_ref()
            .map_or_else(|| "—".to_owned(), |u| u.server.to_string());
        g.entry((cause_name(v), up)).or_default().push(v);
    }
    g
}

fn causes(s: &mut String, g: &Groups<'_>, total: usize) {
    s.push_str("<h2 id=\"causes\">Causes</h2>\n");
    if g.is_empty() {
        s.push_str("<p>No 5xx, 499 or failed upstream attempt found.</p>\n");
        return;
    }
    let mut rows: Vec<_> = g.iter().collect();
    rows.sort_by(|a, b| b.1.len().cmp(&a.1.len()).then(a.0.cmp(b.0)));
    s.push_str("<table><tr><th>cause</th><th>upstream</th><th>verdicts</th><th>share</th><th>proven</th></tr>\n");
    for ((cause, up), vs) in rows {
        let proven = vs
            .iter()
            .filter(|v| v.cause != Cause::Unexplained && v.confidence == Confidence::Proven)
            .count();
        let _ = writeln!(
            s,
            "<tr><td class=\"cause\">{}</td><td class=\"mono\">{}</td><td class=\"n\">{}</td>\
             <td class=\"n\">{:.1}%</td><td class=\"n\">{proven}</td></tr>",
            esc(cause),
            esc(up),
            vs.len(),
            vs.len() as f64 * 100.0 / total.max(1) as f64
        );
    }
    s.push_str("</table>\n");
}

/// The clearest verdicts first: proven before probable, then the most evidence.
fn clearest<'a>(vs: &[&'a Verdict], n: usize) -> Vec<&'a Verdict> {
    let mut v = vs.to_vec();
    v.sort_by_key(|v| {
        (
            v.cause == Cause::Unexplained,
            v.confidence != Confidence::Proven,
            v.link_guessed,
            std::cmp::Reverse(v.evidence.len().min(12)),
            v.ts_ns,
        )
    });
    v.truncate(n);
    v
}

fn examples(s: &mut String, g: &Groups<'_>, opts: Options) {
    if g.is_empty() {
        return;
    }
    s.push_str(
        "<h2 id=\"examples\">Examples, drawn to scale</h2>\n<p class=\"legend sub\">\
         <span><i class=\"dot\" style=\"background:#2563eb\"></i>request</span>\
         <span><i class=\"dot\" style=\"background:#16a34a\"></i>response</span>\
         <span><i class=\"dot\" style=\"background:#dc2626\"></i>error response</span>\
         <span><i class=\"dot\" style=\"background:#ea580c\"></i>FIN</span>\
         <span><i class=\"dot\" style=\"background:#7f1d1d\"></i>RST</span>\
         <span><i class=\"dot\" style=\"background:#6b7280\"></i>SYN</span>\
         <span><i class=\"dot\" style=\"background:#7c3aed\"></i>kernel probe</span></p>\n",
    );
    let mut rows: Vec<_> = g.iter().collect();
    rows.sort_by(|a, b| b.1.len().cmp(&a.1.len()).then(a.0.cmp(b.0)));
    for ((cause, up), vs) in rows {
        let _ = writeln!(
            s,
            "<h3>{} <span class=\"sub\">upstream {} · {} verdicts</span></h3>",
            esc(cause),
            esc(up),
            vs.len()
        );
        for v in clearest(vs, drawn(opts)) {
            example(s, v, opts);
        }
    }
}

fn example(s: &mut String, v: &Verdict, opts: Options) {
    let status = v
        .status
        .map_or_else(|| "no response".to_owned(), |c| c.to_string());
    let conf = if v.cause == Cause::Unexplained {
        String::new()
    } else {
        format!(" <span class=\"{0}\">{0}</span>", v.confidence.name())
    };
    let req = v
        .downstream
        .as_ref()
        .filter(|d| d.method.is_some() || d.target.is_some())
        .map(|d| {
            format!(
                " · {} {}",
                d.method.as_deref().unwrap_or("?"),
                d.target
                    .as_deref()
                    .map_or_else(|| "?".into(), |t| opts.target(t))
            )
        })
        .unwrap_or_default();
    let _ = writeln!(
        s,
        "<div class=\"ex\"><div><b>{}</b> · {} · <span class=\"cause\">{}</span>{conf}<span class=\"mono\">{}</span></div>\
         <div>{}</div>",
        esc(&status),
        esc(&rfc3339(v.ts_ns)),
        esc(&cause_name(v)),
        esc(&req),
        esc(&opts.text(&v.summary))
    );
    if let Some(r) = &v.reason {
        let _ = writeln!(s, "<div class=\"sub\">{}</div>", esc(&opts.text(r)));
    }
    let (events, idle) = timeline::events(v, opts);
    if let Some(svg) = timeline::svg(&events, idle) {
        s.push_str(&svg);
    }
    if let Some(first) = events.first().map(|e| e.ts_ns) {
        s.push_str("<details><summary>evidence</summary><table>");
        for e in &v.evidence {
            let _ = write!(
                s,
                "<tr><td class=\"n mono\">+{}</td><td class=\"mono\">{}</td><td>{}</td></tr>",
                esc(&super::duration((e.ts_ns - first) as f64)),
                esc(&e.connection.to_string()),
                esc(&e
                    .fact
                    .map_target(|t| opts.target(t).into_owned())
                    .to_string())
            );
        }
        s.push_str("</table></details>");
    }
    s.push_str("</div>\n");
}

fn distributions(s: &mut String, a: &Analysis) {
    if a.timeouts.is_empty() {
        return;
    }
    s.push_str(
        "<h2 id=\"idle\">Idle connections: when the upstream closes them, when the proxy reuses them</h2>\n",
    );
    for t in &a.timeouts {
        let _ = write!(
            s,
            "<h3 class=\"mono\">{}</h3><p>",
            esc(&t.upstream.to_string())
        );
        let up = t.upstream_idle_close_ms.map_or_else(
            || "an idle timeout tracer did not see".to_owned(),
            |m| {
                format!(
                    "{} (median of {})",
                    super::duration(m * 1e6),
                    t.upstream_samples
                )
            },
        );
        let px = t.proxy_idle_close_ms.map_or_else(
            || "no idle close of the proxy was seen".to_owned(),
            |m| {
                format!(
                    "the proxy after {} (longest of {})",
                    super::duration(m * 1e6),
                    t.proxy_samples
                )
            },
        );
        let _ = write!(
            s,
            "The upstream closes idle connections after {}; {}.",
            esc(&up),
            esc(&px)
        );
        let samples = a.idle.iter().find(|i| i.upstream == t.upstream);
        if let Some(i) = samples {
            if let Some(first) = i.upstream_closes_ns.iter().min() {
                let late = i.proxy_reuses_ns.iter().filter(|&&r| r >= *first).count();
                let _ = write!(
                    s,
                    " {late} of {} reuses came after the upstream's shortest idle close ({}): \
                     each of them could meet a closing connection.",
                    i.proxy_reuses_ns.len(),
                    esc(&super::duration(*first as f64))
                );
            }
        }
        if t.closes_after_every_response {
            let _ = write!(
                s,
                " The upstream closes right after every response without \
                 <code>Connection: close</code> ({} of {}).",
                t.after_response.0, t.after_response.1
            );
        }
        if t.upstream_shorter {
            s.push_str(
                " <b>The upstream gives up on idle connections before the proxy does: \
                 keep-alive races follow.</b>",
            );
        }
        s.push_str("</p>\n");
        match samples.and_then(|i| histogram::svg(i, Some(t))) {
            Some(svg) => s.push_str(&svg),
            None => s.push_str("<p class=\"sub\">No idle times were seen for it.</p>"),
        }
    }
}

fn fix(s: &mut String, a: &Analysis) {
    if a.advice.is_empty() {
        return;
    }
    s.push_str("<h2 id=\"fix\">Fix</h2>\n<ul>\n");
    for x in &a.advice {
        let _ = writeln!(s, "<li><b>{}</b>: {}</li>", esc(x.about), esc(&x.text));
    }
    s.push_str("</ul>\n");
}

fn all(s: &mut String, vs: &[Verdict], opts: Options) {
    if vs.is_empty() {
        return;
    }
    let listed = if opts.limit == Limit::All {
        vs.len()
    } else {
        LISTED
    };
    let _ = write!(
        s,
        "<h2 id=\"all\">All verdicts</h2>\n<details><summary>{} verdicts{}</summary><table>\
         <tr><th>time</th><th>status</th><th>cause</th><th>upstream</th><th>summary</th></tr>\n",
        vs.len(),
        if vs.len() > listed {
            format!(" (the first {listed} here; --all lists every one)")
        } else {
            String::new()
        }
    );
    for v in vs.iter().take(listed) {
        let _ = writeln!(
            s,
            "<tr><td class=\"mono\">{}</td><td>{}</td><td>{}</td><td class=\"mono\">{}</td><td>{}</td></tr>",
            esc(&rfc3339(v.ts_ns)),
            v.status.map_or_else(|| "—".to_owned(), |c| c.to_string()),
            esc(&cause_name(v)),
            esc(&v.upstream.as_ref().map(|u| u.connection()).unwrap_or_default()),
            esc(&opts.text(&v.summary))
        );
    }
    s.push_str("</table></details>\n");
}
