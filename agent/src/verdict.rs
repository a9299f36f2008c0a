//! What the engine concludes: one [`Verdict`] per client-facing error or failed upstream
//! attempt, with its cause, how sure it is, and the evidence it rests on.

use std::fmt;
use std::net::SocketAddr;

/// Why a proxy answered an error (see DESIGN.md, "Causes").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Cause {
    KeepaliveRace,
    UpstreamRefused,
    UpstreamReset,
    UpstreamClosedEarly,
    ProxyTimeout,
    ConnectTimeout,
    ClientAbort,
    UpstreamGenerated,
    Unexplained,
}

impl Cause {
    /// The name users see (`keepalive_race`, …).
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Cause::KeepaliveRace => "keepalive_race",
            Cause::UpstreamRefused => "upstream_refused",
            Cause::UpstreamReset => "upstream_reset",
            Cause::UpstreamClosedEarly => "upstream_closed_early",
            Cause::ProxyTimeout => "proxy_timeout",
            Cause::ConnectTimeout => "connect_timeout",
            Cause::ClientAbort => "client_abort",
            Cause::UpstreamGenerated => "upstream_generated",
            Cause::Unexplained => "unexplained",
        }
    }
}

impl fmt::Display for Cause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Kinds of [`Cause::KeepaliveRace`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Subcause {
    /// The request crossed the upstream's FIN on the wire.
    FinCrossed,
    /// The proxy found the pooled connection dead and answered without writing a byte.
    RequestNeverSent,
    /// The socket was already in CLOSE_WAIT when the proxy wrote (kernel probe).
    FinUnread,
    /// The upstream's idle timer closed the connection with the proxy's request unread in
    /// its receive buffer: its kernel sent RST instead of FIN, right after the request.
    ClosedUnread,
}

impl Subcause {
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Subcause::FinCrossed => "fin_crossed",
            Subcause::RequestNeverSent => "request_never_sent",
            Subcause::FinUnread => "fin_unread",
            Subcause::ClosedUnread => "closed_unread",
        }
    }
}

/// How sure a verdict is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Confidence {
    /// Every link of the chain was seen.
    Proven,
    /// Some link rests on timing alone.
    Probable,
}

impl Confidence {
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Confidence::Proven => "proven",
            Confidence::Probable => "probable",
        }
    }
}

/// One timestamped fact a verdict rests on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Evidence {
    pub ts_ns: i64,
    /// The connection, `ip:port->ip:port` (client → server).
    pub connection: String,
    pub what: String,
}

/// The client-facing side of a verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Downstream {
    pub client: SocketAddr,
    pub proxy: SocketAddr,
    pub method: Option<String>,
    pub target: Option<String>,
}

/// The upstream attempt (or connection) a verdict is about.
#[derive(Debug, Clone, PartialEq)]
pub struct Upstream {
    pub proxy: SocketAddr,
    pub server: SocketAddr,
    /// Exchange number on the connection (1 = fresh); `None` when no request was written.
    pub exchange_index: Option<u32>,
    /// The connection was open before the capture began.
    pub seen_from_start: bool,
    pub idle_ms: Option<f64>,
    /// Request time minus the upstream's FIN time (positive: the FIN came first).
    pub fin_to_request_ms: Option<f64>,
    /// Who closed first, e.g. `upstream FIN, proxy RST`.
    pub close_order: String,
}

impl Upstream {
    /// `ip:port->ip:port`.
    #[must_use]
    pub fn connection(&self) -> String {
        format!("{}->{}", self.proxy, self.server)
    }
}

/// A conclusion about one error.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    pub cause: Cause,
    pub subcause: Option<Subcause>,
    pub confidence: Confidence,
    /// The status the client got (`None` when it got none: 499, or a closed connection).
    pub status: Option<u16>,
    /// When the error happened (the response or the failure), ns since the epoch.
    pub ts_ns: i64,
    pub downstream: Option<Downstream>,
    pub upstream: Option<Upstream>,
    pub request_id: Option<String>,
    /// The request method is idempotent (a retry would be safe).
    pub idempotent: Option<bool>,
    /// One human sentence.
    pub summary: String,
    /// For `unexplained`: what is missing.
    pub reason: Option<String>,
    pub evidence: Vec<Evidence>,
    /// The process that owned the upstream socket (`comm[pid]`), from the kernel probe.
    pub process: Option<String>,
    /// The client's request and the upstream attempt were paired by timing or request line
    /// alone: however sure the cause, which client it hit is a guess (never `proven`).
    pub link_guessed: bool,
}
