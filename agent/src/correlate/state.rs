//! What the correlator remembers about connections and their exchanges: a copy of what
//! the flow layer reported, kept until the verdicts that may need it are made.

use std::collections::VecDeque;

use crate::flow::{ConnId, ConnInfo};
use crate::http::{RequestHead, ResponseHead};
use crate::verdict::Conn;

/// Settled exchanges kept per connection (see [`Ex::settled`]); the oldest settled one
/// goes first.
pub const KEEP_EXCHANGES: usize = 64;

/// Exchanges kept per connection at most, settled or not. An error is judged a second
/// after it happened and one HTTP/2 connection carries every request of a client, a
/// thousand a second and more: those still to be judged are kept past [`KEEP_EXCHANGES`],
/// and this bounds what one connection can hold when nothing settles.
pub const MAX_EXCHANGES: usize = 1024;

/// Reference to one exchange.
pub type ExRef = (ConnId, u32);

/// One exchange as the correlator sees it.
#[derive(Debug, Clone, Default)]
pub struct Ex {
    pub index: u32,
    pub req: Option<RequestHead>,
    pub req_ns: Option<i64>,
    pub req_end_ns: Option<i64>,
    pub idle_ns: Option<i64>,
    pub busy: bool,
    pub res: Option<ResponseHead>,
    pub res_ns: Option<i64>,
    pub res_end_ns: Option<i64>,
    /// For an upstream attempt: the downstream exchange it serves, and whether the link is
    /// proven (request id, unique target) or rests on timing.
    pub serves: Option<(ExRef, bool)>,
    /// For a downstream exchange: the upstream attempts made for it, in order.
    pub attempts: Vec<ExRef>,
    /// A verdict was made for it.
    pub judged: bool,
    /// A sparse capture skipped how it ended: its missing response proves nothing.
    pub unseen_end: bool,
}

impl Ex {
    #[must_use]
    pub fn status(&self) -> Option<u16> {
        self.res.as_ref().map(|r| r.status)
    }

    /// Nothing is left to judge: a verdict was made, or its response came whole and is not
    /// an error, or it is a number the connection skipped (no request, no response).
    #[must_use]
    pub fn settled(&self) -> bool {
        self.judged
            || (self.res_end_ns.is_some() && self.status().is_some_and(|s| s < 500))
            || (self.req.is_none() && self.res.is_none())
    }
}

/// One connection as the correlator sees it.
#[derive(Debug, Clone)]
pub struct CConn {
    pub info: ConnInfo,
    pub established_ns: Option<i64>,
    pub rtt_ns: Option<i64>,
    pub syn_count: u32,
    pub last_syn_ns: Option<i64>,
    pub refused_ns: Option<i64>,
    pub fin_client: Option<i64>,
    pub fin_server: Option<i64>,
    pub rst_client: Option<i64>,
    pub rst_server: Option<i64>,
    /// When the connection last went quiet (established or a response ended).
    pub quiet_since: Option<i64>,
    pub exchanges: VecDeque<Ex>,
    pub closed_ns: Option<i64>,
    /// A connection failure was claimed by a verdict.
    pub claimed: bool,
    /// The capture lost part of this connection: (when noticed, what).
    pub missing: Option<(i64, &'static str)>,
    /// A sparse capture skipped exchanges of this connection (not a loss).
    pub skipped: bool,
    /// The kernel's word on writes after idle on this connection's socket: (time, idle),
    /// the latest few; what a sparse capture cannot measure itself.
    pub kernel_idle: VecDeque<(i64, i64)>,
    /// The flow tracker evicted this connection from its full table (see `evicted.rs`).
    pub evicted: Option<i64>,
    /// The client's first bytes were not HTTP/1.x (TLS): nothing of it can be read.
    pub opaque: bool,
}

impl CConn {
    #[must_use]
    pub fn new(info: ConnInfo) -> Self {
        CConn {
            info,
            established_ns: None,
            rtt_ns: None,
            syn_count: 0,
            last_syn_ns: info.syn_ns,
            refused_ns: None,
            fin_client: None,
            fin_server: None,
            rst_client: None,
            rst_server: None,
            quiet_since: None,
            // most connections carry one exchange; the first push would make room for four
            // (464 bytes each)
            exchanges: VecDeque::with_capacity(1),
            closed_ns: None,
            claimed: false,
            missing: None,
            skipped: false,
            kernel_idle: VecDeque::new(),
            evicted: None,
            opaque: false,
        }
    }

    /// Where the exchange numbered `index` is kept, or where it would go (exchanges are kept
    /// in order of their numbers, with gaps where some were dropped).
    fn position(&self, index: u32) -> Result<usize, usize> {
        match self.exchanges.back() {
            None => Err(0),
            Some(last) if last.index == index => Ok(self.exchanges.len() - 1),
            Some(last) if last.index < index => Err(self.exchanges.len()),
            Some(_) => self.exchanges.binary_search_by_key(&index, |e| e.index),
        }
    }

    #[must_use]
    pub fn ex(&self, index: u32) -> Option<&Ex> {
        self.position(index).ok().map(|p| &self.exchanges[p])
    }

    pub fn ex_mut(&mut self, index: u32) -> Option<&mut Ex> {
        self.position(index).ok().map(|p| &mut self.exchanges[p])
    }

