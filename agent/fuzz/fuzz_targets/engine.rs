//! The packet → verdict path: fuzz bytes become a timeline of TCP segments among a client,
//! a proxy and an upstream (flags, sequence jumps, HTTP fragments, garbage), fed to the
//! engine, whose verdicts are then rendered as text and JSON. Input that starts like a
//! capture file also goes through the real reader first. Nothing may panic.
#![no_main]

use std::net::SocketAddr;

use libfuzzer_sys::fuzz_target;
use tracer::engine::{Config, Engine};
use tracer::report::{self, CaptureSummary};
use tracer::segment::Segment;

/// Pieces of HTTP the timeline's payloads are made of (plus raw fuzz bytes).
const PIECES: [&[u8]; 10] = [
    b"POST /api?rid=7 HTTP/1.1\r\nHost: h\r\nX-Request-Id: 7\r\nContent-Length: 5\r\n\r\nhello",
    b"GET / HTTP/1.1\r\nHost: h\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
    b"HTTP/1.1 502 Bad Gateway\r\nServer: Caddy\r\nContent-Length: 0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    b"HTTP/1.1 100 Continue\r\n\r\n",
    b"HTTP/1.1 204 No Content\r\n\r\n",
    b"HTTP/1.0 504 Gateway Timeout\r\nConnection: close\r\n\r\n",
    b"HEAD / HTTP/1.1\r\n\r\n",
    b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
];

/// Verdicts rendered per input.
const RENDERED: usize = 8;

fn endpoints(sel: u8) -> (SocketAddr, SocketAddr) {
    let client: SocketAddr = format!("10.0.0.1:{}", 40000 + u16::from(sel & 3)).parse().unwrap();
    let proxy_out: SocketAddr = format!("10.0.1.2:{}", 50000 + u16::from(sel & 3)).parse().unwrap();
    if sel & 4 == 0 {
        (client, "10.0.0.2:80".parse().unwrap())
    } else {
        (proxy_out, "10.0.1.3:9000".parse().unwrap())
    }
}

fn timeline(data: &[u8]) -> Vec<Segment> {
    let mut segs = Vec::new();
    let (mut ts, mut i) = (1_000_000_000i64, 0usize);
    let mut seqs = std::collections::HashMap::new();
    while i + 6 <= data.len() && segs.len() < 512 {
        let h = &data[i..i + 6];
        i += 6;
        let (a, b) = endpoints(h[0]);
        let (src, dst) = if h[0] & 8 == 0 { (a, b) } else { (b, a) };
        let flags = h[1] & 0x1f;
        ts += i64::from(h[2]) * 50_000 + i64::from(h[3] & 0x0f) * 100_000_000;
        let payload: Vec<u8> = match h[4] % 12 {
            n @ 0..=9 => PIECES[n as usize].to_vec(),
            10 => Vec::new(),
            _ => {
                let n = (h[5] as usize).min(data.len() - i);
                let raw = data[i..i + n].to_vec();
                i += n;
                raw
            }
        };
        let seq = seqs.entry((src, dst)).or_insert(1000u32);
        let s = *seq;
        // Sometimes skip ahead (a lost segment) or go back (a retransmission).
        *seq = match h[5] % 8 {
            0 => seq.wrapping_add(payload.len() as u32 + 700),
            1 => seq.wrapping_sub(10),
            _ => seq.wrapping_add(payload.len() as u32 + u32::from(flags & 0x03 != 0)),
        };
        let cut = if h[3] & 0x10 != 0 { payload.len() / 2 } else { payload.len() };
        segs.push(Segment {
            ts_ns: ts,
            src,
            dst,
            flags,
            seq: s,
            ack: u32::from(h[5]).wrapping_mul(977),
            wire_len: payload.len() as u32,
            payload: payload[..cut].to_vec(),
        });
    }
    segs
}

fn run(segments: impl Iterator<Item = Segment>) {
    let mut e = Engine::new(Config::default());
    for s in segments {
        e.push(&s);
        let _ = e.new_verdicts();
    }
    let mut a = e.finish();
    // Rendering is checked on a few verdicts: hundreds of alike ones add time, not paths.
    a.verdicts.truncate(RENDERED);
    let capture = CaptureSummary {
        packets: 1,
        dropped_or_missing: a.flow.gaps,
        ..CaptureSummary::default()
    };
    let _ = report::text::render(&a, capture, true);
    let _ = report::json::render(&a, capture);
}

fuzz_target!(|data: &[u8]| {
    if let Ok(segments) = tracer::capture::segments_from_reader(data, "fuzz") {
        run(segments);
    }
    run(timeline(data).into_iter());
});
