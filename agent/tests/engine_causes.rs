//! One test per cause, each built from a small synthetic timeline of segments: a client,
//! a proxy at 10.0.0.2:80 and an upstream at 10.0.0.3:9000.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};

use tracer::engine::{analyze, Analysis, Config};
use tracer::segment::{flags, Segment};
use tracer::verdict::{Cause, Confidence, Subcause};

const TEMPLATE: Segment = Segment {
    ts_ns: 0,
    src: SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0)),
    dst: SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0)),
    flags: flags::ACK,
    seq: 0,
    ack: 0,
    wire_len: 0,
    payload: Vec::new(),
};

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

/// A timeline: times in microseconds, sequence numbers followed per direction.
#[derive(Default)]
struct Tl {
    segs: Vec<Segment>,
    seq: HashMap<(SocketAddr, SocketAddr), u32>,
}

const MS: i64 = 1000;

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
            wire_len: data.len() as u32,
            payload: data.to_vec(),
            ..TEMPLATE
        });
    }
    /// Three-way handshake starting at `us` (RTT 100 µs).
    fn open(&mut self, us: i64, k: Conn) {
        self.seg(us, k.c, k.s, flags::SYN, b"");
        self.seg(us + 50, k.s, k.c, flags::SYN | flags::ACK, b"");
        self.seg(us + 100, k.c, k.s, flags::ACK, b"");
    }
    fn req(&mut self, us: i64, k: Conn, method: &str, rid: u32) {
        let r = format!("{method} /p?rid={rid} HTTP/1.1\r\nHost: h\r\nX-Request-Id: {rid}\r\n\r\n");
        self.seg(us, k.c, k.s, flags::ACK | flags::PSH, r.as_bytes());
    }
    fn res(&mut self, us: i64, k: Conn, status: u16) {
        let r = format!("HTTP/1.1 {status} X\r\nContent-Length: 2\r\n\r\nok");
        self.seg(us, k.s, k.c, flags::ACK | flags::PSH, r.as_bytes());
    }
    /// A response saying `Keep-Alive: timeout=N`, as Node's do.
    fn res_keep_alive(&mut self, us: i64, k: Conn, status: u16, timeout_s: u32) {
        let r = format!(
            "HTTP/1.1 {status} X\r\nKeep-Alive: timeout={timeout_s}\r\nContent-Length: 2\r\n\r\nok"
        );
        self.seg(us, k.s, k.c, flags::ACK | flags::PSH, r.as_bytes());
    }
    fn fin(&mut self, us: i64, k: Conn, from_client: bool) {
        let (a, b) = if from_client { (k.c, k.s) } else { (k.s, k.c) };
        self.seg(us, a, b, flags::FIN | flags::ACK, b"");
    }
    fn rst(&mut self, us: i64, k: Conn, from_client: bool) {
        let (a, b) = if from_client { (k.c, k.s) } else { (k.s, k.c) };
        self.seg(us, a, b, flags::RST | flags::ACK, b"");
    }
    fn run(mut self) -> Analysis {
        self.segs.sort_by_key(|s| s.ts_ns);
        analyze(Config::default(), self.segs)
    }
    /// Request 2 from client `d` at 10 ms, forwarded on a fresh upstream connection `u`.
    fn forwarded(&mut self, d: Conn, u: Conn, method: &str) {
        self.open(10 * MS, d);
        self.req(10 * MS + 200, d, method, 2);
        self.open(10 * MS + 300, u);
        self.req(10 * MS + 500, u, method, 2);
    }
    /// `n` bytes each way that a sparse capture skipped on `k`.
    fn skip(&mut self, k: Conn, n: u32) {
        for (from, to) in [(k.c, k.s), (k.s, k.c)] {
            *self.seq.entry((from, to)).or_insert(1000) += n;
        }
    }
    /// The engine in sparse mode, told by the kernel of `idle` writes (conn, µs, idle ms).
    fn run_sparse(mut self, idle: &[(Conn, i64, i64)]) -> Analysis {
        self.segs.sort_by_key(|s| s.ts_ns);
        let mut e = tracer::engine::Engine::new(Config {
            sparse: true,
            ..Config::default()
        });
        for &(k, us, ms) in idle {
            e.kernel_send_idle(tracer::kernel::SendIdle {
                local: k.c,
                remote: k.s,
                ts_ns: us * 1000,
                idle_ns: ms * 1_000_000,
            });
        }
        for s in &self.segs {
            e.push(s);
        }
        e.finish()
    }
}