    /// The exchange numbered `index`, created if new; then the oldest settled exchanges
    /// (never this one) are dropped down to [`KEEP_EXCHANGES`], and any beyond
    /// [`MAX_EXCHANGES`].
    pub fn ex_entry(&mut self, index: u32) -> &mut Ex {
        if let Err(p) = self.position(index) {
            self.exchanges.insert(
                p,
                Ex {
                    index,
                    ..Ex::default()
                },
            );
            self.trim(index);
        }
        let p = self.position(index).expect("just kept");
        &mut self.exchanges[p]
    }

    fn trim(&mut self, keep: u32) {
        while self.exchanges.len() > KEEP_EXCHANGES {
            let settled = self
                .exchanges
                .iter()
                .position(|e| e.index != keep && e.settled());
            let drop = match settled {
                Some(p) => p,
                None if self.exchanges.len() > MAX_EXCHANGES => {
                    usize::from(self.exchanges.front().is_some_and(|e| e.index == keep))
                }
                None => break,
            };
            self.exchanges.remove(drop);
        }
    }

    /// The upstream side (server) closed first: its FIN or RST time, whichever came first.
    #[must_use]
    pub fn server_close(&self) -> Option<i64> {
        min_opt(self.fin_server, self.rst_server)
    }

    /// A FIN or RST, either way, in the `window` up to `t`.
    #[must_use]
    pub fn closed_within(&self, t: i64, window: i64) -> bool {
        [
            self.fin_server,
            self.rst_server,
            self.fin_client,
            self.rst_client,
        ]
        .into_iter()
        .flatten()
        .any(|c| c <= t && t - c <= window)
    }

    #[must_use]
    pub fn client_close(&self) -> Option<i64> {
        min_opt(self.fin_client, self.rst_client)
    }

    /// e.g. `upstream FIN, proxy RST` in the order they happened.
    #[must_use]
    pub fn close_order(&self, client_name: &str, server_name: &str) -> String {
        let mut v: Vec<(i64, String)> = Vec::new();
        if let Some(t) = self.fin_server {
            v.push((t, format!("{server_name} FIN")));
        }
        if let Some(t) = self.rst_server {
            v.push((t, format!("{server_name} RST")));
        }
        if let Some(t) = self.fin_client {
            v.push((t, format!("{client_name} FIN")));
        }
        if let Some(t) = self.rst_client {
            v.push((t, format!("{client_name} RST")));
        }
        v.sort();
        if v.is_empty() {
            return "still open".into();
        }
        v.into_iter().map(|(_, s)| s).collect::<Vec<_>>().join(", ")
    }

    /// The connection name `client->server`.
    #[must_use]
    pub fn name(&self) -> String {
        self.conn().to_string()
    }

    /// The connection's two ends.
    #[must_use]
    pub fn conn(&self) -> Conn {
        Conn {
            client: self.info.client,
            server: self.info.server,
        }
    }
}

#[must_use]
pub fn min_opt(a: Option<i64>, b: Option<i64>) -> Option<i64> {
    match (a, b) {
        (Some(x), Some(y)) => Some(x.min(y)),
        (x, None) => x,
        (None, y) => y,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flow::ConnId;

    fn conn() -> CConn {
        let a: std::net::SocketAddr = "198.18.1.1:40000".parse().unwrap();
        let b: std::net::SocketAddr = "198.18.1.2:8443".parse().unwrap();
        CConn::new(ConnInfo {
            id: ConnId(1),
            client: a,
            server: b,
            opener_known: true,
            first_ns: 0,
            syn_ns: None,
        })
    }

    fn request(c: &mut CConn, i: u32) {
        c.ex_entry(i).req = Some(RequestHead::default());
    }

    fn answer(c: &mut CConn, i: u32, status: u16) {
        let e = c.ex_entry(i);
        e.res = Some(ResponseHead {
            status,
            ..ResponseHead::default()
        });
        e.res_end_ns = Some(1);
    }

    #[test]
    fn an_error_still_to_judge_outlives_thousands_of_answered_exchanges() {
        let mut c = conn();
        request(&mut c, 1);
        answer(&mut c, 1, 502);
        for i in 2..5000 {
            request(&mut c, i);
            answer(&mut c, i, 200);
        }
        assert_eq!(c.exchanges.len(), KEEP_EXCHANGES);
        assert_eq!(c.ex(1).and_then(Ex::status), Some(502));
        assert!(c.ex(2).is_none(), "the oldest answered one went first");
        assert_eq!(c.ex(4999).and_then(Ex::status), Some(200));
        // judged, it may go too
        c.ex_mut(1).unwrap().judged = true;
        request(&mut c, 5000);
        assert!(c.ex(1).is_none());
    }

    #[test]
    fn nothing_settling_is_still_bounded() {
        let mut c = conn();
        for i in 1..3000 {
            request(&mut c, i);
        }
        assert_eq!(c.exchanges.len(), MAX_EXCHANGES);
        assert!(c.ex(2999).is_some() && c.ex(1).is_none());
        // an old number comes back: kept in order, found again
        request(&mut c, 1);
        assert!(c.ex(1).is_some_and(|e| e.req.is_some()));
        assert!(c
            .exchanges
            .iter()
            .zip(c.exchanges.iter().skip(1))
            .all(|(a, b)| a.index < b.index));
    }
}
