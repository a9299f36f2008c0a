//! What the engine concludes: one [`Verdict`] per client-facing error or failed upstream
//! attempt, with its cause, how sure it is, and the evidence it rests on.

use std::fmt;
use std::net::SocketAddr;

use serde::{Serialize, Serializer};

/// Why a proxy answered an error (the rules: `agent/src/correlate/rules/`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
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

/// Who did something on a connection. `Server` is the accepting end of a connection whose
/// side of the proxy is not known (neither `Proxy` nor `Upstream` can be said).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Party {
    Client,
    Proxy,
    Upstream,
    Server,
}

impl Party {
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Party::Client => "client",
            Party::Proxy => "proxy",
            Party::Upstream => "upstream",
            Party::Server => "server",
        }
    }
}

impl fmt::Display for Party {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Which of the proxy's two sides a connection is on: the lane a drawing puts it in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Leg {
    /// Client → proxy.
    Client,
    /// Proxy → upstream.
    Upstream,
    /// Not known (a connection whose side of the proxy could not be told).
    Unknown,
}

/// What happened, as data: every field a drawing or a filter needs. [`fmt::Display`] gives
/// the sentence the reports print. Serialized with its variant as `kind`
/// (`request`, `kernel_write_in_close_wait`, …) and its fields beside it.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Fact {
    /// `by` opens the connection: its SYN.
    Syn { by: Party },
    /// `by` sends a request: exchange `exchange` on the connection (1 = the first),
    /// `fresh` when it is the first on a connection seen from its SYN, otherwise reused
    /// after `idle_ms` of quiet when that is known.
    Request {
        by: Party,
        method: String,
        target: String,
        exchange: u32,
        fresh: bool,
        idle_ms: Option<f64>,
    },
    /// `by` answers with `status`: for the client-facing connection, the proxy's answer to
    /// the client.
    Response { by: Party, status: u16 },
    /// `by` sends its FIN.
    Fin { by: Party },
    /// `by` sends an RST.
    Rst { by: Party },
    /// The proxy opens a connection to the upstream: its first SYN.
    ConnectAttempt,
    /// The proxy's SYN was sent `count` times without an answer.
    SynUnanswered { count: u32 },
    /// The upstream answers the proxy's SYN with RST: nothing listens there.
    Refused,
    /// `by` closes a pooled connection that was idle for `idle_ms` (RST when `rst`, else
    /// FIN).
    IdleClose {
        by: Party,
        rst: bool,
        idle_ms: Option<f64>,
    },
    /// The proxy closes a pooled connection its upstream had closed.
    DeadClosed,
    /// The capture lost part of the connection (`what`: e.g. `the response's first bytes`).
    CaptureLost { what: String },
    /// The connection was evicted from the full connection table.
    Evicted,
    /// An encrypted client connection ends (its response could not be read).
    EncryptedClientEnds,
    /// Kernel probe: the upstream's FIN arrived at the proxy's socket (ESTABLISHED →
    /// CLOSE_WAIT).
    KernelFinReceived,
    /// Kernel probe: `process` (the proxy's, when named) wrote after `idle_ms` of quiet on a
    /// socket already in CLOSE_WAIT: the upstream's FIN had arrived, unread.
    KernelWriteInCloseWait {
        process: Option<String>,
        idle_ms: f64,
    },
    /// Kernel probe: `process` wrote after `idle_ms` of quiet, the socket in `state`.
    KernelWriteAfterIdle {
        process: Option<String>,
        idle_ms: f64,
        state: String,
    },
    /// Kernel probe: `process` read end of file (the peer's FIN).
    KernelReadEof { process: Option<String> },
    /// Kernel probe: `process` read an error (`errno`; 104 is ECONNRESET).
    KernelReadError { process: Option<String>, errno: i64 },
    /// Kernel probe: the socket received an RST.
    KernelRstReceived,
}

/// `ECONNRESET`, as the kernel reports it.
pub const ECONNRESET: i64 = 104;

impl Fact {
    /// The process as the sentences name it.
    fn who(process: Option<&String>) -> &str {
        process.map_or("the proxy", String::as_str)
    }

    /// The fact with its request target hidden by `hide` (see `report::redact`).
    #[must_use]
    pub fn map_target(&self, hide: impl Fn(&str) -> String) -> Fact {
        match self {
            Fact::Request {
                by,
                method,
                target,
                exchange,
                fresh,
                idle_ms,
            } => Fact::Request {
                by: *by,
                method: method.clone(),
                target: hide(target),
                exchange: *exchange,
                fresh: *fresh,
                idle_ms: *idle_ms,
            },
            other => other.clone(),
        }
    }
}