/// A busy kept-alive client connection whose first exchange a sparse capture kept, then
/// skipped the rest.
fn busy_client(tl: &mut Tl) -> Conn {
    let d = client(40001);
    tl.open(10 * MS, d);
    tl.req(10 * MS + 200, d, "GET", 2);
    tl.res(10 * MS + 600, d, 200);
    tl.skip(d, 600);
    d
}

/// A warm-up exchange that teaches the engine the roles (client 40000, upstream 50000).
fn warm_up(tl: &mut Tl) {
    let (d, u) = (client(40000), upstream(50000));
    tl.open(0, d);
    tl.req(200, d, "GET", 1);
    tl.open(300, u);
    tl.req(500, u, "GET", 1);
    tl.res(900, u, 200);
    tl.res(1000, d, 200);
    tl.fin(1100, d, true);
    tl.fin(1150, d, false);
}

fn only(a: &Analysis) -> &tracer::verdict::Verdict {
    assert_eq!(a.verdicts.len(), 1, "{:#?}", a.verdicts);
    &a.verdicts[0]
}

#[test]
fn reused_connection_fin_before_request_is_keepalive_race() {
    let mut tl = Tl::default();
    warm_up(&mut tl);
    let (d, u) = (client(40001), upstream(50000));
    // the upstream closes the idle pooled connection at 5 s; the proxy reuses it 50 µs later
    tl.fin(5_000 * MS, u, false);
    tl.open(5_000 * MS - 300, d);
    tl.req(5_000 * MS - 100, d, "POST", 2);
    tl.req(5_000 * MS + 50, u, "POST", 2);
    tl.rst(5_000 * MS + 150, u, false);
    tl.res(5_000 * MS + 400, d, 502);
    let a = tl.run();
    let v = only(&a);
    assert_eq!(v.cause, Cause::KeepaliveRace);
    assert_eq!(v.subcause, Some(Subcause::FinCrossed));
    assert_eq!(v.confidence, Confidence::Proven);
    assert_eq!(v.status, Some(502));
    assert_eq!(v.request_id.as_deref(), Some("2"));
    let up = v.upstream.as_ref().unwrap();
    assert_eq!(up.exchange_index, Some(2));
    assert!(up.idle_ms.unwrap() > 4_000.0);
    assert!((up.fin_to_request_ms.unwrap() - 0.05).abs() < 1e-6);
}

#[test]
fn reset_without_fin_at_the_upstreams_idle_timer_is_closed_unread() {
    // Node (keepAliveTimeout 1 ms: `Keep-Alive: timeout=0`, closes after ~1 s) answered on
    // pooled connection 50000; 1001 ms later the proxy reuses it and Node's kernel resets
    // it 2.9 ms after the request: no FIN, no response byte.
    let mut tl = Tl::default();
    let (d0, d, u) = (client(40000), client(40001), upstream(50000));
    tl.open(0, d0);
    tl.req(200, d0, "GET", 1);
    tl.open(300, u);
    tl.req(500, u, "GET", 1);
    tl.res_keep_alive(900, u, 200, 0);
    tl.res(1000, d0, 200);
    tl.open(1_001 * MS, d);
    tl.req(1_001 * MS + 200, d, "POST", 2);
    tl.req(1_001 * MS + 900, u, "POST", 2);
    tl.rst(1_001 * MS + 3_800, u, false);
    tl.res(1_001 * MS + 4_000, d, 502);
    let a = tl.run();
    let v = only(&a);
    assert_eq!(v.cause, Cause::KeepaliveRace, "{v:#?}");
    assert_eq!(v.subcause, Some(Subcause::ClosedUnread));
    assert_eq!(v.confidence, Confidence::Probable);
    assert!(v.summary.contains("Keep-Alive: timeout=0"), "{}", v.summary);
}

