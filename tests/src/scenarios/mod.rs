//! Every scenario the lab knows, in the order `cargo xtask lab all` runs them.

use crate::scenario::Scenario;

pub mod caddy;
pub mod caddy_node;
pub mod contrast;
pub mod haproxy;
pub mod haproxy_gunicorn;
pub mod haproxy_node;
pub mod nginx;
pub mod nginx_node;
pub mod node;
pub mod seed;
pub mod tls;

/// All scenarios.
pub fn all() -> Vec<Box<dyn Scenario>> {
    vec![
        Box::new(seed::CaddyUwsgi {
            fixed: false,
            front: seed::Front::Plain,
        }),
        Box::new(seed::CaddyUwsgi {
            fixed: true,
            front: seed::Front::Plain,
        }),
        Box::new(nginx_node::NginxNode),
        Box::new(haproxy_gunicorn::HaproxyGunicorn),
        Box::new(haproxy_node::HaproxyNode),
        Box::new(caddy_node::CaddyNode),
        Box::new(contrast::Contrast(contrast::Kind::Refused)),
        Box::new(contrast::Contrast(contrast::Kind::Crash)),
        Box::new(contrast::Contrast(contrast::Kind::Timeout)),
        Box::new(contrast::Contrast(contrast::Kind::ClientAbort)),
        Box::new(contrast::Contrast(contrast::Kind::Upstream500)),
        Box::new(contrast::Contrast(contrast::Kind::Upstream502)),
        // The client side behind TLS (and HTTP/2): the probe's uprobes read it.
        Box::new(tls::NginxNodeTls),
        Box::new(seed::CaddyUwsgi {
            fixed: false,
            front: seed::Front::Tls,
        }),
        Box::new(tls::HaproxyGunicornTls),
        Box::new(seed::CaddyUwsgi {
            fixed: false,
            front: seed::Front::Http2,
        }),
    ]
}

/// The scenario called `name`.
pub fn by_name(name: &str) -> Option<Box<dyn Scenario>> {
    all().into_iter().find(|s| s.name() == name)
}
