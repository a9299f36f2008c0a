//! The rules that name a cause, one file each, in the order they are tried.
//!
//! A rule names a cause only from what was seen, and says next to its code which other
//! explanations that evidence excludes. Where one cannot be excluded (it rests on timing,
//! or on a habit of the upstream inferred from other connections), the verdict is
//! `probable`; `proven` means every alternative was ruled out by what the capture shows.
//! Each rule has a test beside it, built from a template timeline ([`timeline`]), that
//! also switches the rule off and shows the verdict is then not the rule's.
//!
//! For an upstream attempt that got no response ([`classify_attempt`]), in order:
//! [`proxy_timeout`], [`fin_crossed::on_the_wire`], [`closed_unread`],
//! [`fin_crossed::at_idle_timer`], [`upstream_reset`], [`upstream_closed_early`].
//! For a client-facing error (`judge_downstream`): [`client_abort`], then with a linked
//! attempt [`upstream_generated`], [`uncertain_link`] or the attempt's rules, and without
//! one [`upstream_refused`], [`connect_timeout`], [`request_never_sent`]; what is left is
//! [`unexplained`].

pub(super) mod client_abort;
pub(super) mod closed_unread;
pub(super) mod connect_timeout;
pub(super) mod fin_crossed;
pub(super) mod proxy_timeout;
pub(super) mod request_never_sent;
pub(super) mod uncertain_link;
pub(super) mod unexplained;
pub(super) mod upstream_closed_early;
pub(super) mod upstream_generated;
pub(super) mod upstream_refused;
pub(super) mod upstream_reset;

#[cfg(test)]
pub(super) mod timeline;

use super::evidence::ms;
use super::state::{CConn, Ex};
use crate::timeouts::IdleTimer;
use crate::verdict::{Cause, Evidence, Subcause, Upstream};

/// The rules, by name: a test switches one off to show what it decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rule {
    FinCrossed,
    FinAtIdleTimer,
    ClosedUnread,
    UpstreamReset,
    UpstreamClosedEarly,
    ProxyTimeout,
    UpstreamRefused,
    ConnectTimeout,
    ClientAbort,
    UpstreamGenerated,
    RequestNeverSent,
    UncertainLink,
    /// Roles: a client side whose bytes are unreadable faces the client.
    EncryptedClientSide,
    /// Roles: what the proxy's process accepted faces the client, what it connected the
    /// upstream; other processes' connections are not the proxy's.
    KernelRoles,
}

/// Floor for "one round trip" when the handshake was not seen.
const DEFAULT_RTT_NS: i64 = 1_000_000;

/// How an upstream closes idle connections, as seen so far.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Habit {
    /// When it closes an idle keep-alive connection.
    pub timer: Option<IdleTimer>,
    /// It closes right after (nearly) every response that did not say `Connection: close`.
    pub closes_after_response: bool,
}

/// An upstream attempt that got no response, with what the rules look at.
pub(super) struct Attempt<'a> {
    pub c: &'a CConn,
    pub e: &'a Ex,
    /// `proxy->upstream`.
    pub name: String,
    pub req_ns: i64,
    /// Quiet time on the connection before the request: from the capture, or for a sparse
    /// capture that skipped the exchanges before it, from the kernel.
    pub idle_ns: Option<i64>,
    /// The upstream's first FIN or RST, and the proxy's.
    pub up_close: Option<i64>,
    pub px_close: Option<i64>,
    /// One round trip (the handshake's, or a floor) with slack: how late a packet sent
    /// before the request can still be seen after it.
    pub rtt: i64,
    /// The request reused a connection that carried exchanges before (or one the capture
    /// did not see open).
    pub reused: bool,
    /// No other exchange was in progress on it.
    pub idle: bool,
    pub habit: Habit,
}

impl Attempt<'_> {
    /// A request on a kept-alive connection that was quiet: the only kind an upstream's
    /// keep-alive (idle) timer can close under.
    pub fn reused_idle(&self) -> bool {
        self.reused && self.idle && self.e.res.is_none()
    }

    /// When the connection went quiet before the request.
    pub fn quiet_since(&self) -> Option<i64> {
        self.idle_ns.map(|i| self.req_ns - i)
    }

    /// The upstream's close came when its idle timer fires (or it closes after every
    /// response): `Some(description)` for the summary.
    pub fn at_idle_timer(&self, close_ns: i64) -> Option<String> {
        let q = self.quiet_since()?;
        if self.habit.closes_after_response {
            return Some("as it closes after every response".into());
        }
        let t = self.habit.timer?;
        t.fires_at(close_ns - q, self.rtt)
            .then(|| format!("when it closes idle connections ({})", t.describe()))
    }

    /// The upstream's keep-alive timer cannot have closed this connection at `close_ns`:
    /// it was fresh (the request followed the handshake), busy, or quiet for less time than
    /// this upstream ever waits before closing an idle connection. `Some(why)` says which.
    pub fn not_the_idle_timer(&self, close_ns: i64) -> Option<String> {
        if self.e.index == 1 && self.c.info.opener_known {
            return Some("the connection was fresh (its first request)".into());
        }
        if !self.idle {
            return Some("another exchange was in progress on it".into());
        }
        if self.habit.closes_after_response {
            return None;
        }
        let (q, t) = (self.quiet_since()?, self.habit.timer?);
        t.too_early(close_ns - q, self.rtt).then(|| {
            format!(
                "it had been quiet {:.1} ms, less than this upstream waits before closing idle connections ({})",
                ms(close_ns - q),
                t.describe()
            )
        })
    }

    pub fn idle_text(&self) -> String {
        self.idle_ns
            .map_or("unknown".into(), |i| format!("{:.1} ms", ms(i)))
    }
}