#[test]
fn pooled_connection_dead_before_use_is_request_never_sent() {
    let mut tl = Tl::default();
    warm_up(&mut tl);
    let d = client(40001);
    let u = upstream(50000);
    tl.fin(5_000 * MS, u, false);
    tl.open(5_001 * MS, d);
    tl.req(5_001 * MS + 200, d, "POST", 2);
    tl.fin(5_001 * MS + 300, u, true); // the proxy closes the dead connection
    tl.res(5_001 * MS + 350, d, 502);
    let a = tl.run();
    let v = only(&a);
    assert_eq!(v.cause, Cause::KeepaliveRace);
    assert_eq!(v.subcause, Some(Subcause::RequestNeverSent));
    assert_eq!(v.confidence, Confidence::Probable);
    assert_eq!(v.upstream.as_ref().unwrap().exchange_index, None);
}

#[test]
fn syn_answered_by_rst_is_upstream_refused() {
    let mut tl = Tl::default();
    warm_up(&mut tl);
    let d = client(40001);
    let u = upstream(50001);
    tl.open(10 * MS, d);
    tl.req(10 * MS + 200, d, "GET", 2);
    tl.seg(10 * MS + 300, u.c, u.s, flags::SYN, b"");
    tl.rst(10 * MS + 350, u, false);
    tl.res(10 * MS + 500, d, 502);
    let a = tl.run();
    let v = only(&a);
    assert_eq!(v.cause, Cause::UpstreamRefused);
    assert_eq!(v.status, Some(502));
}

#[test]
fn refused_without_client_side_still_gets_a_verdict() {
    let mut tl = Tl::default();
    warm_up(&mut tl);
    let u = upstream(50001);
    tl.seg(10 * MS + 300, u.c, u.s, flags::SYN, b"");
    tl.rst(10 * MS + 350, u, false);
    let a = tl.run();
    let v = only(&a);
    assert_eq!(v.cause, Cause::UpstreamRefused);
    assert!(v.downstream.is_none());
}

#[test]
fn unanswered_syns_then_504_is_connect_timeout() {
    let mut tl = Tl::default();
    warm_up(&mut tl);
    let d = client(40001);
    let u = upstream(50001);
    tl.open(10 * MS, d);
    tl.req(10 * MS + 200, d, "GET", 2);
    tl.seg(10 * MS + 300, u.c, u.s, flags::SYN, b"");
    tl.seg(1_010 * MS + 300, u.c, u.s, flags::SYN, b"");
    tl.seg(3_010 * MS + 300, u.c, u.s, flags::SYN, b"");
    tl.res(5_010 * MS, d, 504);
    let a = tl.run();
    let v = only(&a);
    assert_eq!(v.cause, Cause::ConnectTimeout);
    assert_eq!(v.status, Some(504));
}

#[test]
fn rst_on_fresh_connection_is_upstream_reset() {
    let mut tl = Tl::default();
    warm_up(&mut tl);
    let d = client(40001);
    let u = upstream(50001);
    tl.forwarded(d, u, "GET");
    tl.rst(30 * MS, u, false);
    tl.res(30 * MS + 100, d, 502);
    let v = only(&tl.run()).clone();
    assert_eq!(v.cause, Cause::UpstreamReset);
    assert_eq!(v.confidence, Confidence::Proven);
}

