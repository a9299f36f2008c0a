//! TLS plaintext: uprobes on the proxy's TLS library copy the head of what it writes and
//! reads, and name the socket it travels on (see `tracer_common::tls`).
//!
//! One entry program, `tls_entry`, sits on every library call; its attach cookie says which
//! ([`site`]). OpenSSL's reads also get a return probe (`tls_openssl_read_ret`): the bytes are
//! there only when the call returns. Go gets none, ever — a return probe rewrites the return
//! address on the goroutine's stack, which Go moves and inspects; its reads are caught by
//! entry probes placed on the `RET` instructions of `(*Conn).Read` instead.
//!
//! Writes are copied when the call's own socket write happens on the same thread (OpenSSL),
//! or at once when the connection object's socket is known (Go's `Write`, which may finish on
//! another thread after the goroutine parked). Reads are copied when the call returns.

use aya_ebpf::{
    helpers::{
        bpf_get_current_pid_tgid, bpf_probe_read_user,
        generated::{bpf_get_attach_cookie, bpf_probe_read_user as raw_read_user},
    },
    macros::{map, uprobe, uretprobe},
    maps::LruHashMap,
    programs::{ProbeContext, RetProbeContext},
    EbpfContext, Global,
};
use tracer_common::tls::{
    op, site, tls_flags, GoKey, RawTlsEventOf, TlsConfig, TlsConnKey, TlsPending, TLS_HEAD_MAX,
    TLS_PENDING_MAX_NS, TLS_SMALL_MAX,
};
use tracer_common::{kind, SockInfo};

use crate::{now_ns, passes, CONFIG, EVENTS, LOST, SOCKS};

/// Library calls waiting for their socket operation, by thread id.
#[map]
static TLS_PENDING: LruHashMap<u32, TlsPending> = LruHashMap::with_max_entries(16_384, 0);

/// The socket each library connection object last used.
#[map]
static TLS_CONNS: LruHashMap<TlsConnKey, u64> = LruHashMap::with_max_entries(65_536, 0);

/// The reverse of [`TLS_CONNS`]: which connection object a socket was learned for, so
/// that the mapping dies with its socket. Go reuses a freed `*tls.Conn`'s memory for a new
/// connection; without this, a new connection whose handshake was not seen on one thread
/// kept the old one's (destroyed) socket, and its plaintext went to the wrong connection.
#[map]
static SOCK_CONNS: LruHashMap<u64, TlsConnKey> = LruHashMap::with_max_entries(65_536, 0);

/// Go flushes waiting for their socket write, by goroutine.
#[map]
static GO_LEARN: LruHashMap<GoKey, TlsPending> = LruHashMap::with_max_entries(16_384, 0);

/// Go reads between their entry and their `RET`, by goroutine.
#[map]
static GO_READS: LruHashMap<GoKey, TlsPending> = LruHashMap::with_max_entries(16_384, 0);

/// The last socket each thread read data from, and when: `[skaddr, ns]`. A Go read whose
/// `*tls.Conn` has no known socket yet (its handshake's write ran on another thread than
/// the one it began on) takes the socket its own thread read during the call.
#[map]
static LAST_RECV: LruHashMap<u32, [u64; 2]> = LruHashMap::with_max_entries(16_384, 0);

/// Whether the uprobes are attached, set by userspace before load.
#[no_mangle]
static TLS_CONFIG: Global<TlsConfig> = Global::new(TlsConfig::OFF);

/// Whether the socket tracepoints should look for library calls at all.
#[inline(always)]
pub fn enabled() -> bool {
    TLS_CONFIG.load().enabled != 0
}

#[uprobe]
pub fn tls_entry(ctx: ProbeContext) -> u32 {
    let _ = try_entry(&ctx);
    0
}

#[uretprobe]
pub fn tls_openssl_ret(ctx: RetProbeContext) -> u32 {
    let _ = try_openssl_ret(&ctx);
    0
}

/// The registers at the probe (a uprobe's context is the user's `pt_regs`).
#[inline(always)]
fn regs(ctx: &impl EbpfContext) -> aya_ebpf::bindings::pt_regs {
    // SAFETY: a uprobe's context points at the traced task's saved registers, which the
    // program may read whole (the verifier checks the access against `pt_regs`' size).
    unsafe { *(ctx.as_ptr() as *const aya_ebpf::bindings::pt_regs) }
}

