//! The bounded connection table seen from the verdicts: a verdict that rests on a
//! connection the full table evicted is `unexplained` and says why, and the evictions are
//! counted in the report. Timelines as in `engine_causes.rs`: a client, a proxy at
//! 10.0.0.2:80 and an upstream at 10.0.0.3:9000.

use std::collections::HashMap;
use std::net::SocketAddr;

use tracer::engine::{Analysis, Config, Engine};
use tracer::report::{self, CaptureSummary};
use tracer::segment::{flags, Segment};
use tracer::verdict::{Cause, Subcause};

#[derive(Clone, Copy)]
struct Conn {
    c: SocketAddr,
    s: SocketAddr,
}

fn client(port: u16) -> Conn {
    Conn {
        c: format!("10.0.0.1:{port}").parse().unwrap(),
        s: "10.0.0.2:80".parse().unwrap(),
    }
}

fn upstream(port: u16) -> Conn {
    Conn {
        c: format!("10.0.0.2:{port}").parse().unwrap(),
        s: "10.0.0.3:9000".parse().unwrap(),
    }
}

const MS: i64 = 1000;

/// Segments in time order; times in microseconds, sequence numbers followed per direction.
#[derive(Default)]
struct Tl {
    segs: Vec<Segment>,
    seq: HashMap<(SocketAddr, SocketAddr), u32>,
}

impl Tl {
    fn seg(&mut self, us: i64, from: SocketAddr, to: SocketAddr, fl: u8, data: &[u8]) {
        let seq = self.seq.entry((from, to)).or_insert(1000);
        let s = *seq;
        *seq = seq.wrapping_add(data.len() as u32 + u32::from(fl & (flags::SYN | flags::FIN) != 0));
        self.segs.push(Segment {
            ts_ns: us * 1000,
            src: from,
            dst: to,
            flags: fl,
            seq: s,
            ack: 0,
            wire_len: data.len() as u32,
            payload: data.to_vec(),
        });
    }
    fn open(&mut self, us: i64, k: Conn) {
        self.seg(us, k.c, k.s, flags::SYN, b"");
        self.seg(us + 50, k.s, k.c, flags::SYN | flags::ACK, b"");
        self.seg(us + 100, k.c, k.s, flags::ACK, b"");
    }
    fn req(&mut self, us: i64, k: Conn, rid: u32) {
        let r = format!("POST /p?rid={rid} HTTP/1.1\r\nHost: h\r\nX-Request-Id: {rid}\r\n\r\n");
        self.seg(us, k.c, k.s, flags::ACK | flags::PSH, r.as_bytes());
    }
    fn res(&mut self, us: i64, k: Conn, status: u16) {
        let r = format!("HTTP/1.1 {status} X\r\nContent-Length: 2\r\n\r\nok");
        self.seg(us, k.s, k.c, flags::ACK | flags::PSH, r.as_bytes());
    }
    fn fin(&mut self, us: i64, k: Conn, from_client: bool) {
        let (a, b) = if from_client { (k.c, k.s) } else { (k.s, k.c) };
        self.seg(us, a, b, flags::FIN | flags::ACK, b"");
    }
    fn rst(&mut self, us: i64, k: Conn) {
        self.seg(us, k.s, k.c, flags::RST | flags::ACK, b"");
    }
    fn run(mut self, max_connections: usize) -> Analysis {
        self.segs.sort_by_key(|s| s.ts_ns);
        let mut e = Engine::new(Config::default());
        e.set_max_connections(max_connections);
        for s in &self.segs {
            e.push(s);
        }
        e.finish()
    }
}

