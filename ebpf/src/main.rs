//! tracer's kernel probe: TCP tracepoints reduced to the socket events that prove a 502.
//!
//! Tracepoints only (kprobes, fentry and tp_btf are not available everywhere tracer runs).
//! Per-socket state lives in `SOCKS`, keyed by the `struct sock` address, and is deleted at
//! `tcp_destroy_sock` (which follows TCP_CLOSE), or at TCP_CLOSE for a filtered-out socket. The kernel reduces: state changes and resets always; a send
//! only after an idle gap above `CONFIG.idle_threshold_ns`; a receive only when it returns
//! EOF or an error. Context field offsets come from `tracer_common::tp` (checked against the
//! running kernel's format files by the agent before load).
#![no_std]
#![no_main]

mod tls;

use aya_ebpf::{
    helpers::{
        bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_ktime_get_coarse_ns, bpf_ktime_get_ns,
        bpf_probe_read_kernel, bpf_skb_load_bytes, bpf_skb_load_bytes_relative,
    },
    macros::{map, raw_tracepoint, socket_filter, tracepoint},
    maps::{Array, LruHashMap, LruPerCpuHashMap, PerCpuArray, RingBuf},
    programs::{RawTracePointContext, SkBuffContext, TracePointContext},
    Global,
};
use tracer_common::select::{
    decide, slot, status_class, FlowKey, FlowMark, ResponseKey, SegmentFacts, FLOW_SLOTS,
    HEAD_PREFIX, RESPONSE_SLOTS, V6_MAX_EXTENSIONS,
};
use tracer_common::{
    flags, ipv6, kind, tcp_state, tp, Config, RawSockEvent, SockInfo, AF_INET6, EVENTS_RING_BYTES,
    IPPROTO_TCP, MSG_PEEK,
};

/// Events for userspace.
#[map]
static EVENTS: RingBuf = RingBuf::with_byte_size(EVENTS_RING_BYTES, 0);

/// Ring buffer reservation failures (index 0), per CPU; userspace sums them.
#[map]
static LOST: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

/// What we know about each tracked socket, keyed by `skaddr`. LRU so that a socket whose
/// close we missed cannot fill the map.
#[map]
static SOCKS: LruHashMap<u64, SockInfo> = LruHashMap::with_max_entries(65_536, 0);

/// Filters and thresholds, set by userspace before load.
#[no_mangle]
static CONFIG: Global<Config> = Global::new(Config::DEFAULT);

/// `BPF_RB_NO_WAKEUP`: commit a ring buffer record without notifying the reader.
const BPF_RB_NO_WAKEUP: u64 = 1;

/// `EAGAIN`/`EWOULDBLOCK`: a non-blocking read with nothing to read is not an error worth an
/// event (event loops see it on every read).
const EAGAIN: i32 = 11;
/// `EINTR`.
const EINTR: i32 = 4;

type Res = Result<(), i64>;

/// Reads a context field at `off`.
#[inline(always)]
fn field<T>(ctx: &TracePointContext, off: usize) -> Result<T, i64> {
    // SAFETY: `off` comes from `tracer_common::tp`, transcribed from this tracepoint's
    // format file and verified against the running kernel before load; `read_at` goes
    // through `bpf_probe_read`, so a wrong offset yields an error or garbage, never a fault.
    unsafe { ctx.read_at::<T>(off) }.map_err(i64::from)
}

#[inline(always)]
fn now_ns() -> u64 {
    // SAFETY: a helper without arguments, available to every program type.
    unsafe { bpf_ktime_get_ns() }
}

/// Reads the socket's network namespace inode through the BTF offsets userspace found,
/// or 0 when they are unknown or the read fails.
#[inline(always)]
fn read_netns(cfg: &Config, skaddr: u64) -> u32 {
    if cfg.sk_net_offset == 0 || cfg.net_inum_offset == 0 || skaddr == 0 {
        return 0;
    }
    let netp = skaddr.wrapping_add(u64::from(cfg.sk_net_offset)) as *const u64;
    // SAFETY: `bpf_probe_read_kernel` validates the address; a bad one returns an error.
    let net = match unsafe { bpf_probe_read_kernel(netp) } {
        Ok(n) if n != 0 => n,
        _ => return 0,
    };
    let inum = net.wrapping_add(u64::from(cfg.net_inum_offset)) as *const u32;
    // SAFETY: as above.
    unsafe { bpf_probe_read_kernel(inum) }.unwrap_or(0)
}

