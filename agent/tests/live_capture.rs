//! Live capture inside a network namespace of this test's own: a real TCP exchange on its
//! loopback must come out as segments with SYN, payload and FIN. Needs root.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::process::Command;
use std::time::{Duration, Instant};

use tracer::live::{default_filter, LiveCapture, LiveOptions};
use tracer::segment::flags;

struct Netns(String);

impl Netns {
    /// A new network namespace with its loopback up, deleted when dropped.
    fn create(name: &str) -> Netns {
        let ns = Netns(name.to_owned());
        assert!(Command::new("ip")
            .args(["netns", "add", &ns.0])
            .status()
            .unwrap()
            .success());
        assert!(Command::new("ip")
            .args(["-n", &ns.0, "link", "set", "lo", "up"])
            .status()
            .unwrap()
            .success());
        ns
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

fn skip_reason() -> Option<String> {
    if !nix_is_root() {
        return Some("needs root (network namespaces and packet capture)".into());
    }
    if Command::new("ip").arg("-V").output().is_err() {
        return Some("needs `ip` (iproute2)".into());
    }
    None
}

fn nix_is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

fn enter(ns: &str) {
    let f = std::fs::File::open(format!("/run/netns/{ns}")).unwrap();
    // SAFETY: `f` is open for the duration of the call; setns changes only this thread.
    assert_eq!(unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) }, 0);
}

#[test]
fn loopback_exchange_in_a_namespace_is_captured() {
    exchange_in_a_namespace(None, "immediate");
}

#[test]
fn loopback_exchange_is_captured_when_batched_by_the_kernel() {
    exchange_in_a_namespace(Some(10), "batched");
}

fn exchange_in_a_namespace(batch_ms: Option<u32>, tag: &str) {
    if let Some(why) = skip_reason() {
        eprintln!("SKIPPED: {why}");
        return;
    }
    let ns = Netns::create(&format!("tracer-live-{tag}-{}", std::process::id()));

    let mut cap = LiveCapture::start(&LiveOptions {
        interfaces: vec!["lo".into()],
        netns: Some(format!("/run/netns/{}", ns.0).into()),
        snaplen: 512,
        buffer_bytes: 4 << 20,
        filter: default_filter(&[18080]),
        selector: None,
        keep_frames: true,
        batch_ms,
    })
    .expect("live capture starts");

    let name = ns.0.clone();
    std::thread::spawn(move || {
        enter(&name);
        let l = TcpListener::bind("127.0.0.1:18080").unwrap();
        let mut c = TcpStream::connect("127.0.0.1:18080").unwrap();
        let (mut s, _) = l.accept().unwrap();
        c.write_all(b"POST /x HTTP/1.1\r\nContent-Length: 0\r\n\r\n")
            .unwrap();
        let mut buf = [0u8; 64];
        let _ = s.read(&mut buf).unwrap();
        drop(s);
        drop(c);
    })
    .join()
    .unwrap();

    let mut segs = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline
        && !segs
            .iter()
            .any(|s: &tracer::segment::Segment| s.has(flags::FIN))
    {
        if let Ok(p) = cap.packets().recv_timeout(Duration::from_millis(200)) {
            segs.push(p.segment);
        }
    }
    while let Ok(p) = cap.packets().recv_timeout(Duration::from_millis(200)) {
        segs.push(p.segment);
    }
    cap.stop();
    assert!(
        segs.iter().any(|s| s.has(flags::SYN) && !s.has(flags::ACK)),
        "no SYN in {segs:?}"
    );
    assert!(
        segs.iter()
            .any(|s| s.payload.starts_with(b"POST /x HTTP/1.1")),
        "no request"
    );
    assert!(segs.iter().any(|s| s.has(flags::FIN)), "no FIN");
    // The default filter leaves out pure ACKs: they prove nothing.
    assert!(
        segs.iter()
            .all(|s| s.wire_len > 0 || s.flags & (flags::SYN | flags::FIN | flags::RST) != 0),
        "a pure ACK got through: {segs:?}"
    );
    assert!(
        segs.iter()
            .all(|s| s.src.port() == 18080 || s.dst.port() == 18080),
        "filter let others through"
    );
    let st = cap.stats();
    assert_eq!(st.len(), 1);
    assert!(st[0].received >= segs.len() as u64, "{st:?}");
}

#[test]
fn a_missing_interface_is_one_clear_error() {
    if let Some(why) = skip_reason() {
        eprintln!("SKIPPED: {why}");
        return;
    }
    let err = LiveCapture::start(&LiveOptions {
        interfaces: vec!["no-such-if0".into()],
        netns: None,
        snaplen: 256,
        buffer_bytes: 1 << 20,
        filter: "tcp".into(),
        selector: None,
        keep_frames: true,
        batch_ms: None,
    })
    .err()
    .expect("opening a missing interface fails");
    let msg = err.to_string();
    assert!(msg.contains("no-such-if0"), "{msg}");
}