#[test]
fn fin_without_response_on_busy_connection_is_upstream_closed_early() {
    let mut tl = Tl::default();
    warm_up(&mut tl);
    let d = client(40001);
    let u = upstream(50001);
    tl.forwarded(d, u, "POST");
    tl.fin(2_010 * MS, u, false); // the worker was killed by its own timeout
    tl.res(2_010 * MS + 100, d, 502);
    let v = only(&tl.run()).clone();
    assert_eq!(v.cause, Cause::UpstreamClosedEarly);
}

#[test]
fn proxy_closing_after_timeout_then_504_is_proxy_timeout() {
    let mut tl = Tl::default();
    warm_up(&mut tl);
    let d = client(40001);
    let u = upstream(50001);
    tl.forwarded(d, u, "GET");
    tl.fin(3_010 * MS + 500, u, true);
    tl.res(3_010 * MS + 600, d, 504);
    let v = only(&tl.run()).clone();
    assert_eq!(v.cause, Cause::ProxyTimeout);
    assert!(v.summary.contains("3000.0 ms"), "{}", v.summary);
}

#[test]
fn client_closing_before_response_is_client_abort() {
    let mut tl = Tl::default();
    warm_up(&mut tl);
    let d = client(40001);
    let u = upstream(50001);
    tl.forwarded(d, u, "GET");
    tl.fin(1_010 * MS, d, true); // the client gives up; nginx logs 499
    tl.fin(1_010 * MS + 100, u, true);
    tl.fin(1_010 * MS + 150, d, false);
    let v = only(&tl.run()).clone();
    assert_eq!(v.cause, Cause::ClientAbort);
    assert_eq!(v.status, None);
}

#[test]
fn upstream_503_passed_through_is_upstream_generated() {
    let mut tl = Tl::default();
    warm_up(&mut tl);
    let d = client(40001);
    let u = upstream(50001);
    tl.forwarded(d, u, "GET");
    tl.res(10 * MS + 900, u, 503);
    tl.res(10 * MS + 1000, d, 503);
    let v = only(&tl.run()).clone();
    assert_eq!(v.cause, Cause::UpstreamGenerated);
    assert_eq!(v.status, Some(503));
    assert_eq!(v.confidence, Confidence::Proven);
}

#[test]
fn proxy_502_without_upstream_evidence_is_unexplained() {
    let mut tl = Tl::default();
    warm_up(&mut tl);
    let d = client(40001);
    tl.open(10 * MS, d);
    tl.req(10 * MS + 200, d, "GET", 2);
    tl.res(10 * MS + 300, d, 502);
    let v = only(&tl.run()).clone();
    assert_eq!(v.cause, Cause::Unexplained);
    assert!(v.reason.is_some());
}

#[test]
fn failed_attempt_retried_successfully_gets_its_own_verdict() {
    let mut tl = Tl::default();
    warm_up(&mut tl);
    let d = client(40001);
    let (u1, u2) = (upstream(50000), upstream(50002));
    tl.open(5_000 * MS - 300, d);
    tl.req(5_000 * MS - 100, d, "GET", 2);
    tl.fin(5_000 * MS, u1, false);
    tl.req(5_000 * MS + 50, u1, "GET", 2);
    tl.rst(5_000 * MS + 150, u1, false);
    tl.open(5_000 * MS + 200, u2);
    tl.req(5_000 * MS + 400, u2, "GET", 2);
    tl.res(5_000 * MS + 800, u2, 200);
    tl.res(5_000 * MS + 900, d, 200);
    let a = tl.run();
    let v = only(&a);
    assert_eq!(v.cause, Cause::KeepaliveRace);
    assert_eq!(v.status, Some(200));
    assert_eq!(v.idempotent, Some(true));
    assert!(v.summary.contains("retried"), "{}", v.summary);
}

#[test]
fn no_errors_no_verdicts() {
    let mut tl = Tl::default();
    warm_up(&mut tl);
    assert!(tl.run().verdicts.is_empty());
}

