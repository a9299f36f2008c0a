use super::*;

/// RFC 7541 C.4.1: `:method GET`, `:scheme http`, `:path /`, `:authority www.example.com`
/// (Huffman-coded), then a literal `x-request-id: 42` without indexing.
fn request_block() -> Vec<u8> {
    let mut b = hex("828684418cf1e3c2e5f23a6ba0ab90f4ff");
    b.push(0x00);
    b.push(12);
    b.extend_from_slice(b"x-request-id");
    b.push(2);
    b.extend_from_slice(b"42");
    b
}

/// RFC 7541 C.6.1: `:status 302` and three more headers, all added to the dynamic table.
const RESPONSE_1: &str = "488264025885aec3771a4b6196d07abe941054d444a8200595040b8166e082a62d1bff6e919d29ad171863c78f0b97c8e9ae82ae43d3";
/// RFC 7541 C.6.2: `:status 307` as a literal, the rest as references to the dynamic table.
const RESPONSE_2: &str = "4883640effc1c0bf";

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut f = len.to_be_bytes()[1..].to_vec();
    f.push(kind);
    f.push(flags);
    f.extend_from_slice(&stream.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

fn settings() -> Vec<u8> {
    frame(frame::SETTINGS, 0, 0, &[0, 3, 0, 0, 0, 100])
}

fn client_hello(conn: &mut H2Conn, out: &mut Vec<HttpEvent>) {
    let mut c = PREFACE.to_vec();
    c.extend(settings());
    c.extend(frame(
        frame::HEADERS,
        flag::END_HEADERS | flag::END_STREAM,
        1,
        &request_block(),
    ));
    assert!(starts_h2(true, &c));
    conn.bytes(true, 10, &c, 0, out);
}

#[test]
fn a_request_and_its_response_are_one_exchange_with_status_and_id() {
    let mut conn = H2Conn::default();
    let mut out = Vec::new();
    client_hello(&mut conn, &mut out);
    let mut s = settings();
    assert!(starts_h2(false, &s));
    s.extend(frame(
        frame::HEADERS,
        flag::END_HEADERS,
        1,
        &hex(RESPONSE_1),
    ));
    s.extend(frame(frame::DATA, flag::END_STREAM, 1, b"hello"));
    conn.bytes(false, 20, &s, 0, &mut out);
    assert_eq!(out.len(), 4, "{out:?}");
    let HttpEvent::Request { index, head, .. } = &out[0] else {
        panic!("{out:?}")
    };
    assert_eq!((*index, head.method.as_str()), (1, "GET"));
    assert_eq!(head.request_id.as_deref(), Some("42"));
    assert_eq!(head.host.as_deref(), Some("www.example.com"));
    assert_eq!(out[1], HttpEvent::RequestEnd { ts: 10, index: 1 });
    let HttpEvent::Response {
        ts, index, head, ..
    } = &out[2]
    else {
        panic!("{out:?}")
    };
    assert_eq!((*ts, *index, head.status), (20, 1, 302));
    assert_eq!(out[3], HttpEvent::ResponseEnd { ts: 20, index: 1 });
    assert_eq!(
        (conn.outstanding(), conn.responding(), conn.errors()),
        (0, false, 0)
    );
}

#[test]
fn a_status_sent_as_a_table_reference_needs_the_connections_hpack_state() {
    let mut conn = H2Conn::default();
    let mut out = Vec::new();
    client_hello(&mut conn, &mut out);
    let mut s = settings();
    s.extend(frame(
        frame::HEADERS,
        flag::END_HEADERS | flag::END_STREAM,
        1,
        &hex(RESPONSE_1),
    ));
    conn.bytes(false, 20, &s, 0, &mut out);
    // The second response's other headers are one-byte references to what the first added.
    conn.bytes(
        false,
        30,
        &frame(frame::HEADERS, flag::END_HEADERS, 3, &hex(RESPONSE_2)),
        0,
        &mut out,
    );
    let statuses: Vec<u16> = out
        .iter()
        .filter_map(|e| match e {
            HttpEvent::Response { head, .. } => Some(head.status),
            _ => None,
        })
        .collect();
    assert_eq!(statuses, [302, 307]);
    assert!(conn.responding());
    // Decoded without the first block, the second cannot resolve its references.
    let mut fresh = loona_hpack::Decoder::new();
    assert!(fresh.decode(&hex(RESPONSE_2)).is_err());
}

#[test]
fn data_payloads_may_fall_in_uncopied_bytes() {
    let mut conn = H2Conn::default();
    let mut out = Vec::new();
    client_hello(&mut conn, &mut out);
    // One write: SETTINGS, the response head, a 1000-byte DATA frame of which 3 bytes
    // were copied.
    let mut w = settings();
    w.extend(frame(
        frame::HEADERS,
        flag::END_HEADERS,
        1,
        &hex(RESPONSE_1),
    ));
    let data = frame(frame::DATA, flag::END_STREAM, 1, &[b'x'; 1000]);
    w.extend_from_slice(&data[..12]);
    conn.bytes(false, 20, &w, 997, &mut out);
    // The next write starts with a frame header again.
    conn.bytes(
        false,
        30,
        &frame(frame::HEADERS, flag::END_HEADERS, 3, &hex(RESPONSE_2)),
        0,
        &mut out,
    );
    assert_eq!(conn.errors(), 0);
    assert!(out.contains(&HttpEvent::ResponseEnd { ts: 20, index: 1 }));
    assert!(matches!(out.last(), Some(HttpEvent::Response { head, .. }) if head.status == 307));
}

#[test]
fn a_header_block_cut_short_stops_decoding_that_direction_rather_than_guess() {
    let mut conn = H2Conn::default();
    let mut out = Vec::new();
    client_hello(&mut conn, &mut out);
    let block = hex(RESPONSE_1);
    let f = frame(frame::HEADERS, flag::END_HEADERS, 1, &block);
    conn.bytes(false, 20, &f[..20], (f.len() - 20) as u64, &mut out);
    conn.bytes(
        false,
        30,
        &frame(frame::HEADERS, flag::END_HEADERS, 3, &hex(RESPONSE_2)),
        0,
        &mut out,
    );
    assert!(conn.errors() >= 1);
    assert!(
        !out.iter().any(|e| matches!(e, HttpEvent::Response { .. })),
        "{out:?}"
    );
    // the request side still works: it has its own table
    assert_eq!(conn.outstanding(), 1);
}

#[test]
fn a_frame_header_in_uncopied_bytes_loses_the_frames() {
    let mut conn = H2Conn::default();
    let mut out = Vec::new();
    client_hello(&mut conn, &mut out);
    let s = settings();
    // 5 uncopied bytes after a complete frame: a frame header we cannot read
    conn.bytes(false, 20, &s, 5, &mut out);
    assert_eq!(conn.errors(), 1);
    conn.bytes(
        false,
        30,
        &frame(frame::HEADERS, flag::END_HEADERS, 1, &hex(RESPONSE_1)),
        0,
        &mut out,
    );
    assert!(!out.iter().any(|e| matches!(e, HttpEvent::Response { .. })));
}

#[test]
fn padding_and_priority_are_not_part_of_the_header_block() {
    let block = hex(RESPONSE_2);
    let mut p = vec![2u8]; // pad length
    p.extend_from_slice(&[0, 0, 0, 1, 16]); // priority: dependency, weight
    p.extend_from_slice(&block);
    p.extend_from_slice(&[0, 0]);
    assert_eq!(
        headers_fragment(flag::PADDED | flag::PRIORITY, &p),
        Some(&block[..])
    );
    assert_eq!(headers_fragment(flag::PADDED, &[9, 1, 2]), None);
}

#[test]
fn http1_is_not_taken_for_http2() {
    assert!(!starts_h2(true, b"GET / HTTP/1.1\r\n\r\n"));
    assert!(!starts_h2(false, b"HTTP/1.1 502 Bad Gateway\r\n"));
}
