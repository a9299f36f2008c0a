//! `proxy_timeout`: the proxy gave up waiting for the upstream's response.
//!
//! Evidence: the proxy closed the upstream connection first, with the request unanswered;
//! or it answered 504 with the attempt still open. Excluded by it: every upstream failure
//! (the upstream had not closed, reset or answered). Not excluded by the upstream side
//! alone: a client that left first (the proxy then drops its attempt too, as nginx does
//! with a 499) — only the client's side tells them apart, so without it the verdict says
//! so, and with it the client's close is checked first ([`super::client_abort`]).

use super::{Attempt, AttemptFailure, Finding};
use crate::correlate::evidence::ms;
use crate::correlate::judge::Down;
use crate::correlate::state::{CConn, Ex};
use crate::verdict::Cause;

/// The proxy closed the upstream connection before the upstream did anything.
pub(in crate::correlate) fn attempt(a: &Attempt) -> Option<AttemptFailure> {
    let p = a.px_close?;
    if a.up_close.is_some_and(|u| u <= p) {
        return None;
    }
    Some(AttemptFailure {
        cause: Cause::ProxyTimeout,
        subcause: None,
        fin_to_request_ns: None,
        proxy_after_ns: Some(p - a.req_ns),
        sentence: format!(
            "no response on {} for {:.1} ms, then the proxy closed it",
            a.name,
            ms(p - a.req_ns)
        ),
        ts: p,
        confident: true,
        doubt: None,
    })
}

/// The proxy answered 504 with its attempt unanswered and still open: it gave up without
/// closing (yet). Probable: no close shows when it gave up.
pub(in crate::correlate) fn answered_504(d: &Down, uc: &CConn, ue: &Ex) -> Finding {
    Finding {
        cause: Some(Cause::ProxyTimeout),
        probable: true,
        summary: format!(
            "no response on {} for {:.1} ms, then the proxy answered 504 (no close seen)",
            uc.name(),
            ms(d.err_ns - ue.req_ns.unwrap_or(d.req_ns))
        ),
        ..Finding::default()
    }
}

#[cfg(test)]
mod tests {
    use crate::correlate::rules::timeline::{client, upstream, Tl, MS};
    use crate::correlate::rules::Rule;
    use crate::verdict::Cause;

    fn proxy_closes_after_3_s() -> Tl {
        let mut tl = Tl::warmed_up();
        let (d, u) = (client(40001), upstream(50001));
        tl.forwarded(d, u, "GET");
        tl.fin(3_010 * MS + 500, u, true);
        tl.res(3_010 * MS + 600, d, 504);
        tl
    }

    #[test]
    fn proxy_closing_after_timeout_then_504_is_proxy_timeout() {
        let v = proxy_closes_after_3_s().only();
        assert_eq!(v.cause, Cause::ProxyTimeout);
        assert!(v.summary.contains("3000.0 ms"), "{}", v.summary);
        let off = proxy_closes_after_3_s().only_without(Rule::ProxyTimeout);
        assert_ne!(off.cause, Cause::ProxyTimeout, "{off:#?}");
    }
}