/// Records the current task as the socket's owner (process context only).
#[inline(always)]
fn learn_owner(info: &mut SockInfo) {
    let pid_tgid = bpf_get_current_pid_tgid();
    let tgid = (pid_tgid >> 32) as u32;
    if tgid == 0 {
        return;
    }
    let tid = pid_tgid as u32;
    if info.flags & flags::OWNER_KNOWN != 0 && info.pid == tgid && info.tid == tid {
        return;
    }
    info.pid = tgid;
    info.tid = tid;
    info.comm = bpf_get_current_comm().unwrap_or([0; 16]);
    info.flags |= flags::OWNER_KNOWN;
}

/// Learns the owner of a socket first seen outside process context (an accepted one):
/// once, because `sock_send_length` and `sock_recv_length` run on every call and each
/// helper call counts there. Events refresh the owner with [`learn_owner`].
#[inline(always)]
fn learn_owner_once(info: &mut SockInfo) {
    if info.flags & flags::OWNER_KNOWN == 0 {
        learn_owner(info);
    }
}

/// Whether a socket is known to live in another network namespace than `cfg` asks for.
#[inline(always)]
fn other_netns(cfg: &Config, info: &SockInfo) -> bool {
    cfg.netns != 0 && info.netns != 0 && info.netns != cfg.netns
}

/// Whether a socket passes the filters in `cfg`.
#[inline(always)]
fn passes(cfg: &Config, info: &SockInfo) -> bool {
    if !cfg.port_matches(info.sport, info.dport) || other_netns(cfg, info) {
        return false;
    }
    // With a pid filter, a socket whose owner is not known yet is not emitted.
    if cfg.pid != 0 && info.pid != cfg.pid {
        return false;
    }
    true
}

/// Writes one event to the ring buffer, counting a failed reservation in `LOST`.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn emit(
    kind: u32,
    skaddr: u64,
    info: &SockInfo,
    now: u64,
    state: u32,
    old_state: u32,
    value: i64,
    idle_ns: u64,
) {
    match EVENTS.reserve::<RawSockEvent>(0) {
        Some(mut entry) => {
            entry.write(RawSockEvent {
                ktime_ns: now,
                skaddr,
                kind,
                pid: info.pid,
                tid: info.tid,
                netns: info.netns,
                comm: info.comm,
                saddr: info.saddr,
                daddr: info.daddr,
                family: info.family,
                sport: info.sport,
                dport: info.dport,
                _pad0: 0,
                state,
                old_state,
                value,
                idle_ns,
                flags: info.flags,
                _pad1: 0,
            });
            // No wake-up per event: a wake-up costs the traced CPU an interrupt, and the
            // reader drains on its own clock (every few milliseconds).
            entry.submit(BPF_RB_NO_WAKEUP);
        }
        None => {
            if let Some(lost) = LOST.get_ptr_mut(0) {
                // SAFETY: the pointer is this CPU's slot of a live per-CPU array, and a BPF
                // program is not preempted by another one on the same CPU for tracepoints.
                unsafe { *lost += 1 };
            }
        }
    }
}

/// Reads a 4-byte v4 or 16-byte v6 address pair from a tracepoint that has both.
#[inline(always)]
fn read_addrs(
    ctx: &TracePointContext,
    family: u16,
    v4: (usize, usize),
    v6: (usize, usize),
) -> Result<([u8; 16], [u8; 16]), i64> {
    let mut s = [0u8; 16];
    let mut d = [0u8; 16];
    if family == AF_INET6 {
        s = field::<[u8; 16]>(ctx, v6.0)?;
        d = field::<[u8; 16]>(ctx, v6.1)?;
    } else {
        let s4 = field::<[u8; 4]>(ctx, v4.0)?;
        let d4 = field::<[u8; 4]>(ctx, v4.1)?;
        s[..4].copy_from_slice(&s4);
        d[..4].copy_from_slice(&d4);
    }
    Ok((s, d))
}

/// Looks up a tracked socket, or builds a fresh record from a tracepoint's own tuple.
#[inline(always)]
fn known_or_tuple(
    cfg: &Config,
    skaddr: u64,
    family: u16,
    sport: u16,
    dport: u16,
    addrs: ([u8; 16], [u8; 16]),
) -> SockInfo {
    // SAFETY: the value is copied out at once; a concurrent update can at worst give a
    // torn copy of advisory data (owner, last activity), never unsafety.
    if let Some(info) = unsafe { SOCKS.get(skaddr) } {
        return *info;
    }
    let mut info = SockInfo::ZERO;
    info.family = family;
    info.sport = sport;
    info.dport = dport;
    info.saddr = addrs.0;
    info.daddr = addrs.1;
    info.netns = read_netns(cfg, skaddr);
    info.flags = flags::TUPLE_KNOWN;
    if info.netns != 0 {
        info.flags |= flags::NETNS_KNOWN;
    }
    info
}

