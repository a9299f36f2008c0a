//! What Grafana would refuse in a dashboard, or accept and then get wrong.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

use super::interpolate::next_reference;
use super::Dashboard;

/// The schema versions of Grafana 10.0 to 12: older ones are migrated on load, newer ones are
/// not understood by the Grafana versions this project targets.
const SCHEMA_VERSIONS: std::ops::RangeInclusive<i64> = 38..=41;
/// The name of the data source variable every query goes through.
const DATASOURCE_VARIABLE: &str = "datasource";
const DATASOURCE_UID: &str = "${datasource}";
/// Grafana's own variables, defined on every dashboard.
const BUILTINS: [&str; 13] = [
    "__interval",
    "__interval_ms",
    "__rate_interval",
    "__rate_interval_ms",
    "__range",
    "__range_s",
    "__range_ms",
    "__from",
    "__to",
    "__dashboard",
    "__user",
    "__org",
    "timeFilter",
];

pub(crate) fn problems(d: &Dashboard) -> Vec<String> {
    let mut out = Vec::new();
    check_header(d, &mut out);
    check_datasource_references(&d.json, "", &mut out);
    let defined = check_variables(d, &mut out);
    check_panels(d, &defined, &mut out);
    out
}

fn check_header(d: &Dashboard, out: &mut Vec<String>) {
    match d.json["schemaVersion"].as_i64() {
        Some(v) if SCHEMA_VERSIONS.contains(&v) => {}
        other => out.push(format!(
            "schemaVersion {other:?} is not one of Grafana 10 to 12 ({SCHEMA_VERSIONS:?})"
        )),
    }
    match d.uid() {
        Some(uid)
            if !uid.is_empty()
                && uid.len() <= 40
                && uid
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') => {}
        other => out.push(format!(
            "uid {other:?} must be 1 to 40 letters, digits, - or _ (links and provisioning \
             rely on it)"
        )),
    }
    if !d.json["id"].is_null() {
        out.push("`id` must be null: a database id in a file clashes on import".into());
    }
}

/// Every `datasource` anywhere must go through the variable, or be Grafana's built-in
/// annotation source: a fixed uid breaks on every other Grafana.
fn check_datasource_references(v: &Value, at: &str, out: &mut Vec<String>) {
    match v {
        Value::Object(map) => {
            for (k, child) in map {
                let here = format!("{at}/{k}");
                if k == "datasource" {
                    let uid = child.get("uid").and_then(Value::as_str).or(child.as_str());
                    let builtin = child.get("type").and_then(Value::as_str) == Some("grafana")
                        && uid == Some("-- Grafana --");
                    if uid != Some(DATASOURCE_UID) && !builtin {
                        out.push(format!(
                            "{here} is {child}: every data source must be {{\"type\": \
                             \"prometheus\", \"uid\": \"{DATASOURCE_UID}\"}}"
                        ));
                    }
                } else {
                    check_datasource_references(child, &here, out);
                }
            }
        }
        Value::Array(items) => {
            for (i, child) in items.iter().enumerate() {
                check_datasource_references(child, &format!("{at}/{i}"), out);
            }
        }
        _ => {}
    }
}

