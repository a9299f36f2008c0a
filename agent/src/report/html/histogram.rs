//! An upstream's idle times as an SVG histogram on a logarithmic time axis: the idle
//! times after which the upstream closed pooled connections above the axis, the idle
//! times after which the proxy reused them below it, and the inferred timeouts as
//! vertical lines. Reuses to the right of the upstream's closes are the races.

use std::fmt::Write;

use super::{duration, esc};
use crate::timeouts::{IdleSamples, UpstreamTimeouts};

const WIDTH: f64 = 1040.0;
const LEFT: f64 = 60.0;
const RIGHT: f64 = 30.0;
/// Height of each half (closes above, reuses below).
const HALF: f64 = 90.0;
const BINS: usize = 60;

/// The histogram of `s`, with the timeouts of `t` marked; `None` without any sample.
pub(super) fn svg(s: &IdleSamples, t: Option<&UpstreamTimeouts>) -> Option<String> {
    let all = || {
        s.upstream_closes_ns
            .iter()
            .chain(&s.proxy_reuses_ns)
            .copied()
            .filter(|&v| v > 0)
    };
    let lo = all().min()?;
    let hi = all().max()?;
    let mut marks: Vec<(f64, &str, &str)> = Vec::new();
    if let Some(t) = t {
        if let Some(m) = t.upstream_idle_close_ms {
            marks.push((m * 1e6, "up", "upstream closes idle after"));
        }
        if let Some(m) = t.proxy_idle_close_ms {
            marks.push((m * 1e6, "px", "proxy closes idle after"));
        }
    }
    // A decade around the samples and the marks, in whole powers of ten.
    let lo = marks.iter().map(|m| m.0).fold(lo as f64, f64::min).max(1e3);
    let hi = marks
        .iter()
        .map(|m| m.0)
        .fold(hi as f64, f64::max)
        .max(lo * 10.0);
    let (l0, l1) = (lo.log10().floor(), hi.log10().ceil());
    let plot = WIDTH - LEFT - RIGHT;
    let x = |ns: f64| LEFT + (ns.max(1.0).log10() - l0) / (l1 - l0) * plot;
    let bin = |ns: i64| (((x(ns as f64) - LEFT) / plot * BINS as f64) as usize).min(BINS - 1);
    let mut closes = [0u32; BINS];
    let mut reuses = [0u32; BINS];
    for &v in s.upstream_closes_ns.iter().filter(|&&v| v > 0) {
        closes[bin(v)] += 1;
    }
    for &v in s.proxy_reuses_ns.iter().filter(|&&v| v > 0) {
        reuses[bin(v)] += 1;
    }
    let top = closes
        .iter()
        .chain(&reuses)
        .copied()
        .max()
        .unwrap_or(1)
        .max(1) as f64;
    let mid = 30.0 + HALF;
    let bw = plot / BINS as f64;
    let mut out = String::new();
    let _ = write!(
        out,
        "<text class=\"hl up\" x=\"{LEFT}\" y=\"14\">▲ upstream closed an idle connection after \
         ({} samples)</text><text class=\"hl px\" x=\"{LEFT}\" y=\"{:.0}\">▼ proxy reused an idle \
         connection after ({} samples)</text>",
        s.upstream_closes_ns.len(),
        mid + HALF + 24.0,
        s.proxy_reuses_ns.len()
    );
    for i in 0..BINS {
        let bx = LEFT + i as f64 * bw;
        if closes[i] > 0 {
            let h = (f64::from(closes[i]) / top * HALF).max(1.5);
            let _ = write!(
                out,
                "<rect class=\"bu\" x=\"{bx:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{h:.1}\"><title>{}</title></rect>",
                mid - h,
                bw - 1.0,
                closes[i]
            );
        }
        if reuses[i] > 0 {
            let h = (f64::from(reuses[i]) / top * HALF).max(1.5);
            let _ = write!(
                out,
                "<rect class=\"bp\" x=\"{bx:.1}\" y=\"{mid:.1}\" width=\"{:.1}\" height=\"{h:.1}\"><title>{}</title></rect>",
                bw - 1.0,
                reuses[i]
            );
        }
    }
    let _ = write!(
        out,
        "<line class=\"axis\" x1=\"{LEFT}\" x2=\"{:.1}\" y1=\"{mid:.1}\" y2=\"{mid:.1}\"/>",
        LEFT + plot
    );
    // Decades, and 2 and 5 between them.
    let ticks_y = mid + HALF + 6.0;
    for d in (l0 as i32)..=(l1 as i32) {
        for m in [1.0, 2.0, 5.0] {
            let ns = m * 10f64.powi(d);
            if ns.log10() > l1 + 1e-9 {
                continue;
            }
            let tx = x(ns);
            let major = m == 1.0;
            let _ = write!(
                out,
                "<line class=\"{}\" x1=\"{tx:.1}\" x2=\"{tx:.1}\" y1=\"30\" y2=\"{:.1}\"/>",
                if major { "grid" } else { "grid minor" },
                mid + HALF
            );
            if major || l1 - l0 <= 3.0 {
                let _ = write!(
                    out,
                    "<text class=\"tk\" x=\"{tx:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>",
                    ticks_y + 8.0,
                    esc(&duration(ns))
                );
            }
        }
    }
    for (i, (ns, class, what)) in marks.iter().enumerate() {
        let mx = x(*ns);
        let ty = 40.0 + i as f64 * 14.0;
        let anchor = if mx > WIDTH - 260.0 { "end" } else { "start" };
        let tx = if anchor == "end" { mx - 4.0 } else { mx + 4.0 };
        let _ = write!(
            out,
            "<line class=\"mk {class}\" x1=\"{mx:.1}\" x2=\"{mx:.1}\" y1=\"24\" y2=\"{:.1}\"/>\
             <text class=\"ml {class}\" x=\"{tx:.1}\" y=\"{ty:.1}\" text-anchor=\"{anchor}\">{} {}</text>",
            mid + HALF,
            esc(what),
            esc(&duration(*ns))
        );
    }
    let h = mid + HALF + 34.0;
    Some(format!(
        "<svg class=\"hist\" viewBox=\"0 0 {WIDTH} {h:.0}\" \
         width=\"{WIDTH}\" height=\"{h:.0}\" role=\"img\">{out}</svg>"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn samples(closes: &[i64], reuses: &[i64]) -> IdleSamples {
        IdleSamples {
            upstream: "10.0.0.3:80".parse().unwrap(),
            upstream_closes_ns: closes.to_vec(),
            proxy_reuses_ns: reuses.to_vec(),
            proxy_closes_ns: vec![],
        }
    }

    #[test]
    fn bars_on_both_sides_and_the_timeouts_marked() {
        let s = samples(&[4_000_000_000, 4_010_000_000], &[1_000_000, 3_990_000_000]);
        let t = UpstreamTimeouts {
            upstream: s.upstream,
            upstream_idle_close_ms: Some(4000.0),
            upstream_samples: 2,
            proxy_idle_close_ms: Some(60_000.0),
            proxy_samples: 1,
            closes_after_every_response: false,
            after_response: (0, 0),
            upstream_shorter: true,
        };
        let svg = svg(&s, Some(&t)).unwrap();
        assert_eq!(svg.matches("class=\"bu\"").count(), 1, "{svg}");
        assert_eq!(svg.matches("class=\"bp\"").count(), 2, "{svg}");
        assert!(svg.contains("upstream closes idle after 4.00 s"), "{svg}");
        assert!(svg.contains("proxy closes idle after 60.00 s"), "{svg}");
    }

    #[test]
    fn no_samples_no_chart() {
        assert!(svg(&samples(&[], &[]), None).is_none());
    }
}
