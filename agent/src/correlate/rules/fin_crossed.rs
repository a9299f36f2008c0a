//! `keepalive_race` / `fin_crossed`: the proxy's request crossed the upstream's FIN.
//!
//! [`on_the_wire`] (`proven`). Evidence: a request on a reused, quiet connection; the
//! upstream's FIN seen before it, or less than one round trip after it (so it left the
//! upstream before the request could arrive); no response byte. Excluded by it: a crash or
//! an early close *because of* the request (the upstream closed before it had the
//! request), a response cut short (none began), a proxy timeout (the upstream closed first).
//!
//! [`at_idle_timer`] (`probable`). Evidence: the same, but the FIN came more than one
//! round trip after the request — at the moment this upstream closes idle connections
//! (its timer learned from its other idle closes or its `Keep-Alive` header), or right
//! after a response of an upstream that closes after every response. Under load a FIN
//! sent before the request arrived can be seen that late. Not excluded: an upstream that
//! read the request and closed without answering just then (`upstream_closed_early`); the
//! verdict rests on the inferred timer, so it is probable.

use super::{Attempt, AttemptFailure};
use crate::correlate::evidence::ms;
use crate::verdict::{Cause, Subcause};

/// The FIN was on the wire before the request could reach the upstream.
pub(in crate::correlate) fn on_the_wire(a: &Attempt) -> Option<AttemptFailure> {
    let fin = a.c.fin_server?;
    if !(a.reused_idle() && fin <= a.req_ns + a.rtt && a.up_close == Some(fin)) {
        return None;
    }
    let when = if fin <= a.req_ns {
        format!("{:.3} ms after", ms(a.req_ns - fin))
    } else {
        format!(
            "{:.3} ms before (within one round trip)",
            ms(fin - a.req_ns)
        )
    };
    Some(AttemptFailure {
        cause: Cause::KeepaliveRace,
        subcause: Some(Subcause::FinCrossed),
        fin_to_request_ns: Some(a.req_ns - fin),
        proxy_after_ns: None,
        sentence: format!(
            "the request went out on reused connection {} (exchange #{}, idle {}) {when} the upstream's FIN; no response byte came back",
            a.name,
            a.e.index,
            a.idle_text(),
        ),
        ts: fin.max(a.req_ns),
        confident: true,
        doubt: None,
    })
}

/// The upstream's FIN came after the request, at the moment its idle timer fires.
pub(in crate::correlate) fn at_idle_timer(a: &Attempt) -> Option<AttemptFailure> {
    let fin = a.c.fin_server?;
    if !(a.reused_idle() && a.up_close == Some(fin)) {
        return None;
    }
    let when = a.at_idle_timer(fin)?;
    let q = a.quiet_since()?;
    Some(AttemptFailure {
        cause: Cause::KeepaliveRace,
        subcause: Some(Subcause::FinCrossed),
        fin_to_request_ns: Some(a.req_ns - fin),
        proxy_after_ns: None,
        sentence: format!(
            "the request went out on reused connection {} (exchange #{}, idle {}); the upstream closed it (FIN) {:.3} ms later, {:.1} ms after it went idle, {when}, without a response byte",
            a.name,
            a.e.index,
            a.idle_text(),
            ms(fin - a.req_ns),
            ms(fin - q),
        ),
        ts: fin,
        confident: false,
        doubt: Some("the FIN came later than one round trip after the request: it rests on the upstream's idle timer, inferred from its other connections".into()),
    })
}

#[cfg(test)]
mod tests {
    use crate::correlate::rules::timeline::{client, upstream, Tl, MS};
    use crate::correlate::rules::Rule;
    use crate::verdict::{Cause, Confidence, Subcause};

    /// The upstream closes the idle pooled connection at 5 s; the proxy reuses it 50 µs
    /// later for a POST, which the upstream answers with RST.
    fn fin_then_request() -> Tl {
        let mut tl = Tl::warmed_up();
        let (d, u) = (client(40001), upstream(50000));
        tl.fin(5_000 * MS, u, false);
        tl.open(5_000 * MS - 300, d);
        tl.req(5_000 * MS - 100, d, "POST", 2);
        tl.req(5_000 * MS + 50, u, "POST", 2);
        tl.rst(5_000 * MS + 150, u, false);
        tl.res(5_000 * MS + 400, d, 502);
        tl
    }

    #[test]
    fn reused_connection_fin_before_request_is_fin_crossed_proven() {
        let v = fin_then_request().only();
        assert_eq!(v.cause, Cause::KeepaliveRace);
        assert_eq!(v.subcause, Some(Subcause::FinCrossed));
        assert_eq!(v.confidence, Confidence::Proven);
        let up = v.upstream.as_ref().unwrap();
        assert!((up.fin_to_request_ms.unwrap() - 0.05).abs() < 1e-6);
        let off = fin_then_request().only_without(Rule::FinCrossed);
        assert_ne!(
            (off.subcause, off.confidence),
            (Some(Subcause::FinCrossed), Confidence::Proven),
            "{off:#?}"
        );
    }

    /// Three spare connections teach the upstream's 5 s idle timer; on connection 50000,
    /// idle 5 s, the FIN is seen 3 ms after the request: later than a round trip.
    fn late_fin_at_the_timer() -> Tl {
        let mut tl = Tl::warmed_up();
        tl.idle_closes(5_000);
        let (d, u) = (client(40001), upstream(50000));
        tl.open(5_001 * MS - 300, d);
        tl.req(5_001 * MS - 100, d, "POST", 2);
        tl.req(5_001 * MS, u, "POST", 2);
        tl.fin(5_001 * MS + 3_000, u, false);
        tl.res(5_001 * MS + 3_400, d, 502);
        tl
    }

    #[test]
    fn a_late_fin_at_the_idle_timer_is_fin_crossed_probable() {
        let v = late_fin_at_the_timer().only();
        assert_eq!(v.cause, Cause::KeepaliveRace, "{v:#?}");
        assert_eq!(v.subcause, Some(Subcause::FinCrossed));
        assert_eq!(v.confidence, Confidence::Probable);
        assert!(v.summary.contains("idle closes"), "{}", v.summary);
        let off = late_fin_at_the_timer().only_without(Rule::FinAtIdleTimer);
        assert_eq!(off.cause, Cause::UpstreamClosedEarly, "{off:#?}");
        assert_eq!(off.confidence, Confidence::Probable);
    }
}
