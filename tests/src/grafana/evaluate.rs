//! Every panel query of a dashboard, interpolated and evaluated against a real Prometheus.

use super::{interpolate, Context, Dashboard, GrafanaError, Query};
use crate::prom::{PromApi, PromError, Sample};

/// What one query returned.
#[derive(Debug, Clone, PartialEq)]
pub struct QueryOutcome {
    /// How many series.
    pub series: usize,
    /// The largest value among them, NaN ignored (`None` without any number).
    pub max: Option<f64>,
    /// The series themselves.
    pub samples: Vec<Sample>,
}

/// One panel query and what it gave.
#[derive(Debug)]
pub struct PanelResult {
    /// The dashboard's title.
    pub dashboard: String,
    /// The query, as written in the dashboard.
    pub query: Query,
    /// The expression as sent, variables replaced.
    pub sent: String,
    /// The answer: series, or why there are none (a parse error among them).
    pub outcome: Result<QueryOutcome, PromError>,
}

impl PanelResult {
    /// The series count, 0 when the query failed.
    pub fn series(&self) -> usize {
        self.outcome.as_ref().map_or(0, |o| o.series)
    }
}

impl std::fmt::Display for PanelResult {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let q = &self.query;
        write!(
            f,
            "{} / panel {} {:?} {}: ",
            self.dashboard, q.panel_id, q.panel_title, q.ref_id
        )?;
        match &self.outcome {
            Ok(o) => write!(f, "{} series, max {:?}", o.series, o.max)?,
            Err(e) => write!(f, "{e}")?,
        }
        write!(f, "\n    {}", self.sent)
    }
}

/// Interpolates every query of `dashboard` in `ctx` and evaluates it as an instant query at
/// `time` (now when `None`). A query that Prometheus refuses is an `Err` outcome in its
/// [`PanelResult`]; a variable the dashboard does not define is an error of the whole call.
pub fn evaluate(
    api: &PromApi,
    dashboard: &Dashboard,
    ctx: &Context,
    time: Option<f64>,
) -> Result<Vec<PanelResult>, GrafanaError> {
    let variables = dashboard.variables();
    let mut out = Vec::new();
    for query in dashboard.queries() {
        let sent = interpolate(&query.expr, &variables, ctx)?;
        let outcome = api.query(&sent, time).map(|samples| QueryOutcome {
            series: samples.len(),
            max: samples
                .iter()
                .map(|s| s.value)
                .filter(|v| !v.is_nan())
                .reduce(f64::max),
            samples,
        });
        out.push(PanelResult {
            dashboard: dashboard.title().to_owned(),
            query,
            sent,
            outcome,
        });
    }
    Ok(out)
}
