//! Template timelines for the rules' tests: a client, a proxy at 10.0.0.2:80 and an
//! upstream at 10.0.0.3:9000, segments written in microseconds with sequence numbers
//! followed per direction, run through the flow tracker and the correlator.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};

use crate::correlate::{Correlator, Roles, Rule};
use crate::flow::Tracker;
use crate::segment::{flags, Segment};
use crate::verdict::Verdict;

pub const MS: i64 = 1000;

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

#[derive(Clone, Copy, Debug)]
pub struct Conn {
    pub c: SocketAddr,
    pub s: SocketAddr,
}

pub fn client(port: u16) -> Conn {
    Conn {
        c: format!("10.0.0.1:{port}").parse().unwrap(),
        s: "10.0.0.2:80".parse().unwrap(),
    }
}

pub fn upstream(port: u16) -> Conn {
    Conn {
        c: format!("10.0.0.2:{port}").parse().unwrap(),
        s: "10.0.0.3:9000".parse().unwrap(),
    }
}

/// What a run of the engine found.
pub struct Run {
    pub verdicts: Vec<Verdict>,
}

/// A timeline: times in microseconds, sequence numbers followed per direction.
#[derive(Default)]
pub struct Tl {
    segs: Vec<Segment>,
    seq: HashMap<(SocketAddr, SocketAddr), u32>,
    /// `Keep-Alive: timeout=N` on the upstream's responses.
    keep_alive: Option<u32>,
    /// Socket openings the kernel reported, handed over before the packets.
    kernel: Vec<crate::kernel::SocketOpen>,
    /// Hand the segments over in the order they were written, not by time.
    unsorted: bool,
}

impl Tl {
    /// A warm-up exchange that teaches the engine the roles (client 40000, upstream
    /// connection 50000, kept open and quiet from 0.9 ms).
    pub fn warmed_up() -> Tl {
        Tl::warmed_up_with(None)
    }

    /// The same, the upstream's responses saying `Keep-Alive: timeout=N`.
    pub fn warmed_up_with(keep_alive: Option<u32>) -> Tl {
        let mut tl = Tl {
            keep_alive,
            ..Tl::default()
        };
        let (d, u) = (client(40000), upstream(50000));
        tl.open(0, d);
        tl.req(200, d, "GET", 1);
        tl.open(300, u);
        tl.req(500, u, "GET", 1);
        tl.res(900, u, 200);
        tl.res(1000, d, 200);
        tl.fin(1100, d, true);
        tl.fin(1150, d, false);
        tl
    }

