//! Prometheus's HTTP API, the parts tests need: instant queries, rule and alert states.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;

use super::PromError;

/// How long one API call may take (a query over a small test TSDB takes milliseconds).
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// A client for one Prometheus, e.g. `http://127.0.0.1:9091`.
#[derive(Clone)]
pub struct PromApi {
    base: String,
    agent: ureq::Agent,
}

/// One series of an instant query's result (a scalar result is one series without labels).
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// Its labels, `__name__` included when the result keeps it.
    pub labels: BTreeMap<String, String>,
    /// Its value (NaN and ±Inf as Prometheus sends them).
    pub value: f64,
}

/// A rule as Prometheus evaluates it (`/api/v1/rules`).
#[derive(Debug, Clone, Deserialize)]
pub struct RuleState {
    /// The recorded metric or the alert's name.
    pub name: String,
    /// Its expression, as Prometheus parsed and printed it.
    pub query: String,
    /// `recording` or `alerting`.
    #[serde(rename = "type")]
    pub kind: String,
    /// `ok`, `err` or `unknown` (not evaluated yet).
    pub health: String,
    /// The error of its last evaluation, if any.
    #[serde(rename = "lastError", default)]
    pub last_error: Option<String>,
    /// The group it belongs to (filled in from the group).
    #[serde(skip)]
    pub group: String,
}

/// An active alert (`/api/v1/alerts`): pending or firing.
#[derive(Debug, Clone, Deserialize)]
pub struct Alert {
    /// Its labels, `alertname` included.
    pub labels: BTreeMap<String, String>,
    /// Its annotations, templates expanded.
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    /// `pending` or `firing`.
    pub state: String,
}

impl PromApi {
    /// A client for the Prometheus at `base` (scheme, host and port, no trailing slash).
    pub fn new(base: impl Into<String>) -> PromApi {
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(CALL_TIMEOUT))
            .build()
            .into();
        PromApi {
            base: base.into().trim_end_matches('/').to_owned(),
            agent,
        }
    }

    /// The base URL.
    pub fn url(&self) -> &str {
        &self.base
    }

    /// Whether `/-/ready` answers 200.
    pub fn ready(&self) -> bool {
        self.get_raw("/-/ready", &[])
            .is_ok_and(|(status, _)| status == 200)
    }

    /// An instant query at `time` (Unix seconds; now when `None`): one [`Sample`] per series.
    /// A query that does not parse is [`PromError::Parse`], whatever the TSDB holds.
    pub fn query(&self, expr: &str, time: Option<f64>) -> Result<Vec<Sample>, PromError> {
        let time = time.map(|t| format!("{t:.3}"));
        let mut params = vec![("query", expr)];
        if let Some(t) = &time {
            params.push(("time", t.as_str()));
        }
        let data = self.get_data("/api/v1/query", &params)?;
        parse_result(&data)
    }

    /// Every rule Prometheus loaded, with its health after the last evaluation.
    pub fn rules(&self) -> Result<Vec<RuleState>, PromError> {
        #[derive(Deserialize)]
        struct Group {
            name: String,
            rules: Vec<RuleState>,
        }
        #[derive(Deserialize)]
        struct Groups {
            groups: Vec<Group>,
        }
        let data = self.get_data("/api/v1/rules", &[])?;
        let groups: Groups =
            serde_json::from_value(data).map_err(|e| PromError::Decode(e.to_string()))?;
        Ok(groups
            .groups
            .into_iter()
            .flat_map(|g| {
                let name = g.name;
                g.rules.into_iter().map(move |mut r| {
                    r.group.clone_from(&name);
                    r
                })
            })
            .collect())
    }

    /// The alerts that are pending or firing now.
    pub fn alerts(&self) -> Result<Vec<Alert>, PromError> {
        #[derive(Deserialize)]
        struct Alerts {
            alerts: Vec<Alert>,
        }
        let data = self.get_data("/api/v1/alerts", &[])?;
        let alerts: Alerts =
            serde_json::from_value(data).map_err(|e| PromError::Decode(e.to_string()))?;
        Ok(alerts.alerts)
    }

    /// The `data` of a successful API answer; the API's own error otherwise.
    fn get_data(&self, path: &str, params: &[(&str, &str)]) -> Result<Value, PromError> {
        let (status, body) = self.get_raw(path, params)?;
        let json: Value = serde_json::from_str(&body).map_err(|_| PromError::Http {
            status,
            body: body.clone(),
        })?;
        let error = || json["error"].as_str().unwrap_or_default().to_owned();
        match (status, json["status"].as_str(), json["errorType"].as_str()) {
            (200, Some("success"), _) => Ok(json["data"].clone()),
            (400, _, Some("bad_data")) => Err(PromError::Parse(error())),
            (422, _, Some("execution")) => Err(PromError::Execution(error())),
            _ => Err(PromError::Http { status, body }),
        }
    }

    fn get_raw(&self, path: &str, params: &[(&str, &str)]) -> Result<(u16, String), PromError> {
        let url = format!("{}{path}", self.base);
        let transport = |e: ureq::Error| PromError::Transport {
            url: url.clone(),
            reason: e.to_string(),
        };
        let mut response = self
            .agent
            .get(&url)
            .query_pairs(params.iter().copied())
            .call()
            .map_err(transport)?;
        let status = response.status().as_u16();
        let body = response.body_mut().read_to_string().map_err(transport)?;
        Ok((status, body))
    }
}