#[test]
fn refused_upstream_behind_a_two_address_proxy_is_learned_from_timing() {
    // The proxy faces the client on 10.0.0.2 and the upstream from 10.0.1.2; the upstream
    // refuses every connection, so no request is ever seen forwarded.
    let mut tl = Tl::default();
    for i in 0..4u16 {
        let t = i64::from(i) * 5 * MS;
        let d = client(41000 + i);
        let u = Conn {
            c: format!("10.0.1.2:{}", 51000 + i).parse().unwrap(),
            s: "10.0.1.3:9000".parse().unwrap(),
        };
        tl.open(t, d);
        tl.req(t + 200, d, "POST", u32::from(i) + 1);
        tl.seg(t + 300, u.c, u.s, flags::SYN, b"");
        tl.rst(t + 350, u, false);
        tl.res(t + 500, d, 502);
    }
    let a = tl.run();
    assert_eq!(a.verdicts.len(), 4, "{:#?}", a.verdicts);
    for v in &a.verdicts {
        assert_eq!(v.cause, Cause::UpstreamRefused, "{v:#?}");
        assert_eq!(v.status, Some(502));
    }
}

#[test]
fn unrelated_servers_are_not_paired_by_one_coincidence() {
    // One request to a server and one connection elsewhere a millisecond later: too little
    // to call them a proxy's two sides, so the 502 stays unexplained.
    let mut tl = Tl::default();
    let d = client(42000);
    let u = Conn {
        c: "10.0.1.2:52000".parse().unwrap(),
        s: "10.0.1.3:9000".parse().unwrap(),
    };
    tl.open(0, d);
    tl.req(200, d, "POST", 1);
    tl.seg(300, u.c, u.s, flags::SYN, b"");
    tl.rst(350, u, false);
    tl.res(500, d, 502);
    let a = tl.run();
    assert!(
        a.verdicts
            .iter()
            .all(|v| v.cause != Cause::UpstreamRefused || v.status.is_none()),
        "{:#?}",
        a.verdicts
    );
}

#[test]
fn two_never_sent_errors_in_one_stall_each_find_a_dead_connection() {
    // Two pooled connections die; the proxy closes both, one a little before the second
    // request even arrives (Go's pool handed out a connection its read loop was closing),
    // then stalls and answers both 502 about 12 ms later.
    let mut tl = Tl::default();
    warm_up(&mut tl);
    let (u1, u2) = (upstream(50000), upstream(50010));
    tl.open(4_000 * MS, u2);
    tl.req(4_000 * MS + 200, u2, "GET", 90);
    tl.res(4_000 * MS + 600, u2, 200);
    tl.fin(5_000 * MS, u1, false);
    tl.fin(5_000 * MS + 100, u2, false);
    tl.fin(5_001 * MS, u1, true);
    tl.fin(5_001 * MS + 100, u2, true);
    let (d1, d2) = (client(40001), client(40002));
    tl.open(5_000 * MS + 500, d1);
    tl.req(5_000 * MS + 700, d1, "POST", 2);
    tl.open(5_003 * MS, d2);
    tl.req(5_003 * MS + 200, d2, "POST", 3);
    tl.res(5_014 * MS, d1, 502);
    tl.res(5_015 * MS, d2, 502);
    let a = tl.run();
    let races: Vec<_> = a
        .verdicts
        .iter()
        .filter(|v| v.status == Some(502))
        .collect();
    assert_eq!(races.len(), 2, "{:#?}", a.verdicts);
    for v in races {
        assert_eq!(v.cause, Cause::KeepaliveRace, "{v:#?}");
        assert_eq!(v.subcause, Some(Subcause::RequestNeverSent));
    }
}

