//! nginx's own logs: the access log in the lab's [`LOG_FORMAT`] (one line per request, with
//! its id, its status and what nginx recorded of the upstream) and the error log (the system
//! call or timeout behind a 5xx, naming the request line, hence its `rid`).

use crate::logs::fields;

/// The `log_format` the lab's nginx configs use: `key=value` pairs, values that can hold
/// spaces or commas (retries: `"502, 200"`) in double quotes.
pub const LOG_FORMAT: &str = concat!(
    r#"$msec rid="$http_x_request_id" arg_rid="$arg_rid" status=$status "#,
    r#"upstream_status="$upstream_status" upstream_addr="$upstream_addr" "#,
    r#"request_time=$request_time upstream_connect_time="$upstream_connect_time" "#,
    r#"upstream_response_time="$upstream_response_time""#
);

/// One request as nginx's access log shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessEntry {
    /// `X-Request-Id`, else the `rid` query argument.
    pub rid: Option<u64>,
    /// The status nginx answered (499 when the client closed first).
    pub status: Option<u16>,
    /// `$upstream_status`: one entry per upstream attempt, `", "`-separated (`-` when none).
    pub upstream_status: String,
    /// `$upstream_addr`: one entry per upstream attempt.
    pub upstream_addr: String,
    /// The whole line, for evidence.
    pub line: String,
}

impl AccessEntry {
    /// How many upstream attempts nginx made (more than one means it retried).
    pub fn attempts(&self) -> usize {
        self.upstream_addr
            .split(", ")
            .flat_map(|group| group.split(" : "))
            .filter(|a| !a.trim().is_empty() && a.trim() != "-")
            .count()
    }

    /// Whether the upstream itself sent the status nginx answered with (nginx passed it on).
    pub fn status_from_upstream(&self) -> bool {
        let last = self.upstream_status.rsplit(',').next().unwrap_or("").trim();
        self.status.is_some_and(|s| last == s.to_string())
    }
}

/// Parses one access-log line written with [`LOG_FORMAT`]; `None` when it has none of its
/// fields.
pub fn parse_access(line: &str) -> Option<AccessEntry> {
    let fields = fields::key_values(line);
    if !fields.contains_key("status") {
        return None;
    }
    let rid = fields
        .get("rid")
        .and_then(|v| v.trim().parse().ok())
        .or_else(|| fields.get("arg_rid").and_then(|v| v.trim().parse().ok()));
    Some(AccessEntry {
        rid,
        status: fields.get("status").and_then(|v| v.parse().ok()),
        upstream_status: fields.get("upstream_status").cloned().unwrap_or_default(),
        upstream_addr: fields.get("upstream_addr").cloned().unwrap_or_default(),
        line: line.to_owned(),
    })
}

/// What an error-log line says went wrong, from the words nginx uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// `connect() failed (111: Connection refused)`
    Refused,
    /// `recv() failed (104: Connection reset by peer)` (or `send()`, `writev()`, or a
    /// `(32: Broken pipe)` on write): the upstream reset the connection.
    Reset,
    /// `upstream prematurely closed connection`: EOF before a complete response.
    PrematureClose,
    /// `upstream timed out (110: Connection timed out)`
    Timeout,
    /// `client prematurely closed connection` (nginx answers 499).
    ClientClosed,
    /// Anything else.
    Other,
}

impl ErrorEntry {
    /// How a keep-alive race shows in this line: `closed_unread` when nginx's read of the
    /// response head met a reset with no FIN before it (`recv() failed (104: …)`: the
    /// upstream closed with the request unread), `fin_crossed` when it read EOF (the FIN
    /// arrived first); `None` for other lines.
    pub fn race_subcause(&self) -> Option<&'static str> {
        match self.kind {
            ErrorKind::Reset if self.message.starts_with("recv() failed (104") => {
                Some("closed_unread")
            }
            ErrorKind::PrematureClose => Some("fin_crossed"),
            _ => None,
        }
    }
}

/// One error-log line that names a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorEntry {
    /// `error`, `info`, `warn`, …
    pub level: String,
    /// The `rid` query argument of the logged request line.
    pub rid: Option<u64>,
    pub kind: ErrorKind,
    /// The message, without the context after `, client:`.
    pub message: String,
    /// The whole line, for evidence.
    pub line: String,
}

