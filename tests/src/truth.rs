//! The ground-truth file: for every non-2xx result the client saw, its cause, derived from
//! the proxy's own logs joined with the client's results by request id.

use serde::{Deserialize, Serialize};

/// One non-2xx request of a lab run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TruthRow {
    /// The request id the client sent (header `X-Request-Id` and query `rid`).
    pub rid: u64,
    /// What the client saw: the status (`"502"`), or `"timeout"` when it gave up first, or
    /// `"error: …"` when its connection failed.
    pub client: String,
    /// The status the proxy logged for this request, when its access log has the request.
    pub proxy_status: Option<u16>,
    /// Cause, in tracer's taxonomy (`keepalive_race`, `upstream_refused`, …), or `unknown`
    /// when the logs do not tell.
    pub cause: String,
    /// Sub-kind where the logs tell it (`request_never_sent`, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subcause: Option<String>,
    /// The proxy's log line(s) this row rests on, verbatim.
    pub evidence: String,
    /// `true` when the capture lost packets that carried this request (tcpdump reported
    /// drops and the request is missing from the client-facing capture).
    #[serde(default)]
    pub capture_lost: bool,
}
