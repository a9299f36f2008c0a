//! The series selectors of a PromQL expression, read from its text: which metrics it asks for
//! and with which label matchers. Enough to check dashboards and rules against what an
//! exporter exports; not a PromQL parser (Prometheus itself tells whether a query parses).

/// One label matcher: `label op "value"`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Matcher {
    /// The label's name.
    pub label: String,
    /// `=`, `!=`, `=~` or `!~`.
    pub op: String,
    /// The value or regex, as written between the quotes (escapes kept).
    pub value: String,
}

/// One series selector: `metric{matchers}`, a bare `metric`, or `{matchers}` (metric empty).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selector {
    /// The metric name, empty when the selector names none.
    pub metric: String,
    /// Its label matchers, in order.
    pub matchers: Vec<Matcher>,
}

impl Selector {
    /// The matchers on `label`.
    pub fn on<'a>(&'a self, label: &'a str) -> impl Iterator<Item = &'a Matcher> + 'a {
        self.matchers.iter().filter(move |m| m.label == label)
    }
}

/// Words that are PromQL's own, never metric names: keywords and the aggregation operators
/// (whose grouping may stand between the name and its parenthesis: `sum by (le) (…)`).
const KEYWORDS: &[&str] = &[
    "sum",
    "min",
    "max",
    "avg",
    "group",
    "stddev",
    "stdvar",
    "count",
    "count_values",
    "bottomk",
    "topk",
    "quantile",
    "limitk",
    "limit_ratio",
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "bool",
    "and",
    "or",
    "unless",
    "offset",
    "atan2",
    "inf",
    "nan",
];
/// Keywords followed by a list of label names in parentheses.
const LABEL_LISTS: &[&str] = &[
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
];

/// Every series selector in `expr`, in order. Function and aggregation names, keywords,
/// label lists (`by (…)`), string literals, numbers, durations and Grafana's `$variables`
/// are skipped.
pub fn selectors(expr: &str) -> Vec<Selector> {
    let b = expr.as_bytes();
    let ident_start = |c: u8| c.is_ascii_alphabetic() || c == b'_' || c == b':';
    let ident = |c: u8| c.is_ascii_alphanumeric() || c == b'_' || c == b':';
    let skip_ws = |mut i: usize| {
        while i < b.len() && b[i].is_ascii_whitespace() {
            i += 1;
        }
        i
    };
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if c == b'"' || c == b'\'' || c == b'`' {
            i = skip_string(b, i);
        } else if c == b'#' {
            // A comment runs to the end of the line.
            while i < b.len() && b[i] != b'\n' {
                i += 1;
            }
        } else if c == b'[' {
            // A range or subquery: durations and variables only.
            while i < b.len() && b[i] != b']' {
                i += 1;
            }
        } else if c == b'$' {
            i += 1;
            if i < b.len() && b[i] == b'{' {
                while i < b.len() && b[i] != b'}' {
                    i += 1;
                }
            }
            while i < b.len() && ident(b[i]) {
                i += 1;
            }
            continue;
        } else if c.is_ascii_digit() || c == b'.' {
            // A number (1e-3, 0x1f) or a duration: letters that follow belong to it.
            while i < b.len() && (ident(b[i]) || b[i] == b'.') {
                i += 1;
            }
            continue;
        } else if c == b'{' {
            let (matchers, end) = matchers(expr, i);
            out.push(Selector {
                metric: String::new(),
                matchers,
            });
            i = end;
            continue;
        } else if ident_start(c) {
            let start = i;
            while i < b.len() && ident(b[i]) {
                i += 1;
            }
            let word = &expr[start..i];
            let next = skip_ws(i);
            let lower = word.to_ascii_lowercase();
            if LABEL_LISTS.contains(&lower.as_str()) {
                if next < b.len() && b[next] == b'(' {
                    i = next;
                    while i < b.len() && b[i] != b')' {
                        i += 1;
                    }
                }
                continue;
            }
            if KEYWORDS.contains(&lower.as_str()) {
                continue;
            }
            if next < b.len() && b[next] == b'(' {
                continue; // a function or an aggregation
            }
            if next < b.len() && b[next] == b'{' {
                let (matchers, end) = matchers(expr, next);
                out.push(Selector {
                    metric: word.to_owned(),
                    matchers,
                });
                i = end;
                continue;
            }
            out.push(Selector {
                metric: word.to_owned(),
                matchers: Vec::new(),
            });
            continue;
        }
        i += 1;
    }
    out
}

