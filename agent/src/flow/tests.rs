use super::*;

const C: &str = "10.0.0.1:40000";
const S: &str = "10.0.0.2:80";

const TEMPLATE: Segment = Segment {
    ts_ns: 0,
    src: SocketAddr::V4(std::net::SocketAddrV4::new(
        std::net::Ipv4Addr::UNSPECIFIED,
        0,
    )),
    dst: SocketAddr::V4(std::net::SocketAddrV4::new(
        std::net::Ipv4Addr::UNSPECIFIED,
        0,
    )),
    flags: flags::ACK,
    seq: 0,
    ack: 0,
    wire_len: 0,
    payload: Vec::new(),
};

fn seg(ts: i64, from_client: bool, fl: u8, seq: u32, data: &[u8]) -> Segment {
    let (src, dst) = if from_client { (C, S) } else { (S, C) };
    Segment {
        ts_ns: ts,
        src: src.parse().unwrap(),
        dst: dst.parse().unwrap(),
        flags: fl,
        seq,
        wire_len: data.len() as u32,
        payload: data.to_vec(),
        ..TEMPLATE
    }
}

fn run(segs: &[Segment]) -> (Tracker, Vec<Event>) {
    let mut t = Tracker::new();
    let mut out = Vec::new();
    for s in segs {
        t.push(s, &mut out);
    }
    (t, out)
}

fn handshake() -> Vec<Segment> {
    vec![
        seg(0, true, flags::SYN, 99, b""),
        seg(100, false, flags::SYN | flags::ACK, 499, b""),
        seg(200, true, flags::ACK, 100, b""),
    ]
}

#[test]
fn handshake_sets_client_and_rtt() {
    let (t, out) = run(&handshake());
    let c = t.get(C.parse().unwrap(), S.parse().unwrap()).unwrap();
    assert_eq!(c.info.client, C.parse().unwrap());
    assert!(c.info.opener_known);
    assert!(out.contains(&Event::Established {
        conn: ConnId(1),
        ts: 200,
        rtt_ns: 200
    }));
}

#[test]
fn syn_answered_by_rst_is_refused() {
    let (_, out) = run(&[
        seg(0, true, flags::SYN, 1, b""),
        seg(50, false, flags::RST | flags::ACK, 0, b""),
    ]);
    assert!(out.contains(&Event::Refused {
        conn: ConnId(1),
        ts: 50
    }));
}

#[test]
fn syn_retransmits_are_counted() {
    let (_, out) = run(&[
        seg(0, true, flags::SYN, 1, b""),
        seg(1_000_000_000, true, flags::SYN, 1, b""),
        seg(3_000_000_000, true, flags::SYN, 1, b""),
    ]);
    assert!(out.contains(&Event::SynRetransmit {
        conn: ConnId(1),
        ts: 3_000_000_000,
        count: 3
    }));
}

#[test]
fn bytes_come_from_sequence_numbers_despite_retransmit_and_cut() {
    let mut s = handshake();
    let mut big = seg(
        300,
        true,
        flags::ACK,
        100,
        b"POST / HTTP/1.1\r\nContent-Length: 2000\r\n\r\n",
    );
    let head_len = big.payload.len() as u32;
    big.wire_len = head_len + 1000; // snaplen cut the body
    s.push(big.clone());
    s.push(big); // retransmission
    s.push(seg(
        400,
        true,
        flags::ACK,
        100 + head_len + 1000,
        &[b'x'; 1000],
    ));
    let (t, out) = run(&s);
    let c = t.get(C.parse().unwrap(), S.parse().unwrap()).unwrap();
    assert_eq!(c.client_bytes(), u64::from(head_len) + 2000);
    assert_eq!(c.retransmits(), 1);
    let ends = out
        .iter()
        .filter(|e| {
            matches!(
                e,
                Event::Http {
                    ev: HttpEvent::RequestEnd { .. },
                    ..
                }
            )
        })
        .count();
    assert_eq!(ends, 1);
}

#[test]
fn out_of_order_segment_is_not_parsed_twice() {
    let mut s = handshake();
    s.push(seg(300, true, flags::ACK, 100, b"GET /a HTTP/1.1\r\n\r\n"));
    s.push(seg(
        310,
        true,
        flags::ACK,
        100 + 19 + 19,
        b"GET /c HTTP/1.1\r\n\r\n",
    ));
    s.push(seg(
        320,
        true,
        flags::ACK,
        100 + 19,
        b"GET /b HTTP/1.1\r\n\r\n",
    ));
    let (_, out) = run(&s);
    let reqs: Vec<String> = out
        .iter()
        .filter_map(|e| match e {
            Event::Http {
                ev: HttpEvent::Request { head, .. },
                ..
            } => Some(head.target.clone()),
            _ => None,
        })
        .collect();
    // /b arrived late: its bytes are accounted for, the framer resynchronised on /c
    assert_eq!(reqs, ["/a", "/c"]);
}