    pub fn seg(&mut self, us: i64, from: SocketAddr, to: SocketAddr, fl: u8, data: &[u8]) {
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
    pub fn open(&mut self, us: i64, k: Conn) {
        self.seg(us, k.c, k.s, flags::SYN, b"");
        self.seg(us + 50, k.s, k.c, flags::SYN | flags::ACK, b"");
        self.seg(us + 100, k.c, k.s, flags::ACK, b"");
    }

    /// A request carrying its id (`X-Request-Id` and `?rid=`).
    pub fn req(&mut self, us: i64, k: Conn, method: &str, rid: u32) {
        let r = format!("{method} /p?rid={rid} HTTP/1.1\r\nHost: h\r\nX-Request-Id: {rid}\r\n\r\n");
        self.seg(us, k.c, k.s, flags::ACK | flags::PSH, r.as_bytes());
    }

    /// A request without any id.
    pub fn req_plain(&mut self, us: i64, k: Conn, method: &str, target: &str) {
        let r = format!("{method} {target} HTTP/1.1\r\nHost: h\r\n\r\n");
        self.seg(us, k.c, k.s, flags::ACK | flags::PSH, r.as_bytes());
    }

    pub fn res(&mut self, us: i64, k: Conn, status: u16) {
        let ka = self
            .keep_alive
            .filter(|_| k.s.port() == 9000)
            .map_or(String::new(), |t| format!("Keep-Alive: timeout={t}\r\n"));
        let r = format!("HTTP/1.1 {status} X\r\n{ka}Content-Length: 2\r\n\r\nok");
        self.seg(us, k.s, k.c, flags::ACK | flags::PSH, r.as_bytes());
    }

    pub fn fin(&mut self, us: i64, k: Conn, from_client: bool) {
        let (a, b) = if from_client { (k.c, k.s) } else { (k.s, k.c) };
        self.seg(us, a, b, flags::FIN | flags::ACK, b"");
    }

    pub fn rst(&mut self, us: i64, k: Conn, from_client: bool) {
        let (a, b) = if from_client { (k.c, k.s) } else { (k.s, k.c) };
        self.seg(us, a, b, flags::RST | flags::ACK, b"");
    }

    /// Request 2 from client `d` at 10 ms, forwarded on a fresh upstream connection `u`.
    pub fn forwarded(&mut self, d: Conn, u: Conn, method: &str) {
        self.open(10 * MS, d);
        self.req(10 * MS + 200, d, method, 2);
        self.open(10 * MS + 300, u);
        self.req(10 * MS + 500, u, method, 2);
    }

    /// Upstream connections 50002-50004, seen whole: each quiet from 1 ms after its
    /// exchange and closed by the upstream `after_ms` later (its idle timer).
    pub fn idle_closes(&mut self, after_ms: i64) {
        for (i, port) in (50002..=50004).enumerate() {
            let spare = upstream(port);
            let at = (1 + i as i64) * 10 * MS;
            self.open(at, spare);
            self.req(at + 200, spare, "GET", 9 + i as u32);
            self.res(at + MS, spare, 200);
            self.fin(at + MS + after_ms * MS, spare, false);
        }
    }

    /// The kernel saw `conn`'s client open it (`connect` by `client_pid`) and its server
    /// accept it (`server_pid`).
    pub fn kernel_opened(&mut self, k: Conn, client_pid: Option<u32>, server_pid: Option<u32>) {
        use crate::kernel::{Opened, SocketOpen};
        if let Some(pid) = client_pid {
            self.kernel.push(SocketOpen {
                local: k.c,
                remote: k.s,
                opened: Opened::Active,
                pid: Some(pid),
            });
        }
        if let Some(pid) = server_pid {
            self.kernel.push(SocketOpen {
                local: k.s,
                remote: k.c,
                opened: Opened::Passive,
                pid: Some(pid),
            });
        }
    }

    /// The engine over the timeline, with `off` rules switched off.
    fn run_with(self, off: &[Rule]) -> Run {
        Run {
            verdicts: self.run_corr(off).0,
        }
    }

    /// The verdicts and what the correlator says of an encrypted client side.
    pub fn run_full(self) -> (Vec<Verdict>, Option<crate::correlate::EncryptedSide>) {
        self.run_corr(&[])
    }

    pub fn run_full_without(
        self,
        rule: Rule,
    ) -> (Vec<Verdict>, Option<crate::correlate::EncryptedSide>) {
        self.run_corr(&[rule])
    }

    fn run_corr(mut self, off: &[Rule]) -> (Vec<Verdict>, Option<crate::correlate::EncryptedSide>) {
        if !self.unsorted {
            self.segs.sort_by_key(|s| s.ts_ns);
        }
        let mut tracker = Tracker::new();
        let mut corr = Correlator::new(Roles::default());
        for r in off {
            corr.switch_off(*r);
        }
        for open in self.kernel.drain(..) {
            corr.kernel_socket(open);
        }
        let mut events = play(&self.segs, &mut tracker, &mut corr);
        tracker.finish(&mut events);
        for ev in events.drain(..) {
            corr.on_event(ev);
        }
        corr.finish();
        let mut verdicts = std::mem::take(&mut corr.verdicts_out);
        verdicts.sort_by_key(|v| v.ts_ns);
        (verdicts, corr.encrypted_side())
    }

    /// The correlator's tables once the timeline has played and the clock has gone on to
    /// `until_us` (no end of input: what a long-running session holds).
    pub fn tables_at(mut self, until_us: i64) -> Vec<(&'static str, usize)> {
        self.segs.sort_by_key(|s| s.ts_ns);
        let mut tracker = Tracker::new();
        let mut corr = Correlator::new(Roles::default());
        let tick = upstream(65_000);
        let mut segs = std::mem::take(&mut self.segs);
        // another connection's packets every second, so the clock goes on to `until_us`
        let last = segs.last().map_or(0, |s| s.ts_ns / 1000);
        self.open(last + 1, tick);
        for t in (last + 1_000 * MS..=until_us).step_by(1_000 * MS as usize) {
            self.seg(t, tick.c, tick.s, flags::ACK, b"");
        }
        segs.append(&mut self.segs);
        play(&segs, &mut tracker, &mut corr);
        corr.tables()
    }

    pub fn run(self) -> Run {
        self.run_with(&[])
    }

    pub fn run_without(self, rule: Rule) -> Run {
        self.run_with(&[rule])
    }

    /// The one verdict of the run.
    pub fn only(self) -> Verdict {
        only(self.run())
    }

    /// The one verdict, the segments handed over in the order written (a capture merged
    /// out of order).
    pub fn only_unsorted(mut self) -> Verdict {
        self.unsorted = true;
        only(self.run())
    }

    /// The one verdict of the run with `rule` switched off.
    pub fn only_without(self, rule: Rule) -> Verdict {
        only(self.run_without(rule))
    }
}

/// Segments through the tracker into the correlator, its clock advanced with each; returns
/// the (empty) event buffer for what follows.
fn play(segs: &[Segment], tracker: &mut Tracker, corr: &mut Correlator) -> Vec<crate::flow::Event> {
    let mut events = Vec::new();
    for s in segs {
        tracker.push(s, &mut events);
        for ev in events.drain(..) {
            corr.on_event(ev);
        }
        corr.advance(tracker.now());
    }
    events
}

fn only(r: Run) -> Verdict {
    assert_eq!(r.verdicts.len(), 1, "{:#?}", r.verdicts);
    r.verdicts.into_iter().next().unwrap()
}
