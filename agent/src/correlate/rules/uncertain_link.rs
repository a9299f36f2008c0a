//! The client got an error while the upstream exchange linked to its request succeeded.
//!
//! With a link by request id or a unique request line, that is a fact worth reporting:
//! the proxy turned the upstream's answer into an error (`unexplained`, with the reason).
//! A link by method and target alone, among several concurrent requests to the same
//! target, is a guess: the attempt may well have served another client. Then the verdict
//! must not assert a transformation; it says that the link is uncertain, and is
//! `probable`.

use super::Finding;
use crate::correlate::judge::Down;
use crate::correlate::state::CConn;

pub(in crate::correlate) fn contradicted(
    d: &Down,
    uc: &CConn,
    upstream_status: u16,
    link_proven: bool,
) -> Finding {
    let what = &d.what;
    if link_proven {
        return Finding {
            reason: Some(format!(
                "the upstream answered {upstream_status} but the client got {what}"
            )),
            summary: format!("the proxy turned the upstream's {upstream_status} into {what}"),
            ..Finding::default()
        };
    }
    Finding {
        probable: true,
        reason: Some(format!(
            "the link is uncertain: the request carried no request id and other requests with the same method and target were in flight, so the upstream exchange on {} that answered {upstream_status} may have served another client",
            uc.name()
        )),
        summary: format!(
            "the client got {what}; the only upstream exchange linked to its request (by method and target alone) answered {upstream_status}, so the link is uncertain"
        ),
        ..Finding::default()
    }
}

#[cfg(test)]
mod tests {
    use crate::correlate::rules::timeline::{client, upstream, Conn, Tl, MS};
    use crate::correlate::rules::Rule;
    use crate::verdict::Cause;

    /// Two clients POST the same target without request ids; the proxy forwards one of
    /// them (answered 200) while the other's pooled connection is found dead: a 502. The
    /// engine links the 502 by method and target only.
    fn two_clients_same_target() -> Tl {
        let mut tl = Tl::warmed_up();
        let (d1, d2) = (client(40001), client(40002));
        let u: Conn = upstream(50001);
        tl.open(10 * MS, d1);
        tl.open(10 * MS + 10, d2);
        tl.req_plain(10 * MS + 200, d1, "POST", "/orders");
        tl.req_plain(10 * MS + 210, d2, "POST", "/orders");
        tl.open(10 * MS + 300, u);
        tl.req_plain(10 * MS + 500, u, "POST", "/orders");
        tl.res(10 * MS + 900, u, 200);
        tl.res(10 * MS + 950, d1, 200);
        tl.res(10 * MS + 1000, d2, 502);
        tl
    }

    #[test]
    fn a_guessed_link_to_a_success_does_not_assert_a_transformation() {
        let a = two_clients_same_target().run();
        let v = a
            .verdicts
            .iter()
            .find(|v| v.status == Some(502))
            .expect("a verdict for the 502");
        assert_eq!(v.cause, Cause::Unexplained, "{v:#?}");
        assert!(!v.summary.contains("turned"), "{}", v.summary);
        assert!(v.summary.contains("uncertain"), "{}", v.summary);
        let off = two_clients_same_target().run_without(Rule::UncertainLink);
        let v = off.verdicts.iter().find(|v| v.status == Some(502)).unwrap();
        assert!(v.summary.contains("turned"), "{}", v.summary);
    }
}
