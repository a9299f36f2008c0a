//! The kernel probe on a real kernel: a loopback connection that the listener closes must
//! show up as the expected state changes, with this process as the connecting owner.
//!
//! Skips (with the reason printed) when not privileged, when tracepoints are unavailable,
//! or when tracer was built without the probe.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use tracer::probe::{
    built_with_probe, missing_caps, tcp_state, Probe, ProbeConfig, ProbeError, SockEvent,
    SockEventKind,
};

fn effective_caps() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let hex = status.lines().find_map(|l| l.strip_prefix("CapEff:"))?;
    u64::from_str_radix(hex.trim(), 16).ok()
}

/// Whether this build and process can load the kernel programs; prints why not.
fn probe_usable() -> bool {
    if let Err(why) = built_with_probe() {
        eprintln!("skipped: tracer was built without the kernel probe: {why}");
        return false;
    }
    if let Some(why) = effective_caps().and_then(missing_caps) {
        eprintln!("skipped: {why}");
        return false;
    }
    true
}

/// For the failure message of a test that checks the kernel object's exact behaviour: the
/// kernel it ran on and the toolchain that built the object, since either can change
/// what the verifier accepts or what the code generation does.
fn codegen_context() -> String {
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    format!(
        "this test depends on the kernel object's exact code: Linux {}, probe built with {}",
        kernel.trim(),
        tracer::probe::TOOLCHAIN
    )
}

/// Loads the probe, or prints why this kernel/process cannot and returns `None`.
fn load_or_skip(config: &ProbeConfig) -> Option<Probe> {
    if !probe_usable() {
        return None;
    }
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    match Probe::load(config) {
        Ok(p) => Some(p),
        Err(e @ (ProbeError::Tracefs { .. } | ProbeError::TracepointMissing { .. })) => {
            eprintln!(
                "skipped: no usable tracepoints on Linux {}: {e}",
                kernel.trim()
            );
            None
        }
        Err(e) => panic!("loading the probe on Linux {} failed: {e}", kernel.trim()),
    }
}

/// Polls until `done` holds for the events so far, or 3 s pass.
fn collect(probe: &mut Probe, done: impl Fn(&[SockEvent]) -> bool) -> Vec<SockEvent> {
    let mut events = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(3);
    while Instant::now() < deadline && !done(&events) {
        events.extend(probe.poll(Some(Duration::from_millis(50))).unwrap());
    }
    events
}

fn changes(events: &[SockEvent], skaddr: u64) -> Vec<(u32, u32)> {
    events
        .iter()
        .filter(|e| e.skaddr == skaddr)
        .filter_map(|e| match e.kind {
            SockEventKind::StateChange { old, new } => Some((old, new)),
            _ => None,
        })
        .collect()
}

#[test]
fn listener_close_shows_client_lifecycle_with_our_pid() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr: SocketAddr = listener.local_addr().unwrap();
    let config = ProbeConfig {
        ports: vec![addr.port()],
        idle_threshold: Duration::from_millis(100),
        ..ProbeConfig::default()
    };
    let Some(mut probe) = load_or_skip(&config) else {
        return;
    };
    for a in probe.attached() {
        eprintln!(
            "{}: {}",
            a.tracepoint,
            a.error.as_deref().unwrap_or("attached")
        );
    }

    let mut client = TcpStream::connect(addr).unwrap();
    let client_port = client.local_addr().unwrap().port();
    let (mut server, _) = listener.accept().unwrap();
    // One exchange, an idle gap, then the server closes: the client's late write lands in
    // CLOSE_WAIT (the FIN is already there, unread), the closed server answers RST, and
    // the client's read sees ECONNRESET: a keep-alive race in miniature.
    client.write_all(b"ping").unwrap();
    let mut buf = [0u8; 4];
    server.read_exact(&mut buf).unwrap();
    std::thread::sleep(Duration::from_millis(150));
    drop(server);
    std::thread::sleep(Duration::from_millis(50));
    let _ = client.write(b"late");
    client
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    let n = client.read(&mut buf).unwrap_or(usize::MAX);
    assert!(
        n == 0 || n == usize::MAX,
        "server closed, read returned {n}"
    );
    drop(client);

    let me = std::process::id();
    let is_client = |e: &SockEvent| e.local.map(|a| a.port()) == Some(client_port);
    let events = collect(&mut probe, |ev| {
        ev.iter().any(|e| {
            is_client(e)
                && matches!(e.kind, SockEventKind::StateChange { new, .. } if new == tcp_state::CLOSE)
        })
    });
    for e in &events {
        eprintln!("{e:?}");
    }

    // The client socket: find it by its SYN_SENT → ESTABLISHED change (sport known there).
    let client_sk = events
        .iter()
        .find(|e| {
            is_client(e)
                && e.kind
                    == SockEventKind::StateChange {
                        old: tcp_state::SYN_SENT,
                        new: tcp_state::ESTABLISHED,
                    }
        })
        .map(|e| e.skaddr)
        .expect("the client's SYN_SENT → ESTABLISHED was not seen");
    let seen = changes(&events, client_sk);
    let expected = [
        (tcp_state::CLOSE, tcp_state::SYN_SENT),
        (tcp_state::SYN_SENT, tcp_state::ESTABLISHED),
        (tcp_state::ESTABLISHED, tcp_state::CLOSE_WAIT),
    ];
    for want in expected {
        assert!(seen.contains(&want), "missing {want:?} in {seen:?}");
    }
    // The late write met the closed server socket: RST, then CLOSE.
    assert!(
        seen.iter().any(|&(_, new)| new == tcp_state::CLOSE),
        "no transition to CLOSE in {seen:?}"
    );
    assert!(
        events
            .iter()
            .any(|e| e.skaddr == client_sk && e.kind == SockEventKind::ResetReceived),
        "the server's RST was not reported"
    );
    // The owner was learned at connect, in this process.
    for e in events.iter().filter(|e| e.skaddr == client_sk) {
        assert_eq!(e.pid, Some(me), "{e:?}");
    }
    assert!(
        events.iter().any(|e| e.skaddr == client_sk
            && matches!(e.kind, SockEventKind::SendAfterIdle { .. })
            && e.state == tcp_state::CLOSE_WAIT),
        "the write after the server's FIN was not reported in CLOSE_WAIT"
    );
    assert!(
        events.iter().any(
            |e| e.skaddr == client_sk && matches!(e.kind, SockEventKind::RecvEofOrError { .. })
        ),
        "the client's EOF (or reset) read was not reported"
    );
    // The server side (local port = listener port) was seen too.
    assert!(events
        .iter()
        .any(|e| e.local.map(|a| a.port()) == Some(addr.port())));
    assert_eq!(probe.lost().unwrap(), 0);
    assert_eq!(probe.decode_errors(), 0);
}