// ---------------------------------------------------------------- sock:inet_sock_set_state

#[tracepoint]
pub fn inet_sock_set_state(ctx: TracePointContext) -> u32 {
    let _ = try_inet_sock_set_state(&ctx);
    0
}

fn try_inet_sock_set_state(ctx: &TracePointContext) -> Res {
    use tp::inet_sock_set_state as f;
    if field::<u16>(ctx, f::PROTOCOL)? != IPPROTO_TCP {
        return Ok(());
    }
    let skaddr = field::<u64>(ctx, f::SKADDR)?;
    let old = field::<i32>(ctx, f::OLDSTATE)? as u32;
    let new = field::<i32>(ctx, f::NEWSTATE)? as u32;
    let cfg = CONFIG.load();
    let family = field::<u16>(ctx, f::FAMILY)?;
    let sport = field::<u16>(ctx, f::SPORT)?;
    let dport = field::<u16>(ctx, f::DPORT)?;
    if !cfg.port_matches(sport, dport) {
        if new == tcp_state::CLOSE {
            let _ = SOCKS.remove(skaddr);
        }
        return Ok(());
    }
    let addrs = read_addrs(
        ctx,
        family,
        (f::SADDR, f::DADDR),
        (f::SADDR_V6, f::DADDR_V6),
    )?;
    let now = now_ns();

    let mut info = known_or_tuple(&cfg, skaddr, family, sport, dport, addrs);
    if other_netns(&cfg, &info) {
        // Another namespace's socket: not tracked at all, so that its sends and receives
        // (every one of which runs the probe) end at a map miss.
        let _ = SOCKS.remove(skaddr);
        return Ok(());
    }
    // The tuple can change during the lifetime (the source port is 0 at CLOSE→SYN_SENT).
    info.family = family;
    info.sport = sport;
    info.dport = dport;
    info.saddr = addrs.0;
    info.daddr = addrs.1;
    info.prev_state = old;
    info.state = new;
    if old == tcp_state::CLOSE && new == tcp_state::SYN_SENT {
        // connect() runs in the connecting process: the one reliable moment to learn
        // the owner of an outgoing connection.
        learn_owner(&mut info);
        info.last_activity_ns = now;
    }
    if new == tcp_state::ESTABLISHED && info.last_activity_ns == 0 {
        info.last_activity_ns = now;
    }

    if passes(&cfg, &info) {
        emit(kind::STATE_CHANGE, skaddr, &info, now, new, old, 0, 0);
    }
    // Kept past TCP_CLOSE until tcp_destroy_sock: after a RST the socket is CLOSE, yet the
    // application's read of ECONNRESET (and its close) are still to come.
    let _ = SOCKS.insert(skaddr, info, 0);
    Ok(())
}

// ---------------------------------------------------------------- sock:sock_send_length

// `sock_send_length` and `sock_recv_length` fire on every send and receive of the machine,
// so they are raw tracepoints: the kernel does not build a trace record for them (the
// classic tracepoint's record costs about as much again as the program), and the program
// reads the `TP_PROTO` arguments `(struct sock *sk, int ret, int flags)` directly.

#[raw_tracepoint(tracepoint = "sock_send_length")]
pub fn sock_send_length(ctx: RawTracePointContext) -> i32 {
    let _ = try_sock_send_length(&ctx);
    0
}

/// For `sock_send_length` and `sock_recv_length`: the socket and the call's return value,
/// when it is a socket seen in `inet_sock_set_state` (TCP, ports known and filtered);
/// `None` for every other socket of the machine, after one map lookup.
#[inline(always)]
fn tracked_io(ctx: &RawTracePointContext) -> Option<(u64, *mut SockInfo, i32)> {
    let skaddr: u64 = ctx.arg(0);
    let ptr = SOCKS.get_ptr_mut(skaddr)?;
    Some((skaddr, ptr, io_ret(ctx)))
}

/// The call's return value: `int ret`, passed as the low 32 bits of a 64-bit argument.
#[inline(always)]
fn io_ret(ctx: &RawTracePointContext) -> i32 {
    ctx.arg::<u64>(1) as u32 as i32
}

