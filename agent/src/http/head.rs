//! HTTP/1.x message heads: parsed with `httparse`, keeping only what tracer reports.

/// Most header lines a head may carry before it counts as garbage.
const MAX_HEADERS: usize = 96;

/// A request line and the headers tracer keeps.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestHead {
    pub method: String,
    pub target: String,
    /// `1` for HTTP/1.1, `0` for HTTP/1.0.
    pub minor: u8,
    pub host: Option<String>,
    pub request_id: Option<String>,
    pub traceparent: Option<String>,
    pub via: Option<String>,
    pub connection: Option<String>,
    pub content_length: Option<u64>,
    pub chunked: bool,
}

/// A status line and the headers tracer keeps.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResponseHead {
    pub status: u16,
    pub minor: u8,
    pub server: Option<String>,
    pub via: Option<String>,
    pub connection: Option<String>,
    pub content_length: Option<u64>,
    pub chunked: bool,
    /// `Keep-Alive: timeout=N`: the seconds the server says it keeps an idle connection
    /// open (RFC 2068 §19.7.1.1; Node and Apache send it).
    pub keep_alive_timeout_s: Option<u32>,
    /// `Keep-Alive: max=N` (Apache sends it, Node does not).
    pub keep_alive_max: Option<u32>,
    /// The first bytes of a 5xx response's body that came with its head (at most
    /// [`BODY_START`]): the proxy's own error page names the proxy.
    pub body_start: Option<Vec<u8>>,
}

/// Bytes of a 5xx body kept in [`ResponseHead::body_start`].
pub const BODY_START: usize = 512;

impl RequestHead {
    /// The request method is idempotent (RFC 9110 §9.2.2): a proxy may retry it safely.
    #[must_use]
    pub fn idempotent(&self) -> bool {
        matches!(
            self.method.as_str(),
            "GET" | "HEAD" | "OPTIONS" | "TRACE" | "PUT" | "DELETE"
        )
    }
}

impl ResponseHead {
    /// `Connection: close` (or HTTP/1.0 without keep-alive): the sender will close.
    #[must_use]
    pub fn closes(&self) -> bool {
        match &self.connection {
            Some(c) => c.to_ascii_lowercase().contains("close"),
            None => self.minor == 0,
        }
    }
}

/// Why a head could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HeadError {
    /// `httparse` rejected the bytes.
    #[error("not an HTTP/1.x message head ({0})")]
    Syntax(&'static str),
    /// A Content-Length value that is not a number, or two that disagree.
    #[error("invalid Content-Length")]
    ContentLength,
}

fn text(v: &[u8]) -> String {
    String::from_utf8_lossy(v).trim().to_owned()
}

fn syntax(e: httparse::Error) -> HeadError {
    HeadError::Syntax(match e {
        httparse::Error::HeaderName => "bad header name",
        httparse::Error::HeaderValue => "bad header value",
        httparse::Error::NewLine => "bad line ending",
        httparse::Error::Status => "bad status",
        httparse::Error::Token => "bad token",
        httparse::Error::TooManyHeaders => "too many headers",
        httparse::Error::Version => "bad version",
    })
}

/// Common header fields of either kind of message.
#[derive(Default)]
struct Common {
    via: Option<String>,
    connection: Option<String>,
    content_length: Option<u64>,
    chunked: bool,
}

fn common(name: &str, value: &[u8], c: &mut Common) -> Result<bool, HeadError> {
    if name.eq_ignore_ascii_case("content-length") {
        let n: u64 = std::str::from_utf8(value)
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .ok_or(HeadError::ContentLength)?;
        if c.content_length.is_some_and(|old| old != n) {
            return Err(HeadError::ContentLength);
        }
        c.content_length = Some(n);
    } else if name.eq_ignore_ascii_case("transfer-encoding") {
        c.chunked = value
            .rsplit(|&b| b == b',')
            .next()
            .is_some_and(|last| text(last).eq_ignore_ascii_case("chunked"));
    } else if name.eq_ignore_ascii_case("connection") {
        c.connection = Some(text(value));
    } else if name.eq_ignore_ascii_case("via") {
        c.via = Some(text(value));
    } else {
        return Ok(false);
    }
    Ok(true)
}

/// Parses a complete request head (ending with the empty line).
pub fn parse_request(buf: &[u8]) -> Result<RequestHead, HeadError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(buf).map_err(syntax)? {
        httparse::Status::Complete(_) => {}
        httparse::Status::Partial => return Err(HeadError::Syntax("incomplete head")),
    }
    let mut c = Common::default();
    let mut head = RequestHead {
        method: req.method.unwrap_or_default().to_owned(),
        target: req.path.unwrap_or_default().to_owned(),
        minor: req.version.unwrap_or(1),
        ..RequestHead::default()
    };
    for h in req.headers.iter() {
        if common(h.name, h.value, &mut c)? {
            continue;
        }
        if h.name.eq_ignore_ascii_case("host") {
            head.host = Some(text(h.value));
        } else if h.name.eq_ignore_ascii_case("x-request-id") {
            head.request_id = Some(text(h.value));
        } else if h.name.eq_ignore_ascii_case("traceparent") {
            head.traceparent = Some(text(h.value));
        }
    }
    head.via = c.via;
    head.connection = c.connection;
    head.content_length = c.content_length;
    head.chunked = c.chunked;
    Ok(head)
}

