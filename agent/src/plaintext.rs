//! HTTP on encrypted connections, from the plaintext the proxy handed its TLS library.
//!
//! On a connection whose packets are TLS the flow tracker sees no HTTP. The kernel probe's
//! uprobes copy the head of every plaintext the proxy writes (its responses, on a client
//! connection) and reads (the client's requests), naming the socket
//! ([`crate::probe::SockEventKind::TlsData`]). Here those copies become the connection's
//! HTTP events, as if the packets had been readable: requests with their ids, so that they
//! pair with the upstream attempts, and every response head, 5xx included — also the 502 a
//! proxy answers without having sent anything upstream (a never-sent keep-alive race).
//!
//! The copies are held until the packets around them have been seen (the engine hands them
//! over in time order, [`Plaintext::release`]) and then parsed per connection, HTTP/1.x with
//! the same framer as the packets (a copy is a message head and the count of the bytes
//! after it, like a segment cut by the capture's snaplen). The connection's close events
//! then carry what the plaintext says was outstanding ([`Plaintext::filter`]).

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::net::SocketAddr;

use crate::flow::hash::FxHashMap;
use crate::flow::{ConnId, Event};
use crate::headroom::Room;
use crate::http::h2::H2Conn;
use crate::http::{HttpConn, HttpEvent};
use crate::kernel::KernelEvent;
use crate::probe::SockEventKind;

/// Events and copies taken between two calls of [`Room::keep`] on the tables that churn
/// (about once a second under a few hundred connections a second).
const ROOM_EVERY: u32 = 4096;
/// Copies held for a connection the flow tracker has not seen are dropped after this long.
const UNMATCHED_KEEP_NS: i64 = 2_000_000_000;
/// Copies held at most (a bound on memory when packets stop coming).
const MAX_HELD: usize = 1 << 18;

/// One plaintext copy on the capture's clock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlainRecord {
    pub ts_ns: i64,
    /// The proxy's end of the socket, and its peer.
    pub local: SocketAddr,
    pub remote: SocketAddr,
    /// The proxy wrote (else it read).
    pub write: bool,
    /// The proxy ended the TLS session instead (no data): its close_notify.
    pub close: bool,
    /// Bytes the call carried; `data` holds the first of them.
    pub len: u64,
    pub data: Vec<u8>,
}

impl PlainRecord {
    /// The copy a kernel event carries, if it is one and names its socket's addresses.
    pub fn of(ke: &KernelEvent) -> Option<Self> {
        let SockEventKind::TlsData {
            write,
            close,
            len,
            data,
            ..
        } = &ke.event.kind
        else {
            return None;
        };
        Some(Self {
            ts_ns: ke.ts_ns,
            local: ke.event.local?,
            remote: ke.event.remote?,
            write: *write,
            close: *close,
            len: *len,
            data: data.clone(),
        })
    }
}

/// What the connection speaks.
#[derive(Debug)]
enum Proto {
    Http1(HttpConn),
    H2(Box<H2Conn>),
}

/// The plaintext state of one connection.
#[derive(Debug)]
struct PlainConn {
    proto: Option<Proto>,
    /// When the last response ended (for a request's idle time).
    quiet_since: Option<i64>,
    /// The proxy ended the TLS session: (time, whether the proxy is the client side).
    closed: Option<(i64, bool)>,
}

/// Counters for the report and the tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PlainStats {
    /// Copies handed in.
    pub records: u64,
    /// Copies applied to a connection the packets showed.
    pub matched: u64,
    /// Copies for which no connection was seen (dropped).
    pub unmatched: u64,
    /// HTTP/2 header blocks that could not be decoded.
    pub h2_errors: u64,
}

/// The plaintext side of the engine.
#[derive(Debug, Default)]
pub struct Plaintext {
    held: BinaryHeap<Reverse<(i64, u64)>>,
    records: FxHashMap<u64, PlainRecord>,
    seq: u64,
    /// (client, server) of every open connection, from the flow tracker.
    ids: FxHashMap<(SocketAddr, SocketAddr), ConnId>,
    conns: FxHashMap<ConnId, PlainConn>,
    /// Copies whose connection the packets have not shown yet, by (local, remote).
    waiting: FxHashMap<(SocketAddr, SocketAddr), Vec<PlainRecord>>,
    /// The room kept in `ids`, `conns` and `records`, whose entries come and go with the
    /// connections and the copies: a table left to itself doubled at a random moment of a
    /// steady load (`ids`, at 3,600 open connections, half its room: a step of 0.6 MiB in
    /// the node agent's memory after seven quiet minutes). See [`crate::headroom`].
    rooms: [Room; 3],
    /// Events and copies taken since the rooms were last kept.
    since_room: u32,
    pub stats: PlainStats,
}

