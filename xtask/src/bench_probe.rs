//! `cargo xtask bench-probe`: what the kernel side costs per system call and per packet.
//!
//! One thread drives a TCP connection over loopback in lockstep (client write, server read,
//! server write, client read: on loopback each write is delivered before it returns, so
//! nothing blocks and nothing is scheduled). The process's CPU time per round trip is
//! measured with nothing attached (the baseline), with the probe's tracepoints attached,
//! and with the probe plus the sparse-capture filter `select` on a packet socket bound to
//! `lo`. Rounds alternate; medians and their ratio to the baseline are printed. Unlike
//! `bench-capture`, no other process shares the measurement, so differences of tens of
//! nanoseconds per call are visible.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::{AsFd, FromRawFd, OwnedFd};

use anyhow::{bail, Context, Result};

use crate::bench::{median, noise_pct, paired};
use tracer::probe::{Probe, ProbeConfig, SelectTestRun, Selector};

#[derive(clap::Args)]
pub struct BenchArgs {
    /// Round trips per round.
    #[arg(long, default_value_t = 50_000)]
    round_trips: u32,
    /// Rounds of each kind, alternated.
    #[arg(long, default_value_t = 15)]
    rounds: u32,
    /// Bytes per message.
    #[arg(long, default_value_t = 64)]
    size: usize,
}

/// What is attached during a round.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Nothing,
    Probe,
    /// A packet socket on lo whose classic filter drops everything: what any capture of
    /// lo costs before its filter decides anything (the reference for `select`).
    TapDropAll,
    ProbeAndSelect,
}

impl Mode {
    const ALL: [Mode; 4] = [
        Mode::Nothing,
        Mode::Probe,
        Mode::TapDropAll,
        Mode::ProbeAndSelect,
    ];

    fn name(self) -> &'static str {
        match self {
            Mode::Nothing => "nothing attached (baseline)",
            Mode::Probe => "probe tracepoints",
            Mode::TapDropAll => "packet socket, drop-all filter",
            Mode::ProbeAndSelect => "probe + select filter on lo",
        }
    }
}

pub fn bench_probe(args: &BenchArgs) -> Result<()> {
    tracer::probe::built_with_probe().map_err(|e| anyhow::anyhow!(e))?;
    if args.size == 0 || args.round_trips == 0 || args.rounds == 0 {
        bail!("--size, --round-trips and --rounds must be positive");
    }
    let select = SelectTestRun::load(&ProbeConfig::default()).context("loading select")?;
    let mut runs: Vec<Vec<(&str, f64)>> = Vec::new();
    for _ in 0..args.rounds {
        runs.push(select_per_packet(&select, 200_000)?);
    }
    println!(
        "select alone, per packet (BPF_PROG_TEST_RUN, 200000 runs x {} rounds): min, median",
        args.rounds
    );
    for (i, (name, _)) in runs[0].iter().enumerate() {
        let ns: Vec<f64> = runs.iter().map(|r| r[i].1).collect();
        println!("  {name:<32} {:>5.0} ns {:>5.0} ns", min(&ns), median(&ns));
    }
    drop(select);
    // Warm up: page in the code paths, let the CPU frequency settle.
    pingpong(args.round_trips / 4, args.size)?;
    let mut per_rt: Vec<Vec<f64>> = vec![Vec::new(); Mode::ALL.len()];
    for round in 0..args.rounds {
        for (m, mode) in Mode::ALL.iter().enumerate() {
            let guard = attach(*mode)?;
            let ns = pingpong(args.round_trips, args.size)?;
            drop(guard);
            eprintln!(
                "round {round} {:<32} {ns:8.0} ns per round trip",
                mode.name()
            );
            per_rt[m].push(ns);
        }
    }
    // A last baseline, so that every round sits between two.
    per_rt[0].push(pingpong(args.round_trips, args.size)?);
    println!(
        "\n{} round trips x {} rounds, {}-byte messages; per round trip: 2 sends, 2 receives, \
         2 data packets (each seen twice by a packet socket on lo)",
        args.round_trips, args.rounds, args.size
    );
    // Interference from the host only ever adds CPU time, so each mode's fastest round is
    // its least disturbed; the paired ratio (each round against the baselines just before
    // and after it) is the other estimate. Where they disagree, the host was too noisy.
    println!(
        "{:<32} {:>14} {:>12} {:>14}",
        "attached", "min ns/rt", "added ns", "paired ratio"
    );
    let base = min(&per_rt[0]);
    for (m, mode) in Mode::ALL.iter().enumerate() {
        println!(
            "{:<32} {:>14.0} {:>12.0} {:>14.3}",
            mode.name(),
            min(&per_rt[m]),
            min(&per_rt[m]) - base,
            median(&paired(&per_rt[m], &per_rt[0]))
        );
    }
    println!(
        "consecutive baselines differ by a median {:.1}% (the noise floor of the paired ratio)",
        median(&noise_pct(&per_rt[0]))
    );
    Ok(())
}