/// How an upstream attempt without a response ended.
pub(super) struct AttemptFailure {
    pub cause: Cause,
    pub subcause: Option<Subcause>,
    pub fin_to_request_ns: Option<i64>,
    /// Proxy closed first after this long (proxy_timeout).
    pub proxy_after_ns: Option<i64>,
    pub sentence: String,
    pub ts: i64,
    /// Every alternative was excluded by what was seen (false: `probable`).
    pub confident: bool,
    /// Why it is only probable, when it is.
    pub doubt: Option<String>,
}

type AttemptRule = fn(&Attempt) -> Option<AttemptFailure>;

/// The attempt rules, in the order they are tried: the first that applies names the cause.
const ATTEMPT_RULES: [(Rule, AttemptRule); 6] = [
    (Rule::ProxyTimeout, proxy_timeout::attempt),
    (Rule::FinCrossed, fin_crossed::on_the_wire),
    (Rule::ClosedUnread, closed_unread::attempt),
    (Rule::FinAtIdleTimer, fin_crossed::at_idle_timer),
    (Rule::UpstreamReset, upstream_reset::attempt),
    (Rule::UpstreamClosedEarly, upstream_closed_early::attempt),
];

/// A kernel write-after-idle report belongs to a request captured at most this long after
/// it (the clocks are aligned to within microseconds; this is slack)...
const KERNEL_SEND_BEFORE_NS: i64 = 2_000_000;
/// ...or this long before it (the tracepoint fires when the write returns, after the
/// packet left, and a large write takes a while).
const KERNEL_SEND_AFTER_NS: i64 = 50_000_000;

/// What a sparse capture cannot decide: an `unexplained` attempt saying what was skipped.
fn sparse_unknown(sentence: String, ts: i64) -> AttemptFailure {
    AttemptFailure {
        cause: Cause::Unexplained,
        subcause: None,
        fin_to_request_ns: None,
        proxy_after_ns: None,
        sentence,
        ts,
        confident: false,
        doubt: None,
    }
}

/// Classifies an upstream attempt that got no response (or a cut one); `None` while
/// neither side has closed. `habit`: how this upstream was seen closing idle connections;
/// `early`: the kernel's idle reports for the tuple that came before its packets; `off`:
/// rules switched off (tests).
pub(super) fn classify_attempt(
    c: &CConn,
    e: &Ex,
    habit: Habit,
    early: Option<&std::collections::VecDeque<(i64, i64)>>,
    off: &[Rule],
) -> Option<AttemptFailure> {
    let req_ns = e.req_ns?;
    let name = c.name();
    if e.unseen_end {
        return Some(sparse_unknown(
            format!("a sparse capture skipped the end of the attempt on {name}"),
            req_ns,
        ));
    }
    // After skipped exchanges the capture cannot time the quiet before this request; the
    // kernel can (a write after idle on the socket, reported when the write returned).
    let idle_ns = e.idle_ns.or_else(|| {
        c.kernel_idle
            .iter()
            .chain(early.into_iter().flatten())
            .filter(|&&(t, _)| {
                t >= req_ns - KERNEL_SEND_BEFORE_NS && t <= req_ns + KERNEL_SEND_AFTER_NS
            })
            .min_by_key(|&&(t, _)| (t - req_ns).abs())
            .map(|&(_, idle)| idle)
    });
    let a = Attempt {
        c,
        e,
        name,
        req_ns,
        idle_ns,
        up_close: c.server_close(),
        px_close: c.client_close(),
        rtt: c.rtt_ns.unwrap_or(DEFAULT_RTT_NS).max(100_000) + 100_000,
        reused: e.index >= 2 || !c.info.opener_known,
        idle: !e.busy,
        habit,
    };
    if a.up_close.is_none() && a.px_close.is_none() {
        return None;
    }
    for (rule, f) in ATTEMPT_RULES {
        if rule == Rule::UpstreamReset
            && c.skipped
            && a.reused
            && a.idle_ns.is_none()
            && e.res.is_none()
        {
            // Without the quiet time a reused connection's close cannot be told from its
            // idle timer's: the reset and early-close rules would guess.
            return Some(sparse_unknown(
                format!("a sparse capture skipped the exchanges before this request on {}, and no kernel report says how long the connection sat idle", a.name),
                a.up_close.unwrap_or(req_ns),
            ));
        }
        if off.contains(&rule) {
            continue;
        }
        if let Some(f) = f(&a) {
            return Some(f);
        }
    }
    None
}

/// An attempt the rules cannot judge fairly yet: a reused, quiet connection the upstream
/// closed after the request, while this upstream's idle timer is still unknown — early in
/// a capture, before any idle close of its was seen. Judged now, a keep-alive race could
/// not be told from a reset; a little later the timer is known.
pub(super) fn waits_for_idle_timer(c: &CConn, e: &Ex, habit: Habit) -> bool {
    let Some(req_ns) = e.req_ns else {
        return false;
    };
    let reused = e.index >= 2 || !c.info.opener_known;
    let crossed = c.fin_server.is_some_and(|f| f <= req_ns + DEFAULT_RTT_NS);
    reused
        && !e.busy
        && e.res.is_none()
        && !crossed
        && c.server_close().is_some()
        && habit.timer.is_none()
        && !habit.closes_after_response
}

/// What a downstream rule concludes about a client-facing error.
#[derive(Debug, Default)]
pub(super) struct Finding {
    pub cause: Option<Cause>,
    pub subcause: Option<Subcause>,
    /// Some alternative could not be excluded.
    pub probable: bool,
    pub summary: String,
    pub reason: Option<String>,
    pub evidence: Vec<Evidence>,
    pub upstream: Option<Upstream>,
}
