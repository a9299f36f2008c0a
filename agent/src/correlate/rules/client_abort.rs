//! `client_abort`: the client closed before any response (nginx logs 499).
//!
//! Evidence: the client's FIN or RST on its connection to the proxy before any response
//! and before the proxy closed. Excluded by it: every upstream failure and every proxy
//! timeout — they would have made the proxy answer or close first, and it had done
//! neither when the client left.

use super::Finding;
use crate::correlate::evidence::ms;
use crate::correlate::judge::Down;
use crate::correlate::state::CConn;
use crate::verdict::Cause;

pub(in crate::correlate) fn with_attempt(d: &Down, uc: &CConn) -> Finding {
    Finding {
        cause: Some(Cause::ClientAbort),
        summary: format!(
            "the client closed after {:.1} ms, before any response; the upstream attempt on {} was still in flight",
            ms(d.err_ns - d.req_ns),
            uc.name()
        ),
        ..Finding::default()
    }
}

pub(in crate::correlate) fn without_attempt(d: &Down) -> Finding {
    Finding {
        cause: Some(Cause::ClientAbort),
        summary: format!(
            "the client closed after {:.1} ms, before any response (no upstream attempt seen)",
            ms(d.err_ns - d.req_ns)
        ),
        ..Finding::default()
    }
}

#[cfg(test)]
mod tests {
    use crate::correlate::rules::timeline::{client, upstream, Tl, MS};
    use crate::correlate::rules::Rule;
    use crate::verdict::Cause;

    fn client_gives_up() -> Tl {
        let mut tl = Tl::warmed_up();
        let (d, u) = (client(40001), upstream(50001));
        tl.forwarded(d, u, "GET");
        tl.fin(1_010 * MS, d, true); // the client gives up; nginx logs 499
        tl.fin(1_010 * MS + 100, u, true);
        tl.fin(1_010 * MS + 150, d, false);
        tl
    }

    #[test]
    fn client_closing_before_response_is_client_abort() {
        let v = client_gives_up().only();
        assert_eq!(v.cause, Cause::ClientAbort);
        assert_eq!(v.status, None);
        let off = client_gives_up().only_without(Rule::ClientAbort);
        assert_ne!(off.cause, Cause::ClientAbort, "{off:#?}");
    }
}
