//! What to change: the setting in the proxy that was recognised (or in each common one when
//! none was), on the upstream side, in Kubernetes, and whether retries are safe.

use crate::timeouts::UpstreamTimeouts;
use crate::verdict::{Cause, Verdict};

/// A proxy tracer knows the settings of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proxy {
    Traefik1,
    Traefik,
    Nginx,
    Envoy,
    HaProxy,
    Caddy,
}

impl Proxy {
    /// Recognises a proxy from a `Server` or `Via` header value or a process name.
    #[must_use]
    pub fn recognise(s: &str) -> Option<Proxy> {
        let l = s.to_ascii_lowercase();
        if l.contains("traefik") {
            Some(if l.contains("1.7") || l.contains("/1.") {
                Proxy::Traefik1
            } else {
                Proxy::Traefik
            })
        } else if l.contains("nginx") || l.contains("openresty") {
            Some(Proxy::Nginx)
        } else if l.contains("envoy") || l.contains("istio") {
            Some(Proxy::Envoy)
        } else if l.contains("haproxy") {
            Some(Proxy::HaProxy)
        } else if l.contains("caddy") {
            Some(Proxy::Caddy)
        } else {
            None
        }
    }

    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Proxy::Traefik1 => "Traefik 1.7",
            Proxy::Traefik => "Traefik 2/3",
            Proxy::Nginx => "nginx",
            Proxy::Envoy => "Envoy",
            Proxy::HaProxy => "HAProxy",
            Proxy::Caddy => "Caddy",
        }
    }

    /// The setting that makes the proxy drop idle upstream connections sooner.
    fn fix(self, below: &str) -> String {
        match self {
            Proxy::Traefik1 => format!(
                "Traefik 1.7 cannot set an idle timeout for upstream connections: disable upstream keep-alive with `--maxidleconnsperhost=-1` (Go then answers `http: server closed idle connection` as 500 no more), or fix the upstream side; `--retry.attempts` only helps idempotent requests. Keep-alive to the upstream must outlive {below}."
            ),
            Proxy::Traefik => format!(
                "Traefik 2/3: set `serversTransport.forwardingTimeouts.idleConnTimeout` below {below} (static config), or in Kubernetes the `ServersTransport` resource's `spec.forwardingTimeouts.idleConnTimeout` referenced by the service."
            ),
            Proxy::Nginx => format!(
                "nginx: set `keepalive_timeout` inside the `upstream {{}}` block below {below} (nginx ≥ 1.15.3); with ingress-nginx, the ConfigMap key `upstream-keepalive-timeout`."
            ),
            Proxy::Envoy => format!(
                "Envoy: set the cluster's `common_http_protocol_options.idle_timeout` below {below}; with Istio, the `DestinationRule` `trafficPolicy.connectionPool.http.idleTimeout`."
            ),
            Proxy::HaProxy => format!(
                "HAProxy: set `timeout server` (idle server connections are closed after it) below {below}, or `http-reuse never` to stop reusing idle server connections."
            ),
            Proxy::Caddy => format!(
                "Caddy: in `reverse_proxy`, set `transport http {{ keepalive <duration> }}` below {below}."
            ),
        }
    }
}

impl Proxy {
    /// The setting that stops the proxy reusing upstream connections at all: the only
    /// proxy-side fix when the upstream closes after every response.
    fn no_reuse(self) -> &'static str {
        match self {
            Proxy::Traefik1 => "Traefik 1.7: `--maxidleconnsperhost=-1` stops reusing upstream connections (until the upstream keeps them alive).",
            Proxy::Traefik => "Traefik 2/3: `serversTransport.maxIdleConnsPerHost: -1` (or in Kubernetes the `ServersTransport` resource's `spec.maxIdleConnsPerHost: -1`) stops reusing upstream connections.",
            Proxy::Nginx => "nginx: remove `keepalive` from the `upstream {}` block (or `proxy_http_version 1.0`) so each request gets a fresh upstream connection.",
            Proxy::Envoy => "Envoy: set the cluster's `max_requests_per_connection: 1` (Istio: `DestinationRule` `trafficPolicy.connectionPool.http.maxRequestsPerConnection: 1`).",
            Proxy::HaProxy => "HAProxy: `http-reuse never` in the backend.",
            Proxy::Caddy => "Caddy: in `reverse_proxy`, `transport http { keepalive off }` stops reusing upstream connections.",
        }
    }
}

/// One piece of advice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Advice {
    /// `proxy`, `upstream`, `kubernetes` or `retry`.
    pub about: &'static str,
    /// The software it is for, when recognised.
    pub software: Option<String>,
    pub text: String,
}

const ALL: [Proxy; 6] = [
    Proxy::Traefik1,
    Proxy::Traefik,
    Proxy::Nginx,
    Proxy::Envoy,
    Proxy::HaProxy,
    Proxy::Caddy,
];