/// Parses one error-log line; `None` for lines that name no request (start-up notices).
///
/// `2026/11/25 20:35:25 [error] 17374#17374: *2236 recv() failed (104: Connection reset by
/// peer) while reading response header from upstream, client: 198.18.1.1, server: ,
/// request: "POST /x?rid=57 HTTP/1.1", upstream: "http://198.18.2.2:9000/x?rid=57", …`
pub fn parse_error(line: &str) -> Option<ErrorEntry> {
    let open = line.find(" [")?;
    let close = open + line[open..].find("] ")?;
    let level = line[open + 2..close].to_owned();
    let after_level = &line[close + 2..];
    // `PID#TID: *CONN message` — the connection number is absent on some lines.
    let msg_start = after_level.find(": ")? + 2;
    let mut message = &after_level[msg_start..];
    if let Some(m) = message.strip_prefix('*') {
        message = m.split_once(' ').map_or("", |(_, rest)| rest);
    }
    let request = line.split(", request: \"").nth(1)?.split('"').next()?;
    let message = message
        .split(", client: ")
        .next()
        .unwrap_or(message)
        .to_owned();
    Some(ErrorEntry {
        level,
        rid: rid_of_request_line(request),
        kind: kind_of(&message),
        message,
        line: line.to_owned(),
    })
}

/// The `rid` query argument of a request line such as `POST /x?a=1&rid=57 HTTP/1.1`.
pub fn rid_of_request_line(request: &str) -> Option<u64> {
    let target = request.split(' ').nth(1)?;
    let (_, query) = target.split_once('?')?;
    query
        .split('&')
        .find_map(|kv| kv.strip_prefix("rid=")?.parse().ok())
}

