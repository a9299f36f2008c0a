//! `upstream_reset`: the upstream reset the connection while the request waited for its
//! response — a crash, a killed worker, an abort.
//!
//! Evidence: the upstream's RST, before any FIN of its own, after the request, with no
//! response byte. Excluded by it: a proxy timeout (the upstream acted first), a FIN that
//! crossed the request (no FIN). The keep-alive race the upstream never read
//! ([`super::closed_unread`]) looks the same on the wire; it is excluded — and the verdict
//! `proven` — only when the upstream's idle timer cannot have fired: the connection was
//! fresh or busy, or had been quiet for less time than this upstream ever waits before
//! closing an idle connection. Otherwise (its timer unknown, or the reset came later than
//! the timer) the verdict is `probable` and says why.

use super::{Attempt, AttemptFailure};
use crate::correlate::evidence::ms;
use crate::verdict::Cause;

pub(in crate::correlate) fn attempt(a: &Attempt) -> Option<AttemptFailure> {
    let rst = a.c.rst_server?;
    if a.c.fin_server.is_some_and(|f| f <= rst) || a.up_close != Some(rst) {
        return None;
    }
    let state = if !a.idle {
        "busy"
    } else if a.reused {
        "reused"
    } else {
        "fresh"
    };
    let excluded = a.not_the_idle_timer(rst);
    let sentence = format!(
        "the upstream reset {state} connection {} {:.1} ms after the request (exchange #{}, idle {})",
        a.name,
        ms(rst - a.req_ns),
        a.e.index,
        a.idle_text(),
    );
    let doubt = excluded.is_none().then(|| {
        match a.habit.timer {
            Some(t) => format!(
                "a keep-alive race the upstream never read (closed_unread) cannot be excluded: the connection had been quiet {} before the reset, not when this upstream closes idle connections ({}), yet not less either",
                a.quiet_since().map_or("an unknown time".into(), |q| format!("{:.1} ms", ms(rst - q))),
                t.describe()
            ),
            None => "a keep-alive race the upstream never read (closed_unread) looks the same, and when this upstream closes idle connections is unknown (no idle close and no Keep-Alive header seen)".into(),
        }
    });
    Some(AttemptFailure {
        cause: Cause::UpstreamReset,
        subcause: None,
        fin_to_request_ns: None,
        proxy_after_ns: None,
        sentence,
        ts: rst,
        confident: doubt.is_none(),
        doubt,
    })
}

#[cfg(test)]
mod tests {
    use crate::correlate::rules::timeline::{client, upstream, Tl, MS};
    use crate::correlate::rules::Rule;
    use crate::verdict::{Cause, Confidence};

    fn reset_on_a_fresh_connection() -> Tl {
        let mut tl = Tl::warmed_up();
        let (d, u) = (client(40001), upstream(50001));
        tl.forwarded(d, u, "GET");
        tl.rst(30 * MS, u, false);
        tl.res(30 * MS + 100, d, 502);
        tl
    }

    #[test]
    fn rst_on_fresh_connection_is_upstream_reset_proven() {
        let v = reset_on_a_fresh_connection().only();
        assert_eq!(v.cause, Cause::UpstreamReset);
        assert_eq!(v.confidence, Confidence::Proven);
        let off = reset_on_a_fresh_connection().only_without(Rule::UpstreamReset);
        assert_ne!(off.cause, Cause::UpstreamReset, "{off:#?}");
    }

    /// The upstream closes idle connections after 1 s; the pooled connection 50000
    /// carries an exchange at 1.1 s, is reused after 200 ms of quiet and reset 3 ms later:
    /// not its idle timer.
    fn reset_long_before_the_timer() -> Tl {
        let mut tl = Tl::warmed_up();
        tl.idle_closes(1_000);
        let (d0, d, u) = (client(40002), client(40001), upstream(50000));
        tl.open(1_100 * MS - 300, d0);
        tl.req(1_100 * MS - 100, d0, "GET", 3);
        tl.req(1_100 * MS, u, "GET", 3);
        tl.res(1_101 * MS, u, 200);
        tl.res(1_101 * MS + 100, d0, 200);
        tl.open(1_301 * MS - 300, d);
        tl.req(1_301 * MS - 100, d, "POST", 2);
        tl.req(1_301 * MS, u, "POST", 2);
        tl.rst(1_301 * MS + 3_000, u, false);
        tl.res(1_301 * MS + 3_200, d, 502);
        tl
    }

    #[test]
    fn a_reset_long_before_the_idle_timer_is_a_proven_reset() {
        let v = reset_long_before_the_timer().only();
        assert_eq!(v.cause, Cause::UpstreamReset, "{v:#?}");
        assert_eq!(v.confidence, Confidence::Proven);
        assert!(v.summary.contains("reused connection"), "{}", v.summary);
        let off = reset_long_before_the_timer().only_without(Rule::UpstreamReset);
        assert_ne!(off.cause, Cause::UpstreamReset, "{off:#?}");
    }
}
