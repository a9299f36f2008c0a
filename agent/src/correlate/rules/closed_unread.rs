//! `keepalive_race` / `closed_unread`: the upstream's idle timer closed the connection
//! with the proxy's request already in its receive buffer, unread.
//!
//! A socket closed with unread data makes the kernel send RST instead of FIN (RFC 2525
//! §2.17, RFC 1122 4.2.2.13). Node's `keepAliveTimeout`, gunicorn and others do this when
//! their idle timer wins by a hair against a request that has just arrived.
//!
//! Evidence: a request on a reused, quiet connection; then an RST from the upstream within
//! [`RST_AFTER_REQUEST_NS`], no FIN before it, no response byte; and the connection's
//! quiet time at the RST is when this upstream closes idle connections — its timer learned
//! from its other idle closes or its `Keep-Alive: timeout=N` header (or it closes after
//! every response). Excluded by it: a FIN that crossed the request (no FIN was sent), a
//! response cut short (no byte of one came), a proxy timeout (the upstream closed first),
//! a crash on a fresh or busy connection (the connection was reused and quiet), a reset at
//! an unrelated moment (it came at the idle timer's). Not excluded: a crash or abort that
//! happened to fall at the timer's moment, and the timer itself is inferred — so the
//! verdict is `probable`, never `proven`.

use super::{Attempt, AttemptFailure};
use crate::correlate::evidence::ms;
use crate::verdict::{Cause, Subcause};

/// The timer fires "by a hair" after the request arrived: the upstream's reset follows the
/// request within this. On a quiet machine that is milliseconds; an upstream whose event
/// loop is starved (Node on a loaded node) leaves the request unread for hundreds of them
/// before its timer callback runs (290 ms was seen), so the bound is generous: that the
/// reset comes at the idle timer's moment is what [`Attempt::at_idle_timer`] checks. An
/// upstream that closes after every response closes whenever it gets round to it: no bound.
pub(in crate::correlate) const RST_AFTER_REQUEST_NS: i64 = 1_000_000_000;

pub(in crate::correlate) fn attempt(a: &Attempt) -> Option<AttemptFailure> {
    let rst = a.c.rst_server?;
    let fin_first = a.c.fin_server.is_some_and(|f| f <= rst);
    if fin_first || !a.reused_idle() || a.up_close != Some(rst) {
        return None;
    }
    // After the request (a reset before it is the upstream dropping an idle connection on
    // its own, which the request then crossed) and soon after it.
    let after = rst - a.req_ns;
    let bound = if a.habit.closes_after_response {
        i64::MAX
    } else {
        RST_AFTER_REQUEST_NS
    };
    if !(0..=bound).contains(&after) {
        return None;
    }
    let when = a.at_idle_timer(rst)?;
    let q = a.quiet_since()?;
    Some(AttemptFailure {
        cause: Cause::KeepaliveRace,
        subcause: Some(Subcause::ClosedUnread),
        fin_to_request_ns: None,
        proxy_after_ns: None,
        sentence: format!(
            "the request went out on reused connection {} (exchange #{}, idle {}); {:.3} ms later the upstream reset it without a FIN or a response byte, {:.1} ms after it went idle, {when}: it closed the connection with the request unread",
            a.name,
            a.e.index,
            a.idle_text(),
            ms(after),
            ms(rst - q),
        ),
        ts: rst,
        confident: false,
        doubt: Some("rests on the upstream's idle timer, inferred from its other connections: a crash at that very moment would look the same".into()),
    })
}

#[cfg(test)]
mod tests {
    use crate::correlate::rules::timeline::{client, upstream, Tl, MS};
    use crate::correlate::rules::Rule;
    use crate::verdict::{Cause, Confidence, Subcause};