/// Advice from the verdicts, the inferred timeouts and the software seen.
#[must_use]
pub fn advise(
    verdicts: &[Verdict],
    timeouts: &[UpstreamTimeouts],
    proxy_software: &[String],
    upstream_software: &[String],
) -> Vec<Advice> {
    let mut out = Vec::new();
    let races = verdicts
        .iter()
        .filter(|v| v.cause == Cause::KeepaliveRace)
        .count();
    let shorter: Vec<&UpstreamTimeouts> = timeouts.iter().filter(|t| t.upstream_shorter).collect();
    if races == 0 && shorter.is_empty() {
        return out;
    }
    let below = shorter
        .iter()
        .filter_map(|t| t.upstream_idle_close_ms)
        .min_by(f64::total_cmp)
        .map_or_else(
            || "the upstream's keep-alive timeout".to_owned(),
            |ms| format!("the upstream's idle close (~{:.1} s)", ms / 1000.0),
        );
    for t in &shorter {
        if t.closes_after_every_response {
            out.push(Advice {
                about: "upstream",
                software: None,
                text: format!(
                    "{} closes the connection right after every response without sending `Connection: close` ({} of {} responses), so every pooled connection dies: enable keep-alive there (uwsgi: `--http-keepalive`, or `http-keepalive = 1` in uwsgi.ini) or make it send `Connection: close`.",
                    t.upstream, t.after_response.0, t.after_response.1
                ),
            });
        } else if let (Some(u), p) = (t.upstream_idle_close_ms, t.proxy_idle_close_ms) {
            out.push(Advice {
                about: "upstream",
                software: None,
                text: format!(
                    "{} closes idle connections after ~{:.1} s{}: the proxy's idle timeout must be shorter, or the upstream's longer.",
                    t.upstream,
                    u / 1000.0,
                    p.map_or_else(String::new, |p| format!(", the proxy only after ~{:.1} s", p / 1000.0))
                ),
            });
        }
    }
    // An upstream that closes after every response has no idle timeout to stay below: the
    // fix is on its side, or the proxy must stop reusing its connections.
    let every_response =
        !shorter.is_empty() && shorter.iter().all(|t| t.closes_after_every_response);
    let recognised: Vec<Proxy> = proxy_software
        .iter()
        .filter_map(|s| Proxy::recognise(s))
        .collect();
    let proxies: Vec<Proxy> = if recognised.is_empty() {
        ALL.to_vec()
    } else {
        recognised
    };
    let mut seen = Vec::new();
    for p in proxies {
        if seen.contains(&p) {
            continue;
        }
        seen.push(p);
        out.push(Advice {
            about: "proxy",
            software: Some(p.name().into()),
            text: if every_response {
                p.no_reuse().to_owned()
            } else {
                p.fix(&below)
            },
        });
    }
    let ups = upstream_software.join(" ").to_ascii_lowercase();
    let mut upstream_fix = |sw: &str, text: &str| {
        out.push(Advice {
            about: "upstream",
            software: Some(sw.into()),
            text: text.into(),
        });
    };
    // The upstream advice above already named its fix when it closes after every response.
    let generic = !(every_response
        || ups.contains("gunicorn")
        || ups.contains("apache")
        || ups.contains("uwsgi"));
    if ups.contains("uwsgi") || generic {
        upstream_fix(
            "uwsgi",
            "uwsgi: `http-keepalive = 1` (HTTP router) so connections stay open between requests.",
        );
    }
    if ups.contains("gunicorn") || generic {
        upstream_fix(
            "gunicorn",
            "gunicorn: `--keep-alive N` with N above the proxy's idle timeout (default 2 s).",
        );
    }
    if generic {
        upstream_fix("Node.js", "Node.js: `server.keepAliveTimeout` above the proxy's idle timeout (and `server.headersTimeout` above that); Node closes about 1 s after it.");
    }
    if ups.contains("apache") || generic {
        upstream_fix(
            "Apache",
            "Apache httpd: `KeepAliveTimeout` above the proxy's idle timeout.",
        );
    }
    out.push(Advice {
        about: "kubernetes",
        software: None,
        text: "In Kubernetes, edit the object the proxy reads: ingress-nginx's ConfigMap key `upstream-keepalive-timeout`, Traefik's `ServersTransport`, Istio's `DestinationRule` `trafficPolicy.connectionPool.http.idleTimeout`; a cloud load balancer between them has its own idle timeout, which must be longer than the proxy's too.".into(),
    });
    let race_idempotent = verdicts
        .iter()
        .filter(|v| v.cause == Cause::KeepaliveRace && v.idempotent == Some(true))
        .count();
    if races > 0 {
        out.push(Advice {
            about: "retry",
            software: None,
            text: if race_idempotent > 0 {
                format!("{race_idempotent} of the {races} keep-alive races were idempotent requests: a proxy retry on a connection error is safe for those (nginx `proxy_next_upstream error`, Envoy `retry_on: reset`, Traefik's retry middleware).")
            } else {
                format!("None of the {races} keep-alive races was an idempotent request: a blind retry is not safe; fix the timeouts instead.")
            },
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proxies_are_recognised_from_headers() {
        assert_eq!(Proxy::recognise("nginx/1.22.1"), Some(Proxy::Nginx));
        assert_eq!(Proxy::recognise("1.1 Caddy"), Some(Proxy::Caddy));
        assert_eq!(Proxy::recognise("envoy"), Some(Proxy::Envoy));
        assert_eq!(Proxy::recognise("gunicorn"), None);
    }
}
