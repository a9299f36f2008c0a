//! `--format json`: schema `tracer.report/v1`, documented in `docs/report-schema.md`.
//! Fields are only ever added within a version. Request targets are redacted unless
//! [`Options::show_query`] says otherwise.

use serde::Serialize;

use super::{CaptureSummary, Options};
use crate::engine::Analysis;
use crate::verdict::{Confidence, Verdict};

/// The schema name and version.
pub const SCHEMA: &str = "tracer.report/v1";

#[derive(Serialize)]
struct Report<'a> {
    schema: &'static str,
    verdicts: Vec<JVerdict<'a>>,
    timeouts: Vec<JTimeout>,
    advice: Vec<JAdvice<'a>>,
    capture: JCapture,
    #[serde(skip_serializing_if = "Option::is_none")]
    client_side: Option<JClientSide>,
}

/// Present when the proxy's client side was encrypted (unreadable) in the capture.
#[derive(Serialize)]
struct JClientSide {
    encrypted: bool,
    listeners: Vec<String>,
    connections: u64,
    errors_from_upstream_leg: usize,
    linked_by_timing: u64,
    summary: String,
}

#[derive(Serialize)]
struct JTimeout {
    upstream: String,
    upstream_idle_close_ms: Option<f64>,
    upstream_samples: usize,
    proxy_idle_close_ms: Option<f64>,
    proxy_samples: usize,
    closes_after_every_response: bool,
    upstream_shorter: bool,
}

#[derive(Serialize)]
struct JAdvice<'a> {
    about: &'static str,
    software: Option<&'a str>,
    text: &'a str,
    /// For the proxy or upstream recognised, or for none in particular (what the text
    /// report prints without `--all`).
    shown: bool,
}

#[derive(Serialize)]
struct JCapture {
    packets: u64,
    dropped_or_missing: u64,
    evicted_connections: u64,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    sparse: bool,
    /// Which side of the proxy the capture lacks, when it holds one side only.
    #[serde(skip_serializing_if = "Option::is_none")]
    missing_side: Option<&'static str>,
}

/// A verdict as the report holds it: [`Verdict`]'s own serialization, its request targets
/// redacted as `opts` say, with the `confidence` it claims (`null` for `unexplained`).
struct JVerdict<'a> {
    v: &'a Verdict,
    opts: Options,
}

impl Serialize for JVerdict<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct Out<'a> {
            confidence: Option<Confidence>,
            #[serde(flatten)]
            verdict: &'a Verdict,
        }
        let confidence = self.v.claimed_confidence();
        if self.opts.show_query {
            return Out {
                confidence,
                verdict: self.v,
            }
            .serialize(s);
        }
        // One verdict at a time is copied to hide its targets, never the whole report.
        let redacted = redact(self.v, self.opts);
        Out {
            confidence,
            verdict: &redacted,
        }
        .serialize(s)
    }
}

/// `v` with every request target in it shown as `opts` say.
fn redact(v: &Verdict, opts: Options) -> Verdict {
    let mut r = v.clone();
    if let Some(d) = &mut r.downstream {
        d.target = d.target.as_deref().map(|t| opts.target(t).into_owned());
    }
    r.summary = opts.text(&v.summary).into_owned();
    r.reason = v.reason.as_deref().map(|t| opts.text(t).into_owned());
    for e in &mut r.evidence {
        e.fact = e.fact.map_target(|t| opts.target(t).into_owned());
    }
    r
}

fn report(a: &Analysis, capture: CaptureSummary, opts: Options) -> Report<'_> {
    Report {
        schema: SCHEMA,
        verdicts: a.verdicts.iter().map(|v| JVerdict { v, opts }).collect(),
        timeouts: a
            .timeouts
            .iter()
            .map(|t| JTimeout {
                upstream: t.upstream.to_string(),
                upstream_idle_close_ms: t.upstream_idle_close_ms,
                upstream_samples: t.upstream_samples,
                proxy_idle_close_ms: t.proxy_idle_close_ms,
                proxy_samples: t.proxy_samples,
                closes_after_every_response: t.closes_after_every_response,
                upstream_shorter: t.upstream_shorter,
            })
            .collect(),
        advice: a
            .advice
            .iter()
            .filter(|x| x.in_json)
            .map(|x| JAdvice {
                about: x.about,
                software: x.software.as_deref(),
                text: &x.text,
                shown: x.shown,
            })
            .collect(),
        capture: JCapture {
            packets: capture.packets,
            dropped_or_missing: capture.dropped_or_missing,
            evicted_connections: a.flow.evicted,
            sparse: capture.sparse,
            missing_side: capture.one_side.map(|o| o.missing.name()),
        },
        client_side: a.encrypted.as_ref().map(|e| JClientSide {
            encrypted: true,
            listeners: e.listeners.iter().map(ToString::to_string).collect(),
            connections: e.connections,
            errors_from_upstream_leg: e.from_upstream_leg,
            linked_by_timing: e.linked,
            summary: e.describe(),
        }),
    }
}

