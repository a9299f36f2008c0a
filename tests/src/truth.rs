//! The ground-truth file: for every non-2xx result the client saw, its cause, derived from
//! the proxy's own logs joined with the client's results by request id.

use serde::{Deserialize, Serialize};

/// One non-2xx request of a lab run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TruthRow {
    /// The request id the client sent (header `X-Request-Id` and query `rid`).
    pub rid: u64,
    /// What the client saw: the status (`"502"`), or `"timeout"` when it gave up first, or
    /// `"error: …"` when its connection failed.
    pub client: String,
    /// The status the proxy logged for this request, when its access log has the request.
    pub proxy_status: Option<u16>,
    /// Cause, in tracer's taxonomy (`keepalive_race`, `upstream_refused`, …), or `unknown`
    /// when the logs do not tell.
    pub cause: String,
    /// Sub-kind where the logs tell it (`request_never_sent`, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subcause: Option<String>,
    /// The proxy's log line(s) this row rests on, verbatim.
    pub evidence: String,
    /// `true` when the capture lost packets that carried this request (tcpdump reported
    /// drops and the request is missing from the client-facing capture).
    #[serde(default)]
    pub capture_lost: bool,
}

use std::collections::BTreeMap;

use crate::capture::CaptureCounts;
use crate::load::{outcome_key, ClientResult, Outcome};

/// The file a lab run writes as `truth.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TruthFile {
    pub scenario: String,
    /// Requests the client sent.
    pub requests: u64,
    /// What the client saw, by status (`"200"`, `"502"`, `"timeout"`, `"error"`).
    pub client_counts: BTreeMap<String, u64>,
    /// tcpdump's counters for the client-facing and upstream-facing captures.
    pub capture_client: CaptureCounts,
    pub capture_upstream: CaptureCounts,
    pub rows: Vec<TruthRow>,
}

impl TruthFile {
    /// Share of requests answered 502.
    pub fn rate(&self, key: &str) -> f64 {
        let n = self.client_counts.get(key).copied().unwrap_or(0);
        if self.requests == 0 {
            0.0
        } else {
            n as f64 / self.requests as f64
        }
    }

    /// Rows per cause.
    pub fn causes(&self) -> BTreeMap<String, u64> {
        let mut m = BTreeMap::new();
        for r in &self.rows {
            *m.entry(r.cause.clone()).or_insert(0) += 1;
        }
        m
    }
}

/// Where the ground truth disagrees with the client's own results: every non-2xx result
/// must have exactly one row, whose client outcome is the client's, whose status the proxy
/// logged too (a client that gave up sees no status), and whose cause is known.
pub fn disagreements(results: &[ClientResult], rows: &[TruthRow]) -> Vec<String> {
    let mut problems = Vec::new();
    let by_rid: BTreeMap<u64, &TruthRow> = rows.iter().map(|r| (r.rid, r)).collect();
    if by_rid.len() != rows.len() {
        problems.push("the ground truth has duplicate request ids".to_owned());
    }
    let mut expected = 0;
    for r in results {
        if matches!(r.outcome, Outcome::Status(200..=299)) {
            if by_rid.contains_key(&r.rid) {
                problems.push(format!(
                    "rid {}: a 2xx result has a ground-truth row",
                    r.rid
                ));
            }
            continue;
        }
        expected += 1;
        let Some(row) = by_rid.get(&r.rid) else {
            problems.push(format!(
                "rid {}: client saw {} but the ground truth has no row",
                r.rid,
                outcome_key(&r.outcome)
            ));
            continue;
        };
        if row.client != outcome_key(&r.outcome) {
            problems.push(format!(
                "rid {}: client saw {}, ground truth says {}",
                r.rid,
                outcome_key(&r.outcome),
                row.client
            ));
        }
        if let Outcome::Status(s) = r.outcome {
            if row.proxy_status != Some(s) {
                problems.push(format!(
                    "rid {}: client saw {s}, the proxy logged {:?}",
                    r.rid, row.proxy_status
                ));
            }
        }
        if row.cause == "unknown" && !row.capture_lost {
            problems.push(format!(
                "rid {}: the proxy's logs do not explain it: {}",
                r.rid, row.evidence
            ));
        }
    }
    if expected != rows.len() {
        problems.push(format!(
            "{} non-2xx results but {} ground-truth rows",
            expected,
            rows.len()
        ));
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(rid: u64, outcome: Outcome) -> ClientResult {
        ClientResult {
            rid,
            method: "POST".into(),
            path: "/".into(),
            start_ns: 0,
            end_ns: 1,
            outcome,
        }
    }

    fn row(rid: u64, client: &str, proxy_status: Option<u16>, cause: &str) -> TruthRow {
        TruthRow {
            rid,
            client: client.into(),
            proxy_status,
            cause: cause.into(),
            subcause: None,
            evidence: String::new(),
            capture_lost: false,
        }
    }

    #[test]
    fn matching_rows_agree() {
        let results = [
            result(1, Outcome::Status(200)),
            result(2, Outcome::Status(502)),
            result(3, Outcome::Timeout),
        ];
        let rows = [
            row(2, "502", Some(502), "keepalive_race"),
            row(3, "timeout", Some(499), "client_abort"),
        ];
        assert!(disagreements(&results, &rows).is_empty());
    }

    #[test]
    fn a_missing_row_or_wrong_status_is_reported() {
        let results = [
            result(2, Outcome::Status(502)),
            result(3, Outcome::Status(504)),
        ];
        let rows = [row(3, "504", Some(502), "proxy_timeout")];
        let p = disagreements(&results, &rows);
        assert!(p.iter().any(|p| p.contains("rid 2")), "{p:?}");
        assert!(
            p.iter().any(|p| p.contains("the proxy logged Some(502)")),
            "{p:?}"
        );
    }

    #[test]
    fn unknown_cause_is_a_disagreement_unless_the_capture_lost_it() {
        let results = [result(2, Outcome::Status(502))];
        assert_eq!(
            disagreements(&results, &[row(2, "502", Some(502), "unknown")]).len(),
            1
        );
        let mut lost = row(2, "502", Some(502), "unknown");
        lost.capture_lost = true;
        assert!(disagreements(&results, &[lost]).is_empty());
    }
}
