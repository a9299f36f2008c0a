//! One verdict's story as an SVG timeline drawn to scale: the client connection, the
//! upstream connection and the kernel's reports as lanes; the upstream connection's idle
//! gap as a bar; each packet or kernel fact the verdict rests on as a mark at its time.
//! When the idle gap dwarfs the race at its end, a second panel shows the end magnified
//! (each panel to its own scale, its axis says which).

use std::fmt::Write;

use super::{duration, esc};
use crate::report::Options;
use crate::verdict::{Fact, Leg, Verdict};

/// Where an event is drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Lane {
    Client,
    Upstream,
    Kernel,
}

impl Lane {
    fn title(self) -> &'static str {
        match self {
            Lane::Client => "client ↔ proxy",
            Lane::Upstream => "proxy ↔ upstream",
            Lane::Kernel => "kernel (proxy's socket)",
        }
    }
}

/// What kind of mark an event gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Mark {
    Syn,
    Request,
    Response { error: bool },
    Fin,
    Rst,
    Kernel,
    Other,
}

impl Mark {
    fn class(self) -> &'static str {
        match self {
            Mark::Syn => "syn",
            Mark::Request => "req",
            Mark::Response { error: true } => "err",
            Mark::Response { error: false } => "res",
            Mark::Fin => "fin",
            Mark::Rst => "rst",
            Mark::Kernel => "krn",
            Mark::Other => "oth",
        }
    }
}

/// One thing drawn.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Event {
    pub ts_ns: i64,
    pub lane: Lane,
    pub mark: Mark,
    /// As the page shows it (redacted), not yet escaped.
    pub label: String,
}

/// The quiet time before the upstream request, as a bar on the upstream lane.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct Idle {
    pub from_ns: i64,
    pub to_ns: i64,
}

/// The lane and mark of a fact seen on a connection of leg `leg`.
fn place(fact: &Fact, leg: Leg, on_downstream: bool) -> (Lane, Mark) {
    let lane = match leg {
        Leg::Client => Lane::Client,
        Leg::Upstream => Lane::Upstream,
        Leg::Unknown if on_downstream => Lane::Client,
        Leg::Unknown => Lane::Upstream,
    };
    let mark = match fact {
        Fact::Syn { .. } | Fact::ConnectAttempt | Fact::SynUnanswered { .. } => Mark::Syn,
        Fact::Request { .. } => Mark::Request,
        Fact::Response { status, .. } => Mark::Response {
            error: *status >= 500 || *status == 499,
        },
        Fact::Fin { .. } | Fact::IdleClose { rst: false, .. } => Mark::Fin,
        Fact::Rst { .. } | Fact::IdleClose { rst: true, .. } | Fact::Refused => Mark::Rst,
        Fact::KernelFinReceived
        | Fact::KernelWriteInCloseWait { .. }
        | Fact::KernelWriteAfterIdle { .. }
        | Fact::KernelReadEof { .. }
        | Fact::KernelReadError { .. }
        | Fact::KernelRstReceived => return (Lane::Kernel, Mark::Kernel),
        Fact::DeadClosed | Fact::CaptureLost { .. } | Fact::Evicted | Fact::EncryptedClientEnds => {
            Mark::Other
        }
    };
    (lane, mark)
}

/// The events of `v` and its upstream connection's idle gap: the quiet time before the
/// proxy's request, or before the upstream's close of an idle connection.
pub(super) fn events(v: &Verdict, opts: Options) -> (Vec<Event>, Option<Idle>) {
    let down = v.downstream.as_ref().map(|d| (d.client, d.proxy));
    let mut out = Vec::new();
    let mut idle = None;
    for e in &v.evidence {
        let on_down = down == Some((e.connection.client, e.connection.server));
        let (lane, mark) = place(&e.fact, e.leg, on_down);
        let gap = match &e.fact {
            Fact::Request {
                fresh: false,
                idle_ms: Some(i),
                ..
            }
            | Fact::IdleClose {
                idle_ms: Some(i), ..
            } if lane == Lane::Upstream => Some((i * 1e6) as i64),
            _ => None,
        };
        if let Some(g) = gap.filter(|&g| g > 0) {
            // The request's gap wins over an idle close's: it is the one that raced.
            if idle.is_none() || matches!(e.fact, Fact::Request { .. }) {
                idle = Some(Idle {
                    from_ns: e.ts_ns - g,
                    to_ns: e.ts_ns,
                });
            }
        }
        let label = e
            .fact
            .map_target(|t| opts.target(t).into_owned())
            .to_string();
        // The lane says it is the kernel's.
        let label = match label.strip_prefix("kernel: ") {
            Some(l) if lane == Lane::Kernel => l.to_owned(),
            _ => label,
        };
        out.push(Event {
            ts_ns: e.ts_ns,
            lane,
            mark,
            label,
        });
    }
    out.sort_by_key(|e| (e.ts_ns, e.lane));
    (out, idle)
}

