//! Template variables replaced the way Grafana's Prometheus data source replaces them before a
//! query leaves the browser: its own variables (`$__rate_interval`, `$__interval`, `$__range`,
//! …) from the time range and the data source's scrape interval, and the dashboard's variables
//! from their selection ("All" as its custom value, several values as a regex alternation, each
//! value regex-escaped).

use std::collections::BTreeMap;
use std::time::Duration;

use super::{GrafanaError, Variable};
use crate::prom::format_duration;

/// What is selected in one variable.
#[derive(Debug, Clone, PartialEq)]
pub enum Selection {
    /// "All": the variable's custom all value (`.*` on tracer's dashboards).
    All,
    /// These values.
    Values(Vec<String>),
}

/// The state of a dashboard at the moment Grafana sends its queries.
#[derive(Debug, Clone)]
pub struct Context {
    /// The data source's scrape interval ("Scrape interval" in its settings; 15 s by default).
    pub scrape_interval: Duration,
    /// `$__interval`: the step Grafana chose for the time range and panel width.
    pub interval: Duration,
    /// `$__range`: the length of the dashboard's time range.
    pub range: Duration,
    /// Selections; a variable not named here is "All".
    pub selections: BTreeMap<String, Selection>,
}

impl Context {
    /// Everything "All", with these intervals.
    pub fn new(scrape_interval: Duration, interval: Duration, range: Duration) -> Context {
        Context {
            scrape_interval,
            interval,
            range,
            selections: BTreeMap::new(),
        }
    }

    /// The same with `values` selected in variable `name`.
    #[must_use]
    pub fn select(mut self, name: &str, values: &[&str]) -> Context {
        self.selections.insert(
            name.to_owned(),
            Selection::Values(values.iter().map(|v| (*v).to_owned()).collect()),
        );
        self
    }

    /// `$__rate_interval`: the larger of `$__interval` + the scrape interval and four scrape
    /// intervals (Grafana's rule, so that a rate always spans at least four samples).
    pub fn rate_interval(&self) -> Duration {
        (self.interval + self.scrape_interval).max(self.scrape_interval * 4)
    }

    fn builtin(&self, name: &str) -> Option<String> {
        let ms = |d: Duration| d.as_millis().to_string();
        let range_s = (self.range.as_millis() + 500) / 1000;
        Some(match name {
            "__interval" => format_duration(self.interval),
            "__interval_ms" => ms(self.interval),
            "__rate_interval" => format_duration(self.rate_interval()),
            "__rate_interval_ms" => ms(self.rate_interval()),
            "__range" => format!("{range_s}s"),
            "__range_s" => range_s.to_string(),
            "__range_ms" => ms(self.range),
            _ => return None,
        })
    }
}

/// `text` with every variable replaced: `$name`, `${name}`, `${name:format}` (`regex`, `pipe`,
/// `raw`) and the old `[[name]]`. A `$` not followed by a name stays as it is.
pub fn interpolate(
    text: &str,
    variables: &[Variable],
    ctx: &Context,
) -> Result<String, GrafanaError> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some((before, reference, after)) = next_reference(rest) {
        out.push_str(before);
        out.push_str(&value_of(&reference, variables, ctx)?);
        rest = after;
    }
    out.push_str(rest);
    Ok(out)
}

/// A variable reference found in a text: its name and format.
#[derive(Debug, PartialEq)]
pub(crate) struct Reference {
    pub name: String,
    pub format: Option<String>,
}

fn is_word(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// The text before the first reference, the reference, and the text after it.
pub(crate) fn next_reference(text: &str) -> Option<(&str, Reference, &str)> {
    let mut search = 0;
    loop {
        let at = search + text[search..].find(['$', '['])?;
        let rest = &text[at..];
        if let Some(braced) = rest.strip_prefix("${") {
            if let Some(end) = braced.find('}') {
                let inner = &braced[..end];
                let (name, format) = match inner.split_once(':') {
                    Some((n, f)) => (n, Some(f.to_owned())),
                    None => (inner, None),
                };
                // `${name.field}` names a field of an object variable: the name comes first.
                let name = name.split('.').next().unwrap_or(name);
                if !name.is_empty() && name.chars().all(is_word) {
                    let reference = Reference {
                        name: name.to_owned(),
                        format,
                    };
                    return Some((&text[..at], reference, &braced[end + 1..]));
                }
            }
        } else if let Some(bare) = rest.strip_prefix('$') {
            let len = bare.find(|c| !is_word(c)).unwrap_or(bare.len());
            if len > 0 {
                let reference = Reference {
                    name: bare[..len].to_owned(),
                    format: None,
                };
                return Some((&text[..at], reference, &bare[len..]));
            }
        } else if let Some(old) = rest.strip_prefix("[[") {
            if let Some(end) = old.find("]]") {
                let inner = &old[..end];
                let (name, format) = match inner.split_once(':') {
                    Some((n, f)) => (n, Some(f.to_owned())),
                    None => (inner, None),
                };
                if !name.is_empty() && name.chars().all(is_word) {
                    let reference = Reference {
                        name: name.to_owned(),
                        format,
                    };
                    return Some((&text[..at], reference, &old[end + 2..]));
                }
            }
        }
        search = at + 1;
    }
}

fn value_of(
    reference: &Reference,
    variables: &[Variable],
    ctx: &Context,
) -> Result<String, GrafanaError> {
    let name = &reference.name;
    if let Some(v) = ctx.builtin(name) {
        return Ok(v);
    }
    let variable = variables
        .iter()
        .find(|v| &v.name == name)
        .ok_or_else(|| GrafanaError::UnknownVariable { name: name.clone() })?;
    let values = match ctx.selections.get(name).unwrap_or(&Selection::All) {
        Selection::All if variable.include_all => match &variable.all_value {
            // A custom all value goes in as it is written, never escaped.
            Some(all) => return Ok(all.clone()),
            None => return Err(GrafanaError::NoValue { name: name.clone() }),
        },
        Selection::All => return Err(GrafanaError::NoValue { name: name.clone() }),
        Selection::Values(values) => values,
    };
    match reference.format.as_deref() {
        None if variable.multi || variable.include_all => Ok(regex_alternation(values)),
        None => Ok(values
            .iter()
            .map(|v| regular_escape(v))
            .collect::<Vec<_>>()
            .join(",")),
        Some("regex") => Ok(regex_alternation(values)),
        Some("pipe") => Ok(values.join("|")),
        Some("raw") => Ok(values.join(",")),
        Some(other) => Err(GrafanaError::UnknownFormat {
            name: name.clone(),
            format: other.to_owned(),
        }),
    }
}

/// One value as is, several as `(a|b)`, each regex-escaped.
fn regex_alternation(values: &[String]) -> String {
    let escaped: Vec<String> = values.iter().map(|v| regex_escape(v)).collect();
    match escaped.as_slice() {
        [one] => one.clone(),
        _ => format!("({})", escaped.join("|")),
    }
}

/// Grafana's escape for a value going into a regex matcher inside a double-quoted PromQL
/// string: a backslash becomes four, and each regex metacharacter gets two before it
/// (`10.0.0.1` → `10\\.0\\.0\\.1`, which PromQL reads as the regex `10\.0\.0\.1`).
fn regex_escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len() * 2);
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\\\\\"),
            '$' | '^' | '*' | '{' | '}' | '[' | ']' | '+' | '?' | '.' | '(' | ')' | '|' => {
                out.push_str("\\\\");
                out.push(c);
            }
            _ => out.push(c),
        }
    }
    out
}