#[inline(always)]
fn pending(op: u32, conn: u64, buf: u64, len: u64, count_ptr: u64, now: u64) -> TlsPending {
    TlsPending {
        op,
        _pad0: 0,
        conn,
        buf,
        len,
        count_ptr,
        skaddr: 0,
        start_ns: now,
    }
}

fn try_entry(ctx: &ProbeContext) -> Result<(), i64> {
    // SAFETY: a helper that reads the cookie the program was attached with (0 if none).
    let cookie = unsafe { bpf_get_attach_cookie(ctx.as_ptr()) };
    let r = regs(ctx);
    let pid_tgid = bpf_get_current_pid_tgid();
    let pid = (pid_tgid >> 32) as u32;
    let tid = pid_tgid as u32;
    let now = now_ns();
    match cookie {
        // SSL_write(SSL *s, const void *buf, int num) and SSL_write_ex(…, size_t num, …):
        // the count fits 32 bits either way.
        site::OPENSSL_WRITE => {
            let len = u64::from(r.rdx as u32);
            if len > 0 {
                let p = pending(op::WRITE, r.rdi, r.rsi, len, 0, now);
                TLS_PENDING.insert(tid, p, 0).map_err(i64::from)?;
            }
        }
        site::OPENSSL_READ => {
            let p = pending(op::READ, r.rdi, r.rsi, u64::from(r.rdx as u32), 0, now);
            TLS_PENDING.insert(tid, p, 0).map_err(i64::from)?;
        }
        site::OPENSSL_READ_EX => {
            let p = pending(op::READ, r.rdi, r.rsi, r.rdx, r.rcx, now);
            TLS_PENDING.insert(tid, p, 0).map_err(i64::from)?;
        }
        // Go ABIInternal: receiver in RAX, the slice `b` in RBX (pointer) and RCX (length).
        site::GO_WRITE => {
            if r.rcx == 0 {
                return Ok(());
            }
            let key = TlsConnKey {
                pid,
                _pad0: 0,
                conn: r.rax,
            };
            // SAFETY: the value is copied at once.
            match unsafe { TLS_CONNS.get(key) }.copied() {
                Some(skaddr) => emit(
                    op::WRITE,
                    skaddr,
                    r.rax,
                    r.rbx,
                    r.rcx,
                    tls_flags::SOCKET_BY_CONN,
                    now,
                ),
                None => {
                    let p = pending(op::WRITE, r.rax, r.rbx, r.rcx, 0, now);
                    TLS_PENDING.insert(tid, p, 0).map_err(i64::from)?;
                }
            }
        }
        site::OPENSSL_HANDSHAKE => {
            let p = pending(op::LEARN_UNTIL_RETURN, r.rdi, 0, 0, 0, now);
            TLS_PENDING.insert(tid, p, 0).map_err(i64::from)?;
        }
        site::OPENSSL_SHUTDOWN => {
            let key = TlsConnKey {
                pid,
                _pad0: 0,
                conn: r.rdi,
            };
            // SAFETY: the value is copied at once.
            if let Some(skaddr) = unsafe { TLS_CONNS.get(key) }.copied() {
                emit(op::CLOSE, skaddr, r.rdi, 0, 0, tls_flags::SOCKET_BY_CONN, now);
            }
        }
        site::OPENSSL_FREE => {
            let key = TlsConnKey {
                pid,
                _pad0: 0,
                conn: r.rdi,
            };
            let _ = TLS_CONNS.remove(key);
        }
        site::GO_FLUSH => {
            // Kept by goroutine, not by thread: only a send by the same goroutine learns
            // (a flush with nothing to send must not teach the *tls.Conn the socket of the
            // next goroutine's send on this thread — the proxy's request to its upstream —
            // and a goroutine that parks in its flush sends from another thread).
            let key = GoKey {
                pid,
                _pad0: 0,
                g: r.r14,
            };
            let p = pending(op::LEARN, r.rax, 0, 0, 0, now);
            GO_LEARN.insert(key, p, 0).map_err(i64::from)?;
        }
        site::GO_READ => {
            let key = GoKey {
                pid,
                _pad0: 0,
                g: r.r14,
            };
            let p = pending(op::READ, r.rax, r.rbx, r.rcx, 0, now);
            GO_READS.insert(key, p, 0).map_err(i64::from)?;
        }
        site::GO_READ_RET => {
            let key = GoKey {
                pid,
                _pad0: 0,
                g: r.r14,
            };
            // SAFETY: the value is copied at once.
            let Some(p) = (unsafe { GO_READS.get(key) }).copied() else {
                return Ok(());
            };
            let _ = GO_READS.remove(key);
            // `n int` comes back in RAX.
            let n = r.rax as i64;
            if n <= 0 {
                return Ok(());
            }
            let ck = TlsConnKey {
                pid,
                _pad0: 0,
                conn: p.conn,
            };
            // SAFETY: the value is copied at once.
            if let Some(skaddr) = unsafe { TLS_CONNS.get(ck) }.copied() {
                emit(
                    op::READ,
                    skaddr,
                    p.conn,
                    p.buf,
                    n as u64,
                    tls_flags::SOCKET_BY_CONN,
                    now,
                );
            } else if let Some(skaddr) = read_during(tid, p.start_ns) {
                // The socket this thread read during the call: the call's own (a goroutine
                // moves to another thread only where it blocks, before its read).
                learn(ck, skaddr);
                emit(
                    op::READ,
                    skaddr,
                    p.conn,
                    p.buf,
                    n as u64,
                    tls_flags::SOCKET_BY_THREAD,
                    now,
                );
            }
        }
        _ => {}
    }
    Ok(())
}

