//! The race lab: real proxies and upstreams from Debian in network namespaces, a bounded
//! paced load, captures of both sides of the proxy, and a ground-truth file derived from the
//! proxy's own logs joined with the client's own results (never from tracer).
//!
//! A run ([`run::run`]): [`net::Net`] builds three hosts (client, proxy, upstream) joined by
//! veth pairs; the [`scenario::Scenario`] starts its upstream and proxy; `tcpdump` records the
//! proxy's client-facing and upstream-facing interfaces ([`capture`]); [`load`] sends the
//! requests; the scenario turns the proxy's logs into [`truth::TruthRow`]s. Everything is torn
//! down on every exit path (drop, panic, Ctrl-C).

pub mod capture;
pub mod grafana;
pub mod load;
pub mod load_h2;
pub mod load_tls;
pub mod logs;
pub mod net;
pub mod procs;
pub mod prom;
pub mod run;
pub mod scenario;
pub mod scenarios;
pub mod truth;