/// One verdict as the report's `verdicts` array holds it (query values redacted), as a
/// JSON value (for a stream of JSON lines, where the caller adds what the report's
/// envelope would say).
#[must_use]
pub fn verdict_value(v: &Verdict) -> serde_json::Value {
    serde_json::to_value(JVerdict {
        v,
        opts: Options::default(),
    })
    .unwrap_or_default()
}

/// Writes the report as pretty JSON to `w` as it is serialized (no copy of it in memory).
///
/// # Errors
/// When writing fails.
pub fn write(
    a: &Analysis,
    capture: CaptureSummary,
    opts: Options,
    w: impl std::io::Write,
) -> std::io::Result<()> {
    serde_json::to_writer_pretty(w, &report(a, capture, opts)).map_err(std::io::Error::from)
}

/// The report as pretty JSON text, query values redacted: see [`render_with`].
#[must_use]
pub fn render(a: &Analysis, capture: CaptureSummary) -> String {
    render_with(a, capture, Options::default())
}

/// The report as pretty JSON text, serialized straight from the analysis (no value tree:
/// a capture with many verdicts does not need twice their size in memory).
#[must_use]
pub fn render_with(a: &Analysis, capture: CaptureSummary, opts: Options) -> String {
    serde_json::to_string_pretty(&report(a, capture, opts)).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use serde_json::Value;

    use super::*;
    use crate::verdict::{Cause, Conn, Downstream, Evidence, Fact, Leg, Party, Subcause, Upstream};

    const CLIENT: &str = "198.18.1.1:38116";
    const PROXY: &str = "198.18.1.2:8080";
    const PROXY_OUT: &str = "198.18.2.1:44122";
    const UPSTREAM: &str = "198.18.2.2:9000";

    fn sample() -> Verdict {
        let up = Conn {
            client: PROXY_OUT.parse().unwrap(),
            server: UPSTREAM.parse().unwrap(),
        };
        let down = Conn {
            client: CLIENT.parse().unwrap(),
            server: PROXY.parse().unwrap(),
        };
        Verdict {
            cause: Cause::KeepaliveRace,
            subcause: Some(Subcause::FinCrossed),
            confidence: Confidence::Proven,
            status: Some(502),
            ts_ns: 1_795_956_586_420_490_465,
            downstream: Some(Downstream {
                client: down.client,
                proxy: down.server,
                method: Some("POST".into()),
                target: Some("/login?token=s3cret".into()),
            }),
            upstream: Some(Upstream {
                proxy: up.client,
                server: up.server,
                exchange_index: Some(3),
                seen_from_start: true,
                idle_ms: Some(1999.5),
                fin_to_request_ms: Some(0.012),
                close_order: "upstream FIN, proxy FIN".into(),
            }),
            request_id: Some("2".into()),
            idempotent: Some(false),
            summary: "POST /login?token=s3cret crossed the upstream's FIN".into(),
            reason: None,
            evidence: vec![
                Evidence::new(
                    1_000,
                    up,
                    Leg::Upstream,
                    Fact::Fin {
                        by: Party::Upstream,
                    },
                ),
                Evidence::new(
                    2_000,
                    up,
                    Leg::Upstream,
                    Fact::Request {
                        by: Party::Proxy,
                        method: "POST".into(),
                        target: "/login?token=s3cret".into(),
                        exchange: 3,
                        fresh: false,
                        idle_ms: Some(1999.5),
                    },
                ),
            ],
            process: Some("caddy[42]".into()),
            link_guessed: false,
        }
    }

    fn keys(v: &Value) -> BTreeSet<&str> {
        v.as_object().unwrap().keys().map(String::as_str).collect()
    }

    fn set<'a>(k: &[&'a str]) -> BTreeSet<&'a str> {
        k.iter().copied().collect()
    }

    /// `docs/report-schema.md`, "Verdict": the fields consumers read, by name and value.
    #[test]
    fn a_verdict_keeps_the_documented_schema() {
        let v = verdict_value(&sample());
        assert_eq!(
            keys(&v),
            set(&[
                "cause",
                "subcause",
                "confidence",
                "status",
                "time",
                "downstream",
                "upstream",
                "summary",
                "request_id",
                "idempotent",
                "process",
                "evidence",
                "link_guessed",
            ])
        );
        assert_eq!(v["cause"], "keepalive_race");
        assert_eq!(v["subcause"], "fin_crossed");
        assert_eq!(v["confidence"], "proven");
        assert_eq!(v["status"], 502);
        assert_eq!(v["time"], "2026-11-29T12:49:46.420490Z");
        assert_eq!(
            v["downstream"],
            serde_json::json!({
                "client": CLIENT, "proxy": PROXY, "method": "POST",
                "target": "/login?token=<redacted>",
            })
        );
        assert_eq!(
            v["upstream"],
            serde_json::json!({
                "connection": format!("{PROXY_OUT}->{UPSTREAM}"),
                "proxy": PROXY_OUT, "server": UPSTREAM,
                "exchange_index": 3, "seen_from_start": true, "idle_ms": 1999.5,
                "fin_to_request_ms": 0.012, "close_order": "upstream FIN, proxy FIN",
            })
        );
        assert_eq!(
            v["summary"],
            "POST /login?token=<redacted> crossed the upstream's FIN"
        );
        assert_eq!(v["request_id"], "2");
        assert_eq!(v["idempotent"], false);
        assert_eq!(v["process"], "caddy[42]");
        assert_eq!(v["link_guessed"], false);
    }

    /// Each evidence object: the sentence for humans (`what`) and the fact as data.
    #[test]
    fn evidence_keeps_its_sentence_and_gains_its_data() {
        let v = verdict_value(&sample());
        let ev = v["evidence"].as_array().unwrap();
        assert_eq!(
            keys(&ev[0]),
            set(&["time", "connection", "what", "leg", "kind", "by"])
        );
        assert_eq!(ev[0]["time"], "1970-01-01T00:00:00.000001Z");
        assert_eq!(ev[0]["connection"], format!("{PROXY_OUT}->{UPSTREAM}"));
        assert_eq!(ev[0]["what"], "upstream FIN");
        assert_eq!(ev[0]["kind"], "fin");
        assert_eq!(ev[0]["by"], "upstream");
        assert_eq!(ev[0]["leg"], "upstream");
        assert_eq!(ev[1]["kind"], "request");
        assert_eq!(
            ev[1]["what"],
            "proxy sends POST /login?token=<redacted> (exchange #3, reused, idle 1999.5 ms)"
        );
        assert_eq!(ev[1]["target"], "/login?token=<redacted>");
        assert_eq!(ev[1]["exchange"], 3);
        assert_eq!(ev[1]["fresh"], false);
    }

    #[test]
    fn unexplained_claims_no_confidence_and_optional_fields_stay_out() {
        let mut s = sample();
        s.cause = Cause::Unexplained;
        s.subcause = None;
        s.confidence = Confidence::Probable;
        s.request_id = None;
        s.idempotent = None;
        s.process = None;
        s.reason = Some("packets missing".into());
        s.downstream = None;
        s.upstream = None;
        let v = verdict_value(&s);
        assert_eq!(v["confidence"], Value::Null);
        assert_eq!(v["subcause"], Value::Null);
        assert_eq!(v["downstream"], Value::Null);
        assert_eq!(v["upstream"], Value::Null);
        assert_eq!(v["reason"], "packets missing");
        for absent in ["request_id", "idempotent", "process"] {
            assert!(v.get(absent).is_none(), "{absent} in {v}");
        }
    }

    #[test]
    fn show_query_keeps_targets_as_captured() {
        let s = sample();
        let v = serde_json::to_value(JVerdict {
            v: &s,
            opts: Options {
                show_query: true,
                ..Options::default()
            },
        })
        .unwrap();
        assert_eq!(v["downstream"]["target"], "/login?token=s3cret");
        assert_eq!(v["evidence"][1]["target"], "/login?token=s3cret");
        assert!(v["evidence"][1]["what"]
            .as_str()
            .unwrap()
            .contains("token=s3cret"));
    }
}