fn try_sock_send_length(ctx: &RawTracePointContext) -> Res {
    let Some((skaddr, ptr, ret)) = tracked_io(ctx) else {
        return Ok(());
    };
    if tls::enabled() {
        tls::on_socket_op(skaddr, true, ret);
    }
    let cfg = CONFIG.load();
    let now = now_ns();
    // SAFETY: `ptr` points at a live map value; tracepoint programs on one socket may run
    // on two CPUs at once, and a race only blurs the advisory owner/activity fields.
    let info = unsafe { &mut *ptr };
    learn_owner_once(info);
    let last = info.last_activity_ns;
    let idle = if last != 0 && now > last {
        now - last
    } else {
        0
    };
    // A write on a socket whose peer already sent its FIN (CLOSE_WAIT) is reported whatever
    // the idle gap: it is the kernel's proof that the process wrote with the FIN unread.
    // A write that accepted data cannot have begun in CLOSE (it would fail with EPIPE):
    // the RST that closed the socket arrived during the write.
    let began_in = if ret > 0 && info.state == tcp_state::CLOSE {
        info.prev_state
    } else {
        info.state
    };
    let after_idle = last != 0 && idle >= cfg.idle_threshold_ns;
    let report = after_idle || began_in == tcp_state::CLOSE_WAIT;
    if report {
        learn_owner(info); // the writer of this very call
    }
    if report && passes(&cfg, info) {
        let snapshot = *info;
        emit(
            kind::SEND_AFTER_IDLE,
            skaddr,
            &snapshot,
            now,
            began_in,
            snapshot.state,
            i64::from(ret),
            idle,
        );
    }
    if ret > 0 {
        info.last_activity_ns = now;
    }
    Ok(())
}

// ---------------------------------------------------------------- sock:sock_recv_length

#[raw_tracepoint(tracepoint = "sock_recv_length")]
pub fn sock_recv_length(ctx: RawTracePointContext) -> i32 {
    let _ = try_sock_recv_length(&ctx);
    0
}

fn try_sock_recv_length(ctx: &RawTracePointContext) -> Res {
    let flags_arg = ctx.arg::<u64>(2) as u32;
    if flags_arg & MSG_PEEK != 0 {
        return Ok(());
    }
    // A read that found nothing yet (an event loop reads until EAGAIN, so about one call
    // in two on a busy proxy) tells the probe nothing: it stops before the map lookup,
    // unless the TLS probes follow every socket operation of a thread.
    let ret = io_ret(ctx);
    if (ret == -EAGAIN || ret == -EINTR) && !tls::enabled() {
        return Ok(());
    }
    let Some((skaddr, ptr, ret)) = tracked_io(ctx) else {
        return Ok(());
    };
    if tls::enabled() {
        tls::on_socket_op(skaddr, false, ret);
    }
    let now = now_ns();
    // SAFETY: as in `try_sock_send_length`.
    let info = unsafe { &mut *ptr };
    learn_owner_once(info);
    if ret > 0 {
        info.last_activity_ns = now;
        return Ok(());
    }
    if ret == -EAGAIN || ret == -EINTR {
        return Ok(());
    }
    let cfg = CONFIG.load();
    learn_owner(info); // the reader of this very call
    if passes(&cfg, info) {
        let snapshot = *info;
        emit(
            kind::RECV_EOF_OR_ERROR,
            skaddr,
            &snapshot,
            now,
            snapshot.state,
            0,
            i64::from(ret),
            0,
        );
    }
    Ok(())
}

/// Where a `tcp:*` tracepoint keeps its socket and 4-tuple: the layouts differ in offsets only.
struct TupleAt {
    skaddr: usize,
    sport: usize,
    dport: usize,
    family: usize,
    v4: (usize, usize),
    v6: (usize, usize),
}

/// The socket a `tcp:*` tracepoint is about, and its record (the tracked one, or one built
/// from the tracepoint's own tuple) when its ports pass the filter.
#[inline(always)]
fn tcp_socket(
    ctx: &TracePointContext,
    at: &TupleAt,
    cfg: &Config,
) -> Result<(u64, Option<SockInfo>), i64> {
    let skaddr = field::<u64>(ctx, at.skaddr)?;
    let family = field::<u16>(ctx, at.family)?;
    let sport = field::<u16>(ctx, at.sport)?;
    let dport = field::<u16>(ctx, at.dport)?;
    if !cfg.port_matches(sport, dport) {
        return Ok((skaddr, None));
    }
    let addrs = read_addrs(ctx, family, at.v4, at.v6)?;
    Ok((
        skaddr,
        Some(known_or_tuple(cfg, skaddr, family, sport, dport, addrs)),
    ))
}