#[test]
fn sequence_wraparound_keeps_parsing() {
    let isn = u32::MAX - 5;
    let s = vec![
        seg(0, true, flags::SYN, isn, b""),
        seg(100, false, flags::SYN | flags::ACK, 10, b""),
        seg(200, true, flags::ACK, isn.wrapping_add(1), b""),
        seg(
            300,
            true,
            flags::ACK,
            isn.wrapping_add(1),
            b"GET /a HTTP/1.1\r\n",
        ),
        seg(310, true, flags::ACK, isn.wrapping_add(1 + 17), b"\r\n"),
    ];
    let (t, out) = run(&s);
    assert!(out.iter().any(|e| matches!(
        e,
        Event::Http {
            ev: HttpEvent::Request { .. },
            ..
        }
    )));
    let c = t.get(C.parse().unwrap(), S.parse().unwrap()).unwrap();
    assert_eq!(c.client_bytes(), 19);
}

#[test]
fn mid_stream_connection_is_oriented_by_payload() {
    let (t, out) = run(&[seg(
        5,
        false,
        flags::ACK,
        77,
        b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
    )]);
    let c = t.get(C.parse().unwrap(), S.parse().unwrap()).unwrap();
    assert_eq!(c.info.server, S.parse().unwrap());
    assert!(!c.info.opener_known);
    assert!(matches!(out[0], Event::Opened(_)));
}

#[test]
fn closed_connections_are_evicted_after_linger() {
    let mut s = handshake();
    s.push(seg(300, true, flags::FIN | flags::ACK, 100, b""));
    s.push(seg(400, false, flags::FIN | flags::ACK, 500, b""));
    s.push(seg(LINGER_NS + 500, true, flags::SYN, 5000, b"")); // another connection's SYN
    let (t, out) = run(&s);
    assert!(out.iter().any(|e| matches!(
        e,
        Event::Closed {
            conn: ConnId(1),
            ..
        }
    )));
    assert_eq!(t.open(), 1);
}

#[test]
fn idle_gap_before_reused_request_is_reported() {
    let mut s = handshake();
    s.push(seg(300, true, flags::ACK, 100, b"GET /a HTTP/1.1\r\n\r\n"));
    s.push(seg(
        400,
        false,
        flags::ACK,
        500,
        b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
    ));
    s.push(seg(
        5_000_400,
        true,
        flags::ACK,
        119,
        b"GET /b HTTP/1.1\r\n\r\n",
    ));
    let (_, out) = run(&s);
    let idles: Vec<Option<i64>> = out
        .iter()
        .filter_map(|e| match e {
            Event::Http {
                ev: HttpEvent::Request { .. },
                idle_ns,
                ..
            } => Some(*idle_ns),
            _ => None,
        })
        .collect();
    assert_eq!(idles, [Some(100), Some(5_000_000)]);
}

fn missing_events(out: &[Event]) -> Vec<&'static str> {
    out.iter()
        .filter_map(|e| match e {
            Event::Missing { what, .. } => Some(*what),
            _ => None,
        })
        .collect()
}

#[test]
fn complete_exchange_has_nothing_missing() {
    let mut segs = handshake();
    segs.push(seg(
        300,
        true,
        flags::ACK | flags::PSH,
        100,
        b"GET / HTTP/1.1\r\n\r\n",
    ));
    let mut ack = seg(400, false, flags::ACK, 500, b"");
    ack.ack = 100 + 18;
    segs.push(ack);
    let (_, out) = run(&segs);
    assert!(missing_events(&out).is_empty(), "{out:?}");
}

#[test]
fn ack_for_bytes_never_seen_marks_the_connection_missing() {
    let mut segs = handshake();
    // The server acknowledges 18 client bytes the capture never had.
    let mut ack = seg(400, false, flags::ACK, 500, b"");
    ack.ack = 100 + 18;
    segs.push(ack);
    let (_, out) = run(&segs);
    assert_eq!(
        missing_events(&out),
        ["client bytes the server acknowledged"]
    );
}