const WIDTH: f64 = 1040.0;
const LEFT: f64 = 170.0;
const RIGHT: f64 = 30.0;
const ROW: f64 = 15.0;
/// Rows of labels under a lane before they overlap.
const MAX_ROWS: usize = 4;
/// Roughly the width of one character of a label (11 px sans-serif).
const CHAR_W: f64 = 6.9;
const LABEL_CHARS: usize = 52;

/// One panel: the events between `from` and `to` to scale.
struct Panel<'a> {
    title: String,
    from: i64,
    to: i64,
    events: Vec<&'a Event>,
    idle: Option<Idle>,
    /// Events from this time on are magnified in the next panel: marked here, not
    /// labelled.
    magnified_from: Option<i64>,
}

/// The SVG of one verdict's story (one or two panels), or `None` with nothing to draw.
pub(super) fn svg(events: &[Event], idle: Option<Idle>) -> Option<String> {
    let first = events.first()?.ts_ns;
    let last = events.last()?.ts_ns;
    let start = idle.map_or(first, |i| i.from_ns.min(first));
    let mut panels = Vec::new();
    // The race at the end: what happened after the idle gap began.
    let tail: Vec<&Event> = match idle {
        Some(i) => events.iter().filter(|e| e.ts_ns >= i.from_ns).collect(),
        None => events.iter().collect(),
    };
    let tail_from = tail.first().map_or(start, |e| e.ts_ns);
    let whole = (last - start).max(1);
    let tail_span = (last - tail_from).max(1);
    if idle.is_some() && tail.len() >= 2 && whole / tail_span >= 20 {
        panels.push(Panel {
            title: format!("whole story, {}", duration(whole as f64)),
            from: start,
            to: last,
            events: events.iter().collect(),
            idle,
            magnified_from: Some(tail_from),
        });
        panels.push(Panel {
            title: format!("the end magnified: {}", duration(tail_span as f64)),
            from: tail_from,
            to: last,
            events: tail,
            idle: None,
            magnified_from: None,
        });
    } else {
        panels.push(Panel {
            title: format!("{} to scale", duration(whole as f64)),
            from: start,
            to: last,
            events: events.iter().collect(),
            idle,
            magnified_from: None,
        });
    }
    let mut body = String::new();
    let mut y = 0.0;
    for p in &panels {
        y = panel(&mut body, p, y);
    }
    Some(format!(
        "<svg class=\"tl\" viewBox=\"0 0 {WIDTH} {y:.0}\" \
         width=\"{WIDTH}\" height=\"{y:.0}\" role=\"img\">{body}</svg>"
    ))
}

