//! A bounded, paced HTTP/1.1 load generator that runs inside the client namespace.
//! Every request is a POST carrying its id in the `X-Request-Id` header and the `rid` query.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// How requests are spaced.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Pacing {
    /// Each worker sends its next request as soon as the previous one ends.
    BackToBack,
    /// Each worker waits a uniformly random gap in `[min, max]` between requests — used to
    /// land requests on an upstream's real idle-close time.
    Gap { min: Duration, max: Duration },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoadProfile {
    /// Total requests (upper bound).
    pub requests: u32,
    /// Concurrent workers; each opens a fresh connection per request, like `ab`.
    pub concurrency: u32,
    pub pacing: Pacing,
    /// Hard stop for the whole load, whatever is left.
    pub max_duration: Duration,
    /// The client gives up on a request after this long (it closes the connection).
    pub client_timeout: Duration,
    /// Request path, before `?rid=N`.
    pub path: String,
    /// Size of the POST body in bytes.
    pub body_len: usize,
}

/// What happened to one request, from the client's side.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    /// A complete response with this status.
    Status(u16),
    /// The client gave up after `client_timeout` and closed the connection.
    Timeout,
    /// Connecting, writing or reading failed.
    Error(String),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientResult {
    pub rid: u64,
    pub method: String,
    pub path: String,
    /// Unix nanoseconds when the client started connecting, and when it had the answer.
    pub start_ns: i64,
    pub end_ns: i64,
    pub outcome: Outcome,
}