/// The least disturbed of some rounds: interference only ever adds time.
fn min(v: &[f64]) -> f64 {
    v.iter().copied().fold(f64::INFINITY, f64::min)
}

/// What must stay alive while a mode is attached.
struct Attached {
    _probe: Option<Probe>,
    _socket: Option<OwnedFd>,
}

fn attach(mode: Mode) -> Result<Attached> {
    match mode {
        Mode::Nothing => {
            return Ok(Attached {
                _probe: None,
                _socket: None,
            })
        }
        Mode::TapDropAll => {
            return Ok(Attached {
                _probe: None,
                _socket: Some(packet_socket_on_lo(Filter::DropAll)?),
            })
        }
        Mode::Probe | Mode::ProbeAndSelect => {}
    }
    let mut probe = Probe::load(&ProbeConfig::default()).context("loading the probe")?;
    let socket = if mode == Mode::ProbeAndSelect {
        let selector = probe.selector().context("loading select")?;
        Some(packet_socket_on_lo(Filter::Select(&selector))?)
    } else {
        None
    };
    Ok(Attached {
        _probe: Some(probe),
        _socket: socket,
    })
}

enum Filter<'a> {
    Select(&'a Selector),
    DropAll,
}

/// An AF_PACKET socket on `lo` with `filter` attached, never read: the filter runs on every
/// packet and the few it keeps wait in the socket's buffer.
fn packet_socket_on_lo(filter: Filter<'_>) -> Result<OwnedFd> {
    let proto = (libc::ETH_P_ALL as u16).to_be();
    // SAFETY: plain socket(2) call; the result is checked before use.
    let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, i32::from(proto)) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error()).context("socket(AF_PACKET)");
    }
    // SAFETY: `fd` was just returned by socket(2) and is owned by nobody else.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // Filter first, then bind: no packet is queued unfiltered.
    match filter {
        Filter::Select(selector) => selector
            .attach(fd.as_fd())
            .context("attaching select (SO_ATTACH_BPF)")?,
        Filter::DropAll => drop_all(&fd)?,
    }
    // SAFETY: if_nametoindex reads a NUL-terminated string.
    let ifindex = unsafe { libc::if_nametoindex(c"lo".as_ptr()) };
    if ifindex == 0 {
        bail!("no loopback interface");
    }
    // SAFETY: an all-zero sockaddr_ll is valid; the fields set below are the ones bind reads.
    let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    addr.sll_family = libc::AF_PACKET as u16;
    addr.sll_protocol = proto;
    addr.sll_ifindex = ifindex as i32;
    // SAFETY: `addr` is a sockaddr_ll of the size passed.
    let rc = unsafe {
        libc::bind(
            std::os::fd::AsRawFd::as_raw_fd(&fd),
            (&raw const addr).cast(),
            std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error()).context("binding the packet socket to lo");
    }
    Ok(fd)
}