/// A sparse capture (`tracer capture --sparse`): the exchanges between the warm-up and the
/// failing reuse of upstream connection 50000 were skipped, so only the kernel can say how
/// long it sat idle. Other pooled connections show the upstream's 5 s idle timer.
fn sparse_reset_after_skipped_exchanges(kernel_idle_ms: Option<i64>) -> Analysis {
    let mut tl = Tl::default();
    warm_up(&mut tl);
    let (d, u) = (client(40001), upstream(50000));
    // connections 50002-50004 are seen whole: idle from 2 ms, closed by the upstream 5 s later
    for (i, port) in (50002..=50004).enumerate() {
        let spare = upstream(port);
        let at = (1 + i as i64) * 10 * MS;
        tl.open(at, spare);
        tl.req(at + 200, spare, "GET", 9 + i as u32);
        tl.res(at + MS, spare, 200);
        tl.fin(at + 5_001 * MS, spare, false);
    }
    // exchanges on 50000 the capture skipped: its sequence numbers move on unseen
    tl.skip(u, 350);
    tl.open(7_000 * MS - 300, d);
    tl.req(7_000 * MS - 100, d, "POST", 2);
    tl.req(7_000 * MS + 50, u, "POST", 2);
    tl.rst(7_000 * MS + 150, u, false);
    tl.res(7_000 * MS + 400, d, 502);
    // reported when the write returned, just after the packet left
    let idle: Vec<(Conn, i64, i64)> = kernel_idle_ms
        .map(|ms| (u, 7_000 * MS + 60, ms))
        .into_iter()
        .collect();
    tl.run_sparse(&idle)
}

#[test]
fn sparse_capture_takes_the_reuse_idle_time_from_the_kernel() {
    let a = sparse_reset_after_skipped_exchanges(Some(5_000));
    let v = only(&a);
    assert_eq!(v.cause, Cause::KeepaliveRace, "{v:#?}");
    assert_eq!(v.confidence, Confidence::Probable);
}

#[test]
fn sparse_capture_without_the_idle_time_does_not_guess() {
    let a = sparse_reset_after_skipped_exchanges(None);
    let v = only(&a);
    assert_eq!(v.cause, Cause::Unexplained, "{v:#?}");
    assert!(v.summary.contains("sparse"), "{}", v.summary);
}

#[test]
fn sparse_capture_links_a_5xx_whose_request_was_skipped_by_timing() {
    // A busy kept-alive client connection: the sparse filter kept its first exchange and
    // the 502 head, not the request that got it.
    let mut tl = Tl::default();
    warm_up(&mut tl);
    let d = busy_client(&mut tl);
    let u = upstream(50000);
    // the upstream closed the pooled connection; the proxy's request crossed its FIN
    tl.fin(5_000 * MS, u, false);
    tl.req(5_000 * MS + 50, u, "POST", 3);
    tl.rst(5_000 * MS + 150, u, false);
    tl.res(5_000 * MS + 400, d, 502);
    let a = tl.run_sparse(&[]);
    // The one upstream attempt that failed just before the 502 is linked to it by timing
    // (so the verdict is probable), and judged once.
    let v = only(&a);
    assert_eq!(v.status, Some(502));
    assert_eq!(v.cause, Cause::KeepaliveRace, "{v:#?}");
    assert_eq!(v.confidence, Confidence::Probable);
}

#[test]
fn sparse_capture_links_no_skipped_5xx_when_two_attempts_failed() {
    let mut tl = Tl::default();
    warm_up(&mut tl);
    let d = busy_client(&mut tl);
    // two pooled connections fail together: which one served the 502 is unknowable
    for (port, rid) in [(50000, 3), (50001, 4)] {
        let u = upstream(port);
        if port == 50001 {
            tl.open(20 * MS, u);
            tl.req(20 * MS + 200, u, "GET", 5);
            tl.res(20 * MS + 600, u, 200);
        }
        tl.fin(5_000 * MS, u, false);
        tl.req(5_000 * MS + 50, u, "POST", rid);
        tl.rst(5_000 * MS + 150, u, false);
    }
    tl.res(5_000 * MS + 400, d, 502);
    let a = tl.run_sparse(&[]);
    let err = a.verdicts.iter().find(|v| v.status == Some(502)).unwrap();
    assert_eq!(err.cause, Cause::Unexplained, "{err:#?}");
    assert_eq!(a.verdicts.len(), 3, "{:#?}", a.verdicts);
}