/// A Go goroutine's socket operation: the goroutine is the task's R14 at the system call.
/// A send while the goroutine flushes its `*tls.Conn` ([`GO_LEARN`]), or a read while it is
/// in that connection's `Read` ([`GO_READS`]), names the connection's socket.
#[inline(always)]
fn on_goroutine_socket_op(pid_tgid: u64, skaddr: u64, send: bool) {
    let Some(g) = current_user_r14() else {
        return;
    };
    let key = GoKey {
        pid: (pid_tgid >> 32) as u32,
        _pad0: 0,
        g,
    };
    let pending = if send {
        // SAFETY: the value is copied at once.
        let p = unsafe { GO_LEARN.get(key) }.copied();
        if p.is_some() {
            let _ = GO_LEARN.remove(key);
        }
        p
    } else {
        // SAFETY: the value is copied at once.
        unsafe { GO_READS.get(key) }.copied()
    };
    let Some(p) = pending else {
        return;
    };
    if send && now_ns().saturating_sub(p.start_ns) > TLS_PENDING_MAX_NS {
        return;
    }
    learn(
        TlsConnKey {
            pid: key.pid,
            _pad0: 0,
            conn: p.conn,
        },
        skaddr,
    );
}

/// The current task's user-mode R14 as saved at its system call (Go keeps the running
/// goroutine there, also across its system call stubs). `None` where it cannot be read.
#[inline(always)]
fn current_user_r14() -> Option<u64> {
    use aya_ebpf::helpers::generated::{bpf_get_current_task_btf, bpf_task_pt_regs};
    // SAFETY: helpers that return the current task (a trusted BTF pointer) and the address
    // of its saved user registers; nothing is dereferenced here.
    let regs = unsafe { bpf_task_pt_regs(bpf_get_current_task_btf()) };
    if regs == 0 {
        return None;
    }
    let at = regs as *const aya_ebpf::bindings::pt_regs;
    // SAFETY: a kernel address read through the checked probe-read helper.
    unsafe {
        aya_ebpf::helpers::bpf_probe_read_kernel(core::ptr::addr_of!((*at).r14))
    }
    .ok()
}

/// Remembers that connection object `key` uses socket `skaddr` (both ways).
#[inline(always)]
fn learn(key: TlsConnKey, skaddr: u64) {
    let _ = TLS_CONNS.insert(key, skaddr, 0);
    let _ = SOCK_CONNS.insert(skaddr, key, 0);
}