/// Draws `p` from `y` down; returns where the next panel starts.
fn panel(out: &mut String, p: &Panel<'_>, y0: f64) -> f64 {
    // Pad the span so the first and last marks are not on the frame.
    let span = (p.to - p.from).max(1) as f64;
    let pad = span * 0.04;
    let (from, to) = (p.from as f64 - pad, p.to as f64 + pad);
    let plot = WIDTH - LEFT - RIGHT;
    let x = |t: f64| LEFT + (t - from) / (to - from) * plot;
    let _ = write!(
        out,
        "<text class=\"pt\" x=\"4\" y=\"{:.1}\">{}</text>",
        y0 + 14.0,
        esc(&p.title)
    );
    let mut y = y0 + 24.0;
    let lanes: Vec<Lane> = {
        let mut l: Vec<Lane> = p.events.iter().map(|e| e.lane).collect();
        if p.idle.is_some() {
            l.push(Lane::Upstream);
        }
        l.sort();
        l.dedup();
        l
    };
    for lane in lanes {
        let evs: Vec<&&Event> = p.events.iter().filter(|e| e.lane == lane).collect();
        // Labels in rows, each in the first row where it does not overlap the last one.
        let mut rows: Vec<f64> = Vec::new();
        let mut placed = Vec::new();
        let mut tail_noted = false;
        for e in &evs {
            let ex = x(e.ts_ns as f64);
            let label = match p.magnified_from {
                Some(t) if e.ts_ns >= t => {
                    if tail_noted {
                        placed.push((ex, ex, usize::MAX, String::new(), e.mark));
                        continue;
                    }
                    tail_noted = true;
                    "magnified below".to_owned()
                }
                _ => short(&e.label),
            };
            let w = label.chars().count() as f64 * CHAR_W;
            let lx = ex.min(WIDTH - 4.0 - w).max(LEFT);
            let row = rows
                .iter()
                .position(|&end| lx > end + 6.0)
                .unwrap_or_else(|| {
                    if rows.len() < MAX_ROWS {
                        rows.push(f64::MIN);
                        rows.len() - 1
                    } else {
                        (0..rows.len())
                            .min_by(|&a, &b| rows[a].total_cmp(&rows[b]))
                            .unwrap_or(0)
                    }
                });
            rows[row] = lx + w;
            placed.push((ex, lx, row, label, e.mark));
        }
        let line_y = y + 14.0;
        let height = 28.0 + rows.len().max(1) as f64 * ROW;
        let _ = write!(
            out,
            "<rect class=\"lane\" x=\"{LEFT}\" y=\"{y:.1}\" width=\"{plot:.1}\" height=\"{:.1}\"/>\
             <text class=\"ln\" x=\"4\" y=\"{:.1}\">{}</text>\
             <line class=\"axis\" x1=\"{LEFT}\" x2=\"{:.1}\" y1=\"{line_y:.1}\" y2=\"{line_y:.1}\"/>",
            height - 4.0,
            line_y + 4.0,
            esc(lane.title()),
            LEFT + plot,
        );
        if lane == Lane::Upstream {
            if let Some(i) = p.idle {
                let (a, b) = (x(i.from_ns as f64), x(i.to_ns as f64));
                let _ = write!(
                    out,
                    "<rect class=\"idle\" x=\"{a:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"10\"/>\
                     <text class=\"il\" x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">idle {}</text>",
                    line_y - 5.0,
                    (b - a).max(1.0),
                    (a + b) / 2.0,
                    line_y - 8.0,
                    esc(&duration((i.to_ns - i.from_ns) as f64)),
                );
            }
        }
        for (ex, lx, row, label, mark) in placed {
            if row == usize::MAX {
                let _ = write!(
                    out,
                    "<circle class=\"m {}\" cx=\"{ex:.1}\" cy=\"{line_y:.1}\" r=\"5\"/>",
                    mark.class()
                );
                continue;
            }
            let ly = line_y + 20.0 + row as f64 * ROW;
            let _ = write!(
                out,
                "<line class=\"lead\" x1=\"{ex:.1}\" x2=\"{ex:.1}\" y1=\"{line_y:.1}\" y2=\"{:.1}\"/>\
                 <circle class=\"m {}\" cx=\"{ex:.1}\" cy=\"{line_y:.1}\" r=\"5\"/>\
                 <text class=\"lb {}\" x=\"{lx:.1}\" y=\"{ly:.1}\">{}</text>",
                ly - 10.0,
                mark.class(),
                mark.class(),
                esc(&label)
            );
        }
        y += height;
    }
    // The time axis: ticks at a round step, times from the panel's start.
    let ticks = tick_step(span);
    let axis_y = y + 4.0;
    let _ = write!(
        out,
        "<line class=\"axis\" x1=\"{LEFT}\" x2=\"{:.1}\" y1=\"{axis_y:.1}\" y2=\"{axis_y:.1}\"/>",
        LEFT + plot
    );
    let mut t = 0.0;
    while t <= span + pad {
        let tx = x(p.from as f64 + t);
        let _ = write!(
            out,
            "<line class=\"axis\" x1=\"{tx:.1}\" x2=\"{tx:.1}\" y1=\"{axis_y:.1}\" y2=\"{:.1}\"/>\
             <text class=\"tk\" x=\"{tx:.1}\" y=\"{:.1}\" text-anchor=\"middle\">+{}</text>",
            axis_y + 4.0,
            axis_y + 15.0,
            esc(&duration(t))
        );
        t += ticks;
    }
    axis_y + 30.0
}

/// A label cut to fit its row.
fn short(s: &str) -> String {
    if s.chars().count() <= LABEL_CHARS {
        s.to_owned()
    } else {
        let mut c: String = s.chars().take(LABEL_CHARS - 1).collect();
        c.push('…');
        c
    }
}