impl Plaintext {
    /// Holds a copy until the packets reach its time.
    pub fn push(&mut self, rec: PlainRecord) {
        self.stats.records += 1;
        if self.records.len() >= MAX_HELD {
            self.release(i64::MAX, &mut Vec::new());
        }
        self.seq += 1;
        self.held.push(Reverse((rec.ts_ns, self.seq)));
        self.records.insert(self.seq, rec);
        self.tick();
    }

    /// Counts one event or copy taken, and keeps the churning tables' room every
    /// [`ROOM_EVERY`] of them.
    fn tick(&mut self) {
        self.since_room += 1;
        if self.since_room >= ROOM_EVERY {
            self.since_room = 0;
            let [ids, conns, records] = &mut self.rooms;
            ids.keep(&mut self.ids);
            conns.keep(&mut self.conns);
            records.keep(&mut self.records);
        }
    }

    /// How many entries each table holds now (self-monitoring, as
    /// [`crate::correlate::Correlator::tables`]).
    #[must_use]
    pub fn tables(&self) -> [(&'static str, usize); 4] {
        [
            ("plaintext_ids", self.ids.len()),
            ("plaintext_conns", self.conns.len()),
            ("plaintext_records", self.records.len()),
            (
                "plaintext_waiting",
                self.waiting.values().map(Vec::len).sum(),
            ),
        ]
    }

    /// Whether any copy was ever handed in (else [`Self::filter`] has nothing to do).
    pub fn active(&self) -> bool {
        self.stats.records > 0
    }

    /// Applies the copies up to `until_ns`, appending the HTTP events they make to `out`.
    pub fn release(&mut self, until_ns: i64, out: &mut Vec<Event>) {
        while let Some(&Reverse((ts, seq))) = self.held.peek() {
            if ts > until_ns {
                break;
            }
            self.held.pop();
            if let Some(rec) = self.records.remove(&seq) {
                self.apply(rec, until_ns, out);
            }
        }
        if until_ns == i64::MAX {
            self.expire_waiting(until_ns);
        }
    }

    /// Drops copies that waited too long for their connection.
    fn expire_waiting(&mut self, now: i64) {
        if self.waiting.len() < 64 && now != i64::MAX {
            return;
        }
        let before: usize = self.waiting.values().map(Vec::len).sum();
        self.waiting.retain(|_, v| {
            v.retain(|r| now != i64::MAX && now - r.ts_ns < UNMATCHED_KEEP_NS);
            !v.is_empty()
        });
        let after: usize = self.waiting.values().map(Vec::len).sum();
        self.stats.unmatched += (before - after) as u64;
    }

    fn apply(&mut self, rec: PlainRecord, now: i64, out: &mut Vec<Event>) {
        if let Some(w) = self.waiting.get_mut(&(rec.local, rec.remote)) {
            // earlier copies of this connection still wait for it
            w.push(rec);
            return;
        }
        // The proxy accepted the connection (its socket is the server end), or opened it.
        let (id, from_client) = if let Some(&id) = self.ids.get(&(rec.remote, rec.local)) {
            (id, !rec.write)
        } else if let Some(&id) = self.ids.get(&(rec.local, rec.remote)) {
            (id, rec.write)
        } else {
            // Not seen yet (its SYN may come a little out of order): wait for it, keeping
            // this connection's copies in order.
            self.waiting
                .entry((rec.local, rec.remote))
                .or_default()
                .push(rec);
            self.expire_waiting(now);
            return;
        };
        self.stats.matched += 1;
        let c = self.conns.entry(id).or_insert(PlainConn {
            proto: None,
            quiet_since: None,
            closed: None,
        });
        if rec.close {
            // The proxy's close_notify is the close HTTP sees; on TLS its FIN may come after
            // the client, which read the alert, already closed. It stands for that FIN.
            let by_client = from_client;
            if c.closed.is_none() {
                c.closed = Some((rec.ts_ns, by_client));
                out.extend(close_events(id, c, rec.ts_ns, by_client));
            }
            return;
        }
        let proto = c.proto.get_or_insert_with(|| {
            if crate::http::h2::starts_h2(from_client, &rec.data) {
                Proto::H2(Box::default())
            } else {
                Proto::Http1(HttpConn::default())
            }
        });
        let missing_after = rec.len.saturating_sub(rec.data.len() as u64);
        let mut evs = Vec::new();
        match proto {
            Proto::Http1(http) => {
                http.bytes(
                    from_client,
                    rec.ts_ns,
                    0,
                    &rec.data,
                    missing_after,
                    true,
                    &mut evs,
                );
            }
            Proto::H2(h2) => {
                let before = h2.errors();
                h2.bytes(from_client, rec.ts_ns, &rec.data, missing_after, &mut evs);
                self.stats.h2_errors += h2.errors() - before;
            }
        }
        for ev in evs {
            let (busy, idle_ns) = match (&ev, &c.proto) {
                (HttpEvent::Request { ts, .. }, Some(Proto::Http1(h))) => {
                    let busy = h.outstanding() > 1 || h.responding().is_some();
                    (
                        busy,
                        c.quiet_since.filter(|_| !busy).map(|q| (ts - q).max(0)),
                    )
                }
                (HttpEvent::Request { .. }, _) => (true, None),
                (HttpEvent::ResponseEnd { ts, .. }, _) => {
                    c.quiet_since = Some(*ts);
                    (false, None)
                }
                _ => (false, None),
            };
            out.push(Event::Http {
                conn: id,
                ev,
                idle_ns,
                busy,
            });
        }
    }

    /// Adjusts the flow tracker's events for connections that carry plaintext: what the
    /// encrypted bytes made of them (not HTTP, skipped by a sparse capture) gives way to what
    /// the plaintext says, and a close carries the plaintext's outstanding requests.
    pub fn filter(&mut self, events: &mut Vec<Event>) {
        if !self.active() {
            // still learn the connections, for copies to come
            for ev in events.iter() {
                self.learn(ev);
            }
            return;
        }
        let mut out = Vec::with_capacity(events.len());
        for mut ev in events.drain(..) {
            self.learn(&ev);
            if let Event::Opened(info) = &ev {
                let (client, server) = (info.client, info.server);
                out.push(ev);
                for key in [(server, client), (client, server)] {
                    for rec in self.waiting.remove(&key).unwrap_or_default() {
                        let ts = rec.ts_ns;
                        self.apply(rec, ts, &mut out);
                    }
                }
                continue;
            }
            let mut keep = true;
            match &mut ev {
                Event::Http {
                    conn,
                    ev: HttpEvent::Garbage { .. },
                    ..
                }
                | Event::Skipped { conn, .. } => keep = !self.conns.contains_key(conn),
                Event::Fin {
                    conn,
                    ts,
                    from_client,
                    outstanding,
                    responding,
                }
                | Event::Rst {
                    conn,
                    ts,
                    from_client,
                    outstanding,
                    responding,
                } => {
                    if let Some(c) = self.conns.get_mut(conn) {
                        if c.closed.is_some_and(|(_, side)| side == *from_client) {
                            // already closed at the TLS layer (close_notify)
                            keep = false;
                        } else {
                            let mut closing = close_events(*conn, c, *ts, *from_client);
                            if let Some(Event::Fin {
                                outstanding: o,
                                responding: r,
                                ..
                            }) = closing.pop()
                            {
                                *outstanding = o;
                                *responding = r;
                            }
                            out.extend(closing);
                        }
                    }
                }
                Event::Closed { conn, .. } => {
                    self.conns.remove(conn);
                }
                _ => {}
            }
            if keep {
                out.push(ev);
            }
        }
        *events = out;
    }

    fn learn(&mut self, ev: &Event) {
        self.tick();
        match ev {
            Event::Opened(info) => {
                self.ids.insert((info.client, info.server), info.id);
            }
            Event::Closed { info, .. }
                if self.ids.get(&(info.client, info.server)) == Some(&info.id) =>
            {
                self.ids.remove(&(info.client, info.server));
            }
            _ => {}
        }
    }
}

/// What a close by one side means for a connection's plaintext: the end of a response
/// delimited by the close (when the server closed), then a FIN carrying what was still
/// outstanding — the flow's own count knows nothing of encrypted requests.
fn close_events(id: ConnId, c: &mut PlainConn, ts: i64, from_client: bool) -> Vec<Event> {
    let mut evs = Vec::new();
    let (outstanding, responding) = match &mut c.proto {
        Some(Proto::Http1(h)) => {
            if !from_client {
                h.server_closed(ts, &mut evs);
            }
            (h.outstanding(), h.responding().is_some())
        }
        Some(Proto::H2(h2)) => (h2.outstanding(), h2.responding()),
        None => (0, false),
    };
    let mut out: Vec<Event> = evs
        .into_iter()
        .map(|ev| Event::Http {
            conn: id,
            ev,
            idle_ns: None,
            busy: false,
        })
        .collect();
    out.push(Event::Fin {
        conn: id,
        ts,
        from_client,
        outstanding,
        responding,
    });
    out
}

/// The plaintext copies among a bundle's kernel events (`events.jsonl`, written by
/// `tracer capture --out`), in file order; none when it has no events file.
pub fn read_bundle(dir: &std::path::Path) -> std::io::Result<Vec<PlainRecord>> {
    use std::io::BufRead;
    let path = dir.join(crate::bundle::EVENTS);
    let Ok(f) = std::fs::File::open(&path) else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for (i, line) in std::io::BufReader::new(f).lines().enumerate() {
        let line = line?;
        // Only the plaintext copies are parsed here; the rest is the ledger's.
        if !line.contains("\"tls_data\"") {
            continue;
        }
        let ke: KernelEvent = serde_json::from_str(&line).map_err(|e| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("{}:{}: not a probe event: {e}", path.display(), i + 1),
            )
        })?;
        out.extend(PlainRecord::of(&ke));
    }
    Ok(out)
}

#[cfg(test)]
mod tests;