/// The node agent's histograms: with samples streamed, the engine hands out the idle time
/// of each reuse of a pooled upstream connection and of the upstream's idle close.
#[test]
fn idle_samples_are_streamed_for_the_agent() {
    use tracer::correlate::Sample;
    let mut tl = Tl::default();
    warm_up(&mut tl); // exchange 1 on upstream 50000 ends at 0.9 ms
    let (d, u) = (client(40002), upstream(50000));
    tl.open(2_000 * MS - 300, d);
    tl.req(2_000 * MS - 100, d, "GET", 2);
    tl.req(2_000 * MS, u, "GET", 2);
    tl.res(2_000 * MS + 400, u, 200);
    tl.res(2_000 * MS + 500, d, 200);
    tl.fin(5_000 * MS + 400, u, false); // 3 s after its last response
    tl.segs.sort_by_key(|s| s.ts_ns);
    let mut e = tracer::engine::Engine::new(Config::default());
    e.stream_samples(true);
    for s in &tl.segs {
        e.push(s);
    }
    let samples = e.take_samples();
    let server: SocketAddr = "10.0.0.3:9000".parse().unwrap();
    let reuse: Vec<i64> = samples
        .iter()
        .filter_map(|s| match s {
            Sample::ProxyReuse { upstream, idle_ns } if *upstream == server => Some(*idle_ns),
            _ => None,
        })
        .collect();
    let closes: Vec<i64> = samples
        .iter()
        .filter_map(|s| match s {
            Sample::UpstreamIdleClose { upstream, idle_ns } if *upstream == server => {
                Some(*idle_ns)
            }
            _ => None,
        })
        .collect();
    assert_eq!(reuse.len(), 1, "{samples:?}");
    assert!((reuse[0] - 1_999_100_000).abs() < 1_000_000, "{reuse:?}");
    assert_eq!(closes.len(), 1, "{samples:?}");
    assert!((closes[0] - 3_000_000_000).abs() < 1_000_000, "{closes:?}");
    assert!(
        tracer::engine::Engine::new(Config::default())
            .take_samples()
            .is_empty(),
        "nothing is kept unless asked for"
    );
}

/// Idle closes are noted before a connection's side is known: a client connection the
/// proxy closed idle before any upstream connection showed which side is which must not
/// make the proxy's own listener an "upstream" in the inferred timeouts.
#[test]
fn the_proxys_listener_is_no_upstream_in_the_inferred_timeouts() {
    let mut tl = Tl::default();
    let early = client(40000);
    tl.open(0, early);
    tl.req(200, early, "GET", 1);
    tl.res(400, early, 200);
    tl.fin(1_000 * MS, early, false);
    tl.fin(1_000 * MS + 50, early, true);
    // Later, a proxied exchange shows the sides; the upstream closes idle after 1 s.
    let (d, u) = (client(40001), upstream(50000));
    tl.open(2_000 * MS, d);
    tl.req(2_000 * MS + 200, d, "GET", 2);
    tl.open(2_000 * MS + 300, u);
    tl.req(2_000 * MS + 500, u, "GET", 2);
    tl.res(2_000 * MS + 700, u, 200);
    tl.res(2_000 * MS + 800, d, 200);
    tl.fin(3_000 * MS + 700, u, false);
    tl.fin(3_000 * MS + 750, u, true);
    let a = tl.run();
    let servers: Vec<SocketAddr> = a.timeouts.iter().map(|t| t.upstream).collect();
    assert_eq!(servers, vec![u.s], "{:#?}", a.timeouts);
    // Both client responses count as the proxy's, the upstream's as the upstream's.
    assert_eq!(a.responses.client.get(&200), Some(&2), "{:?}", a.responses);
    assert_eq!(a.responses.listeners, vec![early.s]);
    assert_eq!(a.responses.upstreams, vec![u.s]);
}

