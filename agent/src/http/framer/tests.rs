use super::*;

fn head_then(f: &mut Framer, data: &[u8], framing: Framing) -> usize {
    match f.feed(data) {
        Step::Head { consumed } => {
            f.set_framing(framing);
            consumed
        }
        other => panic!("expected a head, got {other:?}"),
    }
}

#[test]
fn content_length_body_ends_after_its_bytes() {
    let mut f = Framer::default();
    let msg = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhelloHTTP/1.1";
    let n = head_then(&mut f, msg, Framing::Length(5));
    assert_eq!(f.feed(&msg[n..]), Step::End { consumed: 5 });
    assert!(f.idle());
}

#[test]
fn head_split_across_segments() {
    let mut f = Framer::default();
    assert_eq!(f.feed(b"GET / HTTP/1.1\r\nHost: a\r"), Step::NeedMore);
    assert_eq!(f.feed(b"\n\r\nrest"), Step::Head { consumed: 3 });
    assert_eq!(f.head(), b"GET / HTTP/1.1\r\nHost: a\r\n\r\n");
}

#[test]
fn chunked_body_is_followed_through_chunks_and_trailer() {
    let mut f = Framer::default();
    let msg = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n3;x=y\r\nabc\r\n0\r\nT: 1\r\n\r\nNEXT";
    let n = head_then(&mut f, msg, Framing::Chunked);
    let rest = &msg[n..];
    assert_eq!(
        f.feed(rest),
        Step::End {
            consumed: rest.len() - 4
        }
    );
}

#[test]
fn chunked_body_split_byte_by_byte() {
    let mut f = Framer::default();
    let body = b"a\r\n0123456789\r\n0\r\n\r\n";
    f.feed(b"HTTP/1.1 200 OK\r\n\r\n");
    f.set_framing(Framing::Chunked);
    for (i, b) in body.iter().enumerate() {
        let s = f.feed(std::slice::from_ref(b));
        if i + 1 == body.len() {
            assert_eq!(s, Step::End { consumed: 1 });
        } else {
            assert_eq!(s, Step::NeedMore, "at byte {i}");
        }
    }
}

#[test]
fn chunk_data_gap_keeps_sync() {
    let mut f = Framer::default();
    f.feed(b"HTTP/1.1 200 OK\r\n\r\n");
    f.set_framing(Framing::Chunked);
    assert_eq!(f.feed(b"400\r\nab"), Step::NeedMore);
    assert_eq!(f.gap(0x400 - 2), GapStep::Continue);
    assert_eq!(f.feed(b"\r\n0\r\n\r\n"), Step::End { consumed: 7 });
}

#[test]
fn close_delimited_body_never_ends_by_itself() {
    let mut f = Framer::default();
    f.feed(b"HTTP/1.0 200 OK\r\n\r\n");
    f.set_framing(Framing::UntilClose);
    assert_eq!(f.feed(b"lots of bytes"), Step::NeedMore);
    assert_eq!(f.gap(10_000), GapStep::Continue);
    assert!(f.until_close());
}

#[test]
fn empty_framing_returns_to_start() {
    let mut f = Framer::default();
    let msg = b"HTTP/1.1 204 No Content\r\n\r\nHTTP/1.1 304 Not Modified\r\n\r\n";
    let n = head_then(&mut f, msg, Framing::Empty);
    assert!(f.idle());
    assert_eq!(
        f.feed(&msg[n..]),
        Step::Head {
            consumed: msg.len() - n
        }
    );
}

#[test]
fn snaplen_cut_body_is_skipped_by_length() {
    let mut f = Framer::default();
    let n = head_then(
        &mut f,
        b"POST / HTTP/1.1\r\nContent-Length: 3000\r\n\r\nxx",
        Framing::Length(3000),
    );
    assert_eq!(n, 41);
    assert_eq!(f.feed(b"xx"), Step::NeedMore);
    assert_eq!(f.gap(2998), GapStep::End);
}

#[test]
fn snaplen_cut_head_yields_a_partial_head_then_resyncs() {
    let mut f = Framer::default();
    assert_eq!(
        f.feed(b"HTTP/1.1 502 Bad Gateway\r\nServer: x\r\nX-Lo"),
        Step::NeedMore
    );
    assert_eq!(f.gap(500), GapStep::PartialHead);
    let lines = complete_lines(f.head()).unwrap();
    assert_eq!(lines, b"HTTP/1.1 502 Bad Gateway\r\nServer: x\r\n\r\n");
    assert!(f.lost());
    assert!(!f.segment_start(b"garbage", crate::http::head::looks_like_response));
    assert!(f.segment_start(
        b"HTTP/1.1 200 OK\r\n",
        crate::http::head::looks_like_response
    ));
    assert!(f.idle());
}

#[test]
fn bad_chunk_size_is_garbage() {
    let mut f = Framer::default();
    f.feed(b"HTTP/1.1 200 OK\r\n\r\n");
    f.set_framing(Framing::Chunked);
    assert!(matches!(f.feed(b"zz\r\n"), Step::Garbage { .. }));
    assert!(f.lost());
}

#[test]
fn oversized_head_is_garbage() {
    let mut f = Framer::default();
    let big = vec![b'a'; MAX_HEAD + 10];
    assert!(matches!(f.feed(&big), Step::Garbage { .. }));
}
