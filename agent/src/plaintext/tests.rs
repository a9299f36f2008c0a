use super::*;
use crate::flow::ConnInfo;

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn opened(id: u64) -> Event {
    Event::Opened(ConnInfo {
        id: ConnId(id),
        client: addr("198.18.0.2:40000"),
        server: addr("198.18.0.1:8443"),
        opener_known: true,
        first_ns: 0,
        syn_ns: Some(0),
    })
}

fn record(ts: i64, write: bool, data: &[u8], len: u64) -> PlainRecord {
    PlainRecord {
        ts_ns: ts,
        local: addr("198.18.0.1:8443"),
        remote: addr("198.18.0.2:40000"),
        write,
        close: false,
        len,
        data: data.to_vec(),
    }
}

const REQUEST: &[u8] =
    b"POST /login?rid=7 HTTP/1.1\r\nHost: lab\r\nX-Request-Id: 7\r\nContent-Length: 10\r\n\r\n";
const RESPONSE: &[u8] =
    b"HTTP/1.1 502 Bad Gateway\r\nServer: nginx\r\nContent-Length: 157\r\n\r\n<html>";

#[test]
fn copies_become_the_connections_request_and_response_in_time_order() {
    let mut p = Plaintext::default();
    let mut evs = vec![opened(1)];
    p.filter(&mut evs);
    p.push(record(300, true, RESPONSE, RESPONSE.len() as u64 + 151));
    p.push(record(100, false, REQUEST, REQUEST.len() as u64 + 10));
    let mut out = Vec::new();
    p.release(200, &mut out);
    assert!(
        matches!(
            &out[..],
            [Event::Http { conn: ConnId(1), ev: HttpEvent::Request { ts: 100, head, .. }, .. },
             Event::Http { ev: HttpEvent::RequestEnd { .. }, .. }]
                if head.request_id.as_deref() == Some("7")
        ),
        "{out:?}"
    );
    out.clear();
    p.release(400, &mut out);
    assert!(
        matches!(
            &out[..],
            [Event::Http { ev: HttpEvent::Response { ts: 300, index: 1, head, .. }, .. },
             Event::Http { ev: HttpEvent::ResponseEnd { .. }, .. }]
                if head.status == 502
        ),
        "{out:?}"
    );
    assert_eq!(p.stats.matched, 2);
}

#[test]
fn a_close_carries_the_plaintexts_outstanding_request_and_sparse_gaps_are_ignored() {
    let mut p = Plaintext::default();
    let mut evs = vec![opened(1)];
    p.filter(&mut evs);
    p.push(record(100, false, REQUEST, REQUEST.len() as u64 + 10));
    let mut out = Vec::new();
    p.release(150, &mut out);
    let mut evs = vec![
        Event::Skipped {
            conn: ConnId(1),
            ts: 160,
        },
        Event::Fin {
            conn: ConnId(1),
            ts: 200,
            from_client: false,
            outstanding: 0,
            responding: false,
        },
    ];
    p.filter(&mut evs);
    assert_eq!(
        evs,
        [Event::Fin {
            conn: ConnId(1),
            ts: 200,
            from_client: false,
            outstanding: 1,
            responding: false,
        }]
    );
}

#[test]
fn the_proxys_close_notify_is_its_close_and_its_late_fin_is_not_a_second_one() {
    // HAProxy's silent close: the request is read, the proxy ends the session, the client
    // (which read the alert) closes, and only then does the proxy's FIN leave.
    let mut p = Plaintext::default();
    let mut evs = vec![opened(1)];
    p.filter(&mut evs);
    p.push(record(100, false, REQUEST, REQUEST.len() as u64 + 10));
    p.push(PlainRecord {
        close: true,
        ..record(200, true, b"", 0)
    });
    let mut out = Vec::new();
    p.release(250, &mut out);
    assert_eq!(
        out.last(),
        Some(&Event::Fin {
            conn: ConnId(1),
            ts: 200,
            from_client: false,
            outstanding: 1,
            responding: false,
        })
    );
    let fin = |ts, from_client| Event::Fin {
        conn: ConnId(1),
        ts,
        from_client,
        outstanding: 0,
        responding: false,
    };
    let mut evs = vec![fin(300, true), fin(310, false)];
    p.filter(&mut evs);
    assert_eq!(
        evs,
        [Event::Fin {
            conn: ConnId(1),
            ts: 300,
            from_client: true,
            outstanding: 1,
            responding: false,
        }]
    );
}

#[test]
fn a_copy_for_a_connection_never_seen_is_counted_and_dropped() {
    let mut p = Plaintext::default();
    p.push(record(100, true, RESPONSE, RESPONSE.len() as u64));
    let mut out = Vec::new();
    p.release(i64::MAX, &mut out);
    assert!(out.is_empty());
    assert_eq!((p.stats.matched, p.stats.unmatched), (0, 1));
}

