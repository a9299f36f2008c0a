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
    let axis = Axis::new(
        marks.iter().map(|m| m.0).fold(lo as f64, f64::min).max(1e3),
        marks.iter().map(|m| m.0).fold(hi as f64, f64::max),
    );
    let plot = WIDTH - LEFT - RIGHT;
    let x = |ns: f64| LEFT + axis.at(ns) * plot;
    let bin = |ns: i64| ((axis.at(ns as f64) * BINS as f64).max(0.0) as usize).min(BINS - 1);
    let mut closes = [0u32; BINS];
    let mut reuses = [0u32; BINS];
    for &v in s.upstream_closes_ns.iter().filter(|&&v| v > 0) {
        closes[bin(v)] += 1;
    }
    for &v in s.proxy_reuses_ns.iter().filter(|&&v| v > 0) {
        reuses[bin(v)] += 1;
    }
    let top_count = closes
        .iter()
        .chain(&reuses)
        .copied()
        .max()
        .unwrap_or(1)
        .max(1) as f64;
    // Legend, then a row per timeout mark, then the bars.
    let top = 24.0 + marks.len() as f64 * 14.0 + 6.0;
    let mid = top + HALF;
    let bottom = mid + HALF;
    let bw = plot / BINS as f64;
    let mut out = String::new();
    let _ = write!(
        out,
        "<text class=\"hl up\" x=\"{LEFT}\" y=\"14\">▲ upstream closed an idle connection after \
         ({} samples)</text><text class=\"hl px\" x=\"{:.0}\" y=\"14\" text-anchor=\"end\">▼ proxy \
         reused an idle connection after ({} samples)</text>",
        s.upstream_closes_ns.len(),
        WIDTH - RIGHT,
        s.proxy_reuses_ns.len()
    );
    for t in axis.ticks() {
        let tx = x(t);
        let _ = write!(
            out,
            "<line class=\"grid\" x1=\"{tx:.1}\" x2=\"{tx:.1}\" y1=\"{top:.1}\" y2=\"{bottom:.1}\"/>\
             <text class=\"tk\" x=\"{tx:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>",
            bottom + 14.0,
            esc(&duration(t))
        );
    }
    for i in 0..BINS {
        let bx = LEFT + i as f64 * bw;
        if closes[i] > 0 {
            let h = (f64::from(closes[i]) / top_count * HALF).max(1.5);
            let _ = write!(
                out,
                "<rect class=\"bu\" x=\"{bx:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{h:.1}\"><title>{}</title></rect>",
                mid - h,
                (bw - 1.0).max(1.0),
                closes[i]
            );
        }
        if reuses[i] > 0 {
            let h = (f64::from(reuses[i]) / top_count * HALF).max(1.5);
            let _ = write!(
                out,
                "<rect class=\"bp\" x=\"{bx:.1}\" y=\"{mid:.1}\" width=\"{:.1}\" height=\"{h:.1}\"><title>{}</title></rect>",
                (bw - 1.0).max(1.0),
                reuses[i]
            );
        }
    }
    let _ = write!(
        out,
        "<line class=\"axis\" x1=\"{LEFT}\" x2=\"{:.1}\" y1=\"{mid:.1}\" y2=\"{mid:.1}\"/>",
        LEFT + plot
    );
    for (i, (ns, class, what)) in marks.iter().enumerate() {
        let mx = x(*ns);
        let ty = 34.0 + i as f64 * 14.0;
        let anchor = if mx > WIDTH - 300.0 { "end" } else { "start" };
        let tx = if anchor == "end" { mx - 4.0 } else { mx + 4.0 };
        let _ = write!(
            out,
            "<line class=\"mk {class}\" x1=\"{mx:.1}\" x2=\"{mx:.1}\" y1=\"{:.1}\" y2=\"{bottom:.1}\"/>\
             <text class=\"ml {class}\" x=\"{tx:.1}\" y=\"{ty:.1}\" text-anchor=\"{anchor}\">{} {}</text>",
            ty - 10.0,
            esc(what),
            esc(&duration(*ns))
        );
    }
    let h = bottom + 24.0;
    Some(format!(
        "<svg class=\"hist\" viewBox=\"0 0 {WIDTH} {h:.0}\" \
         width=\"{WIDTH}\" height=\"{h:.0}\" role=\"img\">{out}</svg>"
    ))
}

/// The time axis: logarithmic when the samples span more than a few times over, else
/// linear (a race lives in the last percent of an idle timeout, which a log axis hides).
#[derive(Debug, Clone, Copy)]
enum Axis {
    Log { l0: f64, l1: f64 },
    Linear { from: f64, to: f64 },
}

impl Axis {
    fn new(lo: f64, hi: f64) -> Axis {
        let hi = hi.max(lo * 1.001);
        if hi / lo > 4.0 {
            let (l0, l1) = (lo.log10(), hi.log10());
            let pad = (l1 - l0) * 0.04;
            Axis::Log {
                l0: l0 - pad,
                l1: l1 + pad,
            }
        } else {
            let pad = (hi - lo).max(hi * 0.002) * 0.15;
            Axis::Linear {
                from: (lo - pad).max(0.0),
                to: hi + pad,
            }
        }
    }

    /// Where `ns` is, from 0 (left) to 1 (right).
    fn at(self, ns: f64) -> f64 {
        match self {
            Axis::Log { l0, l1 } => (ns.max(1.0).log10() - l0) / (l1 - l0),
            Axis::Linear { from, to } => (ns - from) / (to - from),
        }
    }

    /// Round times to label.
    fn ticks(self) -> Vec<f64> {
        match self {
            Axis::Log { l0, l1 } => {
                let mut v = Vec::new();
                let steps: &[f64] = if l1 - l0 > 3.0 {
                    &[1.0]
                } else {
                    &[1.0, 2.0, 5.0]
                };
                for d in (l0.floor() as i32)..=(l1.ceil() as i32) {
                    for m in steps {
                        let t = m * 10f64.powi(d);
                        if (l0..=l1).contains(&t.log10()) {
                            v.push(t);
                        }
                    }
                }
                v
            }
            Axis::Linear { from, to } => {
                let step = super::timeline::tick_step(to - from);
                let mut t = (from / step).ceil() * step;
                let mut v = Vec::new();
                while t <= to {
                    v.push(t);
                    t += step;
                }
                v
            }
        }
    }
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
    fn a_narrow_spread_gets_a_linear_axis_with_round_ticks() {
        let a = Axis::new(990e6, 1010e6);
        assert!(matches!(a, Axis::Linear { .. }), "{a:?}");
        let t = a.ticks();
        assert!(t.len() >= 3 && t.len() <= 9, "{t:?}");
        assert!(t.contains(&1e9), "{t:?}");
        assert!(a.at(990e6) > 0.0 && a.at(1010e6) < 1.0);
        let a = Axis::new(1e6, 4e9);
        assert!(matches!(a, Axis::Log { .. }), "{a:?}");
        assert!(a.ticks().contains(&1e9), "{:?}", a.ticks());
    }

    #[test]
    fn no_samples_no_chart() {
        assert!(svg(&samples(&[], &[]), None).is_none());
    }
}
