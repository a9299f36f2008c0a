//! Every panel query of a dashboard, interpolated and evaluated against a real Prometheus:
//! at one instant ([`evaluate`]), or over a time range the way Grafana draws a panel
//! ([`evaluate_range`]).

use super::{interpolate, Context, Dashboard, GrafanaError, Query};
use crate::prom::{PromApi, PromError, RangeSeries, Sample};

/// What one query returned.
#[derive(Debug, Clone, PartialEq)]
pub struct QueryOutcome {
    /// How many series.
    pub series: usize,
    /// The largest value among them, NaN ignored (`None` without any number).
    pub max: Option<f64>,
    /// The series themselves; over a time range, each with its largest value (NaN ignored;
    /// NaN when it had no other).
    pub samples: Vec<Sample>,
}

impl QueryOutcome {
    fn of(samples: Vec<Sample>) -> QueryOutcome {
        QueryOutcome {
            series: samples.len(),
            max: samples
                .iter()
                .map(|s| s.value)
                .filter(|v| !v.is_nan())
                .reduce(f64::max),
            samples,
        }
    }
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
        let outcome = api.query(&sent, time).map(QueryOutcome::of);
        out.push(PanelResult {
            dashboard: dashboard.title().to_owned(),
            query,
            sent,
            outcome,
        });
    }
    Ok(out)
}

/// Interpolates every query of `dashboard` in `ctx` and evaluates it the way Grafana draws
/// the dashboard for the time range `start`..`end` (Unix seconds): a range query every
/// `ctx.interval`, or an instant query at `end` for a query marked instant. Each series
/// comes back with its largest value over the range, so that a panel "shows something" when
/// [`QueryOutcome::max`] is above zero at any point.
pub fn evaluate_range(
    api: &PromApi,
    dashboard: &Dashboard,
    ctx: &Context,
    start: f64,
    end: f64,
) -> Result<Vec<PanelResult>, GrafanaError> {
    let variables = dashboard.variables();
    let mut out = Vec::new();
    for query in dashboard.queries() {
        let sent = interpolate(&query.expr, &variables, ctx)?;
        let outcome = if query.instant {
            api.query(&sent, Some(end))
        } else {
            api.query_range(&sent, start, end, ctx.interval)
                .map(|series| series.into_iter().map(largest).collect())
        };
        out.push(PanelResult {
            dashboard: dashboard.title().to_owned(),
            query,
            sent,
            outcome: outcome.map(QueryOutcome::of),
        });
    }
    Ok(out)
}

/// A series as one sample: its largest value, NaN ignored (NaN when it has no other).
fn largest(series: RangeSeries) -> Sample {
    let value = series
        .points
        .iter()
        .map(|(_, v)| *v)
        .filter(|v| !v.is_nan())
        .reduce(f64::max)
        .unwrap_or(f64::NAN);
    Sample {
        labels: series.labels,
        value,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_series_over_a_range_is_its_largest_number() {
        let s = largest(RangeSeries {
            labels: [("upstream".to_owned(), "a:1".to_owned())].into(),
            points: vec![(1.0, 0.0), (2.0, f64::NAN), (3.0, 0.25), (4.0, 0.0)],
        });
        assert!((s.value - 0.25).abs() < f64::EPSILON);
        assert_eq!(s.labels["upstream"], "a:1");
        let empty = largest(RangeSeries {
            labels: Default::default(),
            points: vec![(1.0, f64::NAN)],
        });
        assert!(empty.value.is_nan());
        let o = QueryOutcome::of(vec![empty, s]);
        assert_eq!((o.series, o.max), (2, Some(0.25)));
    }
}
