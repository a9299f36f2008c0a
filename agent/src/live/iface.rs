//! One interface's capture thread.

use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Sender, SyncSender};
use std::sync::{Arc, Mutex};

use super::{offer, IfaceStats, LiveError, LiveOptions, LivePacket};
use crate::capture::decode_frame;
use crate::capture::LinkType;
use crate::capture::RawPacket;

/// How often an idle capture thread wakes to look at the stop flag, milliseconds.
const POLL_MS: i32 = 100;
/// Packets drained per wake-up before stats are refreshed.
const BATCH: usize = 4096;

pub(super) struct Ctx {
    pub name: String,
    pub opts: LiveOptions,
    pub tx: SyncSender<LivePacket>,
    pub stop: Arc<AtomicBool>,
    pub stats: Arc<Mutex<Vec<IfaceStats>>>,
    pub index: usize,
}

/// Opens the interface, says on `ready` whether that worked, then captures until stopped.
pub(super) fn run(ctx: Ctx, ready: &Sender<Result<(), LiveError>>) {
    let mut cap = match open(&ctx) {
        Ok(c) => {
            let _ = ready.send(Ok(()));
            c
        }
        Err(e) => {
            let _ = ready.send(Err(e));
            return;
        }
    };
    let linktype = LinkType(u32::try_from(cap.get_datalink().0).unwrap_or(u32::MAX));
    let fd = cap.as_raw_fd();
    let (mut skipped, mut backlog_dropped) = (0u64, 0u64);
    while !ctx.stop.load(Ordering::Relaxed) {
        let mut n = 0;
        while n < BATCH {
            match cap.next_packet() {
                Ok(p) => {
                    n += 1;
                    let ts_ns = unix_ns(&p.header.ts);
                    match decode_frame(linktype, p.data, p.header.len) {
                        Ok(view) => {
                            let packet = LivePacket {
                                iface: ctx.index,
                                segment: view.to_segment(ts_ns),
                                raw: ctx.opts.keep_frames.then(|| RawPacket {
                                    ts_ns,
                                    linktype,
                                    data: p.data.to_vec(),
                                    orig_len: p.header.len,
                                }),
                            };
                            if !offer(&ctx.tx, packet) {
                                backlog_dropped += 1;
                            }
                        }
                        Err(_) => skipped += 1,
                    }
                }
                Err(pcap::Error::TimeoutExpired) => break,
                Err(_) => {
                    // The interface went away (namespace deleted, link down): stop quietly;
                    // the counters say how far it got.
                    ctx.stop.store(true, Ordering::Relaxed);
                    break;
                }
            }
        }
        refresh(&ctx, &mut cap, skipped, backlog_dropped);
        if n < BATCH {
            let mut pfd = libc::pollfd {
                fd,
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: `pfd` is a valid pollfd for the duration of the call and we pass a count of 1.
            unsafe { libc::poll(&raw mut pfd, 1, POLL_MS) };
        }
    }
    refresh(&ctx, &mut cap, skipped, backlog_dropped);
}

fn refresh(ctx: &Ctx, cap: &mut pcap::Capture<pcap::Active>, skipped: u64, backlog_dropped: u64) {
    let Ok(st) = cap.stats() else { return };
    if let Ok(mut all) = ctx.stats.lock() {
        if let Some(s) = all.get_mut(ctx.index) {
            s.received = u64::from(st.received);
            s.dropped = u64::from(st.dropped);
            s.if_dropped = u64::from(st.if_dropped);
            s.skipped = skipped;
            s.backlog_dropped = backlog_dropped;
        }
    }
}

fn open(ctx: &Ctx) -> Result<pcap::Capture<pcap::Active>, LiveError> {
    if let Some(path) = &ctx.opts.netns {
        enter_netns(path)?;
    }
    let open_err = |e: pcap::Error| {
        let message = e.to_string();
        let hint = if message.contains("ermission") || message.contains("not permitted") {
            " (capturing needs CAP_NET_RAW and CAP_NET_ADMIN: run as root or grant them)"
        } else if message.contains("No such device") || message.contains("doesn't exist") {
            " (list the interfaces with `ip link`, inside the namespace if you gave --netns/--pid)"
        } else {
            ""
        };
        LiveError::Open {
            interface: ctx.name.clone(),
            message,
            hint,
        }
    };
    let snaplen = i32::try_from(ctx.opts.snaplen).unwrap_or(i32::MAX);
    let buffer = i32::try_from(ctx.opts.buffer_bytes).unwrap_or(i32::MAX);
    let mut cap = pcap::Capture::from_device(ctx.name.as_str())
        .map_err(open_err)?
        .immediate_mode(ctx.opts.batch_ms.is_none())
        .timeout(
            ctx.opts
                .batch_ms
                .map_or(0, |ms| i32::try_from(ms).unwrap_or(i32::MAX)),
        )
        .precision(pcap::Precision::Nano)
        .snaplen(snaplen)
        .buffer_size(buffer)
        .promisc(false)
        .open()
        .map_err(open_err)?
        .setnonblock()
        .map_err(open_err)?;
    if let Some(selector) = &ctx.opts.selector {
        // SAFETY: `cap` owns this descriptor and outlives the borrow, which ends with the call.
        let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(cap.as_raw_fd()) };
        selector.attach(fd).map_err(|source| LiveError::Select {
            interface: ctx.name.clone(),
            source,
        })?;
        return Ok(cap);
    }
    cap.filter(&ctx.opts.filter, true)
        .map_err(|e| LiveError::Filter {
            filter: ctx.opts.filter.clone(),
            message: e.to_string(),
        })?;
    Ok(cap)
}

/// Moves the calling thread (only) into the network namespace at `path`.
fn enter_netns(path: &std::path::Path) -> Result<(), LiveError> {
    let err = |message: String| LiveError::Netns {
        path: path.display().to_string(),
        message,
    };
    let file = std::fs::File::open(path).map_err(|e| err(e.to_string()))?;
    // SAFETY: `file` is an open descriptor for the duration of the call; setns only reads it
    // and changes the calling thread's network namespace.
    let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
    if rc != 0 {
        return Err(err(format!(
            "setns: {} (entering a namespace needs CAP_SYS_ADMIN)",
            std::io::Error::last_os_error()
        )));
    }
    Ok(())
}

/// With nanosecond precision libpcap puts nanoseconds in `tv_usec`.
#[allow(
    clippy::useless_conversion,
    reason = "time_t and suseconds_t are not i64 on every target"
)]
fn unix_ns(ts: &libc::timeval) -> i64 {
    i64::from(ts.tv_sec) * 1_000_000_000 + i64::from(ts.tv_usec)
}
