//! A real Prometheus for tests (Debian's `prometheus` and `promtool`): started on a free
//! loopback port with a scrape configuration and rule files ([`Prometheus`]), queried over its
//! HTTP API ([`PromApi`]), stopped and its storage removed on drop.
//!
//! Also [`scale_rule_durations`], which shortens every window and `for:` of a rule file by a
//! factor, so that alerts written for minutes can be seen firing in a test that lasts seconds.

mod api;
mod durations;
mod server;

pub use api::{Alert, PromApi, RuleState, Sample};
pub use durations::{format_duration, parse_duration, scale_rule_durations};
pub use server::{free_port, promtool, Prometheus, PrometheusConfig, ScrapeJob};

use std::time::Duration;

/// What can go wrong running or asking Prometheus.
#[derive(Debug, thiserror::Error)]
pub enum PromError {
    /// The program is not installed.
    #[error("`{0}` is not installed: run ./bootstrap.sh (or apt-get install prometheus)")]
    Missing(&'static str),
    /// The query does not parse: Prometheus answered 400 `bad_data`.
    #[error("the query does not parse: {0}")]
    Parse(String),
    /// The query parsed but failed while evaluating (422 `execution`, e.g. many-to-many
    /// matching).
    #[error("the query failed to evaluate: {0}")]
    Execution(String),
    /// Any other answer that is not a result.
    #[error("Prometheus answered HTTP {status}: {body}")]
    Http {
        /// The HTTP status.
        status: u16,
        /// The body, as sent.
        body: String,
    },
    /// No answer at all (connection refused, timeout).
    #[error("no answer from Prometheus at {url}: {reason}")]
    Transport {
        /// What was asked.
        url: String,
        /// Why there was no answer.
        reason: String,
    },
    /// An answer that is not the API's JSON.
    #[error("Prometheus's answer is not what its API documents: {0}")]
    Decode(String),
    /// A file or process operation failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// Prometheus did not answer `/-/ready` in time (or exited); its log is attached.
    #[error("prometheus was not ready within {waited:?}: {log}")]
    NotReady {
        /// How long it was given.
        waited: Duration,
        /// The tail of its log.
        log: String,
    },
    /// A duration in a rule file that this module cannot read.
    #[error("not a Prometheus duration: {0:?}")]
    BadDuration(String),
}

impl PromError {
    pub(crate) fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> PromError {
        let what = what.into();
        move |source| PromError::Io { what, source }
    }
}
