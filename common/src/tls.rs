//! The plaintext a proxy hands its TLS library, as the probe's uprobes copy it.
//!
//! A proxy that terminates TLS writes its response heads through OpenSSL's `SSL_write` (nginx,
//! HAProxy) or Go's `crypto/tls.(*Conn).Write` (Caddy, Traefik), and reads its requests through
//! `SSL_read` or `(*Conn).Read`. Uprobes there see the bytes in the clear; the probe copies the
//! first [`TLS_HEAD_MAX`] of each call (a message head, not the body) and names the socket they
//! travel on, so that the agent can read status codes on a connection whose packets are
//! encrypted.
//!
//! How a call is tied to its socket: the library writes (or reads) on the socket before the
//! call returns, on the same thread, so the probe remembers the call per thread
//! ([`TlsPending`]) and the next `sock_send_length` (or `sock_recv_length`) on that thread
//! names the socket. It also remembers which socket each library connection object (`SSL *`,
//! `*tls.Conn`) last used ([`TlsConnKey`]), for reads served from the library's own buffer
//! without touching the socket, and for Go's reads, which return on whatever thread the
//! goroutine runs.

use core::mem::size_of;

/// Bytes of plaintext copied per call: a request or response head, not the body.
pub const TLS_HEAD_MAX: usize = 512;

/// What [`RawTlsEvent::dir`] and [`TlsPending::op`] hold.
pub mod op {
    /// The proxy wrote: plaintext it sent to its peer.
    pub const WRITE: u32 = 1;
    /// The proxy read: plaintext its peer sent.
    pub const READ: u32 = 2;
    /// A handshake write (Go's `(*Conn).flush`): it only teaches the probe the socket of a
    /// connection object; nothing is copied. Ends at the call's first socket write.
    pub const LEARN: u32 = 3;
    /// OpenSSL's handshake (`SSL_do_handshake`): every socket operation until it returns
    /// teaches the probe the socket of the `SSL *` (the request that follows the handshake
    /// in the same flight is read from OpenSSL's buffer, without a socket read of its own).
    pub const LEARN_UNTIL_RETURN: u32 = 4;
    /// The proxy ended the TLS session (`SSL_shutdown`: its close_notify): on an encrypted
    /// connection, the close that HTTP sees, which the socket's FIN may follow late.
    pub const CLOSE: u32 = 5;
}

/// Bits of [`RawTlsEvent::flags`].
pub mod tls_flags {
    /// The socket was named by the call's own socket operation on the same thread.
    pub const SOCKET_BY_THREAD: u32 = 1 << 0;
    /// The socket was named by the connection object's last known socket.
    pub const SOCKET_BY_CONN: u32 = 1 << 1;
    /// `data` holds fewer bytes than the call carried (`len > copied`).
    pub const TRUNCATED: u32 = 1 << 2;
}

/// Which library call a uprobe sits on: the attach cookie of the TLS programs.
pub mod site {
    /// OpenSSL `SSL_write(ssl, buf, num)` or `SSL_write_ex(ssl, buf, num, written)`.
    pub const OPENSSL_WRITE: u64 = 1;
    /// OpenSSL `SSL_read(ssl, buf, num)`: the count is the return value.
    pub const OPENSSL_READ: u64 = 2;
    /// OpenSSL `SSL_read_ex(ssl, buf, num, readbytes)`: the count is in `*readbytes`.
    pub const OPENSSL_READ_EX: u64 = 3;
    /// Go `crypto/tls.(*Conn).Write(b []byte)`: receiver in RAX, `b` in RBX/RCX.
    pub const GO_WRITE: u64 = 4;
    /// Go `crypto/tls.(*Conn).Read(b []byte)` entry.
    pub const GO_READ: u64 = 5;
    /// A `RET` instruction of Go's `(*Conn).Read`: the count is in RAX.
    pub const GO_READ_RET: u64 = 6;
    /// Go `crypto/tls.(*Conn).flush()`: the handshake's writes.
    pub const GO_FLUSH: u64 = 7;
    /// OpenSSL `SSL_do_handshake(ssl)` (and a return probe that ends it).
    pub const OPENSSL_HANDSHAKE: u64 = 8;
    /// OpenSSL `SSL_free(ssl)`: the object's socket is forgotten (its address is reused).
    pub const OPENSSL_FREE: u64 = 9;
    /// OpenSSL `SSL_shutdown(ssl)`: the proxy closes the session ([`super::op::CLOSE`]).
    pub const OPENSSL_SHUTDOWN: u64 = 10;
}

/// Bytes of plaintext a small record holds ([`RawTlsEventSmall`]): HTTP/2's 9-byte frame
/// headers, its small frames and short reads fit, in a record a quarter of the full size.
pub const TLS_SMALL_MAX: usize = 64;