impl fmt::Display for Fact {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Fact::Syn { by } => write!(f, "{by} opens the connection (SYN)"),
            Fact::Request {
                by,
                method,
                target,
                exchange,
                fresh,
                idle_ms,
            } => {
                write!(f, "{by} sends {method} {target} (exchange #{exchange}, ")?;
                match (fresh, idle_ms) {
                    (true, _) => f.write_str("fresh connection)"),
                    (false, Some(i)) => write!(f, "reused, idle {i:.1} ms)"),
                    (false, None) => f.write_str("reused)"),
                }
            }
            Fact::Response { by, status } => write!(f, "{by} answers {status}"),
            Fact::Fin { by } => write!(f, "{by} FIN"),
            Fact::Rst { by } => write!(f, "{by} RST"),
            Fact::ConnectAttempt => f.write_str("proxy sends SYN"),
            Fact::SynUnanswered { count } => {
                write!(f, "SYN sent {count} times without answer")
            }
            Fact::Refused => f.write_str("upstream answers the SYN with RST"),
            Fact::IdleClose { by, rst, idle_ms } => {
                let kind = if *rst { "RST" } else { "FIN" };
                write!(f, "{by} {kind} on the idle pooled connection (idle ")?;
                match idle_ms {
                    Some(i) => write!(f, "{i:.1} ms)"),
                    None => f.write_str("unknown)"),
                }
            }
            Fact::DeadClosed => f.write_str("proxy closes the dead connection"),
            Fact::CaptureLost { what } => write!(f, "capture lost {what}"),
            Fact::Evicted => f.write_str("evicted from the full connection table"),
            Fact::EncryptedClientEnds => {
                f.write_str("the encrypted client connection ends (its response could not be read)")
            }
            Fact::KernelFinReceived => {
                f.write_str("kernel: the upstream's FIN arrived (socket ESTABLISHED -> CLOSE_WAIT)")
            }
            Fact::KernelWriteInCloseWait { process, idle_ms } => write!(
                f,
                "kernel: {} wrote after {idle_ms:.1} ms idle on the socket already in \
                 CLOSE_WAIT (FIN unread)",
                Fact::who(process.as_ref())
            ),
            Fact::KernelWriteAfterIdle {
                process,
                idle_ms,
                state,
            } => write!(
                f,
                "kernel: {} wrote after {idle_ms:.1} ms idle, socket {state}",
                Fact::who(process.as_ref())
            ),
            Fact::KernelReadEof { process } => {
                write!(f, "kernel: {} read EOF", Fact::who(process.as_ref()))
            }
            Fact::KernelReadError { process, errno } => {
                write!(f, "kernel: {} read ", Fact::who(process.as_ref()))?;
                if *errno == ECONNRESET {
                    f.write_str("ECONNRESET")
                } else {
                    write!(f, "error {errno}")
                }
            }
            Fact::KernelRstReceived => f.write_str("kernel: RST received"),
        }
    }
}

/// A TCP connection: the end that opened it (`client`) and the end that accepted it
/// (`server`). Written `ip:port->ip:port`, in the JSON too.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Conn {
    pub client: SocketAddr,
    pub server: SocketAddr,
}

impl fmt::Display for Conn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(&format!("{}->{}", self.client, self.server))
    }
}

impl Serialize for Conn {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// One timestamped fact a verdict rests on. [`fmt::Display`] gives its sentence (the
/// JSON's `what`).
#[derive(Debug, Clone, PartialEq)]
pub struct Evidence {
    pub ts_ns: i64,
    /// The connection it happened on.
    pub connection: Conn,
    /// The proxy's side the connection is on.
    pub leg: Leg,
    pub fact: Fact,
}

impl Evidence {
    #[must_use]
    pub fn new(ts_ns: i64, connection: Conn, leg: Leg, fact: Fact) -> Self {
        Evidence {
            ts_ns,
            connection,
            leg,
            fact,
        }
    }
}

impl fmt::Display for Evidence {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.fact.fmt(f)
    }
}

/// `{"time", "connection", "what", "leg", "kind", …the fact's fields}`.
impl Serialize for Evidence {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct Out<'a> {
            time: String,
            connection: Conn,
            what: String,
            leg: Leg,
            #[serde(flatten)]
            fact: &'a Fact,
        }
        Out {
            time: crate::report::rfc3339(self.ts_ns),
            connection: self.connection,
            what: self.fact.to_string(),
            leg: self.leg,
            fact: &self.fact,
        }
        .serialize(s)
    }
}

/// The client-facing side of a verdict.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Downstream {
    pub client: SocketAddr,
    pub proxy: SocketAddr,
    pub method: Option<String>,
    pub target: Option<String>,
}

impl Downstream {
    /// The client's connection to the proxy.
    #[must_use]
    pub fn conn(&self) -> Conn {
        Conn {
            client: self.client,
            server: self.proxy,
        }
    }
}

/// The upstream attempt (or connection) a verdict is about. Serialized inside a verdict
/// with its [`Upstream::connection`] as `connection`.
#[derive(Debug, Clone, PartialEq, Serialize)]
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
        self.conn().to_string()
    }

    /// The proxy's connection to the upstream.
    #[must_use]
    pub fn conn(&self) -> Conn {
        Conn {
            client: self.proxy,
            server: self.server,
        }
    }
}