/// Checks the variables; returns the names defined (Grafana's own included).
fn check_variables(d: &Dashboard, out: &mut Vec<String>) -> BTreeSet<String> {
    let mut defined: BTreeSet<String> = BUILTINS.iter().map(|s| (*s).to_owned()).collect();
    let variables = d.variables();
    match variables.iter().find(|v| v.name == DATASOURCE_VARIABLE) {
        Some(v) if v.kind == "datasource" => {
            let raw = d.json["templating"]["list"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|v| v["name"] == DATASOURCE_VARIABLE);
            if raw.and_then(|r| r["query"].as_str()) != Some("prometheus") {
                out.push("variable `datasource` must list Prometheus data sources".into());
            }
        }
        _ => out.push(format!(
            "no data source variable `{DATASOURCE_VARIABLE}` (type datasource)"
        )),
    }
    for v in &variables {
        if !defined.insert(v.name.clone()) {
            out.push(format!("variable `{}` is defined twice", v.name));
        }
        if v.kind == "query" {
            if let Some(query) = d.variable_query(&v.name) {
                // A chained variable may only use the ones defined before it.
                for name in references(&query) {
                    if !defined.contains(&name) || name == v.name {
                        out.push(format!(
                            "variable `{}` uses `${name}`, which is not defined before it",
                            v.name
                        ));
                    }
                }
            } else {
                out.push(format!("variable `{}` has no query", v.name));
            }
            if v.include_all && v.all_value.is_none() {
                out.push(format!(
                    "variable `{}` offers All without a custom all value: Grafana would join \
                     every value, dropping series that lack the label (set allValue to .*)",
                    v.name
                ));
            }
        }
    }
    defined
}

fn check_panels(d: &Dashboard, defined: &BTreeSet<String>, out: &mut Vec<String>) {
    let mut ids: BTreeMap<i64, usize> = BTreeMap::new();
    for panel in d.panels() {
        let title = panel["title"].as_str().unwrap_or_default();
        let name = format!("panel {:?} ({})", title, panel["id"]);
        match panel["id"].as_i64() {
            Some(id) => *ids.entry(id).or_default() += 1,
            None => out.push(format!("{name} has no numeric id")),
        }
        if panel["type"].as_str().is_none_or(str::is_empty) {
            out.push(format!("{name} has no type"));
        }
        let grid = &panel["gridPos"];
        match (
            grid["x"].as_i64(),
            grid["y"].as_i64(),
            grid["w"].as_i64(),
            grid["h"].as_i64(),
        ) {
            (Some(x), Some(_), Some(w), Some(h)) if x >= 0 && w > 0 && h > 0 && x + w <= 24 => {}
            _ => out.push(format!("{name} has no gridPos within the 24 columns")),
        }
        if let Some(repeat) = panel["repeat"].as_str() {
            if !defined.contains(repeat) {
                out.push(format!("{name} repeats over undefined variable `{repeat}`"));
            }
        }
        for s in strings(panel) {
            for var in references(s) {
                if !defined.contains(&var) {
                    out.push(format!("{name} uses `${var}`, which is not defined"));
                }
            }
        }
        check_targets(panel, &name, out);
    }
    for (id, n) in ids {
        if n > 1 {
            out.push(format!("panel id {id} is used {n} times"));
        }
    }
}

fn check_targets(panel: &Value, name: &str, out: &mut Vec<String>) {
    let Some(targets) = panel["targets"].as_array() else {
        return;
    };
    if targets.is_empty() {
        return;
    }
    let ds = &panel["datasource"];
    if ds["uid"].as_str() != Some(DATASOURCE_UID) || ds["type"].as_str() != Some("prometheus") {
        out.push(format!(
            "{name} has queries but its datasource is not the `{DATASOURCE_UID}` variable"
        ));
    }
    let mut ref_ids = BTreeSet::new();
    for t in targets {
        let ref_id = t["refId"].as_str().unwrap_or_default();
        if ref_id.is_empty() || !ref_ids.insert(ref_id) {
            out.push(format!("{name}: refId {ref_id:?} is missing or repeated"));
        }
        match t["expr"].as_str() {
            Some(expr) if !expr.trim().is_empty() => {
                // Panels follow the zoom: a window written in the query would not.
                let mut rest = expr;
                while let Some(open) = rest.find('[') {
                    rest = &rest[open + 1..];
                    if rest.starts_with(|c: char| c.is_ascii_digit()) {
                        out.push(format!(
                            "{name} {ref_id}: a fixed window [{}…] instead of \
                             $__rate_interval or $__range",
                            &rest[..rest.find(']').unwrap_or(rest.len())]
                        ));
                    }
                }
            }
            _ => out.push(format!("{name} {ref_id}: no expression")),
        }
    }
}