#[test]
fn a_copy_that_comes_before_its_connections_syn_waits_for_it_in_order() {
    let mut p = Plaintext::default();
    p.push(record(100, false, REQUEST, REQUEST.len() as u64 + 10));
    p.push(record(300, true, RESPONSE, RESPONSE.len() as u64 + 151));
    let mut out = Vec::new();
    p.release(150, &mut out);
    assert!(out.is_empty());
    let mut evs = vec![opened(1)];
    p.filter(&mut evs);
    p.release(400, &mut evs);
    let kinds: Vec<&str> = evs
        .iter()
        .map(|e| match e {
            Event::Opened(_) => "opened",
            Event::Http {
                ev: HttpEvent::Request { index: 1, .. },
                ..
            } => "request 1",
            Event::Http {
                ev: HttpEvent::Response { index: 1, .. },
                ..
            } => "response 1",
            Event::Http { .. } => "other http",
            _ => "other",
        })
        .collect();
    assert_eq!(
        kinds,
        [
            "opened",
            "request 1",
            "other http",
            "response 1",
            "other http"
        ]
    );
}

#[test]
fn the_proxys_own_tls_to_an_upstream_is_the_client_side() {
    // The proxy opened this connection: its writes are requests.
    let mut p = Plaintext::default();
    let mut evs = vec![Event::Opened(ConnInfo {
        id: ConnId(2),
        client: addr("198.18.0.1:50000"),
        server: addr("198.18.2.2:443"),
        opener_known: true,
        first_ns: 0,
        syn_ns: Some(0),
    })];
    p.filter(&mut evs);
    p.push(PlainRecord {
        ts_ns: 10,
        local: addr("198.18.0.1:50000"),
        remote: addr("198.18.2.2:443"),
        write: true,
        close: false,
        len: REQUEST.len() as u64 + 10,
        data: REQUEST.to_vec(),
    });
    let mut out = Vec::new();
    p.release(20, &mut out);
    assert!(matches!(
        &out[0],
        Event::Http {
            conn: ConnId(2),
            ev: HttpEvent::Request { .. },
            ..
        }
    ));
}

/// The table of open connections churns at the count of open connections: it keeps its
/// room (see `crate::headroom`) instead of doubling at a random moment of a steady load.
/// Connections open and close as a proxy's do; for a while their count wanders below
/// 3,584 (half the room of 8,192 buckets), then around it, as the node agent's did when
/// its table doubled after seven quiet minutes: a table left to itself doubles in the
/// second part, once tombstones have used up its room at a moment it is over half full.
#[test]
fn the_open_connections_table_keeps_its_room_under_churn() {
    let mut p = Plaintext::default();
    let info = |n: u64| ConnInfo {
        id: ConnId(n),
        // a port of the ephemeral range for each connection (scattered, as connect()
        // picks them), to one upstream
        client: SocketAddr::from((
            [10, 0, 0, 1],
            32_768 + u16::try_from(n.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 49).unwrap(),
        )),
        server: SocketAddr::from(([10, 0, 1, 1], 8080)),
        opener_known: true,
        first_ns: 0,
        syn_ns: Some(0),
    };
    let closed = |n: u64| Event::Closed {
        conn: ConnId(n),
        ts: 0,
        info: info(n),
    };
    // the room follows the count's average over about a minute of calls (here 10 rounds
    // between two): 200 calls
    const WARM: usize = 2_000;
    let mut open = std::collections::VecDeque::new();
    let (mut next, mut rng) = (0u64, 0x2545_f491_4f6c_dd1d_u64);
    let (mut room_after_warmup, mut largest) = (0, 0);
    for round in 0..6_000 {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let wander = usize::try_from(rng % 160).unwrap();
        let target = if round < WARM { 3_380 } else { 3_520 } + wander;
        let mut evs = Vec::new();
        // 200 connections come and go between two rounds, and the count moves to target
        for _ in 0..200 {
            if let Some(n) = open.pop_front() {
                evs.push(closed(n));
            }
            evs.push(Event::Opened(info(next)));
            open.push_back(next);
            next += 1;
        }
        while open.len() < target {
            evs.push(Event::Opened(info(next)));
            open.push_back(next);
            next += 1;
        }
        while open.len() > target {
            evs.push(closed(open.pop_front().unwrap()));
        }
        p.filter(&mut evs);
        assert_eq!(
            p.ids.len(),
            open.len(),
            "every close forgets its connection"
        );
        if round == WARM {
            room_after_warmup = p.ids.capacity();
        }
        if round >= WARM {
            largest = largest.max(p.ids.capacity());
        }
    }
    assert!(
        largest <= room_after_warmup * 5 / 4,
        "the table grew from room for {room_after_warmup} to {largest}"
    );
}
