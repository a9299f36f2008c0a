//! The one fact a verdict rests on most: the line a reader checks first.

use crate::verdict::{Evidence, Fact, Party, Verdict};

/// How telling a fact is: lower first.
fn rank(f: &Fact) -> u8 {
    match f {
        Fact::KernelWriteInCloseWait { .. } => 0,
        Fact::IdleClose { .. }
        | Fact::Refused
        | Fact::SynUnanswered { .. }
        | Fact::CaptureLost { .. }
        | Fact::Evicted => 1,
        Fact::Fin {
            by: Party::Upstream,
        }
        | Fact::Rst {
            by: Party::Upstream,
        } => 2,
        Fact::Response {
            by: Party::Upstream,
            status,
        } if *status >= 500 => 2,
        Fact::KernelReadError { .. } | Fact::KernelFinReceived | Fact::KernelRstReceived => 3,
        Fact::Fin { by: Party::Client } | Fact::Rst { by: Party::Client } => 4,
        Fact::EncryptedClientEnds => 5,
        _ => 9,
    }
}

/// The most telling fact of `v`'s evidence (the earliest of equals), if any tells more
/// than a request or a response.
#[must_use]
pub fn evidence(v: &Verdict) -> Option<&Evidence> {
    v.evidence
        .iter()
        .filter(|e| rank(&e.fact) < 9)
        .min_by_key(|e| (rank(&e.fact), e.ts_ns))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::verdict::{Conn, Leg};

    fn ev(ts_ns: i64, fact: Fact) -> Evidence {
        let c = Conn {
            client: "10.0.0.2:4000".parse().unwrap(),
            server: "10.0.0.3:80".parse().unwrap(),
        };
        Evidence::new(ts_ns, c, Leg::Upstream, fact)
    }

    #[test]
    fn the_upstreams_close_tells_more_than_the_request_or_the_proxys_fin() {
        let facts = [
            ev(
                1,
                Fact::Request {
                    by: Party::Proxy,
                    method: "GET".into(),
                    target: "/".into(),
                    exchange: 2,
                    fresh: false,
                    idle_ms: None,
                },
            ),
            ev(3, Fact::Fin { by: Party::Proxy }),
            ev(
                2,
                Fact::Fin {
                    by: Party::Upstream,
                },
            ),
        ];
        assert_eq!(rank(&facts[2].fact), 2);
        let best = facts
            .iter()
            .filter(|e| rank(&e.fact) < 9)
            .min_by_key(|e| (rank(&e.fact), e.ts_ns))
            .unwrap();
        assert_eq!(best.ts_ns, 2);
        assert!(
            rank(&Fact::KernelWriteInCloseWait {
                process: None,
                idle_ms: 1.0
            }) < rank(&Fact::Fin {
                by: Party::Upstream
            })
        );
    }
}