#[test]
fn a_bad_filter_is_rejected_with_its_text() {
    if let Some(why) = skip_reason() {
        eprintln!("SKIPPED: {why}");
        return;
    }
    let err = LiveCapture::start(&LiveOptions {
        interfaces: vec!["lo".into()],
        netns: None,
        snaplen: 256,
        buffer_bytes: 1 << 20,
        filter: "tcp and and".into(),
        selector: None,
        keep_frames: true,
        batch_ms: None,
    })
    .err()
    .expect("a bad filter fails");
    assert!(err.to_string().contains("tcp and and"), "{err}");
}

#[test]
fn the_http_heads_filter_compiles_in_libpcap() {
    if let Some(why) = skip_reason() {
        eprintln!("SKIPPED: {why}");
        return;
    }
    let cap = LiveCapture::start(&LiveOptions {
        interfaces: vec!["lo".into()],
        netns: None,
        snaplen: 256,
        buffer_bytes: 1 << 20,
        filter: tracer::live::http_heads_filter(&[18082]),
        selector: None,
        keep_frames: true,
        batch_ms: None,
    });
    assert!(cap.is_ok(), "{:?}", cap.err());
}

#[test]
fn the_kernel_selection_finds_5xx_heads_on_a_named_interface_and_on_any() {
    sparse_5xx_on("lo");
    sparse_5xx_on("any");
}

/// A busy keep-alive connection on the namespace's loopback, captured through `select`:
/// past the first exchange only the 5xx head (and the exchange after it, within the
/// error window) may come through. The data sits in page fragments, as on any
/// live TCP connection, and `any` hands the filter cooked packets (no link header), so
/// this is where `select` must find the head in both layouts.
fn sparse_5xx_on(interface: &str) {
    if let Some(why) = skip_reason() {
        eprintln!("SKIPPED: {why}");
        return;
    }
    if let Err(why) = tracer::probe::built_with_probe() {
        eprintln!("SKIPPED: tracer was built without the kernel probe: {why}");
        return;
    }
    // A hot window that covers the first exchange only (exchanges are 60 ms apart, far
    // more than a jiffy of the filter's coarse clock), and no reuse threshold.
    let config = tracer::probe::ProbeConfig {
        sparse_hot: Duration::from_millis(10),
        sparse_idle: Duration::from_secs(3600),
        ..tracer::probe::ProbeConfig::default()
    };
    let selector = tracer::probe::Selector::load(&config).expect("loading select");
    let ns = Netns::create(&format!("tracer-sparse-{interface}-{}", std::process::id()));
    let mut cap = LiveCapture::start(&LiveOptions {
        interfaces: vec![interface.to_owned()],
        netns: Some(format!("/run/netns/{}", ns.0).into()),
        snaplen: 512,
        buffer_bytes: 4 << 20,
        filter: String::new(),
        selector: Some(selector),
        keep_frames: false,
        batch_ms: None,
    })
    .expect("live capture starts");

    let name = ns.0.clone();
    let statuses = [200, 200, 200, 200, 503, 200];
    std::thread::spawn(move || {
        enter(&name);
        let l = TcpListener::bind("127.0.0.1:18081").unwrap();
        let mut c = TcpStream::connect("127.0.0.1:18081").unwrap();
        let (mut s, _) = l.accept().unwrap();
        let mut buf = [0u8; 256];
        for (i, status) in statuses.iter().enumerate() {
            c.write_all(format!("GET /{i} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
                .unwrap();
            let _ = s.read(&mut buf).unwrap();
            s.write_all(format!("HTTP/1.1 {status} X\r\nContent-Length: 0\r\n\r\n").as_bytes())
                .unwrap();
            let _ = c.read(&mut buf).unwrap();
            std::thread::sleep(Duration::from_millis(60));
        }
    })
    .join()
    .unwrap();

    // Everything the kernel kept, until it has been quiet for half a second.
    let mut payloads: Vec<String> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        match cap.packets().recv_timeout(Duration::from_millis(500)) {
            Ok(p) if !p.segment.payload.is_empty() => {
                payloads.push(String::from_utf8_lossy(&p.segment.payload).into_owned());
            }
            Ok(_) => {}
            Err(_) => break,
        }
    }
    cap.stop();
    let heads: Vec<&str> = payloads
        .iter()
        .map(|p| p.split("\r\n").next().unwrap_or(""))
        .collect();
    // The first exchange (new connection, and its reply), then the 5xx head and the
    // exchange after it (within the error window); the busy exchanges between are
    // dropped in the kernel.
    assert_eq!(
        heads,
        [
            "GET /0 HTTP/1.1",
            "HTTP/1.1 200 X",
            "HTTP/1.1 503 X",
            "GET /5 HTTP/1.1",
            "HTTP/1.1 200 X"
        ],
        "on {interface}"
    );
}
