//! Grafana dashboards as files: their panels, queries and variables ([`Dashboard`]); what
//! Grafana would object to, or silently get wrong ([`Dashboard::problems`]); each query
//! interpolated the way Grafana's Prometheus data source does before sending it
//! ([`interpolate`]); and every panel query evaluated against a real Prometheus
//! ([`evaluate`]).

mod evaluate;
mod interpolate;
mod lint;

pub use evaluate::{evaluate, PanelResult, QueryOutcome};
pub use interpolate::{interpolate, Context, Selection};

use std::path::{Path, PathBuf};

use serde_json::Value;

/// What can go wrong reading dashboards or interpolating their queries.
#[derive(Debug, thiserror::Error)]
pub enum GrafanaError {
    /// The file cannot be read.
    #[error("reading {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// The file is not JSON, or not a dashboard.
    #[error("{path} is not a Grafana dashboard: {reason}")]
    NotADashboard {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A query names a variable that neither the dashboard nor Grafana defines.
    #[error("`${name}` is not a variable of the dashboard nor one of Grafana's")]
    UnknownVariable {
        /// The name after the `$`.
        name: String,
    },
    /// A variable with no value to give: no selection and no "All".
    #[error("variable `{name}` has no selection and no \"All\" option")]
    NoValue {
        /// The variable.
        name: String,
    },
    /// A `${name:format}` this module does not implement.
    #[error("`${{{name}:{format}}}`: format {format:?} is not implemented here")]
    UnknownFormat {
        /// The variable.
        name: String,
        /// The format asked for.
        format: String,
    },
}

/// One dashboard file.
#[derive(Debug, Clone)]
pub struct Dashboard {
    /// Where it was read from.
    pub path: PathBuf,
    /// The whole document.
    pub json: Value,
}

/// One Prometheus query of a panel.
#[derive(Debug, Clone, PartialEq)]
pub struct Query {
    /// The panel's `id`.
    pub panel_id: i64,
    /// The panel's title (may contain variables).
    pub panel_title: String,
    /// The panel's type (`timeseries`, `heatmap`, …).
    pub panel_type: String,
    /// The target's `refId`.
    pub ref_id: String,
    /// The expression as written, variables not yet interpolated.
    pub expr: String,
    /// Whether Grafana sends it as an instant query only.
    pub instant: bool,
}

/// One template variable.
#[derive(Debug, Clone, PartialEq)]
pub struct Variable {
    /// Its name (used as `$name`).
    pub name: String,
    /// `datasource`, `query`, `custom`, `interval`, …
    pub kind: String,
    /// Whether several values may be selected.
    pub multi: bool,
    /// Whether it offers "All".
    pub include_all: bool,
    /// The value "All" stands for, when set (`.*` here); Grafana joins every value otherwise.
    pub all_value: Option<String>,
}

impl Dashboard {
    /// Reads one dashboard file.
    pub fn load(path: &Path) -> Result<Dashboard, GrafanaError> {
        let text = std::fs::read_to_string(path).map_err(|source| GrafanaError::Read {
            path: path.to_owned(),
            source,
        })?;
        let json: Value = serde_json::from_str(&text).map_err(|e| GrafanaError::NotADashboard {
            path: path.to_owned(),
            reason: e.to_string(),
        })?;
        if !json["panels"].is_array() || !json["title"].is_string() {
            return Err(GrafanaError::NotADashboard {
                path: path.to_owned(),
                reason: "no `title` or no `panels` list".into(),
            });
        }
        Ok(Dashboard {
            path: path.to_owned(),
            json,
        })
    }

    /// Every `*.json` file under `dir`, subdirectories too, the way Grafana's file provider
    /// walks it; sorted by path.
    pub fn load_dir(dir: &Path) -> Result<Vec<Dashboard>, GrafanaError> {
        let mut files = Vec::new();
        collect_json(dir, &mut files)?;
        files.sort();
        files.iter().map(|f| Dashboard::load(f)).collect()
    }

    /// Its title.
    pub fn title(&self) -> &str {
        self.json["title"].as_str().unwrap_or_default()
    }

    /// Its `uid`, if it has one.
    pub fn uid(&self) -> Option<&str> {
        self.json["uid"].as_str()
    }

    /// Every panel, rows included, and the panels of collapsed rows, in document order.
    pub fn panels(&self) -> Vec<&Value> {
        let mut out = Vec::new();
        for p in self.json["panels"].as_array().into_iter().flatten() {
            out.push(p);
            out.extend(p["panels"].as_array().into_iter().flatten());
        }
        out
    }

    /// Every Prometheus query of every panel that Grafana would run (hidden ones skipped).
    pub fn queries(&self) -> Vec<Query> {
        let mut out = Vec::new();
        for panel in self.panels() {
            for target in panel["targets"].as_array().into_iter().flatten() {
                let Some(expr) = target["expr"].as_str() else {
                    continue;
                };
                if target["hide"].as_bool() == Some(true) {
                    continue;
                }
                out.push(Query {
                    panel_id: panel["id"].as_i64().unwrap_or(-1),
                    panel_title: panel["title"].as_str().unwrap_or_default().to_owned(),
                    panel_type: panel["type"].as_str().unwrap_or_default().to_owned(),
                    ref_id: target["refId"].as_str().unwrap_or_default().to_owned(),
                    expr: expr.to_owned(),
                    instant: target["instant"].as_bool() == Some(true)
                        && target["range"].as_bool() != Some(true),
                });
            }
        }
        out
    }

    /// Its template variables, in order.
    pub fn variables(&self) -> Vec<Variable> {
        self.json["templating"]["list"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|v| Variable {
                name: v["name"].as_str().unwrap_or_default().to_owned(),
                kind: v["type"].as_str().unwrap_or_default().to_owned(),
                multi: v["multi"].as_bool() == Some(true),
                include_all: v["includeAll"].as_bool() == Some(true),
                all_value: v["allValue"]
                    .as_str()
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned),
            })
            .collect()
    }

    /// The query of a `query` variable (`label_values(…)`), as Grafana stores it: a string,
    /// or an object whose `query` is the string.
    pub fn variable_query(&self, name: &str) -> Option<String> {
        let v = self.json["templating"]["list"]
            .as_array()?
            .iter()
            .find(|v| v["name"].as_str() == Some(name))?;
        v["query"]
            .as_str()
            .or_else(|| v["query"]["query"].as_str())
            .map(str::to_owned)
    }

    /// What is wrong with it, one sentence per problem; empty when nothing is.
    pub fn problems(&self) -> Vec<String> {
        lint::problems(self)
    }
}

fn collect_json(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), GrafanaError> {
    let read = |source| GrafanaError::Read {
        path: dir.to_owned(),
        source,
    };
    for entry in std::fs::read_dir(dir).map_err(read)? {
        let path = entry.map_err(read)?.path();
        if path.is_dir() {
            collect_json(&path, out)?;
        } else if path.extension().is_some_and(|e| e == "json") {
            out.push(path);
        }
    }
    Ok(())
}