/// An Ethernet + IPv4 + TCP frame with the timestamp option (as Linux sends) from
/// `10.0.0.1:port` when `from_client`, else to it, with `10.0.0.2:9000` on the other end.
fn tcp_frame(port: u16, from_client: bool, tcp_flags: u8, payload: &[u8]) -> Vec<u8> {
    let ((src, sport), (dst, dport)) = ends([10, 0, 0, 1], [10, 0, 0, 2], port, from_client);
    let total = u16::try_from(20 + 32 + payload.len()).unwrap();
    let mut f = vec![0, 0, 0, 0, 0, 2, 0, 0, 0, 0, 0, 1, 0x08, 0x00];
    f.extend_from_slice(&[0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, 6, 0, 0]);
    f[16..18].copy_from_slice(&total.to_be_bytes());
    f.extend_from_slice(&src);
    f.extend_from_slice(&dst);
    tcp_segment(&mut f, (sport, dport), tcp_flags, payload);
    f
}

/// (source, destination) of a segment between `client:port` and `server:9000`.
fn ends<A>(client: A, server: A, port: u16, from_client: bool) -> ((A, u16), (A, u16)) {
    if from_client {
        ((client, port), (server, 9000))
    } else {
        ((server, 9000), (client, port))
    }
}

/// Appends a TCP header with the timestamp option (32 bytes, as Linux sends) and `payload`.
fn tcp_segment(f: &mut Vec<u8>, (sport, dport): (u16, u16), tcp_flags: u8, payload: &[u8]) {
    f.extend_from_slice(&sport.to_be_bytes());
    f.extend_from_slice(&dport.to_be_bytes());
    f.extend_from_slice(&[
        0, 0, 0, 1, 0, 0, 0, 1, 0x80, tcp_flags, 0x01, 0xf5, 0, 0, 0, 0,
    ]);
    f.extend_from_slice(&[1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 1]);
    f.extend_from_slice(payload);
}

/// An Ethernet + IPv6 + TCP frame between `fd00::1:port` and `fd00::2:9000` like
/// [`tcp_frame`]'s, with an 8-byte hop-by-hop options header before the TCP header.
fn tcp_frame_v6_hop_by_hop(port: u16, from_client: bool, tcp_flags: u8, payload: &[u8]) -> Vec<u8> {
    let mut client = [0u8; 16];
    client[0] = 0xfd;
    let mut server = client;
    client[15] = 1;
    server[15] = 2;
    let ((src, sport), (dst, dport)) = ends(client, server, port, from_client);
    let payload_len = u16::try_from(8 + 32 + payload.len()).unwrap();
    let mut f = vec![0, 0, 0, 0, 0, 2, 0, 0, 0, 0, 0, 1, 0x86, 0xdd];
    // next header 0: hop-by-hop options
    f.extend_from_slice(&[0x60, 0, 0, 0, 0, 0, 0, 64]);
    f[18..20].copy_from_slice(&payload_len.to_be_bytes());
    f.extend_from_slice(&src);
    f.extend_from_slice(&dst);
    // hop-by-hop: next header TCP, length 0 (8 bytes), a PadN option filling it
    f.extend_from_slice(&[6, 0, 1, 4, 0, 0, 0, 0]);
    tcp_segment(&mut f, (sport, dport), tcp_flags, payload);
    f
}