/// `tcp_receive_reset` and `tcp_destroy_sock` share one layout.
const RESET_OR_DESTROY_AT: TupleAt = {
    use tp::tcp_receive_reset as f;
    TupleAt {
        skaddr: f::SKADDR,
        sport: f::SPORT,
        dport: f::DPORT,
        family: f::FAMILY,
        v4: (f::SADDR, f::DADDR),
        v6: (f::SADDR_V6, f::DADDR_V6),
    }
};

const RETRANSMIT_AT: TupleAt = {
    use tp::tcp_retransmit_skb as f;
    TupleAt {
        skaddr: f::SKADDR,
        sport: f::SPORT,
        dport: f::DPORT,
        family: f::FAMILY,
        v4: (f::SADDR, f::DADDR),
        v6: (f::SADDR_V6, f::DADDR_V6),
    }
};

// ---------------------------------------------------------------- tcp:tcp_receive_reset

#[tracepoint]
pub fn tcp_receive_reset(ctx: TracePointContext) -> u32 {
    let _ = try_tcp_receive_reset(&ctx);
    0
}

fn try_tcp_receive_reset(ctx: &TracePointContext) -> Res {
    let cfg = CONFIG.load();
    let (skaddr, Some(info)) = tcp_socket(ctx, &RESET_OR_DESTROY_AT, &cfg)? else {
        return Ok(());
    };
    if passes(&cfg, &info) {
        emit(
            kind::RESET_RECEIVED,
            skaddr,
            &info,
            now_ns(),
            info.state,
            0,
            0,
            0,
        );
    }
    Ok(())
}

// ---------------------------------------------------------------- tcp:tcp_send_reset

#[tracepoint]
pub fn tcp_send_reset(ctx: TracePointContext) -> u32 {
    let _ = try_tcp_send_reset(&ctx);
    0
}

/// Parses a 28-byte `sockaddr_in`/`sockaddr_in6` from the tracepoint: (family, port, addr).
#[inline(always)]
fn read_sockaddr(ctx: &TracePointContext, off: usize) -> Result<(u16, u16, [u8; 16]), i64> {
    let family = field::<u16>(ctx, off)?;
    let port = u16::from_be(field::<u16>(ctx, off + 2)?);
    let mut addr = [0u8; 16];
    if family == AF_INET6 {
        // sockaddr_in6: family, port, flowinfo (4), address (16), scope id (4).
        addr = field::<[u8; 16]>(ctx, off + 8)?;
    } else {
        let a4 = field::<[u8; 4]>(ctx, off + 4)?;
        addr[..4].copy_from_slice(&a4);
    }
    Ok((family, port, addr))
}

fn try_tcp_send_reset(ctx: &TracePointContext) -> Res {
    use tp::tcp_send_reset as f;
    let skaddr = field::<u64>(ctx, f::SKADDR)?;
    let (family, sport, saddr) = read_sockaddr(ctx, f::SADDR)?;
    let (_, dport, daddr) = read_sockaddr(ctx, f::DADDR)?;
    let cfg = CONFIG.load();
    if !cfg.port_matches(sport, dport) {
        return Ok(());
    }
    let state = field::<i32>(ctx, f::STATE)? as u32;
    let reason = field::<u32>(ctx, f::REASON)?;
    let info = known_or_tuple(&cfg, skaddr, family, sport, dport, (saddr, daddr));
    if passes(&cfg, &info) {
        emit(
            kind::RESET_SENT,
            skaddr,
            &info,
            now_ns(),
            state,
            0,
            i64::from(reason),
            0,
        );
    }
    Ok(())
}

// ---------------------------------------------------------------- tcp:tcp_destroy_sock

#[tracepoint]
pub fn tcp_destroy_sock(ctx: TracePointContext) -> u32 {
    let _ = try_tcp_destroy_sock(&ctx);
    0
}

fn try_tcp_destroy_sock(ctx: &TracePointContext) -> Res {
    let cfg = CONFIG.load();
    let (skaddr, info) = tcp_socket(ctx, &RESET_OR_DESTROY_AT, &cfg)?;
    if let Some(info) = info.filter(|i| passes(&cfg, i)) {
        emit(kind::DESTROY, skaddr, &info, now_ns(), info.state, 0, 0, 0);
    }
    if tls::enabled() {
        tls::on_socket_destroyed(skaddr);
    }
    let _ = SOCKS.remove(skaddr);
    Ok(())
}

// ---------------------------------------------------------------- tcp:tcp_retransmit_skb

#[tracepoint]
pub fn tcp_retransmit_skb(ctx: TracePointContext) -> u32 {
    let _ = try_tcp_retransmit_skb(&ctx);
    0
}