/// Grafana's escape for a single-valued variable: backslashes doubled, `'` as `\\'`.
fn regular_escape(value: &str) -> String {
    value.replace('\\', "\\\\").replace('\'', "\\\\'")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn var(name: &str, multi: bool, all: Option<&str>) -> Variable {
        Variable {
            name: name.into(),
            kind: "query".into(),
            multi,
            include_all: all.is_some(),
            all_value: all.map(str::to_owned),
        }
    }

    fn ctx() -> Context {
        Context::new(
            Duration::from_secs(15),
            Duration::from_secs(30),
            Duration::from_secs(3600),
        )
    }

    #[test]
    fn grafana_builtins_follow_its_rules() {
        let c = ctx();
        let text = "rate(x[$__rate_interval]) $__interval ${__range} $__range_s $__interval_ms";
        assert_eq!(
            interpolate(text, &[], &c).unwrap(),
            "rate(x[1m]) 30s 3600s 3600 30000"
        );
        // A short step: four scrape intervals win.
        let fast = Context::new(
            Duration::from_secs(1),
            Duration::from_secs(2),
            Duration::from_secs(10),
        );
        assert_eq!(fast.rate_interval(), Duration::from_secs(4));
    }

    #[test]
    fn all_becomes_the_custom_all_value_unescaped() {
        let vars = [var("upstream", true, Some(".*"))];
        assert_eq!(
            interpolate(r#"x{upstream=~"$upstream"}"#, &vars, &ctx()).unwrap(),
            r#"x{upstream=~".*"}"#
        );
    }

    #[test]
    fn selected_values_are_regex_escaped_and_alternated() {
        let vars = [var("upstream", true, Some(".*"))];
        let one = ctx().select("upstream", &["10.0.0.1:80"]);
        assert_eq!(
            interpolate(r#"x{upstream=~"${upstream}"}"#, &vars, &one).unwrap(),
            r#"x{upstream=~"10\\.0\\.0\\.1:80"}"#
        );
        let two = ctx().select("upstream", &["a", "b(1)"]);
        assert_eq!(
            interpolate(r#"x{upstream=~"[[upstream]]"}"#, &vars, &two).unwrap(),
            r#"x{upstream=~"(a|b\\(1\\))"}"#
        );
    }

    #[test]
    fn a_single_value_variable_is_only_quote_escaped() {
        let vars = [var("job", false, None)];
        let c = ctx().select("job", &["it's"]);
        assert_eq!(
            interpolate(r#"up{job="$job"}"#, &vars, &c).unwrap(),
            r#"up{job="it\\'s"}"#
        );
    }

    #[test]
    fn unknown_names_and_formats_are_errors_and_bare_dollars_stay() {
        assert!(matches!(
            interpolate("x{a=~\"$nope\"}", &[], &ctx()),
            Err(GrafanaError::UnknownVariable { name }) if name == "nope"
        ));
        let vars = [var("v", true, Some(".*"))];
        assert!(matches!(
            interpolate("${v:lucene}", &vars, &ctx().select("v", &["a"])),
            Err(GrafanaError::UnknownFormat { .. })
        ));
        assert_eq!(
            interpolate(r#"x{a=~"b$"} [5m]"#, &[], &ctx()).unwrap(),
            r#"x{a=~"b$"} [5m]"#
        );
    }

    #[test]
    fn all_without_a_custom_value_cannot_be_known_here() {
        let vars = [var("v", true, None), var("w", false, None)];
        let mut v = vars[0].clone();
        v.include_all = true;
        assert!(matches!(
            interpolate("$v", &[v], &ctx()),
            Err(GrafanaError::NoValue { .. })
        ));
        assert!(matches!(
            interpolate("$w", &vars, &ctx()),
            Err(GrafanaError::NoValue { .. })
        ));
    }
}