/// A keep-alive race on the pooled upstream connection 50000 (idle since 0.9 ms, closed by
/// the upstream at 5 s, reused 50 µs later), with `others` client connections opened (and
/// left idle) at 1-2 s in between.
fn race_with_idle_connections(others: u16) -> Tl {
    let mut tl = Tl::default();
    let (d0, u) = (client(40000), upstream(50000));
    tl.open(0, d0);
    tl.req(200, d0, 1);
    tl.open(300, u);
    tl.req(500, u, 1);
    tl.res(900, u, 200);
    tl.res(1000, d0, 200);
    tl.fin(1100, d0, true);
    tl.fin(1150, d0, false);
    for i in 0..others {
        tl.open(1_000 * MS + i64::from(i) * MS, client(41000 + i));
    }
    let d = client(40001);
    tl.fin(5_000 * MS, u, false);
    tl.open(5_000 * MS - 300, d);
    tl.req(5_000 * MS - 100, d, 2);
    tl.req(5_000 * MS + 50, u, 2);
    tl.rst(5_000 * MS + 150, u);
    tl.res(5_000 * MS + 400, d, 502);
    tl
}

#[test]
fn with_room_the_race_is_proven() {
    let a = race_with_idle_connections(3).run(100);
    assert_eq!(a.verdicts.len(), 1, "{:#?}", a.verdicts);
    assert_eq!(a.verdicts[0].cause, Cause::KeepaliveRace);
    assert_eq!(a.verdicts[0].subcause, Some(Subcause::FinCrossed));
    assert_eq!(a.flow.evicted, 0);
}

#[test]
fn a_verdict_on_an_evicted_connection_is_unexplained_and_says_so() {
    // three connections allowed: the idle pooled upstream connection is the least recently
    // active when the idle client connections arrive, so it is evicted
    let a = race_with_idle_connections(3).run(3);
    assert!(a.flow.evicted >= 1, "{:?}", a.flow);
    let v: Vec<_> = a
        .verdicts
        .iter()
        .filter(|v| v.status == Some(502))
        .collect();
    assert_eq!(v.len(), 1, "{:#?}", a.verdicts);
    assert_eq!(v[0].cause, Cause::Unexplained, "{:#?}", v[0]);
    let reason = v[0].reason.as_deref().unwrap_or_default();
    assert!(reason.contains("evicted"), "{reason}");
    assert!(reason.contains("keepalive_race"), "{reason}");
    assert!(v[0]
        .evidence
        .iter()
        .any(|e| e.to_string().contains("evicted")
            && e.connection.to_string().contains("10.0.0.3:9000")));
    // counted in the report's capture summary, text and JSON
    let capture = CaptureSummary {
        packets: 1,
        ..CaptureSummary::default()
    };
    let json: serde_json::Value = serde_json::from_str(&report::json::render(&a, capture)).unwrap();
    assert_eq!(json["capture"]["evicted_connections"], a.flow.evicted);
    let text = report::text::render(&a, capture, false);
    assert!(
        text.contains(&format!("{} connections evicted", a.flow.evicted)),
        "{text}"
    );
}

#[test]
fn a_long_syn_flood_keeps_the_table_bounded_and_the_verdict() {
    // 20,000 SYN-only connections from elsewhere between the warm-up and the race: with a
    // table of 1,000 they evict each other (half-open first), never the pooled connection
    let mut tl = race_with_idle_connections(0);
    for i in 0..20_000u32 {
        let src = SocketAddr::new(
            [10, 9, (i >> 8) as u8, i as u8].into(),
            1024 + (i % 50_000) as u16,
        );
        tl.seg(
            2_000 * MS + i64::from(i) * 100,
            src,
            "10.0.0.2:80".parse().unwrap(),
            flags::SYN,
            b"",
        );
    }
    let a = tl.run(1_000);
    assert!(a.flow.evicted >= 19_000, "{:?}", a.flow);
    let v: Vec<_> = a
        .verdicts
        .iter()
        .filter(|v| v.status == Some(502))
        .collect();
    assert_eq!(v.len(), 1, "{:#?}", a.verdicts);
    assert_eq!(v[0].cause, Cause::KeepaliveRace, "{:#?}", v[0]);
}
