//! `upstream_closed_early`: the upstream closed (FIN) without a complete response — a
//! worker killed by its own timeout, a server that gave up on the request.
//!
//! Evidence: the upstream's FIN more than one round trip after the request, with no
//! response or a cut one (for a cut response the judge says so before the attempt rules).
//! Excluded by it: a FIN that crossed the request (it came later than a round trip after
//! it), a proxy timeout (the upstream closed first). A FIN at the moment of the upstream's
//! idle timer is a delayed crossing ([`super::fin_crossed::at_idle_timer`]); it is excluded
//! — and the verdict `proven` — only when the timer cannot have fired (a fresh or busy
//! connection, or one quiet for less than the upstream ever waits); else `probable`.

use super::{Attempt, AttemptFailure};
use crate::correlate::evidence::ms;
use crate::verdict::Cause;

pub(in crate::correlate) fn attempt(a: &Attempt) -> Option<AttemptFailure> {
    let fin = a.c.fin_server?;
    if a.up_close != Some(fin) {
        return None;
    }
    let doubt = a
        .not_the_idle_timer(fin)
        .is_none().then(|| {
        "the connection was reused after a quiet time and this upstream's idle timer is not known well enough to exclude a FIN that crossed the request late".to_owned()
    });
    Some(AttemptFailure {
        cause: Cause::UpstreamClosedEarly,
        subcause: None,
        fin_to_request_ns: Some(a.req_ns - fin),
        proxy_after_ns: None,
        sentence: format!(
            "the upstream closed {} (FIN) {:.1} ms after the request without a complete response (exchange #{})",
            a.name,
            ms(fin - a.req_ns),
            a.e.index
        ),
        ts: fin,
        confident: doubt.is_none(),
        doubt,
    })
}

#[cfg(test)]
mod tests {
    use crate::correlate::rules::timeline::{client, upstream, Tl, MS};
    use crate::correlate::rules::Rule;
    use crate::verdict::{Cause, Confidence};

    fn fin_two_seconds_into_a_post() -> Tl {
        let mut tl = Tl::warmed_up();
        let (d, u) = (client(40001), upstream(50001));
        tl.forwarded(d, u, "POST");
        tl.fin(2_010 * MS, u, false); // the worker was killed by its own timeout
        tl.res(2_010 * MS + 100, d, 502);
        tl
    }

    #[test]
    fn fin_without_response_on_a_fresh_connection_is_upstream_closed_early() {
        let v = fin_two_seconds_into_a_post().only();
        assert_eq!(v.cause, Cause::UpstreamClosedEarly);
        assert_eq!(v.confidence, Confidence::Proven);
        let off = fin_two_seconds_into_a_post().only_without(Rule::UpstreamClosedEarly);
        assert_ne!(off.cause, Cause::UpstreamClosedEarly, "{off:#?}");
    }
}
