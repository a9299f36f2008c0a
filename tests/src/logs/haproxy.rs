//! HAProxy's own log in the lab's [`LOG_FORMAT`]: one line per request with its id, its
//! status, the termination state (`%tsc`: who ended the session and in which phase), the
//! retries, and the source port of the server-side connection it rode.

use crate::logs::fields;
use crate::logs::nginx::rid_of_request_line;

/// The `log-format` the lab's HAProxy configs use (the frontend captures `X-Request-Id` as
/// request header 0).
pub const LOG_FORMAT: &str = "%t rid=%[capture.req.hdr(0)] status=%ST tsc=%tsc retries=%rc \
     timers=%Tq/%Tw/%Tc/%Tr/%Ta server=%b/%s backend_port=%bp req=%{+Q}r";

/// One request as HAProxy logged it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The captured `X-Request-Id`, else the `rid` query argument of the request line.
    pub rid: Option<u64>,
    /// The status HAProxy answered (`-1` when none is logged becomes `None`).
    pub status: Option<u16>,
    /// The four-character termination state, e.g. `----`, `SH--`, `CD--`.
    pub termination: String,
    /// Retries HAProxy made (`+N` when it also redispatched).
    pub retries: u32,
    /// Source port of the server-side connection (`0` or `-` when there was none).
    pub backend_port: Option<u16>,
    /// The whole line, for evidence.
    pub line: String,
}

impl Entry {
    /// Who ended the session first: `C` client, `S` server, `P` proxy, `s` server timeout,
    /// `c` client timeout, `-` normal end.
    pub fn ended_by(&self) -> char {
        self.termination.chars().next().unwrap_or('-')
    }

    /// The session's phase then: `H` waiting for the response head, `D` data, `C`
    /// connecting, `R` waiting for the request, `Q` queued, `-` normal end.
    pub fn phase(&self) -> char {
        self.termination.chars().nth(1).unwrap_or('-')
    }
}

/// Parses one line written with [`LOG_FORMAT`]; `None` for other lines (start-up notices).
pub fn parse_line(line: &str) -> Option<Entry> {
    let f = fields::key_values(line);
    let termination = f.get("tsc")?.clone();
    let rid = f
        .get("rid")
        .and_then(|v| v.trim().parse().ok())
        .or_else(|| f.get("req").and_then(|r| rid_of_request_line(r)));
    Some(Entry {
        rid,
        status: f.get("status").and_then(|s| s.parse().ok()),
        termination,
        retries: f
            .get("retries")
            .and_then(|r| r.trim_start_matches('+').parse().ok())
            .unwrap_or(0),
        backend_port: f
            .get("backend_port")
            .and_then(|p| p.parse().ok())
            .filter(|&p| p != 0),
        line: line.to_owned(),
    })
}

/// What a termination state says about a request HAProxy answered with `status`, in a
/// scenario where the upstream closes idle keep-alive connections (`race`) or not.
pub fn cause(e: &Entry, race: bool) -> &'static str {
    if e.termination.len() < 2 {
        return "unknown";
    }
    match (e.ended_by(), e.phase()) {
        // The server closed or reset while HAProxy waited for the head or read the body.
        ('S', 'H' | 'D') if race => "keepalive_race",
        ('S', 'H') => "upstream_closed_early",
        ('S', 'C') => "upstream_refused",
        ('s', 'C') => "connect_timeout",
        ('s', 'H') => "proxy_timeout",
        ('C' | 'c', _) => "client_abort",
        ('-', '-') if e.status.is_some_and(|s| s >= 500) => "upstream_generated",
        _ => "unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Lines captured from the lab's haproxy-gunicorn run (HAProxy 2.6).
    const OK: &str = r#"25/Nov/2026:20:44:24.275 rid=20 status=200 tsc=---- retries=0 timers=0/0/1/930/931 server=app/gunicorn backend_port=55960 req="POST /api/orders?rid=20 HTTP/1.1""#;
    const RACE: &str = r#"25/Nov/2026:20:44:26.205 rid=62 status=502 tsc=SH-- retries=0 timers=0/0/0/-1/1 server=app/gunicorn backend_port=55960 req="POST /api/orders?rid=62 HTTP/1.1""#;
    const PROBE: &str = r#"25/Nov/2026:20:43:15.598 rid=- status=400 tsc=CR-- retries=0 timers=-1/-1/-1/-1/0 server=lab/<NOSRV> backend_port=- req="<BADREQ>""#;

    #[test]
    fn a_served_request() {
        let e = parse_line(OK).unwrap();
        assert_eq!(
            (e.rid, e.status, e.termination.as_str()),
            (Some(20), Some(200), "----")
        );
        assert_eq!((e.retries, e.backend_port), (0, Some(55960)));
    }

    #[test]
    fn server_abort_waiting_for_the_head_is_the_race() {
        let e = parse_line(RACE).unwrap();
        assert_eq!(
            (e.rid, e.status, e.ended_by(), e.phase()),
            (Some(62), Some(502), 'S', 'H')
        );
        assert_eq!(cause(&e, true), "keepalive_race");
        assert_eq!(cause(&e, false), "upstream_closed_early");
    }

    #[test]
    fn the_listen_probe_has_no_request_id() {
        let e = parse_line(PROBE).unwrap();
        assert_eq!((e.rid, e.backend_port), (None, None));
        assert_eq!(cause(&e, true), "client_abort");
    }

    #[test]
    fn rid_falls_back_to_the_request_line() {
        let line =
            r#"x rid= status=502 tsc=SH-- retries=+1 backend_port=1 req="POST /a?rid=7 HTTP/1.1""#;
        let e = parse_line(line).unwrap();
        assert_eq!((e.rid, e.retries), (Some(7), 1));
    }

    #[test]
    fn termination_states_map_to_causes() {
        let with = |tsc: &str, status: u16| Entry {
            rid: None,
            status: Some(status),
            termination: tsc.into(),
            retries: 0,
            backend_port: None,
            line: String::new(),
        };
        assert_eq!(cause(&with("SC--", 503), false), "upstream_refused");
        assert_eq!(cause(&with("sH--", 504), false), "proxy_timeout");
        assert_eq!(cause(&with("CD--", 200), false), "client_abort");
        assert_eq!(cause(&with("----", 500), false), "upstream_generated");
        assert_eq!(cause(&with("PR--", 403), false), "unknown");
        assert_eq!(cause(&with("", 502), false), "unknown");
    }

    #[test]
    fn other_lines_are_skipped() {
        assert_eq!(
            parse_line("[NOTICE]   (1655) : haproxy version is 2.6.12"),
            None
        );
        assert_eq!(parse_line(""), None);
    }
}
