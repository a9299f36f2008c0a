//! Reading the agent's `/metrics` (Prometheus text exposition) in the benchmarks: one
//! parser of sample lines, sums over it.

use std::collections::BTreeMap;

/// One sample line: the metric's name, the text between its braces (empty without labels)
/// and its value. Comments, blank lines and values that are not numbers yield nothing.
fn sample(line: &str) -> Option<(&str, &str, f64)> {
    if line.starts_with('#') {
        return None;
    }
    let (series, value) = line.rsplit_once(' ')?;
    let value = value.parse::<f64>().ok()?;
    match series.split_once('{') {
        Some((metric, labels)) => Some((metric, labels.strip_suffix('}')?, value)),
        None => Some((series, "", value)),
    }
}

/// The value of label `label` in a sample's label text, when it has it.
fn label_value<'a>(labels: &'a str, label: &str) -> Option<&'a str> {
    labels.split(',').find_map(|pair| {
        let (k, v) = pair.split_once('=')?;
        (k.trim() == label).then(|| v.trim().trim_matches('"'))
    })
}

/// The sum of every sample of metric `name`.
pub(crate) fn metric_sum(text: &str, name: &str) -> f64 {
    text.lines()
        .filter_map(sample)
        .filter(|(m, _, _)| *m == name)
        .map(|(_, _, v)| v)
        .sum()
}

/// The sum of metric `name`'s samples by the value of their label `label` (samples
/// without it are left out).
pub(crate) fn metric_by_label(text: &str, name: &str, label: &str) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    for (_, labels, v) in text
        .lines()
        .filter_map(sample)
        .filter(|(m, _, _)| *m == name)
    {
        if let Some(k) = label_value(labels, label) {
            *out.entry(k.to_owned()).or_default() += v;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "# HELP tracer_engine_entries x\n\
        # TYPE tracer_engine_entries gauge\n\
        tracer_engine_entries{proxy=\"nginx\",table=\"conns\"} 3\n\
        tracer_engine_entries{proxy=\"caddy\",table=\"conns\"} 4\n\
        tracer_engine_entries{proxy=\"caddy\",table=\"kept\"} 1\n\
        tracer_engine_entriesx{table=\"conns\"} 100\n\
        tracer_verdicts_total{table=\"conns\"} 100\n\
        tracer_heap_bytes 2048\n\
        tracer_heap_bytes_other 1\n\
        tracer_proxies_followed{proxy=\"nginx\"} NaNx\n";

    #[test]
    fn a_metric_is_summed_over_its_samples_only() {
        assert_eq!(metric_sum(TEXT, "tracer_engine_entries"), 8.0);
        assert_eq!(metric_sum(TEXT, "tracer_heap_bytes"), 2048.0);
        assert_eq!(
            metric_sum(TEXT, "tracer_proxies_followed"),
            0.0,
            "not a number"
        );
        assert_eq!(metric_sum(TEXT, "tracer_absent"), 0.0);
    }

    #[test]
    fn a_metric_is_summed_by_one_label() {
        let m = metric_by_label(TEXT, "tracer_engine_entries", "table");
        assert_eq!(m.len(), 2, "{m:?}");
        assert_eq!(m["conns"], 7.0);
        assert_eq!(m["kept"], 1.0);
        assert!(metric_by_label(TEXT, "tracer_heap_bytes", "table").is_empty());
    }

    #[test]
    fn a_label_is_found_by_its_whole_name() {
        assert_eq!(
            label_value("subtable=\"x\",table=\"y\"", "table"),
            Some("y")
        );
        assert_eq!(label_value("subtable=\"x\"", "table"), None);
    }
}