fn try_tcp_retransmit_skb(ctx: &TracePointContext) -> Res {
    use tp::tcp_retransmit_skb as f;
    let cfg = CONFIG.load();
    let (skaddr, Some(info)) = tcp_socket(ctx, &RETRANSMIT_AT, &cfg)? else {
        return Ok(());
    };
    let state = field::<i32>(ctx, f::STATE)? as u32;
    let err = field::<i32>(ctx, f::ERR)?;
    if passes(&cfg, &info) {
        emit(
            kind::RETRANSMIT,
            skaddr,
            &info,
            now_ns(),
            state,
            0,
            i64::from(err),
            0,
        );
    }
    Ok(())
}

// ---------------------------------------------------------------- socket filter: select

/// Sparse capture's per-connection marks, one slot per connection by hash (see
/// `tracer_common::select::slot`): an array lookup, inlined by the verifier, is far cheaper
/// per packet than a hash map's.
#[map]
static FLOWS: Array<FlowMark> = Array::with_max_entries(FLOW_SLOTS, 0);

/// Responses seen by `select`, by sender and status class, per CPU (userspace sums them).
#[map]
static RESPONSES: LruPerCpuHashMap<ResponseKey, u64> =
    LruPerCpuHashMap::with_max_entries(RESPONSE_SLOTS, 0);

/// `PACKET_OUTGOING`: a packet this host sends, as a packet socket sees it.
const PACKET_OUTGOING: u32 = 4;
/// The loopback interface's index, the same in every network namespace.
const LOOPBACK_IFINDEX: u32 = 1;

/// Counts one response head of class `class` sent from `(addr, port)`. On loopback a packet
/// socket sees each packet twice, leaving and arriving: only the arriving copy counts.
#[inline(always)]
fn count_response(ctx: &SkBuffContext, seg: &Segment, port: u16, class: u8) {
    // SAFETY: `__sk_buff` is the context of a socket filter, which may read these fields.
    let (pkt_type, ifindex) = unsafe { ((*ctx.skb.skb).pkt_type, (*ctx.skb.skb).ifindex) };
    if ifindex == LOOPBACK_IFINDEX && pkt_type == PACKET_OUTGOING {
        return;
    }
    let key = ResponseKey {
        addr: seg.src,
        port,
        class,
        family: if seg.v6 { 6 } else { 4 },
    };
    match RESPONSES.get_ptr_mut(&key) {
        // SAFETY: a per-CPU value, written by this CPU only while this program runs.
        Some(n) => unsafe { *n += 1 },
        None => {
            let _ = RESPONSES.insert(&key, &1, 0);
        }
    }
}

/// `BPF_HDR_START_NET`: offsets relative to the network header, whatever the link layer
/// (Ethernet on a named interface, none on `any`).
const HDR_START_NET: u32 = 1;

/// Fills `buf` with the bytes at `off` from the network header.
#[inline(always)]
fn load(ctx: &SkBuffContext, off: u32, buf: &mut [u8]) -> Result<(), i64> {
    // SAFETY: the helper bounds-checks `off..off + len` against the packet and writes at
    // most `len` bytes into `buf`, which is exactly `len` bytes long.
    let rc = unsafe {
        bpf_skb_load_bytes_relative(
            ctx.skb.skb as *const _,
            off,
            buf.as_mut_ptr() as *mut _,
            buf.len() as u32,
            HDR_START_NET,
        )
    };
    if rc < 0 {
        return Err(rc);
    }
    Ok(())
}

/// Socket filter for `tracer capture --sparse`: returns how many bytes of the packet to
/// keep (all of them, capped by the capture's snaplen) or 0 to drop it.
#[socket_filter]
pub fn select(ctx: SkBuffContext) -> i64 {
    match try_select(&ctx) {
        Ok(true) => i64::from(u32::MAX),
        _ => 0,
    }
}

/// Bytes of an IPv4 header without options and the TCP fields we read.
const V4_MIN: usize = 34;
/// What `select` reads of a TCP segment (zeroed with [`zero_fill`]).
#[derive(Clone, Copy)]
#[repr(C, align(8))]
struct Segment {
    src: [u8; 16],
    dst: [u8; 16],
    /// The TCP header's first 14 bytes (ports, sequence numbers, offset and flags).
    t: [u8; 14],
    /// Offset of the TCP header from the network header.
    l4: u32,
    /// IP payload bytes (TCP header and data).
    ip_payload: u32,
    /// IPv6 (else IPv4).
    v6: bool,
}

