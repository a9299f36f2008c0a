//! What the correlator remembers about connections and their exchanges: a copy of what
//! the flow layer reported, kept until the verdicts that may need it are made.

use std::collections::VecDeque;

use crate::flow::{ConnId, ConnInfo};
use crate::http::{RequestHead, ResponseHead};
use crate::verdict::Conn;

/// Exchanges kept per connection (older ones are dropped).
pub const KEEP_EXCHANGES: usize = 64;

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
            exchanges: VecDeque::new(),
            closed_ns: None,
            claimed: false,
            missing: None,
            skipped: false,
            kernel_idle: VecDeque::new(),
            evicted: None,
            opaque: false,
        }
    }

    #[must_use]
    pub fn ex(&self, index: u32) -> Option<&Ex> {
        let first = self.exchanges.front()?.index;
        self.exchanges.get(index.checked_sub(first)? as usize)
    }

    pub fn ex_mut(&mut self, index: u32) -> Option<&mut Ex> {
        let first = self.exchanges.front()?.index;
        self.exchanges.get_mut(index.checked_sub(first)? as usize)
    }

    /// The exchange numbered `index`, created (with any skipped numbers) if new.
    pub fn ex_entry(&mut self, index: u32) -> &mut Ex {
        let next = self.exchanges.back().map_or(index, |e| e.index + 1);
        for i in next..=index {
            self.exchanges.push_back(Ex {
                index: i,
                ..Ex::default()
            });
            if self.exchanges.len() > KEEP_EXCHANGES {
                self.exchanges.pop_front();
            }
        }
        if self.ex(index).is_none() {
            // older than what is kept: reuse a scratch slot at the back
            self.exchanges.push_back(Ex {
                index,
                ..Ex::default()
            });
        }
        let first = self.exchanges.front().map_or(index, |e| e.index);
        let pos = (index - first) as usize;
        let last = self.exchanges.len() - 1;
        self.exchanges.get_mut(pos.min(last)).expect("not empty")
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
