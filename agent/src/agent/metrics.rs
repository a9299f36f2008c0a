//! The agent's Prometheus metrics. Names and labels are an interface: the dashboards and
//! alert rules in `dashboards/` rely on them (`docs/agent.md` lists them).
//!
//! Labels stay bounded: `proxy` is the proxy's process name, `namespace` and `pod` its
//! Kubernetes pod where there is one (empty otherwise), `upstream` an `addr:port` of which
//! at most [`Metrics::new`]'s `max_upstreams` distinct values are kept (the rest are
//! [`OVERFLOW`]). No paths, client addresses or request ids.

use std::collections::HashSet;
use std::sync::Mutex;

use prometheus::{
    Encoder, GaugeVec, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

use crate::verdict::{Confidence, Verdict};

/// The `upstream` label of every upstream past the cap.
pub const OVERFLOW: &str = "other";

/// Idle-time buckets, seconds: from "closes right after the response" (uwsgi, 0.5 ms) to
/// the common keep-alive timeouts (gunicorn 2 s, Node and Apache 5 s, nginx 60 s, cloud
/// load balancers 60-350 s), dense around them so that the two timeouts can be compared.
const IDLE_BUCKETS: &[f64] = &[
    0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0, 10.0,
    15.0, 20.0, 30.0, 45.0, 60.0, 75.0, 90.0, 120.0, 300.0, 600.0,
];

/// Who the metrics of one followed proxy are about.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct ProxyLabels {
    /// The proxy's process name.
    pub proxy: String,
    /// Kubernetes namespace and pod, when the proxy runs in one.
    pub namespace: String,
    pub pod: String,
}

/// Every metric the agent exports, in its own registry.
pub struct Metrics {
    registry: Registry,
    verdicts: IntCounterVec,
    responses: IntCounterVec,
    upstream_idle_close: HistogramVec,
    proxy_reuse_idle: HistogramVec,
    upstream_keepalive_timeout: GaugeVec,
    proxy_idle_timeout: GaugeVec,
    engine_entries: IntGaugeVec,
    pub events_lost: IntCounter,
    pub packets_dropped: IntCounter,
    pub connections_tracked: IntGauge,
    pub connections_evicted: IntCounter,
    pub proxies_followed: IntGauge,
    pub sessions_failed: IntCounter,
    /// Read when the metrics are rendered.
    heap_bytes: IntGauge,
    upstreams: Mutex<HashSet<String>>,
    max_upstreams: usize,
}

/// The values of label `last` of the series of `c` that belong to proxy `p`.
fn last_label_of(c: &dyn prometheus::core::Collector, p: &ProxyLabels, last: &str) -> Vec<String> {
    let mut out = Vec::new();
    for family in c.collect() {
        for m in family.get_metric() {
            let value = |name: &str| {
                m.get_label()
                    .iter()
                    .find(|l| l.name() == name)
                    .map(|l| l.value())
            };
            if value("proxy") == Some(p.proxy.as_str())
                && value("namespace") == Some(p.namespace.as_str())
                && value("pod") == Some(p.pod.as_str())
            {
                if let Some(v) = value(last) {
                    out.push(v.to_owned());
                }
            }
        }
    }
    out
}

