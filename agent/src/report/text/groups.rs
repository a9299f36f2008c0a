//! Verdicts grouped by cause, subcause and upstream: a table of counts and shares, then
//! the clearest verdicts of each group.

use std::fmt::Write;
use std::net::SocketAddr;

use super::{summary::share, verdict_block};
use crate::report::{Limit, Options};
use crate::verdict::{Confidence, Verdict};

/// Verdicts of one cause (with subcause) and upstream server.
#[derive(Debug)]
pub struct Group<'a> {
    /// `keepalive_race/fin_crossed`.
    pub cause: String,
    pub upstream: Option<SocketAddr>,
    /// Clearest first: see [`clarity`].
    pub verdicts: Vec<&'a Verdict>,
}

impl Group<'_> {
    fn proven(&self) -> usize {
        self.verdicts
            .iter()
            .filter(|v| v.claimed_confidence() == Some(Confidence::Proven))
            .count()
    }

    fn upstream_name(&self) -> String {
        self.upstream
            .map_or_else(|| "-".to_owned(), |u| u.to_string())
    }
}

/// How clear a verdict is, lower first: proven before probable before unexplained, a
/// known client before a guessed one, then the earliest.
fn clarity(v: &Verdict) -> (u8, bool, i64) {
    let c = match v.claimed_confidence() {
        Some(Confidence::Proven) => 0,
        Some(Confidence::Probable) => 1,
        None => 2,
    };
    (c, v.link_guessed, v.ts_ns)
}

/// The groups, the largest first (then by name); each group's verdicts clearest first.
#[must_use]
pub fn group(verdicts: &[Verdict]) -> Vec<Group<'_>> {
    let mut groups: Vec<Group<'_>> = Vec::new();
    for v in verdicts {
        let cause = v.cause_name();
        let upstream = v.upstream.as_ref().map(|u| u.server);
        match groups
            .iter_mut()
            .find(|g| g.cause == cause && g.upstream == upstream)
        {
            Some(g) => g.verdicts.push(v),
            None => groups.push(Group {
                cause,
                upstream,
                verdicts: vec![v],
            }),
        }
    }
    for g in &mut groups {
        g.verdicts.sort_by_key(|v| clarity(v));
    }
    groups.sort_by(|a, b| {
        b.verdicts
            .len()
            .cmp(&a.verdicts.len())
            .then_with(|| a.cause.cmp(&b.cause))
            .then_with(|| a.upstream.cmp(&b.upstream))
    });
    groups
}

/// `causes:` — one row per group: count, share of all verdicts, how many are proven.
#[must_use]
pub fn table(groups: &[Group<'_>], total: usize) -> String {
    let cause_w = groups
        .iter()
        .map(|g| g.cause.len())
        .max()
        .unwrap_or(0)
        .max(5);
    let mut s = format!("\ncauses ({total} verdicts):\n");
    let _ = writeln!(
        s,
        "  {:>6}  {:>7}  {:>6}  {:<cause_w$}  upstream",
        "count", "share", "proven", "cause"
    );
    for g in groups {
        let n = g.verdicts.len();
        let _ = writeln!(
            s,
            "  {n:>6}  {:>7}  {:>6}  {:<cause_w$}  {}",
            share(n as u64, total as u64),
            g.proven(),
            g.cause,
            g.upstream_name()
        );
    }
    s
}

/// The listed verdicts of each group: the clearest few, or all (`opts.limit`).
/// `shared(reason)`: the reason was said once above and is not repeated.
#[must_use]
pub fn examples(groups: &[Group<'_>], opts: Options, shared: &dyn Fn(&str) -> bool) -> String {
    let per = opts.limit.per_group();
    let mut s = match opts.limit {
        Limit::All => "\nevery verdict, by group (clearest first):\n".to_owned(),
        Limit::PerGroup(n) => {
            format!("\nexamples (the clearest {n} of each group; --limit N or --all for more):\n")
        }
    };
    for g in groups {
        let shown = g.verdicts.len().min(per);
        let _ = writeln!(
            s,
            "{}, upstream {}: {} of {}",
            g.cause,
            g.upstream_name(),
            shown,
            g.verdicts.len()
        );
        for v in g.verdicts.iter().take(per) {
            let with_reason = !v.reason.as_deref().is_some_and(shared);
            s.push_str(&verdict_block(v, opts, with_reason, false));
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::verdict::{Cause, Subcause, Upstream};

    fn v(cause: Cause, confidence: Confidence, ts_ns: i64, server: &str) -> Verdict {
        Verdict {
            cause,
            subcause: (cause == Cause::KeepaliveRace).then_some(Subcause::FinCrossed),
            confidence,
            status: Some(502),
            ts_ns,
            downstream: None,
            upstream: Some(Upstream {
                proxy: "10.0.0.2:5000".parse().unwrap(),
                server: server.parse().unwrap(),
                exchange_index: None,
                seen_from_start: true,
                idle_ms: None,
                fin_to_request_ms: None,
                close_order: String::new(),
            }),
            request_id: None,
            idempotent: None,
            summary: format!("at {ts_ns}"),
            reason: None,
            evidence: Vec::new(),
            process: None,
            link_guessed: false,
        }
    }

    #[test]
    fn groups_are_by_cause_and_upstream_largest_first_clearest_first() {
        let vs = vec![
            v(
                Cause::UpstreamRefused,
                Confidence::Proven,
                1,
                "10.0.0.3:9000",
            ),
            v(
                Cause::KeepaliveRace,
                Confidence::Probable,
                2,
                "10.0.0.3:9000",
            ),
            v(Cause::KeepaliveRace, Confidence::Proven, 3, "10.0.0.3:9000"),
            v(
                Cause::KeepaliveRace,
                Confidence::Probable,
                4,
                "10.0.0.4:9000",
            ),
            v(
                Cause::KeepaliveRace,
                Confidence::Probable,
                5,
                "10.0.0.3:9000",
            ),
        ];
        let g = group(&vs);
        assert_eq!(g.len(), 3);
        assert_eq!(g[0].cause, "keepalive_race/fin_crossed");
        assert_eq!(g[0].upstream, Some("10.0.0.3:9000".parse().unwrap()));
        let order: Vec<i64> = g[0].verdicts.iter().map(|v| v.ts_ns).collect();
        assert_eq!(order, vec![3, 2, 5], "proven first, then by time");
        assert_eq!(g[0].proven(), 1);
        let t = table(&g, vs.len());
        assert!(t.contains("60.0 %"), "{t}");
        let shown = examples(&g, Options::default(), &|_| false);
        assert!(shown.contains("at 3") && shown.contains("at 2"), "{shown}");
        assert!(!shown.contains("at 5"), "two per group by default: {shown}");
        let all = examples(
            &g,
            Options {
                limit: Limit::All,
                ..Options::default()
            },
            &|_| false,
        );
        for ts in 1..=5 {
            assert!(all.contains(&format!("at {ts}\n")), "{all}");
        }
    }
}