#[test]
fn fin_beyond_the_last_byte_seen_marks_the_connection_missing() {
    let mut segs = handshake();
    // The server's 97-byte response was lost; its FIN sits after it.
    segs.push(seg(500, false, flags::ACK | flags::FIN, 500 + 97, b""));
    let (_, out) = run(&segs);
    assert_eq!(missing_events(&out), ["server bytes skipped over"]);
}

#[test]
fn handshake_without_the_syn_ack_marks_the_connection_missing_once() {
    let mut segs = vec![
        seg(0, true, flags::SYN, 99, b""),
        seg(200, true, flags::ACK, 100, b""),
    ];
    segs.push(seg(
        300,
        true,
        flags::ACK | flags::PSH,
        100,
        b"GET / HTTP/1.1\r\n\r\n",
    ));
    segs.push(seg(400, false, flags::RST | flags::ACK, 500, b""));
    let (_, out) = run(&segs);
    assert_eq!(missing_events(&out), ["the server's SYN/ACK"]);
    // The RST is not taken for a refusal: the handshake had completed.
    assert!(
        !out.iter().any(|e| matches!(e, Event::Refused { .. })),
        "{out:?}"
    );
}

/// A kept-alive connection whose second exchange a sparse capture skipped: the first is
/// seen whole, then the third request (its sequence and acknowledgement past bytes never
/// seen), then the server's FIN right after what the request acknowledged.
fn sparse_connection() -> Vec<Segment> {
    const RES: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n";
    let mut s = handshake();
    s.push(seg(300, true, flags::ACK, 100, b"GET /a HTTP/1.1\r\n\r\n"));
    let mut r1 = seg(400, false, flags::ACK, 500, RES);
    r1.ack = 119;
    s.push(r1);
    // exchange 2 (GET /b and its response) is not captured
    let server_next = 500 + 2 * RES.len() as u32;
    let mut q3 = seg(9_000_000, true, flags::ACK, 138, b"GET /c HTTP/1.1\r\n\r\n");
    q3.ack = server_next;
    s.push(q3);
    let mut fin = seg(9_000_500, false, flags::FIN | flags::ACK, server_next, b"");
    fin.ack = 157;
    s.push(fin);
    s
}

#[test]
fn sparse_gaps_are_skips_not_losses() {
    let mut t = Tracker::sparse();
    let mut out = Vec::new();
    for s in sparse_connection() {
        t.push(&s, &mut out);
    }
    assert!(missing_events(&out).is_empty(), "{out:?}");
    let skips = out
        .iter()
        .filter(|e| matches!(e, Event::Skipped { .. }))
        .count();
    // once, at the third request; the FIN starts where that request's ack said
    assert_eq!(skips, 1, "{out:?}");
    let requests: Vec<(String, Option<i64>)> = out
        .iter()
        .filter_map(|e| match e {
            Event::Http {
                ev: HttpEvent::Request { head, .. },
                idle_ns,
                ..
            } => Some((head.target.clone(), *idle_ns)),
            _ => None,
        })
        .collect();
    // the quiet before /c is unknown: the capture skipped what came between
    assert_eq!(
        requests,
        [("/a".to_owned(), Some(100)), ("/c".to_owned(), None)]
    );
    let fin = out.iter().find_map(|e| match e {
        Event::Fin { outstanding, .. } => Some(*outstanding),
        _ => None,
    });
    assert_eq!(fin, Some(1), "the FIN came with /c unanswered");
}

#[test]
fn the_same_gaps_in_a_full_capture_are_losses() {
    let (_, out) = run(&sparse_connection());
    assert!(!missing_events(&out).is_empty(), "{out:?}");
    assert!(!out.iter().any(|e| matches!(e, Event::Skipped { .. })));
}

/// A SYN from client 10.0.1.x:port to the server, at `ts`.
fn syn_from(ts: i64, host: u8, port: u16) -> Segment {
    Segment {
        ts_ns: ts,
        src: SocketAddr::new([10, 0, 1, host].into(), port),
        dst: S.parse().unwrap(),
        flags: flags::SYN,
        seq: 7,
        ..TEMPLATE
    }
}

fn evicted_ids(out: &[Event]) -> Vec<u64> {
    out.iter()
        .filter_map(|e| match e {
            Event::Evicted { conn, .. } => Some(conn.0),
            _ => None,
        })
        .collect()
}