fn kind_of(message: &str) -> ErrorKind {
    if message.contains("(111: Connection refused)") {
        ErrorKind::Refused
    } else if message.contains("upstream timed out") {
        ErrorKind::Timeout
    } else if message.contains("client prematurely closed connection") {
        ErrorKind::ClientClosed
    } else if message.contains("upstream prematurely closed connection") {
        ErrorKind::PrematureClose
    } else if message.contains("(104: Connection reset by peer)")
        || message.contains("(32: Broken pipe)")
    {
        ErrorKind::Reset
    } else {
        ErrorKind::Other
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Lines captured from the lab's runs (nginx 1.22).
    const ACCESS_502: &str = r#"1795638925.018 rid="57" arg_rid="57" status=502 upstream_status="502" upstream_addr="198.18.2.2:9000" request_time=0.005 upstream_connect_time="0.000" upstream_response_time="0.003""#;
    const ACCESS_RETRIED: &str = r#"1795638925.020 rid="-" arg_rid="58" status=200 upstream_status="502, 200" upstream_addr="198.18.2.2:9000, 198.18.2.2:9000" request_time=0.005 upstream_connect_time="0.000, 0.000" upstream_response_time="0.003, 0.001""#;
    const RESET: &str = r#"2026/11/25 20:35:25 [error] 17374#17374: *2236 recv() failed (104: Connection reset by peer) while reading response header from upstream, client: 198.18.1.1, server: , request: "POST /x?rid=57 HTTP/1.1", upstream: "http://198.18.2.2:9000/x?rid=57", host: "lab.tracer""#;
    const PREMATURE: &str = r#"2026/11/25 20:34:41 [error] 17374#17374: *1991 upstream prematurely closed connection while reading response header from upstream, client: 198.18.1.1, server: , request: "POST /x?rid=496 HTTP/1.1", upstream: "http://198.18.2.2:9000/x?rid=496", host: "lab.tracer""#;

    #[test]
    fn access_line_gives_rid_status_and_upstream() {
        let a = parse_access(ACCESS_502).unwrap();
        assert_eq!((a.rid, a.status), (Some(57), Some(502)));
        assert_eq!(a.upstream_addr, "198.18.2.2:9000");
        assert_eq!(a.attempts(), 1);
        assert!(
            a.status_from_upstream(),
            "nginx writes its own 502 into $upstream_status"
        );
    }

    #[test]
    fn access_line_without_header_falls_back_to_the_query_and_counts_retries() {
        let a = parse_access(ACCESS_RETRIED).unwrap();
        assert_eq!(a.rid, Some(58));
        assert_eq!(a.attempts(), 2);
        assert!(a.status_from_upstream());
    }

    #[test]
    fn access_garbage_is_skipped() {
        assert_eq!(parse_access(""), None);
        assert_eq!(parse_access("no fields here"), None);
        assert_eq!(parse_access(r#"status="#).map(|a| a.status), Some(None));
        assert_eq!(parse_access(r#"rid="unterminated status=1"#), None);
    }

    #[test]
    fn reset_line_is_a_reset_of_request_57() {
        let e = parse_error(RESET).unwrap();
        assert_eq!(
            (e.level.as_str(), e.rid, e.kind),
            ("error", Some(57), ErrorKind::Reset)
        );
        assert_eq!(
            e.message,
            "recv() failed (104: Connection reset by peer) while reading response header from upstream"
        );
    }

    #[test]
    fn premature_close_line_is_an_eof() {
        let e = parse_error(PREMATURE).unwrap();
        assert_eq!((e.rid, e.kind), (Some(496), ErrorKind::PrematureClose));
    }

    #[test]
    fn contrast_lines_name_their_kind() {
        let refused = r#"2026/11/25 20:41:23 [error] 30806#30806: *2 connect() failed (111: Connection refused) while connecting to upstream, client: 198.18.1.1, server: , request: "POST /api/orders?rid=1 HTTP/1.1", upstream: "http://198.18.2.2:9009/api/orders?rid=1", host: "lab.tracer""#;
        let timeout = r#"2026/11/25 20:41:27 [error] 30951#30951: *2 upstream timed out (110: Connection timed out) while reading response header from upstream, client: 198.18.1.1, server: , request: "POST /slow/3000?rid=1 HTTP/1.1", upstream: "http://198.18.2.2:9000/slow/3000?rid=1", host: "lab.tracer""#;
        let abort = r#"2026/11/25 20:41:35 [info] 32170#32170: *37 epoll_wait() reported that client prematurely closed connection, so upstream connection is closed too while sending request to upstream, client: 198.18.1.1, server: , request: "POST /slow/3000?rid=19 HTTP/1.1", upstream: "http://198.18.2.2:9000/slow/3000?rid=19", host: "lab.tracer""#;
        let kinds: Vec<_> = [refused, timeout, abort]
            .iter()
            .map(|l| parse_error(l).map(|e| (e.rid, e.kind)))
            .collect();
        assert_eq!(
            kinds,
            [
                Some((Some(1), ErrorKind::Refused)),
                Some((Some(1), ErrorKind::Timeout)),
                Some((Some(19), ErrorKind::ClientClosed)),
            ]
        );
        assert_eq!(parse_error(abort).unwrap().level, "info");
    }

    #[test]
    fn the_lab_listen_probe_names_no_request() {
        let probe = "2026/11/25 20:41:23 [info] 30806#30806: *1 client closed connection while waiting for request, client: 198.18.1.2, server: 198.18.1.2:8080";
        assert_eq!(parse_error(probe), None);
    }

    #[test]
    fn notices_without_a_request_are_skipped() {
        assert_eq!(
            parse_error(
                "2026/11/25 20:31:04 [notice] 11949#11949: using the \"epoll\" event method"
            ),
            None
        );
        assert_eq!(parse_error("2026/11/25 20:31:04 [info] 11951#11951: *1 client 198.18.1.1 closed keepalive connection"), None);
        assert_eq!(parse_error("garbage"), None);
        assert_eq!(parse_error(""), None);
    }

    #[test]
    fn rid_comes_from_the_query_of_the_request_line() {
        assert_eq!(rid_of_request_line("POST /a?x=1&rid=9 HTTP/1.1"), Some(9));
        assert_eq!(rid_of_request_line("POST /a HTTP/1.1"), None);
        assert_eq!(rid_of_request_line("POST"), None);
    }

    #[test]
    fn messages_map_to_kinds() {
        assert_eq!(
            kind_of("connect() failed (111: Connection refused) while connecting to upstream"),
            ErrorKind::Refused
        );
        assert_eq!(kind_of("upstream timed out (110: Connection timed out) while reading response header from upstream"), ErrorKind::Timeout);
        assert_eq!(
            kind_of("writev() failed (32: Broken pipe) while sending request to upstream"),
            ErrorKind::Reset
        );
        assert_eq!(
            kind_of("no live upstreams while connecting to upstream"),
            ErrorKind::Other
        );
    }
}