/// Every string in a value, recursively (object keys excluded).
fn strings(v: &Value) -> Vec<&str> {
    match v {
        Value::String(s) => vec![s.as_str()],
        Value::Array(items) => items.iter().flat_map(strings).collect(),
        // A collapsed row's panels are checked as panels of their own.
        Value::Object(map) => map
            .iter()
            .filter(|(k, _)| k.as_str() != "panels")
            .flat_map(|(_, c)| strings(c))
            .collect(),
        _ => Vec::new(),
    }
}

/// The variable names a text refers to.
fn references(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some((_, reference, after)) = next_reference(rest) {
        out.push(reference.name);
        rest = after;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn dashboard(json: &str) -> Dashboard {
        Dashboard {
            path: PathBuf::from("test.json"),
            json: serde_json::from_str(json).unwrap(),
        }
    }

    const GOOD: &str = r#"{
      "title": "t", "uid": "t-1", "id": null, "schemaVersion": 39,
      "templating": {"list": [
        {"name": "datasource", "type": "datasource", "query": "prometheus"},
        {"name": "upstream", "type": "query", "multi": true, "includeAll": true,
         "allValue": ".*", "datasource": {"type": "prometheus", "uid": "${datasource}"},
         "query": {"query": "label_values(x_total, upstream)"}}
      ]},
      "panels": [
        {"id": 1, "type": "timeseries", "title": "$upstream",
         "gridPos": {"x": 0, "y": 0, "w": 12, "h": 8},
         "datasource": {"type": "prometheus", "uid": "${datasource}"},
         "targets": [{"refId": "A",
           "expr": "rate(x_total{upstream=~\"$upstream\"}[$__rate_interval])"}]}
      ]
    }"#;

    #[test]
    fn a_well_formed_dashboard_has_no_problems() {
        assert_eq!(dashboard(GOOD).problems(), Vec::<String>::new());
    }

    #[test]
    fn a_fixed_datasource_uid_is_a_problem_wherever_it_is() {
        let bad = GOOD.replacen(
            r#""targets": [{"refId": "A","#,
            r#""targets": [{"refId": "A", "datasource": {"type": "prometheus", "uid": "P1809F7CD0C75ACF3"},"#,
            1,
        );
        let problems = dashboard(&bad).problems();
        assert!(
            problems.iter().any(|p| p.contains("P1809F7CD0C75ACF3")),
            "{problems:?}"
        );
    }

    #[test]
    fn undefined_variables_duplicate_ids_and_fixed_windows_are_problems() {
        let bad = GOOD
            .replace(r#"$upstream\"}[$__rate_interval]"#, r#"$proxy\"}[5m]"#)
            .replace(
                r#"{"id": 1,"#,
                r#"{"id": 1, "type": "row", "title": "r", "gridPos": {"x": 0, "y": 0, "w": 24, "h": 1}},
                   {"id": 1,"#,
            );
        let problems = dashboard(&bad).problems();
        let has = |s: &str| problems.iter().any(|p| p.contains(s));
        assert!(has("`$proxy`, which is not defined"), "{problems:?}");
        assert!(has("panel id 1 is used 2 times"), "{problems:?}");
        assert!(has("a fixed window [5m"), "{problems:?}");
    }

    #[test]
    fn all_without_a_custom_value_and_a_missing_datasource_variable_are_problems() {
        let bad = GOOD.replace(r#""allValue": ".*","#, "").replace(
            r#""name": "datasource", "type": "datasource""#,
            r#""name": "ds", "type": "datasource""#,
        );
        let problems = dashboard(&bad).problems();
        let has = |s: &str| problems.iter().any(|p| p.contains(s));
        assert!(has("without a custom all value"), "{problems:?}");
        assert!(has("no data source variable"), "{problems:?}");
    }
}
