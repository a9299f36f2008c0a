//! `unexplained`: what is left when no rule could name a cause — always with a `reason`
//! saying what evidence is missing, and `probable` where it names a suspicion.

use super::Finding;
use crate::correlate::evidence::{base_evidence, downstream};
use crate::correlate::judge::Down;
use crate::correlate::state::{CConn, Ex};
use crate::verdict::{Cause, Confidence, Party, Verdict};

/// A 5xx on a connection whose side of the proxy is not known.
pub(in crate::correlate) fn unknown_role(c: &CConn, e: &Ex, now: i64) -> Verdict {
    let reason = "could not tell whether this connection faces the client or the upstream \
                  (no request seen forwarded between two connections); pass --proxy or \
                  --upstream";
    Verdict {
        cause: Cause::Unexplained,
        subcause: None,
        confidence: Confidence::Probable,
        status: e.status(),
        ts_ns: e.res_ns.unwrap_or(now),
        downstream: Some(downstream(c, e)),
        upstream: None,
        request_id: e.req.as_ref().and_then(|r| r.request_id.clone()),
        idempotent: e.req.as_ref().map(crate::http::RequestHead::idempotent),
        summary: format!(
            "{} answered {} on {}; its role is unknown",
            c.info.server,
            e.status().unwrap_or(0),
            c.name()
        ),
        reason: Some(reason.into()),
        evidence: base_evidence(c, e, Party::Client, Party::Server),
        process: None,
        link_guessed: false,
    }
}

/// The linked attempt answered a status no rule judged (a rule switched off).
pub(in crate::correlate) fn attempt_unjudged(d: &Down, uc: &CConn) -> Finding {
    Finding {
        probable: true,
        reason: Some(format!("no rule judged the attempt on {}", uc.name())),
        summary: format!(
            "the proxy answered {} after an attempt on {}",
            d.what,
            uc.name()
        ),
        ..Finding::default()
    }
}

/// The proxy answered while its attempt was still open, without a close either way.
pub(in crate::correlate) fn attempt_still_open(d: &Down, uc: &CConn) -> Finding {
    Finding {
        reason: Some(format!(
            "the upstream attempt on {} had no response and was still open",
            uc.name()
        )),
        summary: format!(
            "the proxy answered {} while its upstream attempt was still open",
            d.what
        ),
        ..Finding::default()
    }
}

/// No attempt, connection failure or idle close matches the request.
pub(in crate::correlate) fn nothing_in_sight(d: &Down, knows_upstreams: bool) -> Finding {
    Finding {
        probable: true,
        reason: Some(if knows_upstreams {
            "no upstream attempt, connection failure or idle close matches this request".into()
        } else {
            "the capture shows no upstream connection: capture the proxy's upstream side too".into()
        }),
        summary: format!(
            "the proxy answered {} with no upstream failure in sight",
            d.what
        ),
        ..Finding::default()
    }
}