/// Called when socket `skaddr` is destroyed: the connection object learned for it no
/// longer uses it (its memory may serve a new connection next).
#[inline(always)]
pub fn on_socket_destroyed(skaddr: u64) {
    // SAFETY: the value is copied at once.
    let Some(key) = (unsafe { SOCK_CONNS.get(skaddr) }).copied() else {
        return;
    };
    let _ = SOCK_CONNS.remove(skaddr);
    // SAFETY: the value is copied at once.
    if unsafe { TLS_CONNS.get(key) }.copied() == Some(skaddr) {
        let _ = TLS_CONNS.remove(key);
    }
}

/// The socket thread `tid` last read data from, if it did so since `since`.
#[inline(always)]
fn read_during(tid: u32, since: u64) -> Option<u64> {
    // SAFETY: the value is copied at once.
    let [skaddr, at] = unsafe { LAST_RECV.get(tid) }.copied()?;
    (skaddr != 0 && at >= since).then_some(skaddr)
}

fn try_openssl_ret(ctx: &RetProbeContext) -> Result<(), i64> {
    let tid = bpf_get_current_pid_tgid() as u32;
    // SAFETY: the value is copied at once.
    let Some(p) = (unsafe { TLS_PENDING.get(tid) }).copied() else {
        return Ok(());
    };
    // A handshake's or a read's call ends here (a write's ended at its socket write).
    let _ = TLS_PENDING.remove(tid);
    if p.op != op::READ {
        return Ok(());
    }
    let r = regs(ctx);
    // `int` return value: the low 32 bits of RAX.
    let ret = r.rax as u32 as i32;
    let n = if p.count_ptr != 0 {
        if ret != 1 {
            return Ok(());
        }
        // SAFETY: `bpf_probe_read_user` checks the address; a bad one returns an error.
        unsafe { bpf_probe_read_user(p.count_ptr as *const u64) }.map_err(i64::from)?
    } else if ret > 0 {
        ret as u64
    } else {
        return Ok(());
    };
    let (skaddr, how) = if p.skaddr != 0 {
        (p.skaddr, tls_flags::SOCKET_BY_THREAD)
    } else {
        let key = TlsConnKey {
            pid: (bpf_get_current_pid_tgid() >> 32) as u32,
            _pad0: 0,
            conn: p.conn,
        };
        // SAFETY: the value is copied at once.
        match unsafe { TLS_CONNS.get(key) }.copied() {
            Some(s) => (s, tls_flags::SOCKET_BY_CONN),
            None => return Ok(()),
        }
    };
    emit(op::READ, skaddr, p.conn, p.buf, n, how, now_ns());
    Ok(())
}

/// Called by `sock_send_length` (`send`) and `sock_recv_length` for a followed socket: a
/// library call waiting on this thread learns its socket. A write is copied when its
/// socket write accepted data (`ret > 0`); a failed one is retried by the library, which
/// calls the probe again.
#[inline(always)]
pub fn on_socket_op(skaddr: u64, send: bool, ret: i32) {
    let pid_tgid = bpf_get_current_pid_tgid();
    let tid = pid_tgid as u32;
    if !send && ret > 0 {
        let _ = LAST_RECV.insert(tid, [skaddr, now_ns()], 0);
    }
    if ret > 0 {
        on_goroutine_socket_op(pid_tgid, skaddr, send);
    }
    let Some(ptr) = TLS_PENDING.get_ptr_mut(tid) else {
        return;
    };
    // SAFETY: a live map value of this thread's; only this thread writes it.
    let p = unsafe { &mut *ptr };
    let now = now_ns();
    // (a handshake or read ends at its return probe, however long it takes)
    if p.op != op::LEARN_UNTIL_RETURN
        && p.op != op::READ
        && now.saturating_sub(p.start_ns) > TLS_PENDING_MAX_NS
    {
        let _ = TLS_PENDING.remove(tid);
        return;
    }
    let key = TlsConnKey {
        pid: (pid_tgid >> 32) as u32,
        _pad0: 0,
        conn: p.conn,
    };
    match (send, p.op) {
        (true, op::WRITE) => {
            let copy = *p;
            let _ = TLS_PENDING.remove(tid);
            if ret > 0 {
                learn(key, skaddr);
                emit(
                    op::WRITE,
                    skaddr,
                    copy.conn,
                    copy.buf,
                    copy.len,
                    tls_flags::SOCKET_BY_THREAD,
                    now,
                );
            }
        }
        (true, op::LEARN) => {
            let _ = TLS_PENDING.remove(tid);
            learn(key, skaddr);
        }
        (false, op::READ) => {
            if p.skaddr != skaddr {
                p.skaddr = skaddr;
                learn(key, skaddr);
            }
        }
        (_, op::LEARN_UNTIL_RETURN) => {
            if p.skaddr != skaddr {
                p.skaddr = skaddr;
                learn(key, skaddr);
            }
        }
        _ => {}
    }
}

