use super::*;

fn kinds(ev: &[HttpEvent]) -> Vec<String> {
    ev.iter()
        .map(|e| match e {
            HttpEvent::Request { index, head, .. } => format!("req{index} {}", head.method),
            HttpEvent::RequestEnd { index, .. } => format!("reqend{index}"),
            HttpEvent::Response { index, head, .. } => format!("res{index} {}", head.status),
            HttpEvent::ResponseEnd { index, .. } => format!("resend{index}"),
            HttpEvent::Garbage { .. } => "garbage".into(),
        })
        .collect()
}

#[test]
fn pipelined_requests_get_responses_in_order() {
    let mut c = HttpConn::default();
    let mut ev = Vec::new();
    c.bytes(
        true,
        1,
        0,
        b"GET /a HTTP/1.1\r\n\r\nHEAD /b HTTP/1.1\r\n\r\n",
        0,
        true,
        &mut ev,
    );
    c.bytes(false,
        2,
        0,
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1 200 OK\r\nContent-Length: 99\r\n\r\n",
        0,
        true,
        &mut ev,
    );
    assert_eq!(
        kinds(&ev),
        [
            "req1 GET",
            "reqend1",
            "req2 HEAD",
            "reqend2",
            "res1 200",
            "resend1",
            "res2 200",
            "resend2"
        ]
    );
    assert_eq!(c.outstanding(), 0);
}

#[test]
fn interim_1xx_is_not_the_final_response() {
    let mut c = HttpConn::default();
    let mut ev = Vec::new();
    c.bytes(
        true,
        1,
        0,
        b"POST / HTTP/1.1\r\nContent-Length: 2\r\nExpect: 100-continue\r\n\r\n",
        0,
        true,
        &mut ev,
    );
    c.bytes(
        false,
        2,
        0,
        b"HTTP/1.1 100 Continue\r\n\r\n",
        0,
        true,
        &mut ev,
    );
    c.bytes(true, 3, 0, b"hi", 0, true, &mut ev);
    c.bytes(
        false,
        4,
        0,
        b"HTTP/1.1 204 No Content\r\n\r\n",
        0,
        true,
        &mut ev,
    );
    assert_eq!(kinds(&ev), ["req1 POST", "reqend1", "res1 204", "resend1"]);
}

#[test]
fn not_modified_and_no_content_have_no_body() {
    let mut c = HttpConn::default();
    let mut ev = Vec::new();
    c.bytes(
        true,
        1,
        0,
        b"GET / HTTP/1.1\r\n\r\nGET / HTTP/1.1\r\n\r\n",
        0,
        true,
        &mut ev,
    );
    c.bytes(
        false,
        2,
        0,
        b"HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\n\r\n",
        0,
        true,
        &mut ev,
    );
    c.bytes(
        false,
        3,
        0,
        b"HTTP/1.1 204 No Content\r\n\r\n",
        0,
        true,
        &mut ev,
    );
    assert_eq!(
        kinds(&ev)[4..],
        ["res1 304", "resend1", "res2 204", "resend2"]
    );
}

#[test]
fn close_delimited_response_ends_at_server_fin() {
    let mut c = HttpConn::default();
    let mut ev = Vec::new();
    c.bytes(true, 1, 0, b"GET / HTTP/1.0\r\n\r\n", 0, true, &mut ev);
    c.bytes(
        false,
        2,
        0,
        b"HTTP/1.0 200 OK\r\n\r\nbody",
        0,
        true,
        &mut ev,
    );
    c.server_closed(3, &mut ev);
    assert_eq!(kinds(&ev), ["req1 GET", "reqend1", "res1 200", "resend1"]);
}

#[test]
fn snaplen_cut_request_body_ends_by_sequence_numbers() {
    let mut c = HttpConn::default();
    let mut ev = Vec::new();
    c.bytes(
        true,
        1,
        0,
        b"POST / HTTP/1.1\r\nContent-Length: 1000\r\n\r\nabc",
        997,
        true,
        &mut ev,
    );
    assert_eq!(kinds(&ev), ["req1 POST", "reqend1"]);
}

#[test]
fn tls_bytes_mark_the_connection_unparseable() {
    let mut c = HttpConn::default();
    let mut ev = Vec::new();
    c.bytes(
        true,
        1,
        0,
        b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03\r\n\r\n",
        0,
        true,
        &mut ev,
    );
    assert_eq!(kinds(&ev), ["garbage"]);
    assert!(c.unparseable.is_some());
}

#[test]
fn response_without_seen_request_gets_its_own_exchange() {
    let mut c = HttpConn::default();
    let mut ev = Vec::new();
    c.bytes(
        false,
        1,
        0,
        b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n",
        0,
        true,
        &mut ev,
    );
    assert_eq!(kinds(&ev), ["res1 502", "resend1"]);
}