/// A kernel event about upstream connection `u` (the proxy's side), at `us`.
fn kernel(
    us: i64,
    u: Conn,
    kind: tracer::probe::SockEventKind,
    state: u32,
) -> tracer::kernel::KernelEvent {
    tracer::kernel::KernelEvent {
        ts_ns: us * 1000,
        event: tracer::probe::SockEvent {
            ktime_ns: (us * 1000) as u64,
            skaddr: 0xffff_0000_1234,
            kind,
            state,
            pid: Some(4242),
            tid: Some(4242),
            comm: Some("caddy".into()),
            netns: None,
            local: Some(u.c),
            remote: Some(u.s),
        },
    }
}

/// The engine owns the kernel's evidence: events fed in with the packets reach the verdict
/// it hands out live and the one it reports at the end, before the advice is made.
#[test]
fn kernel_events_fed_to_the_engine_reach_its_verdicts() {
    use tracer::probe::{tcp_state, SockEventKind};
    let mut tl = Tl::default();
    warm_up(&mut tl);
    let (d, u) = (client(40001), upstream(50000));
    tl.fin(5_000 * MS, u, false);
    tl.open(5_000 * MS - 300, d);
    tl.req(5_000 * MS - 100, d, "POST", 2);
    tl.req(5_000 * MS + 50, u, "POST", 2);
    tl.rst(5_000 * MS + 150, u, false);
    tl.res(5_000 * MS + 400, d, 502);
    // later traffic moves the clock past the grace period: the verdict is handed out live
    tl.open(8_000 * MS, client(40009));
    tl.segs.sort_by_key(|s| s.ts_ns);
    let mut events = vec![
        kernel(
            5_000 * MS + 20,
            u,
            SockEventKind::StateChange {
                old: tcp_state::ESTABLISHED,
                new: tcp_state::CLOSE_WAIT,
            },
            tcp_state::CLOSE_WAIT,
        ),
        kernel(
            5_000 * MS + 50,
            u,
            SockEventKind::SendAfterIdle {
                ret: 200,
                idle_ns: 4_990_000_000,
                ended_in: tcp_state::CLOSE_WAIT,
            },
            tcp_state::CLOSE_WAIT,
        ),
    ]
    .into_iter()
    .peekable();
    let mut e = tracer::engine::Engine::new(Config::default());
    let mut live = Vec::new();
    for s in &tl.segs {
        while let Some(k) = events.next_if(|k| k.ts_ns <= s.ts_ns) {
            e.kernel_event(k);
        }
        e.push(s);
        live.extend(e.new_verdicts());
    }
    assert_eq!(e.kernel_stats().0, 2, "both events reached the ledger");
    let a = e.finish();
    let v = only(&a);
    assert_eq!(v.subcause, Some(Subcause::FinUnread), "{v:#?}");
    assert_eq!(v.confidence, Confidence::Proven);
    assert_eq!(v.process.as_deref(), Some("caddy[4242]"));
    assert!(
        v.evidence
            .iter()
            .filter(|x| x.to_string().contains("CLOSE_WAIT (FIN unread)"))
            .count()
            == 1,
        "the kernel's evidence once, not once per enrichment: {:#?}",
        v.evidence
    );
    assert_eq!(live.len(), 1, "handed out live: {live:#?}");
    assert_eq!(live[0].process.as_deref(), Some("caddy[4242]"));
    assert_eq!(live[0].subcause, Some(Subcause::FinUnread));
}