/// A round step (1, 2 or 5 times a power of ten) giving 4 to 10 ticks over `span`.
pub(super) fn tick_step(span: f64) -> f64 {
    let raw = span / 6.0;
    let mag = 10f64.powf(raw.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * mag)
        .find(|s| span / s <= 8.0)
        .unwrap_or(10.0 * mag)
        .max(1.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(ts_ns: i64, lane: Lane, mark: Mark, label: &str) -> Event {
        Event {
            ts_ns,
            lane,
            mark,
            label: label.into(),
        }
    }

    #[test]
    fn facts_go_to_their_lanes_and_the_request_gives_the_idle_gap() {
        use crate::verdict::{
            Cause, Confidence, Conn, Downstream, Evidence, Party, Upstream, Verdict,
        };
        let down = Conn {
            client: "10.0.0.1:5000".parse().unwrap(),
            server: "10.0.0.2:80".parse().unwrap(),
        };
        let up = Conn {
            client: "10.0.0.2:4000".parse().unwrap(),
            server: "10.0.0.3:8080".parse().unwrap(),
        };
        let t = 1_000_000_000;
        let v = Verdict {
            cause: Cause::KeepaliveRace,
            subcause: None,
            confidence: Confidence::Proven,
            status: Some(502),
            ts_ns: t + 300,
            downstream: Some(Downstream {
                client: down.client,
                proxy: down.server,
                method: Some("GET".into()),
                target: Some("/a?token=secret".into()),
            }),
            upstream: Some(Upstream {
                proxy: up.client,
                server: up.server,
                exchange_index: Some(2),
                seen_from_start: true,
                idle_ms: Some(4000.0),
                fin_to_request_ms: None,
                close_order: String::new(),
            }),
            request_id: None,
            idempotent: None,
            summary: String::new(),
            reason: None,
            evidence: vec![
                Evidence::new(
                    t + 100,
                    up,
                    Leg::Upstream,
                    Fact::Fin {
                        by: Party::Upstream,
                    },
                ),
                Evidence::new(
                    t + 200,
                    up,
                    Leg::Upstream,
                    Fact::Request {
                        by: Party::Proxy,
                        method: "GET".into(),
                        target: "/a?token=secret".into(),
                        exchange: 2,
                        fresh: false,
                        idle_ms: Some(4000.0),
                    },
                ),
                Evidence::new(
                    t + 250,
                    up,
                    Leg::Upstream,
                    Fact::KernelWriteInCloseWait {
                        process: Some("nginx[7]".into()),
                        idle_ms: 4000.0,
                    },
                ),
                Evidence::new(
                    t + 300,
                    down,
                    Leg::Client,
                    Fact::Response {
                        by: Party::Proxy,
                        status: 502,
                    },
                ),
            ],
            process: None,
            link_guessed: false,
        };
        let (evs, idle) = events(&v, Options::default());
        let got: Vec<(Lane, Mark)> = evs.iter().map(|e| (e.lane, e.mark)).collect();
        assert_eq!(
            got,
            [
                (Lane::Upstream, Mark::Fin),
                (Lane::Upstream, Mark::Request),
                (Lane::Kernel, Mark::Kernel),
                (Lane::Client, Mark::Response { error: true }),
            ]
        );
        assert_eq!(
            idle,
            Some(Idle {
                from_ns: t + 200 - 4_000_000_000,
                to_ns: t + 200
            })
        );
        // Labels are redacted as the other reports are.
        assert!(
            evs[1].label.contains("token=<redacted>"),
            "{}",
            evs[1].label
        );
        assert!(!evs.iter().any(|e| e.label.contains("secret")));
    }

    #[test]
    fn tick_steps_are_round() {
        assert_eq!(tick_step(1_000_000.0), 200_000.0);
        assert_eq!(tick_step(4_000_000_000.0), 500_000_000.0);
        assert_eq!(tick_step(3.0), 1.0);
    }

    #[test]
    fn a_long_idle_gap_gets_a_magnified_end() {
        let s = 1_000_000_000_000;
        let evs = vec![
            ev(
                s,
                Lane::Upstream,
                Mark::Request,
                "proxy sends GET / (exchange #1)",
            ),
            ev(s + 4_000_000_000, Lane::Upstream, Mark::Fin, "upstream FIN"),
            ev(
                s + 4_000_050_000,
                Lane::Upstream,
                Mark::Request,
                "proxy sends GET /",
            ),
            ev(
                s + 4_000_100_000,
                Lane::Client,
                Mark::Response { error: true },
                "proxy answers 502",
            ),
        ];
        let idle = Idle {
            from_ns: s + 1_000_000,
            to_ns: s + 4_000_050_000,
        };
        let svg = svg(&evs, Some(idle)).unwrap();
        assert!(svg.contains("the end magnified"), "{svg}");
        assert!(svg.contains("idle 4.00 s"), "{svg}");
        assert_eq!(svg.matches("class=\"m err\"").count(), 2, "{svg}");
        // Without the gap, one panel.
        let svg = super::svg(&evs[1..], None).unwrap();
        assert!(!svg.contains("magnified"), "{svg}");
    }
}