/// Parses a complete response head (ending with the empty line).
pub fn parse_response(buf: &[u8]) -> Result<ResponseHead, HeadError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut res = httparse::Response::new(&mut headers);
    match res.parse(buf).map_err(syntax)? {
        httparse::Status::Complete(_) => {}
        httparse::Status::Partial => return Err(HeadError::Syntax("incomplete head")),
    }
    let mut c = Common::default();
    let mut head = ResponseHead {
        status: res.code.unwrap_or(0),
        minor: res.version.unwrap_or(1),
        ..ResponseHead::default()
    };
    for h in res.headers.iter() {
        if common(h.name, h.value, &mut c)? {
            continue;
        }
        if h.name.eq_ignore_ascii_case("server") {
            head.server = Some(text(h.value));
        } else if h.name.eq_ignore_ascii_case("keep-alive") {
            head.keep_alive_timeout_s = keep_alive_param(h.value, "timeout");
            head.keep_alive_max = keep_alive_param(h.value, "max");
        }
    }
    head.via = c.via;
    head.connection = c.connection;
    head.content_length = c.content_length;
    head.chunked = c.chunked;
    Ok(head)
}

/// The `timeout` parameter of a `Keep-Alive` header (`timeout=5, max=100`), in seconds;
/// `None` when it is absent or not a number.
fn keep_alive_param(value: &[u8], name: &str) -> Option<u32> {
    std::str::from_utf8(value).ok()?.split(',').find_map(|p| {
        let (k, v) = p.split_once('=')?;
        k.trim()
            .eq_ignore_ascii_case(name)
            .then(|| v.trim().trim_matches('"').parse().ok())
            .flatten()
    })
}

/// True when `data` plausibly starts a request (a method token and a space).
#[must_use]
pub fn looks_like_request(data: &[u8]) -> bool {
    const METHODS: [&[u8]; 9] = [
        b"GET ",
        b"POST ",
        b"PUT ",
        b"HEAD ",
        b"DELETE ",
        b"OPTIONS ",
        b"PATCH ",
        b"TRACE ",
        b"CONNECT ",
    ];
    METHODS.iter().any(|m| data.starts_with(m))
}

/// True when `data` plausibly starts a response.
#[must_use]
pub fn looks_like_response(data: &[u8]) -> bool {
    data.starts_with(b"HTTP/1.")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_keeps_selected_headers() {
        let h = parse_request(
            b"POST /a?rid=1 HTTP/1.1\r\nHost: x\r\nX-Request-Id: 42\r\ntraceparent: 00-ab\r\n\
              Content-Length: 5\r\nConnection: keep-alive\r\n\r\n",
        )
        .unwrap();
        assert_eq!(h.method, "POST");
        assert_eq!(h.target, "/a?rid=1");
        assert_eq!(h.request_id.as_deref(), Some("42"));
        assert_eq!(h.traceparent.as_deref(), Some("00-ab"));
        assert_eq!(h.content_length, Some(5));
        assert!(!h.idempotent());
    }

    #[test]
    fn response_reads_status_and_server() {
        let h = parse_response(
            b"HTTP/1.1 502 Bad Gateway\r\nServer: Caddy\r\nTransfer-Encoding: chunked\r\n\r\n",
        )
        .unwrap();
        assert_eq!(h.status, 502);
        assert_eq!(h.server.as_deref(), Some("Caddy"));
        assert!(h.chunked);
        assert!(!h.closes());
    }

    #[test]
    fn keep_alive_timeout_is_read_from_its_header() {
        let node = parse_response(
            b"HTTP/1.1 200 OK\r\nConnection: keep-alive\r\nKeep-Alive: timeout=5\r\n\r\n",
        )
        .unwrap();
        assert_eq!(node.keep_alive_timeout_s, Some(5));
        let apache =
            parse_response(b"HTTP/1.1 200 OK\r\nkeep-alive: max=100, Timeout = 15\r\n\r\n")
                .unwrap();
        assert_eq!(apache.keep_alive_timeout_s, Some(15));
        assert_eq!(apache.keep_alive_max, Some(100));
        assert_eq!(node.keep_alive_max, None);
        let odd = parse_response(b"HTTP/1.1 200 OK\r\nKeep-Alive: timeout=soon\r\n\r\n").unwrap();
        assert_eq!(odd.keep_alive_timeout_s, None);
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(parse_request(b"\x16\x03\x01\x02\x00\r\n\r\n").is_err());
        assert!(parse_response(b"HTTP/1.1 abc\r\n\r\n").is_err());
        assert_eq!(
            parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n"),
            Err(HeadError::ContentLength)
        );
    }
}