/// The index just past the string literal that starts at `at`.
fn skip_string(b: &[u8], at: usize) -> usize {
    let quote = b[at];
    let mut i = at + 1;
    while i < b.len() && b[i] != quote {
        i += if b[i] == b'\\' && quote != b'`' { 2 } else { 1 };
    }
    (i + 1).min(b.len())
}

/// The matchers between the `{` at `open` and its `}`, and the index past the `}`.
fn matchers(expr: &str, open: usize) -> (Vec<Matcher>, usize) {
    let b = expr.as_bytes();
    let mut out = Vec::new();
    let mut i = open + 1;
    loop {
        while i < b.len() && (b[i].is_ascii_whitespace() || b[i] == b',') {
            i += 1;
        }
        if i >= b.len() || b[i] == b'}' {
            return (out, (i + 1).min(b.len()));
        }
        let start = i;
        while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_') {
            i += 1;
        }
        let label = expr[start..i].to_owned();
        while i < b.len() && b[i].is_ascii_whitespace() {
            i += 1;
        }
        let op_start = i;
        while i < b.len() && matches!(b[i], b'=' | b'!' | b'~') {
            i += 1;
        }
        let op = expr[op_start..i].to_owned();
        while i < b.len() && b[i].is_ascii_whitespace() {
            i += 1;
        }
        if label.is_empty() || op.is_empty() || i >= b.len() || !matches!(b[i], b'"' | b'\'' | b'`')
        {
            // Not a matcher: give up on this selector rather than misread it.
            while i < b.len() && b[i] != b'}' {
                i += 1;
            }
            return (out, (i + 1).min(b.len()));
        }
        let end = skip_string(b, i);
        let value = expr[i + 1..end.saturating_sub(1).max(i + 1)].to_owned();
        out.push(Matcher { label, op, value });
        i = end;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(label: &str, op: &str, value: &str) -> Matcher {
        Matcher {
            label: label.into(),
            op: op.into(),
            value: value.into(),
        }
    }

    #[test]
    fn selectors_with_matchers_are_read_and_everything_else_is_skipped() {
        let expr = r#"(
  sum by (upstream) (rate(tracer_verdicts_total{cause="keepalive_race", upstream!="", proxy=~"$proxy"}[$__rate_interval]))
  or
  0 * sum by (upstream) (rate(tracer_responses_total{upstream!=""}[5m]))
)
/ on (upstream) group_left () max without (le) (x:y:rate5m) > 0.01 and up == bool 1e-3"#;
        let s = selectors(expr);
        let names: Vec<&str> = s.iter().map(|s| s.metric.as_str()).collect();
        assert_eq!(
            names,
            [
                "tracer_verdicts_total",
                "tracer_responses_total",
                "x:y:rate5m",
                "up"
            ]
        );
        assert_eq!(
            s[0].matchers,
            [
                m("cause", "=", "keepalive_race"),
                m("upstream", "!=", ""),
                m("proxy", "=~", "$proxy")
            ]
        );
        assert_eq!(s[1].on("upstream").count(), 1);
        assert!(s[2].matchers.is_empty());
    }

    #[test]
    fn strings_with_braces_and_quotes_do_not_confuse_it() {
        let s = selectors(r#"label_values(tracer_responses_total{a="x{\"}", b=~'y'}, upstream)"#);
        assert_eq!(s.len(), 2, "{s:?}");
        assert_eq!(s[0].metric, "tracer_responses_total");
        assert_eq!(s[0].matchers, [m("a", "=", r#"x{\"}"#), m("b", "=~", "y")]);
        // `upstream` as an argument reads as a bare name: callers filter by prefix.
        assert_eq!(s[1].metric, "upstream");
        let anonymous = selectors(r#"{__name__="up"} offset 5m"#);
        assert_eq!(anonymous.len(), 1);
        assert_eq!(anonymous[0].metric, "");
    }
}
