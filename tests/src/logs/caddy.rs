//! Caddy's JSON logs: the access log (`http.log.access…`, one line per request with its
//! status) and the error log (`http.log.error`, the transport error behind a 5xx).

use serde_json::Value;

/// One request as Caddy logged it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaddyEntry {
    /// `access` or `error`.
    pub kind: Kind,
    /// The `X-Request-Id` request header, when present.
    pub rid: Option<u64>,
    pub status: Option<u16>,
    /// `msg` of an error entry (the Go error text), e.g. `EOF`.
    pub msg: String,
    /// The whole line, for evidence.
    pub line: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Access,
    Error,
}

/// Parses one log line; `None` for lines of other loggers or that are not JSON.
pub fn parse_line(line: &str) -> Option<CaddyEntry> {
    let v: Value = serde_json::from_str(line).ok()?;
    let logger = v.get("logger")?.as_str()?;
    let kind = if logger.starts_with("http.log.access") {
        Kind::Access
    } else if logger.starts_with("http.log.error") {
        Kind::Error
    } else {
        return None;
    };
    let rid = v
        .pointer("/request/headers/X-Request-Id/0")
        .and_then(Value::as_str)
        .and_then(|s| s.trim().parse().ok());
    let status = v
        .get("status")
        .and_then(Value::as_u64)
        .and_then(|s| u16::try_from(s).ok());
    let msg = v
        .get("msg")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    Some(CaddyEntry {
        kind,
        rid,
        status,
        msg,
        line: line.to_owned(),
    })
}

/// The cause a Go reverse proxy's transport error shows when the upstream closes idle
/// keep-alive connections: `(cause, subcause)`, the subcause where the message tells it,
/// or `None` for other errors.
///
/// Go's transport says `server closed idle connection` when the connection it took from
/// its pool was already closed and it wrote nothing of the request; `EOF` when it had
/// written the request and the upstream's FIN came back instead of a response (the FIN is
/// read before the RST that answers the request); `connection reset by peer` when an RST
/// came with no FIN before it — the upstream closed the connection with the request
/// unread in its buffer, so its kernel sent RST instead of FIN. A write that failed
/// (`use of closed network connection`, `broken pipe`: the connection died while the
/// request's body was still going out) is a race too, but does not say which way it died.
pub fn race_cause(msg: &str) -> Option<(&'static str, Option<&'static str>)> {
    if msg.contains("server closed idle connection") {
        Some(("keepalive_race", Some("request_never_sent")))
    } else if msg.contains("connection reset by peer") {
        Some(("keepalive_race", Some("closed_unread")))
    } else if msg == "EOF" || msg.ends_with(": EOF") {
        Some(("keepalive_race", Some("fin_crossed")))
    } else if msg.contains("broken pipe") || msg.contains("use of closed network connection") {
        Some(("keepalive_race", None))
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ERROR_LINE: &str = r#"{"level":"error","ts":1764102000.5,"logger":"http.log.error.log0","msg":"http: server closed idle connection","request":{"remote_ip":"198.18.1.1","remote_port":"40000","proto":"HTTP/1.1","method":"POST","host":"lab.tracer","uri":"/login?rid=17","headers":{"X-Request-Id":["17"],"Content-Length":["64"]}},"duration":0.0004,"status":502,"err_id":"abc","err_trace":"reverseproxy.statusError (reverseproxy.go:1272)"}"#;
    const ACCESS_LINE: &str = r#"{"level":"error","ts":1764102000.5,"logger":"http.log.access.log0","msg":"handled request","request":{"method":"POST","uri":"/login?rid=17","headers":{"X-Request-Id":["17"]}},"status":502,"size":0}"#;

    #[test]
    fn error_line_gives_rid_status_and_go_error() {
        let e = parse_line(ERROR_LINE).unwrap();
        assert_eq!(e.kind, Kind::Error);
        assert_eq!(e.rid, Some(17));
        assert_eq!(e.status, Some(502));
        assert_eq!(e.msg, "http: server closed idle connection");
    }

    #[test]
    fn access_line_gives_rid_and_status() {
        let e = parse_line(ACCESS_LINE).unwrap();
        assert_eq!(e.kind, Kind::Access);
        assert_eq!((e.rid, e.status), (Some(17), Some(502)));
    }

    #[test]
    fn other_loggers_and_garbage_are_skipped() {
        assert_eq!(
            parse_line(r#"{"level":"info","logger":"tls","msg":"x"}"#),
            None
        );
        assert_eq!(parse_line("not json"), None);
    }

    #[test]
    fn go_transport_errors_map_to_race_subcauses() {
        assert_eq!(
            race_cause("http: server closed idle connection"),
            Some(("keepalive_race", Some("request_never_sent")))
        );
        assert_eq!(
            race_cause("EOF"),
            Some(("keepalive_race", Some("fin_crossed")))
        );
        assert_eq!(
            race_cause("read tcp 198.18.2.1:4000->198.18.2.2:9000: read: connection reset by peer"),
            Some(("keepalive_race", Some("closed_unread")))
        );
        assert_eq!(
            race_cause("readfrom tcp 198.18.2.1:39318->198.18.2.2:9000: write tcp 198.18.2.1:39318->198.18.2.2:9000: use of closed network connection"),
            Some(("keepalive_race", None))
        );
        assert_eq!(
            race_cause("dial tcp 198.18.2.2:9009: connect: connection refused"),
            None
        );
    }
}