impl Segment {
    fn doff(&self) -> u32 {
        u32::from(self.t[12] >> 4) * 4
    }
}

/// Reads a TCP segment's addresses and header, `None` for anything else. The common case,
/// IPv4 without options, takes one load; options and IPv6 take more (IPv6 extension
/// headers one each). The headers are always in the skb's linear part; the data, as a
/// rule, is not (see [`head_class`]).
#[inline(always)]
fn read_segment(ctx: &SkBuffContext) -> Result<Option<Segment>, i64> {
    let mut sm = core::mem::MaybeUninit::<Segment>::uninit();
    let seg = zero_fill(&mut sm);
    // Not zeroed: the toolchain zeroes through a `memset` subprogram that stores one byte
    // per loop turn, and the helper writes every byte read below (it clears the buffer
    // when it fails, and then nothing is read).
    let mut hb = core::mem::MaybeUninit::<[u8; 40]>::uninit();
    // SAFETY: `[u8; 40]` has no invalid bit patterns the program could observe: only bytes
    // the helper has written (the first `V4_MIN`, or all 40 on IPv6) are read.
    let h = unsafe { &mut *hb.as_mut_ptr() };
    load(ctx, 0, &mut h[..V4_MIN])?;
    let v = h[0] >> 4;
    if v == 4 {
        // not TCP, or a fragment after the first: no TCP header to read
        if h[9] != IPPROTO_TCP as u8 || (h[6] & 0x1f) != 0 || h[7] != 0 {
            return Ok(None);
        }
        let ihl = u32::from(h[0] & 0xf) * 4;
        let total = u32::from(u16::from_be_bytes([h[2], h[3]]));
        seg.src[..4].copy_from_slice(&h[12..16]);
        seg.dst[..4].copy_from_slice(&h[16..20]);
        seg.l4 = ihl;
        seg.ip_payload = total.saturating_sub(ihl);
        if ihl == 20 {
            seg.t.copy_from_slice(&h[20..34]);
        } else {
            load(ctx, ihl, &mut seg.t)?;
        }
    } else if v == 6 {
        load(ctx, 0, &mut h[..40])?;
        seg.src.copy_from_slice(&h[8..24]);
        seg.dst.copy_from_slice(&h[24..40]);
        seg.v6 = true;
        // Extension headers (rare on TCP) sit between the IPv6 and the TCP header.
        let mut next = h[6];
        let mut l4 = 40u32;
        for _ in 0..V6_MAX_EXTENSIONS {
            if next == IPPROTO_TCP as u8 {
                break;
            }
            let mut e = [0u8; 4];
            load(ctx, l4, &mut e)?;
            let Some((after, len)) = ipv6::extension(next, e) else {
                return Ok(None);
            };
            next = after;
            l4 += len;
        }
        if next != IPPROTO_TCP as u8 {
            return Ok(None);
        }
        seg.l4 = l4;
        // The payload length counts the extension headers.
        let payload = u32::from(u16::from_be_bytes([h[4], h[5]]));
        seg.ip_payload = payload.saturating_sub(l4 - 40);
        load(ctx, l4, &mut seg.t)?;
    } else {
        return Ok(None);
    }
    Ok(Some(*seg))
}

/// The status class (1-5) of the status line the data starts with, 0 for none, wherever
/// its first [`HEAD_PREFIX`] bytes sit. A TCP sender's data is usually in page fragments,
/// not in the linear part that [`load`] (relative to the network header) can read;
/// `bpf_skb_load_bytes` reads fragments too, but counts from `skb->data`: the link-layer
/// header on a raw packet socket, the network header on a cooked one (`any`). The
/// difference is what `skb->len` holds beyond the IP packet.
#[inline(always)]
fn head_class(ctx: &SkBuffContext, seg: &Segment, doff: u32) -> u8 {
    let ip_len = seg.l4.saturating_add(seg.ip_payload);
    let Some(net_off) = ctx.len().checked_sub(ip_len) else {
        return 0;
    };
    if net_off > MAX_LINK_HEADER {
        return 0;
    }
    // Not zeroed (see `read_segment`): the helper fills it, or clears it and fails.
    let mut mb = core::mem::MaybeUninit::<[u8; HEAD_PREFIX]>::uninit();
    // SAFETY: as in `read_segment`: read only after the helper wrote all of it.
    let buf = unsafe { &mut *mb.as_mut_ptr() };
    // SAFETY: the helper bounds-checks `off..off + HEAD_PREFIX` against the packet (linear
    // part and fragments) and writes exactly `HEAD_PREFIX` bytes into `buf`.
    let rc = unsafe {
        bpf_skb_load_bytes(
            ctx.skb.skb as *const _,
            net_off + seg.l4 + doff,
            buf.as_mut_ptr() as *mut _,
            HEAD_PREFIX as u32,
        )
    };
    if rc == 0 {
        status_class(buf)
    } else {
        0
    }
}