/// A conclusion about one error. Serialized as the JSON report's verdicts are
/// (`docs/report-schema.md`), except `confidence`, which the report writes beside it
/// ([`Verdict::claimed_confidence`]: none for `unexplained`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Verdict {
    pub cause: Cause,
    pub subcause: Option<Subcause>,
    #[serde(skip)]
    pub confidence: Confidence,
    /// The status the client got (`None` when it got none: 499, or a closed connection).
    pub status: Option<u16>,
    /// When the error happened (the response or the failure), ns since the epoch.
    #[serde(rename = "time", serialize_with = "time")]
    pub ts_ns: i64,
    pub downstream: Option<Downstream>,
    #[serde(serialize_with = "upstream_with_connection")]
    pub upstream: Option<Upstream>,
    /// One human sentence.
    pub summary: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// For `unexplained`: what is missing.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The request method is idempotent (a retry would be safe).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub idempotent: Option<bool>,
    /// The process that owned the upstream socket (`comm[pid]`), from the kernel probe.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub process: Option<String>,
    pub evidence: Vec<Evidence>,
    /// The client's request and the upstream attempt were paired by timing or request line
    /// alone: however sure the cause, which client it hit is a guess (never `proven`).
    pub link_guessed: bool,
}

impl Verdict {
    /// The confidence the verdict claims: none for `unexplained`, which names no cause to
    /// be sure of.
    #[must_use]
    pub fn claimed_confidence(&self) -> Option<Confidence> {
        (self.cause != Cause::Unexplained).then_some(self.confidence)
    }

    /// `keepalive_race/fin_crossed`, or the cause alone.
    #[must_use]
    pub fn cause_name(&self) -> String {
        match self.subcause {
            Some(sc) => format!("{}/{}", self.cause, sc.name()),
            None => self.cause.to_string(),
        }
    }
}

fn time<S: Serializer>(ts_ns: &i64, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&crate::report::rfc3339(*ts_ns))
}

fn upstream_with_connection<S: Serializer>(u: &Option<Upstream>, s: S) -> Result<S::Ok, S::Error> {
    #[derive(Serialize)]
    struct Out<'a> {
        connection: String,
        #[serde(flatten)]
        upstream: &'a Upstream,
    }
    u.as_ref()
        .map(|u| Out {
            connection: u.connection(),
            upstream: u,
        })
        .serialize(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(fact: Fact) -> Evidence {
        let connection = Conn {
            client: "10.0.0.2:4000".parse().unwrap(),
            server: "10.0.0.3:80".parse().unwrap(),
        };
        Evidence::new(1_000, connection, Leg::Upstream, fact)
    }

    #[test]
    fn facts_read_as_the_reports_always_said() {
        let cases = [
            (
                Fact::Syn { by: Party::Client },
                "client opens the connection (SYN)",
            ),
            (
                Fact::Request {
                    by: Party::Proxy,
                    method: "POST".into(),
                    target: "/a".into(),
                    exchange: 3,
                    fresh: false,
                    idle_ms: Some(12.345),
                },
                "proxy sends POST /a (exchange #3, reused, idle 12.3 ms)",
            ),
            (
                Fact::Request {
                    by: Party::Client,
                    method: "GET".into(),
                    target: "/".into(),
                    exchange: 1,
                    fresh: true,
                    idle_ms: None,
                },
                "client sends GET / (exchange #1, fresh connection)",
            ),
            (
                Fact::Response {
                    by: Party::Proxy,
                    status: 502,
                },
                "proxy answers 502",
            ),
            (
                Fact::Fin {
                    by: Party::Upstream,
                },
                "upstream FIN",
            ),
            (
                Fact::IdleClose {
                    by: Party::Upstream,
                    rst: true,
                    idle_ms: None,
                },
                "upstream RST on the idle pooled connection (idle unknown)",
            ),
            (
                Fact::KernelWriteInCloseWait {
                    process: Some("caddy[42]".into()),
                    idle_ms: 4.0,
                },
                "kernel: caddy[42] wrote after 4.0 ms idle on the socket already in \
                 CLOSE_WAIT (FIN unread)",
            ),
            (
                Fact::KernelReadError {
                    process: None,
                    errno: ECONNRESET,
                },
                "kernel: the proxy read ECONNRESET",
            ),
        ];
        for (fact, text) in cases {
            assert_eq!(ev(fact).to_string(), text);
        }
    }

    #[test]
    fn evidence_serializes_its_sentence_and_its_data() {
        let e = ev(Fact::IdleClose {
            by: Party::Upstream,
            rst: false,
            idle_ms: Some(1.5),
        });
        let v = serde_json::to_value(&e).unwrap();
        assert_eq!(v["time"], "1970-01-01T00:00:00.000001Z");
        assert_eq!(v["connection"], "10.0.0.2:4000->10.0.0.3:80");
        assert_eq!(
            v["what"],
            "upstream FIN on the idle pooled connection (idle 1.5 ms)"
        );
        assert_eq!(v["leg"], "upstream");
        assert_eq!(v["kind"], "idle_close");
        assert_eq!(v["by"], "upstream");
        assert_eq!(v["rst"], false);
        assert_eq!(v["idle_ms"], 1.5);
    }
}
