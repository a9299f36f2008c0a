//! `upstream_generated`: the upstream answered the 5xx itself; the proxy passed it on.
//!
//! Evidence: a 5xx response head on the upstream connection, for the request the client's
//! error answers. Excluded by it: every transport failure (the upstream answered) and the
//! proxy making up the error (the upstream's own status line was seen). With a link by
//! request id or a unique request line it is `proven`; a link by timing makes it probable.

use super::Finding;
use crate::correlate::judge::Down;
use crate::correlate::state::CConn;
use crate::verdict::Cause;

pub(in crate::correlate) fn passed_on(d: &Down, uc: &CConn, status: u16) -> Finding {
    Finding {
        cause: Some(Cause::UpstreamGenerated),
        summary: format!(
            "the upstream {} answered {status} itself; the proxy passed on {}",
            uc.info.server, d.what
        ),
        ..Finding::default()
    }
}

#[cfg(test)]
mod tests {
    use crate::correlate::rules::timeline::{client, upstream, Tl, MS};
    use crate::correlate::rules::Rule;
    use crate::verdict::{Cause, Confidence};

    fn upstream_says_503() -> Tl {
        let mut tl = Tl::warmed_up();
        let (d, u) = (client(40001), upstream(50001));
        tl.forwarded(d, u, "GET");
        tl.res(10 * MS + 900, u, 503);
        tl.res(10 * MS + 1000, d, 503);
        tl
    }

    #[test]
    fn upstream_503_passed_through_is_upstream_generated() {
        let v = upstream_says_503().only();
        assert_eq!(v.cause, Cause::UpstreamGenerated);
        assert_eq!(v.status, Some(503));
        assert_eq!(v.confidence, Confidence::Proven);
        let off = upstream_says_503().only_without(Rule::UpstreamGenerated);
        assert_ne!(off.cause, Cause::UpstreamGenerated, "{off:#?}");
    }
}