    /// Three spare connections show the upstream closing idle connections after 1 s. The
    /// pooled connection 50000, quiet since 1 ms, carries a POST after 1001 ms of quiet;
    /// 2.9 ms later the upstream resets it: no FIN, no response byte.
    fn reset_at_the_timer(idle_closes: bool, header: Option<u32>) -> Tl {
        let mut tl = Tl::warmed_up_with(header);
        if idle_closes {
            tl.idle_closes(1_000);
        }
        let (d, u) = (client(40001), upstream(50000));
        tl.open(1_002 * MS - 300, d);
        tl.req(1_002 * MS - 100, d, "POST", 2);
        tl.req(1_002 * MS, u, "POST", 2);
        tl.rst(1_002 * MS + 2_900, u, false);
        tl.res(1_002 * MS + 3_200, d, 502);
        tl
    }

    #[test]
    fn reset_without_fin_at_the_idle_timer_is_closed_unread() {
        let v = reset_at_the_timer(true, None).only();
        assert_eq!(v.cause, Cause::KeepaliveRace, "{v:#?}");
        assert_eq!(v.subcause, Some(Subcause::ClosedUnread));
        assert_eq!(v.confidence, Confidence::Probable);
        assert!(v.summary.contains("idle 1001.1 ms"), "{}", v.summary);
        assert!(v.summary.contains("from 3 idle closes"), "{}", v.summary);
        let off = reset_at_the_timer(true, None).only_without(Rule::ClosedUnread);
        assert_eq!(off.cause, Cause::UpstreamReset, "{off:#?}");
        assert_eq!(
            off.confidence,
            Confidence::Probable,
            "the race is not excluded"
        );
    }

    #[test]
    fn a_starved_upstream_resets_late_and_it_is_still_its_timer() {
        // Node's loop, starved on a loaded machine, runs its idle timer 290 ms after the
        // request arrived: still within the timer's window (1 s, fired late), still unread.
        let mut tl = Tl::warmed_up();
        tl.idle_closes(1_000);
        let (d, u) = (client(40001), upstream(50000));
        tl.open(1_002 * MS - 300, d);
        tl.req(1_002 * MS - 100, d, "POST", 2);
        tl.req(1_002 * MS, u, "POST", 2);
        tl.rst(1_292 * MS, u, false);
        tl.res(1_292 * MS + 300, d, 502);
        let v = tl.only();
        assert_eq!(v.subcause, Some(Subcause::ClosedUnread), "{v:#?}");
        assert!(v.summary.contains("290.000 ms later"), "{}", v.summary);
    }

    #[test]
    fn a_race_before_any_idle_close_waits_for_the_timer() {
        // The race comes first; the upstream's other connections show its 1 s idle timer
        // only 1.5 s later, after the race's verdict was due.
        let mut tl = Tl::warmed_up();
        let (d, u) = (client(40001), upstream(50000));
        tl.open(1_002 * MS - 300, d);
        tl.req(1_002 * MS - 100, d, "POST", 2);
        tl.req(1_002 * MS, u, "POST", 2);
        tl.rst(1_002 * MS + 2_900, u, false);
        tl.res(1_002 * MS + 3_200, d, 502);
        for (i, port) in (50002..=50004).enumerate() {
            let spare = upstream(port);
            let at = 2_000 * MS + i as i64 * 10 * MS;
            tl.open(at, spare);
            tl.req(at + 200, spare, "GET", 9 + i as u32);
            tl.res(at + MS, spare, 200);
            tl.fin(at + 1_001 * MS, spare, false);
        }
        // keep the capture going past the idle closes
        tl.open(6_000 * MS, client(40009));
        let v = tl.only();
        assert_eq!(v.subcause, Some(Subcause::ClosedUnread), "{v:#?}");
    }

    #[test]
    fn the_keep_alive_header_alone_teaches_the_timer() {
        // Node with keepAliveTimeout 1 ms says `Keep-Alive: timeout=0` and closes after ~1 s.
        let v = reset_at_the_timer(false, Some(0)).only();
        assert_eq!(v.subcause, Some(Subcause::ClosedUnread), "{v:#?}");
        assert!(v.summary.contains("Keep-Alive: timeout=0"), "{}", v.summary);
        // Without either, the race cannot be told from a crash: never a proven reset.
        let v = reset_at_the_timer(false, None).only();
        assert_eq!(v.cause, Cause::UpstreamReset, "{v:#?}");
        assert_eq!(v.confidence, Confidence::Probable);
    }
}
