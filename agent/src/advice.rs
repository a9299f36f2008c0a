//! What to change: the setting in the proxy and the upstream recognised from what the
//! capture shows of them ([`recognise`]), on the upstream side, in Kubernetes, and whether
//! retries are safe. The settings of every other proxy and upstream tracer knows are kept
//! too, printed only when asked (`--all`).

pub mod recognise;

pub use recognise::{Proxy, Upstream, PROXIES, UPSTREAMS};

use crate::timeouts::UpstreamTimeouts;
use crate::verdict::{Cause, Verdict};

impl Proxy {
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
            Proxy::Apache => format!(
                "Apache httpd (mod_proxy): set `ttl=N` on the `ProxyPass` (or `BalancerMember`) line, N in seconds below {below}, so pooled connections are closed before the upstream closes them; or `disablereuse=On` to stop reusing them."
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
            Proxy::Apache => "Apache httpd (mod_proxy): `disablereuse=On` on the `ProxyPass` (or `BalancerMember`) line stops reusing upstream connections.",
        }
    }
}

/// One piece of advice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Advice {
    /// `proxy`, `upstream`, `kubernetes` or `retry`.
    pub about: &'static str,
    /// The software it is for, when it is for one.
    pub software: Option<String>,
    pub text: String,
    /// For what was seen (the proxy or upstream recognised, or no software in particular):
    /// the text report prints it by default, the rest with `--all`.
    pub shown: bool,
    /// In the JSON report: what is shown, and, for a proxy or upstream not recognised,
    /// the settings of every one tracer knows (the JSON report has no `--all`).
    pub in_json: bool,
}

impl Advice {
    fn new(about: &'static str, software: Option<&str>, text: String, shown: bool) -> Self {
        Advice {
            about,
            software: software.map(str::to_owned),
            text,
            shown,
            in_json: shown,
        }
    }
}

/// The proxies recognised: from the `Server`/`Via` values and error pages of its own
/// responses (`proxy_software`), and the processes the kernel probe named.
#[must_use]
pub fn proxies_seen(verdicts: &[Verdict], proxy_software: &[String]) -> Vec<Proxy> {
    let mut seen: Vec<Proxy> = proxy_software
        .iter()
        .filter_map(|s| Proxy::from_header(s))
        .chain(
            verdicts
                .iter()
                .filter_map(|v| v.process.as_deref().and_then(Proxy::from_process)),
        )
        .collect();
    seen.sort_unstable();
    seen.dedup();
    seen
}