/// Attaches the classic filter `ret #0`.
fn drop_all(fd: &OwnedFd) -> Result<()> {
    let mut insn = [libc::sock_filter {
        code: (libc::BPF_RET | libc::BPF_K) as u16,
        jt: 0,
        jf: 0,
        k: 0,
    }];
    let prog = libc::sock_fprog {
        len: 1,
        filter: insn.as_mut_ptr(),
    };
    // SAFETY: `prog` points at one valid instruction that outlives the call, and the
    // length passed is sock_fprog's size, as SO_ATTACH_FILTER expects.
    let rc = unsafe {
        libc::setsockopt(
            std::os::fd::AsRawFd::as_raw_fd(fd),
            libc::SOL_SOCKET,
            libc::SO_ATTACH_FILTER,
            (&raw const prog).cast(),
            std::mem::size_of::<libc::sock_fprog>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error()).context("SO_ATTACH_FILTER");
    }
    Ok(())
}

/// Runs `n` lockstep round trips on a fresh loopback connection; the process's CPU time
/// per round trip, in nanoseconds.
fn pingpong(n: u32, size: usize) -> Result<f64> {
    let listener = TcpListener::bind("127.0.0.1:0").context("binding on loopback")?;
    let mut client = TcpStream::connect(listener.local_addr()?).context("connecting")?;
    let (mut server, _) = listener.accept().context("accepting")?;
    client.set_nodelay(true)?;
    server.set_nodelay(true)?;
    let msg = vec![b'x'; size];
    let mut buf = vec![0u8; size];
    let start = cpu_ns();
    for _ in 0..n {
        client.write_all(&msg)?;
        server.read_exact(&mut buf)?;
        server.write_all(&msg)?;
        client.read_exact(&mut buf)?;
    }
    let spent = cpu_ns().saturating_sub(start);
    Ok(spent as f64 / f64::from(n))
}

/// This process's CPU time (user and system), nanoseconds.
fn cpu_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec for the call to fill.
    unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// `select` alone on crafted packets (`BPF_PROG_TEST_RUN`): nanoseconds per run, as the
/// kernel measures it, for each kind of segment a busy proxy sends.
pub fn select_per_packet(select: &SelectTestRun, repeat: u32) -> Result<Vec<(&'static str, f64)>> {
    let conn = ([10, 0, 0, 1], 40000u16, [10, 0, 0, 2], 8080u16);
    let cases: [(&str, u8, &[u8]); 4] = [
        ("pure ACK", 0x10, b""),
        (
            "request, mid-connection",
            0x18,
            b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
        ),
        (
            "200 response, mid-connection",
            0x18,
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
        ),
        (
            "503 response head",
            0x18,
            b"HTTP/1.1 503 Service Unavailable\r\n\r\n",
        ),
    ];
    let mut out = Vec::new();
    for (name, tcp_flags, payload) in cases {
        let frame = tcp_frame(conn, tcp_flags, payload);
        // The first runs mark the connection (a new one is kept whole for a while); wait
        // past that so the measured runs take the path of a busy connection's segments.
        select.run(&frame, 1)?;
        std::thread::sleep(std::time::Duration::from_millis(300));
        select.run(&frame, 1)?;
        let per_run = select.run(&frame, repeat)?;
        out.push((name, per_run.as_secs_f64() * 1e9));
    }
    Ok(out)
}

/// An Ethernet + IPv4 + TCP (with the timestamp option, as Linux sends) frame.
fn tcp_frame(c: ([u8; 4], u16, [u8; 4], u16), tcp_flags: u8, payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::new();
    f.extend_from_slice(&[0, 0, 0, 0, 0, 2, 0, 0, 0, 0, 0, 1, 0x08, 0x00]);
    let total = (20 + 32 + payload.len()) as u16;
    f.extend_from_slice(&[
        0x45,
        0,
        (total >> 8) as u8,
        total as u8,
        0,
        0,
        0x40,
        0,
        64,
        6,
        0,
        0,
    ]);
    f.extend_from_slice(&c.0);
    f.extend_from_slice(&c.2);
    f.extend_from_slice(&c.1.to_be_bytes());
    f.extend_from_slice(&c.3.to_be_bytes());
    f.extend_from_slice(&[
        0, 0, 0, 1, 0, 0, 0, 1, 0x80, tcp_flags, 0x01, 0xf5, 0, 0, 0, 0,
    ]);
    f.extend_from_slice(&[1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 1]);
    f.extend_from_slice(payload);
    f
}
