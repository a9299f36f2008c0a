//! `--format json`: schema `tracer.report/v1`, documented in `docs/report-schema.md`.
//! Fields are only ever added within a version. Request targets are redacted unless
//! [`Options::show_query`] says otherwise.

use std::borrow::Cow;

use serde::Serialize;

use super::{rfc3339, CaptureSummary, Options};
use crate::engine::Analysis;
use crate::verdict::{Cause, Verdict};

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
struct JVerdict<'a> {
    cause: &'static str,
    subcause: Option<&'static str>,
    /// `null` for `unexplained`, which claims no cause to be sure of.
    confidence: Option<&'static str>,
    status: Option<u16>,
    time: String,
    downstream: Option<JDown<'a>>,
    upstream: Option<JUp>,
    summary: Cow<'a, str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    request_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<Cow<'a, str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    idempotent: Option<bool>,
    /// `comm[pid]` of the process that owned the upstream socket (kernel probe).
    #[serde(skip_serializing_if = "Option::is_none")]
    process: Option<&'a str>,
    evidence: Vec<JEvidence<'a>>,
}

#[derive(Serialize)]
struct JDown<'a> {
    client: String,
    proxy: String,
    method: Option<&'a str>,
    target: Option<Cow<'a, str>>,
}

#[derive(Serialize)]
struct JUp {
    connection: String,
    exchange_index: Option<u32>,
    idle_ms: Option<f64>,
    fin_to_request_ms: Option<f64>,
    close_order: String,
}

#[derive(Serialize)]
struct JEvidence<'a> {
    time: String,
    connection: &'a str,
    what: Cow<'a, str>,
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

fn verdict(v: &Verdict, opts: Options) -> JVerdict<'_> {
    JVerdict {
        cause: v.cause.name(),
        subcause: v.subcause.map(|s| s.name()),
        confidence: (v.cause != Cause::Unexplained).then(|| v.confidence.name()),
        status: v.status,
        time: rfc3339(v.ts_ns),
        downstream: v.downstream.as_ref().map(|d| JDown {
            client: d.client.to_string(),
            proxy: d.proxy.to_string(),
            method: d.method.as_deref(),
            target: d.target.as_deref().map(|t| opts.target(t)),
        }),
        upstream: v.upstream.as_ref().map(|u| JUp {
            connection: u.connection(),
            exchange_index: u.exchange_index,
            idle_ms: u.idle_ms,
            fin_to_request_ms: u.fin_to_request_ms,
            close_order: u.close_order.clone(),
        }),
        summary: opts.text(&v.summary),
        request_id: v.request_id.as_deref(),
        reason: v.reason.as_deref().map(|r| opts.text(r)),
        idempotent: v.idempotent,
        process: v.process.as_deref(),
        evidence: v
            .evidence
            .iter()
            .map(|e| JEvidence {
                time: rfc3339(e.ts_ns),
                connection: &e.connection,
                what: opts.text(&e.what),
            })
            .collect(),
    }
}

fn report(a: &Analysis, capture: CaptureSummary, opts: Options) -> Report<'_> {
    Report {
        schema: SCHEMA,
        verdicts: a.verdicts.iter().map(|v| verdict(v, opts)).collect(),
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
            .map(|x| JAdvice {
                about: x.about,
                software: x.software.as_deref(),
                text: &x.text,
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
    serde_json::to_value(verdict(v, Options::default())).unwrap_or_default()
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