/// The upstream servers recognised from their responses (`upstream_software`).
#[must_use]
pub fn upstreams_seen(upstream_software: &[String]) -> Vec<Upstream> {
    let mut seen: Vec<Upstream> = upstream_software
        .iter()
        .filter_map(|s| Upstream::from_said(s))
        .collect();
    seen.sort_unstable();
    seen.dedup();
    seen
}

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
                shown: true,
                in_json: true,
                text: format!(
                    "{} closes the connection right after every response without sending `Connection: close` ({} of {} responses), so every pooled connection dies: enable keep-alive there (uwsgi: `--http-keepalive`, or `http-keepalive = 1` in uwsgi.ini) or make it send `Connection: close`.",
                    t.upstream, t.after_response.0, t.after_response.1
                ),
            });
        } else if let (Some(u), p) = (t.upstream_idle_close_ms, t.proxy_idle_close_ms) {
            out.push(Advice {
                about: "upstream",
                software: None,
                shown: true,
                in_json: true,
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
    let recognised = proxies_seen(verdicts, proxy_software);
    if recognised.is_empty() {
        let what = if every_response {
            "stop it reusing upstream connections".to_owned()
        } else {
            format!("make it close idle upstream connections before {below}")
        };
        let mut a = Advice::new(
            "proxy",
            None,
            format!(
                "the proxy was not recognised (no `Server` header, error page or process name \
                 tracer knows): {what}; --all shows the setting in Traefik, nginx, Envoy, \
                 HAProxy, Caddy and Apache httpd."
            ),
            true,
        );
        a.in_json = false;
        out.push(a);
    }
    // The recognised first, then the others (with --all).
    let order = recognised
        .iter()
        .copied()
        .chain(PROXIES.into_iter().filter(|p| !recognised.contains(p)));
    for p in order {
        let text = if every_response {
            p.no_reuse().to_owned()
        } else {
            p.fix(&below)
        };
        let mut a = Advice::new("proxy", Some(p.name()), text, recognised.contains(&p));
        a.in_json |= recognised.is_empty();
        out.push(a);
    }
    let ups = upstreams_seen(upstream_software);
    // The upstream advice above already named its fix when it closes after every response.
    let generic = ups.is_empty() && !every_response;
    let order = ups
        .iter()
        .copied()
        .chain(UPSTREAMS.into_iter().filter(|u| !ups.contains(u)));
    for u in order {
        let mut a = Advice::new(
            "upstream",
            Some(u.name()),
            u.fix().to_owned(),
            ups.contains(&u),
        );
        a.in_json |= generic;
        out.push(a);
    }
    // Nothing in a capture says Kubernetes: with --all.
    let mut k8s = Advice::new(
        "kubernetes",
        None,
        "In Kubernetes, edit the object the proxy reads: ingress-nginx's ConfigMap key `upstream-keepalive-timeout`, Traefik's `ServersTransport`, Istio's `DestinationRule` `trafficPolicy.connectionPool.http.idleTimeout`; a cloud load balancer between them has its own idle timeout, which must be longer than the proxy's too.".into(),
        false,
    );
    k8s.in_json = true;
    out.push(k8s);
    let race_idempotent = verdicts
        .iter()
        .filter(|v| v.cause == Cause::KeepaliveRace && v.idempotent == Some(true))
        .count();
    if races > 0 {
        out.push(Advice {
            about: "retry",
            software: None,
            shown: true,
            in_json: true,
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

    fn timeouts(every_response: bool) -> Vec<UpstreamTimeouts> {
        vec![UpstreamTimeouts {
            upstream: "198.18.2.2:9000".parse().unwrap(),
            upstream_idle_close_ms: Some(1000.0),
            upstream_samples: 10,
            proxy_idle_close_ms: None,
            proxy_samples: 0,
            closes_after_every_response: every_response,
            after_response: (0, 0),
            upstream_shorter: true,
        }]
    }

    fn shown(a: &[Advice]) -> Vec<(&str, Option<&str>)> {
        a.iter()
            .filter(|x| x.shown)
            .map(|x| (x.about, x.software.as_deref()))
            .collect()
    }

    #[test]
    fn only_the_recognised_proxy_and_upstream_are_shown() {
        let a = advise(
            &[],
            &timeouts(false),
            &["nginx/1.22.1".into()],
            &["Node.js (Keep-Alive: timeout=0, no Server)".into()],
        );
        assert_eq!(
            shown(&a),
            vec![
                ("upstream", None),
                ("proxy", Some("nginx")),
                ("upstream", Some("Node.js")),
            ]
        );
        // Every other proxy's and upstream's setting is there for --all, not in the JSON.
        let hidden: Vec<&Advice> = a.iter().filter(|x| !x.shown).collect();
        assert!(hidden
            .iter()
            .any(|x| x.software.as_deref() == Some("Caddy")));
        assert!(hidden
            .iter()
            .any(|x| x.software.as_deref() == Some("Apache httpd (mod_proxy)")));
        assert!(hidden
            .iter()
            .filter(|x| x.about != "kubernetes")
            .all(|x| !x.in_json));
    }

    #[test]
    fn the_process_the_probe_names_recognises_the_proxy() {
        let v = Verdict {
            cause: Cause::KeepaliveRace,
            subcause: None,
            confidence: crate::verdict::Confidence::Probable,
            status: Some(502),
            ts_ns: 0,
            downstream: None,
            upstream: None,
            request_id: None,
            idempotent: Some(true),
            summary: String::new(),
            reason: None,
            evidence: Vec::new(),
            process: Some("haproxy[77]".into()),
            link_guessed: false,
        };
        let a = advise(&[v], &timeouts(false), &[], &[]);
        let proxies: Vec<_> = shown(&a)
            .into_iter()
            .filter(|(about, _)| *about == "proxy")
            .collect();
        assert_eq!(proxies, vec![("proxy", Some("HAProxy"))]);
        assert!(a.iter().any(|x| x.about == "retry" && x.shown));
    }

    #[test]
    fn an_unrecognised_proxy_gets_one_line_and_every_setting_with_all() {
        let a = advise(&[], &timeouts(false), &[], &[]);
        let proxies: Vec<&Advice> = a.iter().filter(|x| x.about == "proxy").collect();
        let [general] = proxies.iter().filter(|x| x.shown).collect::<Vec<_>>()[..] else {
            panic!("not one shown proxy line: {proxies:?}");
        };
        assert_eq!(general.software, None);
        assert!(general.text.contains("not recognised"), "{}", general.text);
        assert!(general.text.contains("~1.0 s"), "{}", general.text);
        // All of them behind --all, and in the JSON as before.
        assert_eq!(proxies.len(), PROXIES.len() + 1);
        assert!(proxies
            .iter()
            .filter(|x| x.software.is_some())
            .all(|x| !x.shown && x.in_json));
    }

    #[test]
    fn apache_mod_proxy_gets_ttl_or_disablereuse() {
        let a = advise(
            &[],
            &timeouts(false),
            &["Apache/2.4.62 (Debian)".into()],
            &[],
        );
        let apache = a
            .iter()
            .find(|x| x.shown && x.about == "proxy")
            .expect("the proxy's advice");
        assert!(apache.text.contains("ttl="), "{}", apache.text);
        assert!(apache.text.contains("disablereuse=On"), "{}", apache.text);
        assert!(Proxy::Apache.no_reuse().contains("disablereuse=On"));
    }
}