/// Zeroes `v` in place, as 8-byte words, and hands it back initialised. The toolchain
/// lowers every zeroing it recognises (`[0; N]`, `mem::zeroed`, runs of zero stores) to a
/// call of a `memset` subprogram that stores one byte per loop turn: for `select`'s
/// segment that was over 200 instructions on every packet. Volatile stores are never
/// merged into one.
#[inline(always)]
fn zero_fill<T: Copy>(v: &mut core::mem::MaybeUninit<T>) -> &mut T {
    const { assert!(core::mem::align_of::<T>() >= 8) };
    let words = core::mem::size_of::<T>() / 8;
    let p = v.as_mut_ptr() as *mut u64;
    let mut i = 0;
    while i < words {
        // SAFETY: `T` is at least 8-byte aligned, so its size is a multiple of 8 and word
        // `i < size / 8` lies inside `v`, suitably aligned.
        unsafe { core::ptr::write_volatile(p.add(i), 0) };
        i += 1;
    }
    // SAFETY: every byte of `v` was written (as zero) above, and the `T`s used here are
    // plain data (byte arrays and integers) for which all-zero is a valid value.
    unsafe { v.assume_init_mut() }
}

/// The longest link-layer header [`head_class`] accepts in front of the network header
/// (Ethernet with two VLAN tags is 22).
const MAX_LINK_HEADER: u32 = 64;

fn try_select(ctx: &SkBuffContext) -> Result<bool, i64> {
    let Some(seg) = read_segment(ctx)? else {
        return Ok(false);
    };
    let t = &seg.t;
    let doff = seg.doff();
    let tcp_flags = t[13];
    let payload_len = seg.ip_payload.saturating_sub(doff);
    let fin_or_rst = tcp_flags & (TCP_FIN | TCP_RST) != 0;
    let syn = tcp_flags & TCP_SYN != 0;
    if payload_len == 0 && !fin_or_rst && !syn {
        return Ok(false); // a pure ACK: never kept, and no map lookup
    }
    // Only here: `Global::load` is a volatile read of the whole configuration, which the
    // compiler cannot trim to the fields used, and pure ACKs need none of it.
    let cfg = CONFIG.load();
    let sport = u16::from_be_bytes([t[0], t[1]]);
    let dport = u16::from_be_bytes([t[2], t[3]]);
    if !cfg.port_matches(sport, dport) {
        return Ok(false);
    }
    let (key, from) = FlowKey::new(seg.src, sport, seg.dst, dport);
    let (index, tag) = slot(&key);
    // SAFETY: a helper without arguments; jiffy resolution (1-10 ms) is enough for
    // thresholds of tens of milliseconds and more, and it costs less than the precise clock.
    let now = unsafe { bpf_ktime_get_coarse_ns() };
    let mut facts = SegmentFacts {
        syn,
        fin_or_rst,
        payload_len,
        head_5xx: false,
        ack: tcp_flags & TCP_ACK != 0,
        from,
    };
    let Some(ptr) = FLOWS.get_ptr_mut(index) else {
        return Ok(true); // cannot happen (index < FLOW_SLOTS); keeping is the safe answer
    };
    // SAFETY: an array map's value pointer stays valid for the program's run; concurrent
    // runs on another CPU can at worst blur a mark, which keeps more or less of one flow.
    let stored = unsafe { *ptr };
    let mark = (stored.tag == tag).then_some(stored);
    if payload_len >= HEAD_PREFIX as u32 {
        let class = head_class(ctx, &seg, doff);
        if class != 0 {
            count_response(ctx, &seg, sport, class);
        }
        // A 5xx head is kept, and starts a longer hot window, whatever else holds.
        facts.head_5xx = class == 5;
    }
    let d = decide(mark, now, facts, &cfg.select());
    if let Some(mut m) = d.mark {
        m.tag = tag;
        // SAFETY: as above.
        unsafe { *ptr = m };
    }
    Ok(d.keep)
}

/// TCP header flag bits.
const TCP_FIN: u8 = 0x01;
const TCP_SYN: u8 = 0x02;
const TCP_RST: u8 = 0x04;
const TCP_ACK: u8 = 0x10;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[no_mangle]
#[link_section = "license"]
pub static LICENSE: [u8; 4] = *b"GPL\0";