/// A metric could not be made or registered (a programming error: names are fixed).
#[derive(Debug, thiserror::Error)]
#[error("cannot register the agent's metrics: {0}")]
pub struct MetricsError(#[from] prometheus::Error);

fn counter_vec(
    r: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
) -> Result<IntCounterVec, MetricsError> {
    let c = IntCounterVec::new(Opts::new(name, help), labels)?;
    r.register(Box::new(c.clone()))?;
    Ok(c)
}

fn histogram_vec(
    r: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
) -> Result<HistogramVec, MetricsError> {
    let h = HistogramVec::new(
        HistogramOpts::new(name, help).buckets(IDLE_BUCKETS.to_vec()),
        labels,
    )?;
    r.register(Box::new(h.clone()))?;
    Ok(h)
}

fn gauge_vec(
    r: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
) -> Result<GaugeVec, MetricsError> {
    let g = GaugeVec::new(Opts::new(name, help), labels)?;
    r.register(Box::new(g.clone()))?;
    Ok(g)
}

fn counter(r: &Registry, name: &str, help: &str) -> Result<IntCounter, MetricsError> {
    let c = IntCounter::new(name, help)?;
    r.register(Box::new(c.clone()))?;
    Ok(c)
}

fn gauge(r: &Registry, name: &str, help: &str) -> Result<IntGauge, MetricsError> {
    let g = IntGauge::new(name, help)?;
    r.register(Box::new(g.clone()))?;
    Ok(g)
}

const PROXY: [&str; 3] = ["proxy", "namespace", "pod"];

impl Metrics {
    /// Every metric, registered; `max_upstreams` caps the distinct `upstream` values.
    ///
    /// # Errors
    /// Only if a metric's definition is invalid.
    pub fn new(max_upstreams: usize) -> Result<Self, MetricsError> {
        let r = Registry::new();
        let with = |extra: &[&'static str]| -> Vec<&'static str> {
            PROXY.iter().copied().chain(extra.iter().copied()).collect()
        };
        let verdicts = counter_vec(
            &r,
            "tracer_verdicts_total",
            "Client-facing errors (or failed upstream attempts where the client side is not \
             visible), by cause.",
            &with(&["upstream", "status", "cause", "subcause", "confidence"]),
        )?;
        let responses = counter_vec(
            &r,
            "tracer_responses_total",
            "HTTP responses seen, by status class: upstream=\"\" for the proxy's responses to \
             its clients, an upstream's address for that upstream's responses to the proxy.",
            &with(&["upstream", "status_class"]),
        )?;
        let upstream_idle_close = histogram_vec(
            &r,
            "tracer_upstream_idle_close_seconds",
            "Idle time after which an upstream closed a pooled connection.",
            &with(&["upstream"]),
        )?;
        let proxy_reuse_idle = histogram_vec(
            &r,
            "tracer_proxy_reuse_idle_seconds",
            "Idle time after which the proxy reused a pooled upstream connection.",
            &with(&["upstream"]),
        )?;
        let engine_entries = IntGaugeVec::new(
            Opts::new(
                "tracer_engine_entries",
                "Entries in each of the engine's tables, per followed proxy (self-monitoring: \
                 they follow the open connections, not the traffic seen).",
            ),
            &with(&["table"]),
        )?;
        r.register(Box::new(engine_entries.clone()))?;
        let upstream_keepalive_timeout = gauge_vec(
            &r,
            "tracer_upstream_keepalive_timeout_seconds",
            "The upstream's keep-alive timeout inferred from its idle closes (0: it closes \
             after every response).",
            &with(&["upstream"]),
        )?;
        let proxy_idle_timeout = gauge_vec(
            &r,
            "tracer_proxy_idle_timeout_seconds",
            "The proxy's idle timeout for pooled upstream connections, inferred from its \
             idle closes (a lower bound: the longest idle close seen).",
            &with(&["upstream"]),
        )?;
        let m = Metrics {
            verdicts,
            responses,
            upstream_idle_close,
            proxy_reuse_idle,
            upstream_keepalive_timeout,
            proxy_idle_timeout,
            engine_entries,
            events_lost: counter(
                &r,
                "tracer_events_lost_total",
                "Kernel probe events lost because the ring buffer was full.",
            )?,
            packets_dropped: counter(
                &r,
                "tracer_packets_dropped_total",
                "Packets dropped by the kernel, the interface or a slow engine.",
            )?,
            connections_tracked: gauge(
                &r,
                "tracer_connections_tracked",
                "TCP connections the engine tracks now.",
            )?,
            connections_evicted: counter(
                &r,
                "tracer_connections_evicted_total",
                "Connections dropped from the bounded connection table before they ended.",
            )?,
            proxies_followed: gauge(
                &r,
                "tracer_proxies_followed",
                "Proxies (network namespaces with a proxy process) followed now.",
            )?,
            sessions_failed: counter(
                &r,
                "tracer_sessions_failed_total",
                "Attempts to follow a proxy that failed to start or stopped on an error.",
            )?,
            heap_bytes: gauge(
                &r,
                "tracer_heap_bytes",
                "Bytes the agent's allocator holds for live allocations (what a leak would \
                 grow; the resident memory also counts freed memory not yet given back).",
            )?,
            upstreams: Mutex::new(HashSet::new()),
            max_upstreams,
            registry: r,
        };
        let info = IntGaugeVec::new(
            Opts::new("tracer_build_info", "The agent's version (value 1)."),
            &["version"],
        )?;
        m.registry.register(Box::new(info.clone()))?;
        info.with_label_values(&[env!("CARGO_PKG_VERSION")]).set(1);
        #[cfg(target_os = "linux")]
        m.registry.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ))?;
        Ok(m)
    }

    /// The `upstream` label for `addr`: itself while under the cap, [`OVERFLOW`] after.
    #[must_use]
    pub fn upstream_label(&self, addr: &str) -> String {
        let Ok(mut seen) = self.upstreams.lock() else {
            return OVERFLOW.to_owned();
        };
        if seen.contains(addr) {
            return addr.to_owned();
        }
        if seen.len() < self.max_upstreams {
            seen.insert(addr.to_owned());
            return addr.to_owned();
        }
        OVERFLOW.to_owned()
    }

    /// Counts one verdict of the proxy `p`.
    pub fn verdict(&self, p: &ProxyLabels, v: &Verdict) {
        let upstream = v
            .upstream
            .as_ref()
            .map_or_else(String::new, |u| self.upstream_label(&u.server.to_string()));
        let status = v
            .status
            .map_or_else(|| "none".to_owned(), |s| s.to_string());
        self.verdicts
            .with_label_values(&[
                p.proxy.as_str(),
                &p.namespace,
                &p.pod,
                &upstream,
                &status,
                v.cause.name(),
                v.subcause.map_or("", |s| s.name()),
                // `unexplained` claims no confidence, as in the report
                v.claimed_confidence().map_or("", Confidence::name),
            ])
            .inc();
    }

    /// Adds `n` responses of status class `class` (1-5) sent by `upstream` (`None`: the
    /// proxy's own responses to its clients).
    pub fn responses(&self, p: &ProxyLabels, upstream: Option<&str>, class: u8, n: u64) {
        let upstream = upstream.map_or_else(String::new, |u| self.upstream_label(u));
        let class = format!("{class}xx");
        self.responses
            .with_label_values(&[p.proxy.as_str(), &p.namespace, &p.pod, &upstream, &class])
            .inc_by(n);
    }

    /// One idle close of a pooled connection by `upstream`.
    pub fn upstream_idle_close(&self, p: &ProxyLabels, upstream: &str, idle_s: f64) {
        let upstream = self.upstream_label(upstream);
        self.upstream_idle_close
            .with_label_values(&[p.proxy.as_str(), &p.namespace, &p.pod, &upstream])
            .observe(idle_s);
    }

    /// One reuse by the proxy of a pooled connection to `upstream` after `idle_s` idle.
    pub fn proxy_reuse_idle(&self, p: &ProxyLabels, upstream: &str, idle_s: f64) {
        let upstream = self.upstream_label(upstream);
        self.proxy_reuse_idle
            .with_label_values(&[p.proxy.as_str(), &p.namespace, &p.pod, &upstream])
            .observe(idle_s);
    }

    /// The inferred timeouts of `upstream` (seconds; `None` leaves a gauge as it is).
    pub fn timeouts(
        &self,
        p: &ProxyLabels,
        upstream: &str,
        upstream_keepalive_s: Option<f64>,
        proxy_idle_s: Option<f64>,
    ) {
        let upstream = self.upstream_label(upstream);
        let labels = [p.proxy.as_str(), &p.namespace, &p.pod, &upstream];
        if let Some(s) = upstream_keepalive_s {
            self.upstream_keepalive_timeout
                .with_label_values(&labels)
                .set(s);
        }
        if let Some(s) = proxy_idle_s {
            self.proxy_idle_timeout.with_label_values(&labels).set(s);
        }
    }

    /// The sizes of a session's engine tables.
    pub fn engine_tables(&self, p: &ProxyLabels, tables: &[(&'static str, usize)]) {
        for &(table, n) in tables {
            self.engine_entries
                .with_label_values(&[p.proxy.as_str(), &p.namespace, &p.pod, table])
                .set(i64::try_from(n).unwrap_or(i64::MAX));
        }
    }

    /// Removes the gauges of a proxy whose session ended — its inferred timeouts and its
    /// engine's table sizes: they describe a running proxy, and a series left behind would
    /// show a proxy that is gone (counters and histograms stay, as counters do).
    pub fn forget_timeouts(&self, p: &ProxyLabels) {
        for g in [&self.upstream_keepalive_timeout, &self.proxy_idle_timeout] {
            for upstream in last_label_of(g, p, "upstream") {
                let _ = g.remove_label_values(&[&p.proxy, &p.namespace, &p.pod, &upstream]);
            }
        }
        let g = &self.engine_entries;
        for table in last_label_of(g, p, "table") {
            let _ = g.remove_label_values(&[&p.proxy, &p.namespace, &p.pod, &table]);
        }
    }

    /// The text exposition format (what `/metrics` serves).
    #[must_use]
    pub fn render(&self) -> String {
        if let Some(b) = super::heap::in_use() {
            self.heap_bytes.set(i64::try_from(b).unwrap_or(i64::MAX));
        }
        let mut buf = Vec::new();
        // Encoding into a Vec cannot fail for want of space; a metric that cannot encode
        // is left out rather than failing the scrape.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        String::from_utf8(buf).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::verdict::{Cause, Subcause, Upstream};

    fn race(server: &str) -> Verdict {
        Verdict {
            cause: Cause::KeepaliveRace,
            subcause: Some(Subcause::FinCrossed),
            confidence: Confidence::Proven,
            status: Some(502),
            ts_ns: 0,
            downstream: None,
            upstream: Some(Upstream {
                proxy: "10.0.0.1:40000".parse().unwrap(),
                server: server.parse().unwrap(),
                exchange_index: Some(3),
                seen_from_start: false,
                idle_ms: Some(1.0),
                fin_to_request_ms: None,
                close_order: String::new(),
            }),
            request_id: Some("rid-4711-x".into()),
            idempotent: Some(false),
            summary: String::new(),
            reason: None,
            evidence: Vec::new(),
            process: None,
            link_guessed: false,
        }
    }

    fn proxy() -> ProxyLabels {
        ProxyLabels {
            proxy: "caddy".into(),
            ..ProxyLabels::default()
        }
    }

    #[test]
    fn a_verdict_is_counted_with_its_labels_and_no_request_id() {
        let m = Metrics::new(8).unwrap();
        m.verdict(&proxy(), &race("10.0.0.3:9000"));
        m.verdict(&proxy(), &race("10.0.0.3:9000"));
        let text = m.render();
        let line = text
            .lines()
            .find(|l| l.starts_with("tracer_verdicts_total{"))
            .expect("the verdict counter is exported");
        for label in [
            "proxy=\"caddy\"",
            "upstream=\"10.0.0.3:9000\"",
            "status=\"502\"",
            "cause=\"keepalive_race\"",
            "subcause=\"fin_crossed\"",
            "confidence=\"proven\"",
        ] {
            assert!(line.contains(label), "{label} missing in {line}");
        }
        assert!(line.ends_with(" 2"), "{line}");
        assert!(!text.contains("rid-4711-x"), "no request id in a label");
        assert!(text.contains("tracer_build_info{version="));
    }

    #[test]
    fn upstream_labels_are_capped() {
        let m = Metrics::new(2).unwrap();
        assert_eq!(m.upstream_label("a:1"), "a:1");
        assert_eq!(m.upstream_label("b:1"), "b:1");
        assert_eq!(m.upstream_label("c:1"), OVERFLOW);
        assert_eq!(
            m.upstream_label("a:1"),
            "a:1",
            "a known one keeps its label"
        );
    }

    #[test]
    fn an_unexplained_verdict_claims_no_confidence_in_its_labels() {
        let m = Metrics::new(8).unwrap();
        let mut v = race("10.0.0.3:9000");
        v.cause = Cause::Unexplained;
        v.subcause = None;
        m.verdict(&proxy(), &v);
        let text = m.render();
        let line = text
            .lines()
            .find(|l| l.starts_with("tracer_verdicts_total{"))
            .expect("a verdict series");
        assert!(line.contains("confidence=\"\""), "{line}");
    }

    #[test]
    fn a_finished_proxys_timeout_gauges_are_removed_and_others_stay() {
        let m = Metrics::new(8).unwrap();
        let other = ProxyLabels {
            proxy: "nginx".into(),
            ..proxy()
        };
        m.timeouts(&proxy(), "10.0.0.3:9000", Some(5.0), Some(90.0));
        m.timeouts(&other, "10.0.0.4:9000", Some(2.0), None);
        m.forget_timeouts(&proxy());
        let text = m.render();
        assert!(
            !text.contains("10.0.0.3:9000"),
            "the finished proxy's gauges are gone:\n{text}"
        );
        assert!(
            text.contains("tracer_upstream_keepalive_timeout_seconds{")
                && text.contains("10.0.0.4:9000"),
            "the other proxy's stay:\n{text}"
        );
    }

    #[test]
    fn idle_times_land_in_histograms_and_timeouts_in_gauges() {
        let m = Metrics::new(8).unwrap();
        m.upstream_idle_close(&proxy(), "10.0.0.3:9000", 5.2);
        m.proxy_reuse_idle(&proxy(), "10.0.0.3:9000", 4.9);
        m.timeouts(&proxy(), "10.0.0.3:9000", Some(5.0), None);
        m.responses(&proxy(), None, 5, 3);
        let text = m.render();
        assert!(text.contains("tracer_upstream_idle_close_seconds_bucket{"));
        assert!(text.contains("tracer_proxy_reuse_idle_seconds_count{"));
        assert!(text.contains("tracer_upstream_keepalive_timeout_seconds{"));
        assert!(
            !text.contains("tracer_proxy_idle_timeout_seconds{"),
            "an unknown timeout is not exported as 0"
        );
        let line = text
            .lines()
            .find(|l| l.starts_with("tracer_responses_total{"))
            .expect("responses are exported");
        assert!(
            line.contains("status_class=\"5xx\"") && line.ends_with(" 3"),
            "{line}"
        );
    }
}