#[test]
fn a_syn_flood_stays_within_the_table_and_evicts_half_open_first() {
    let mut t = Tracker::new().max_connections(64);
    let mut out = Vec::new();
    // one established connection carrying a request, quiet since
    for s in handshake() {
        t.push(&s, &mut out);
    }
    t.push(
        &seg(
            300,
            true,
            flags::ACK | flags::PSH,
            100,
            b"GET / HTTP/1.1\r\n\r\n",
        ),
        &mut out,
    );
    for i in 0..10_000u32 {
        let s = syn_from(
            1_000 + i64::from(i),
            (i / 5000) as u8,
            1024 + (i % 5000) as u16,
        );
        t.push(&s, &mut out);
        assert!(t.open() <= 64, "{} connections after {i} SYNs", t.open());
    }
    assert!(t.get(C.parse().unwrap(), S.parse().unwrap()).is_some());
    let evicted = evicted_ids(&out);
    assert_eq!(t.stats.evicted, evicted.len() as u64);
    assert!(t.stats.evicted >= 10_000 - 64, "{}", t.stats.evicted);
    assert!(
        !evicted.contains(&1),
        "the established connection was evicted"
    );
    // every evicted connection is also closed for the correlator
    let closed = out
        .iter()
        .filter(|e| matches!(e, Event::Closed { .. }))
        .count();
    assert_eq!(closed, evicted.len());
}

#[test]
fn the_least_recently_active_open_connection_goes_when_none_is_half_open() {
    let mut t = Tracker::new().max_connections(2);
    let mut out = Vec::new();
    let other: SocketAddr = "10.0.0.9:41000".parse().unwrap();
    for s in handshake() {
        t.push(&s, &mut out);
    }
    // a second established connection, more recent
    for (ts, from_other, fl) in [
        (1_000, true, flags::SYN),
        (1_100, false, flags::SYN | flags::ACK),
        (1_200, true, flags::ACK),
    ] {
        let (src, dst) = if from_other {
            (other, S.parse().unwrap())
        } else {
            (S.parse().unwrap(), other)
        };
        t.push(
            &Segment {
                ts_ns: ts,
                src,
                dst,
                flags: fl,
                ..TEMPLATE
            },
            &mut out,
        );
    }
    t.push(&syn_from(2_000, 1, 5000), &mut out);
    assert_eq!(evicted_ids(&out), vec![1]);
    assert_eq!(t.stats.evicted, 1);
    assert!(t.get(other, S.parse().unwrap()).is_some());
}

#[test]
fn a_closed_connection_makes_room_without_counting_as_evicted() {
    let mut t = Tracker::new().max_connections(1);
    let mut out = Vec::new();
    t.push(&seg(0, true, flags::SYN, 99, b""), &mut out);
    t.push(&seg(100, false, flags::RST | flags::ACK, 0, b""), &mut out);
    t.push(&syn_from(200, 1, 5000), &mut out);
    assert_eq!(t.stats.evicted, 0);
    assert!(evicted_ids(&out).is_empty());
    assert_eq!(t.open(), 1);
}

#[test]
fn a_connection_that_carries_on_after_its_eviction_is_marked() {
    let mut t = Tracker::new().max_connections(1);
    let mut out = Vec::new();
    for s in handshake() {
        t.push(&s, &mut out);
    }
    t.push(&syn_from(1_000, 1, 5000), &mut out);
    assert_eq!(evicted_ids(&out), vec![1]);
    out.clear();
    // the evicted connection's response arrives: a new connection, its start unknown
    t.push(
        &seg(
            2_000,
            false,
            flags::ACK | flags::PSH,
            500,
            b"HTTP/1.1 502 Bad Gateway\r\n\r\n",
        ),
        &mut out,
    );
    let opened: Vec<u64> = out
        .iter()
        .filter_map(|e| match e {
            Event::Opened(i) => Some(i.id.0),
            _ => None,
        })
        .collect();
    assert_eq!(opened.len(), 1);
    assert!(evicted_ids(&out).contains(&opened[0]), "{out:?}");
    // a fresh SYN on an evicted 4-tuple is a new connection, nothing lost
    let mut t = Tracker::new().max_connections(1);
    let mut out = Vec::new();
    t.push(&seg(0, true, flags::SYN, 99, b""), &mut out);
    t.push(&syn_from(1_000, 1, 5000), &mut out);
    out.clear();
    t.push(&seg(2_000, true, flags::SYN, 5000, b""), &mut out);
    assert_eq!(
        evicted_ids(&out).len(),
        1,
        "only the SYN-only connection it displaced"
    );
}