/// An instant query's `data`: a vector, or a scalar as one unlabelled sample.
fn parse_result(data: &Value) -> Result<Vec<Sample>, PromError> {
    let decode = |what: &str| PromError::Decode(format!("{what} in {data}"));
    let value_of = |pair: &Value| -> Result<f64, PromError> {
        pair.get(1)
            .and_then(Value::as_str)
            .and_then(parse_float)
            .ok_or_else(|| decode("a sample without a value"))
    };
    match data["resultType"].as_str() {
        Some("vector") => data["result"]
            .as_array()
            .ok_or_else(|| decode("a vector without a result"))?
            .iter()
            .map(|series| {
                let labels = series["metric"]
                    .as_object()
                    .ok_or_else(|| decode("a series without labels"))?
                    .iter()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
                    .collect();
                Ok(Sample {
                    labels,
                    value: value_of(&series["value"])?,
                })
            })
            .collect(),
        Some("scalar") => Ok(vec![Sample {
            labels: BTreeMap::new(),
            value: value_of(&data["result"])?,
        }]),
        _ => Err(decode("a result that is neither a vector nor a scalar")),
    }
}

/// Prometheus writes `NaN`, `+Inf` and `-Inf` besides plain numbers.
fn parse_float(text: &str) -> Option<f64> {
    match text {
        "NaN" => Some(f64::NAN),
        "+Inf" | "Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        _ => text.parse().ok(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_vector_result_becomes_labelled_samples() {
        let data: Value = serde_json::from_str(
            r#"{"resultType":"vector","result":[
                {"metric":{"upstream":"10.0.0.1:80"},"value":[1700000000.5,"0.25"]},
                {"metric":{},"value":[1700000000.5,"NaN"]},
                {"metric":{"le":"+Inf"},"value":[1700000000.5,"+Inf"]}]}"#,
        )
        .unwrap();
        let samples = parse_result(&data).unwrap();
        assert_eq!(samples.len(), 3);
        assert_eq!(samples[0].labels["upstream"], "10.0.0.1:80");
        assert!((samples[0].value - 0.25).abs() < f64::EPSILON);
        assert!(samples[1].value.is_nan());
        assert!(samples[2].value.is_infinite());
    }

    #[test]
    fn a_scalar_result_is_one_sample_without_labels() {
        let data: Value =
            serde_json::from_str(r#"{"resultType":"scalar","result":[1700000000,"3"]}"#).unwrap();
        let samples = parse_result(&data).unwrap();
        assert_eq!(samples.len(), 1);
        assert!(samples[0].labels.is_empty());
    }

    #[test]
    fn a_matrix_is_not_an_instant_result() {
        let data: Value = serde_json::from_str(r#"{"resultType":"matrix","result":[]}"#).unwrap();
        assert!(matches!(parse_result(&data), Err(PromError::Decode(_))));
    }
}