/// One plaintext copy, as written to the `EVENTS` ring buffer, with room for `N` bytes of
/// plaintext: [`RawTlsEvent`] (up to [`TLS_HEAD_MAX`]) or [`RawTlsEventSmall`] (up to
/// [`TLS_SMALL_MAX`]), whichever the copy fits, so that short copies (an HTTP/2 frame
/// header read takes 9 bytes) do not take a full record's room in the ring. A reader takes
/// the record's length as the room. Its first three fields sit where
/// [`crate::RawSockEvent`]'s do, so a reader tells the two apart by `kind`
/// ([`crate::kind::TLS_DATA`]) before it looks at the length.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RawTlsEventOf<const N: usize> {
    /// CLOCK_MONOTONIC ns: when the socket operation (write) or the call's return (read) ran.
    pub ktime_ns: u64,
    /// The socket the plaintext travels on.
    pub skaddr: u64,
    /// [`crate::kind::TLS_DATA`].
    pub kind: u32,
    /// The calling process (tgid) and thread.
    pub pid: u32,
    pub tid: u32,
    /// [`op::WRITE`], [`op::READ`] or [`op::CLOSE`] (no data).
    pub dir: u32,
    /// Plaintext bytes the call carried (written: asked to write; read: returned).
    pub len: u64,
    /// The library's connection object (`SSL *` or `*tls.Conn`).
    pub conn: u64,
    /// The socket's addresses, as in [`crate::RawSockEvent`].
    pub saddr: [u8; 16],
    pub daddr: [u8; 16],
    pub family: u16,
    pub sport: u16,
    pub dport: u16,
    /// Bytes of `data` that hold plaintext.
    pub copied: u16,
    /// Bits of [`tls_flags`].
    pub flags: u32,
    /// Network namespace inode of the socket, 0 when unknown.
    pub netns: u32,
    /// The first `copied` bytes of the plaintext.
    pub data: [u8; N],
}

/// A plaintext copy of up to [`TLS_HEAD_MAX`] bytes.
pub type RawTlsEvent = RawTlsEventOf<TLS_HEAD_MAX>;
/// A plaintext copy of up to [`TLS_SMALL_MAX`] bytes.
pub type RawTlsEventSmall = RawTlsEventOf<TLS_SMALL_MAX>;

/// A record's fields before `data`, what every record of either size begins with.
pub type RawTlsHead = RawTlsEventOf<0>;

/// Size of a record's fields before `data`.
pub const RAW_TLS_HEAD_SIZE: usize = size_of::<RawTlsHead>();
/// Size of [`RawTlsEvent`] in bytes.
pub const RAW_TLS_EVENT_SIZE: usize = RAW_TLS_HEAD_SIZE + TLS_HEAD_MAX;
const _: () = assert!(RAW_TLS_HEAD_SIZE == 96);
const _: () = assert!(size_of::<RawTlsEvent>() == RAW_TLS_EVENT_SIZE);
const _: () = assert!(size_of::<RawTlsEventSmall>() == RAW_TLS_HEAD_SIZE + TLS_SMALL_MAX);
const _: () = assert!(TLS_SMALL_MAX & 7 == 0 && TLS_SMALL_MAX < TLS_HEAD_MAX);

/// A library call waiting for its socket (map `TLS_PENDING`, keyed by thread id; Go's reads
/// in `GO_READS`, keyed by [`GoKey`]).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TlsPending {
    /// [`op`].
    pub op: u32,
    pub _pad0: u32,
    /// The library's connection object.
    pub conn: u64,
    /// The plaintext buffer.
    pub buf: u64,
    /// Bytes asked to write (writes) or room in the buffer (reads).
    pub len: u64,
    /// `SSL_read_ex`'s `size_t *readbytes`, else 0.
    pub count_ptr: u64,
    /// The socket a read touched on this thread, 0 until then.
    pub skaddr: u64,
    /// When the call began (CLOCK_MONOTONIC ns).
    pub start_ns: u64,
}

/// Size of [`TlsPending`] in bytes.
pub const TLS_PENDING_SIZE: usize = 56;
const _: () = assert!(size_of::<TlsPending>() == TLS_PENDING_SIZE);

/// A library connection object in one process (map `TLS_CONNS` → `skaddr`).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TlsConnKey {
    pub pid: u32,
    pub _pad0: u32,
    pub conn: u64,
}

/// A goroutine in one process: Go keeps the running goroutine's `g` in R14 (ABIInternal),
/// the same at a function's entry and at its `RET`, whichever thread runs it.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GoKey {
    pub pid: u32,
    pub _pad0: u32,
    pub g: u64,
}

/// A library call whose socket operation has not come within this long is stale: its thread
/// moved on (the write failed before the socket, or the socket is not followed).
pub const TLS_PENDING_MAX_NS: u64 = 20_000_000;

/// The TLS programs' switch: a read-only global (`TLS_CONFIG`) that userspace sets before
/// load; all zero = no uprobes attached, and the socket tracepoints skip the TLS lookups.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TlsConfig {
    /// 1 when uprobes are attached.
    pub enabled: u32,
    pub _pad0: u32,
}

/// Size of [`TlsConfig`] in bytes.
pub const TLS_CONFIG_SIZE: usize = 8;
const _: () = assert!(size_of::<TlsConfig>() == TLS_CONFIG_SIZE);

impl TlsConfig {
    /// TLS off.
    pub const OFF: Self = Self {
        enabled: 0,
        _pad0: 0,
    };
}

/// Names of the TLS programs, maps and global.
pub mod tls_names {
    /// The entry uprobe of every library call (its cookie is a [`super::site`]).
    pub const ENTRY: &str = "tls_entry";
    /// OpenSSL's reads and handshakes return (a uretprobe; never on Go).
    pub const OPENSSL_RET: &str = "tls_openssl_ret";
    pub const PENDING: &str = "TLS_PENDING";
    pub const CONNS: &str = "TLS_CONNS";
    pub const GO_READS: &str = "GO_READS";
    pub const CONFIG: &str = "TLS_CONFIG";
}