/// Writes one plaintext copy for a followed socket (one that passes the probe's filters).
#[inline(always)]
fn emit(dir: u32, skaddr: u64, conn: u64, buf: u64, len: u64, how: u32, now: u64) {
    // SAFETY: the value is copied at once.
    let Some(info) = (unsafe { SOCKS.get(skaddr) }).copied() else {
        return;
    };
    let cfg = CONFIG.load();
    if !passes(&cfg, &info) {
        return;
    }
    let n = if len > TLS_HEAD_MAX as u64 {
        TLS_HEAD_MAX
    } else {
        len as usize
    };
    let sent = if n <= TLS_SMALL_MAX {
        record::<TLS_SMALL_MAX>(dir, skaddr, conn, buf, len, n, how, now, &info)
    } else {
        record::<TLS_HEAD_MAX>(dir, skaddr, conn, buf, len, n, how, now, &info)
    };
    if !sent {
        if let Some(lost) = LOST.get_ptr_mut(0) {
            // SAFETY: this CPU's slot of a live per-CPU array (see `emit` in main.rs).
            unsafe { *lost += 1 };
        }
    }
}

/// Writes one record with room for `N >= n` bytes of plaintext; false when the ring is full.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn record<const N: usize>(
    dir: u32,
    skaddr: u64,
    conn: u64,
    buf: u64,
    len: u64,
    n: usize,
    how: u32,
    now: u64,
    info: &SockInfo,
) -> bool {
    let Some(mut entry) = EVENTS.reserve::<RawTlsEventOf<N>>(0) else {
        return false;
    };
    let ev = entry.as_mut_ptr();
    // (a bound the verifier sees; `n <= N` already)
    let n = if n > N { N } else { n };
    let pid_tgid = bpf_get_current_pid_tgid();
    // SAFETY: `ev` points at a reserved ring buffer record of `RawTlsEventOf<N>`'s size.
    // Every field is written through the raw pointer (the record may be larger than the
    // program's stack, so it is never built there, and no reference to its uninitialised
    // bytes is made); `data` is filled by the helper, which checks the user address and
    // writes at most `n <= N` bytes, or zeroes them and fails.
    unsafe {
        let data = core::ptr::addr_of_mut!((*ev).data) as *mut core::ffi::c_void;
        let rc = raw_read_user(data, n as u32, buf as *const core::ffi::c_void);
        (*ev).ktime_ns = now;
        (*ev).skaddr = skaddr;
        (*ev).kind = kind::TLS_DATA;
        (*ev).pid = (pid_tgid >> 32) as u32;
        (*ev).tid = pid_tgid as u32;
        (*ev).dir = dir;
        (*ev).len = len;
        (*ev).conn = conn;
        (*ev).saddr = info.saddr;
        (*ev).daddr = info.daddr;
        (*ev).family = info.family;
        (*ev).sport = info.sport;
        (*ev).dport = info.dport;
        (*ev).netns = info.netns;
        let copied = if rc == 0 { n as u16 } else { 0 };
        (*ev).copied = copied;
        (*ev).flags = how
            | if u64::from(copied) < len {
                tls_flags::TRUNCATED
            } else {
                0
            };
    }
    // Like the socket events: no wake-up per record.
    entry.submit(crate::BPF_RB_NO_WAKEUP);
    true
}