/// A request and a healthy response, as the select tests send them.
const REQUEST: &[u8] = b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n";
const OK: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n";

/// `select` loaded for `BPF_PROG_TEST_RUN` with no hot window after the first exchange and
/// a reuse only after an hour, so that what it keeps past a connection's first exchange is
/// kept for the 5xx rule alone; `None` (with the reason printed) where it cannot load.
fn select_without_windows() -> Option<tracer::probe::SelectTestRun> {
    if !probe_usable() {
        return None;
    }
    let config = ProbeConfig {
        sparse_hot: Duration::ZERO,
        sparse_idle: Duration::from_secs(3600),
        ..ProbeConfig::default()
    };
    Some(tracer::probe::SelectTestRun::load(&config).expect("loading select"))
}

#[test]
fn select_keeps_5xx_heads_and_the_requests_after_them_on_a_busy_connection() {
    const ACK_PSH: u8 = 0x18;
    let Some(select) = select_without_windows() else {
        return;
    };
    // A port of its own per run: the marks live as long as the loaded program.
    let port = 40_000 + u16::try_from(std::process::id() % 20_000).unwrap();
    let error = b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\n\r\n";
    let keeps = |from_client: bool, payload: &[u8]| {
        select
            .keeps(&tcp_frame(port, from_client, ACK_PSH, payload))
            .expect("test run of select")
    };
    let seen: Vec<bool> = vec![
        keeps(true, REQUEST),  // the connection's first data: kept
        keeps(false, OK),      // its reply: kept
        keeps(true, REQUEST),  // busy, not hot: dropped
        keeps(false, OK),      // dropped
        keeps(true, REQUEST),  // dropped (its response is the 5xx)
        keeps(false, error),   // a 5xx head: kept
        keeps(true, REQUEST),  // the request after it: kept
        keeps(false, OK),      // within the error window: kept
        keeps(false, b"HTTP"), // a segment too short for a head, in the window: kept
    ];
    assert_eq!(
        seen,
        [true, true, false, false, false, true, true, true, true],
        "{}",
        codegen_context()
    );
}

#[test]
fn select_reads_tcp_behind_ipv6_extension_headers() {
    const SYN: u8 = 0x02;
    const ACK: u8 = 0x10;
    const ACK_PSH: u8 = 0x18;
    let Some(select) = select_without_windows() else {
        return;
    };
    let port = 20_000 + u16::try_from(std::process::id() % 20_000).unwrap();
    let error = b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n";
    let keeps = |from_client: bool, flags: u8, payload: &[u8]| {
        select
            .keeps(&tcp_frame_v6_hop_by_hop(port, from_client, flags, payload))
            .expect("test run of select")
    };
    let seen: Vec<bool> = vec![
        keeps(true, SYN, b""),         // a SYN: kept
        keeps(true, ACK, b""),         // a pure ACK: never kept
        keeps(true, ACK_PSH, REQUEST), // first data: kept
        keeps(false, ACK_PSH, OK),     // its reply: kept
        keeps(true, ACK_PSH, REQUEST), // busy: dropped
        keeps(false, ACK_PSH, OK),     // dropped
        keeps(false, ACK_PSH, error),  // a 5xx head, found behind the extension header: kept
    ];
    assert_eq!(
        seen,
        [true, false, true, true, false, false, true],
        "{}",
        codegen_context()
    );
}

/// `tracer capture --no-probe` still selects in the kernel: the selection's own object
/// ignores the namespace and process filters (the tracepoints' business), so a capture
/// with `--pid` or in a namespace does not fall back to copying every data segment.
#[test]
fn capture_without_the_probe_still_selects_in_the_kernel() {
    if !probe_usable() {
        return;
    }
    let netns = std::fs::metadata("/proc/self/ns/net").map(|m| {
        use std::os::unix::fs::MetadataExt;
        u32::try_from(m.ino()).unwrap()
    });
    let config = ProbeConfig {
        netns: netns.ok(),
        pid: Some(std::process::id()),
        ..ProbeConfig::default()
    };
    if let Err(e) = tracer::probe::Selector::load(&config) {
        panic!("select did not load with namespace and process filters set: {e}");
    }
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tracer"))
        .args(["capture", "--no-probe", "-i", "lo", "--duration", "300ms"])
        .args(["--pid", &std::process::id().to_string()])
        .output()
        .expect("running tracer capture");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "tracer capture failed: {stderr}");
    assert!(
        !stderr.contains("did not load"),
        "the selection fell back to copying everything: {stderr}"
    );
}
