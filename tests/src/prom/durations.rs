//! Prometheus durations (`5m`, `1h30m`, `250ms`) and the time-scaling of a rule file.

use std::time::Duration;

use super::PromError;

/// Units in the order Prometheus requires them, with their length in milliseconds.
const UNITS: [(&str, u64); 7] = [
    ("y", 365 * 24 * 3_600_000),
    ("w", 7 * 24 * 3_600_000),
    ("d", 24 * 3_600_000),
    ("h", 3_600_000),
    ("m", 60_000),
    ("s", 1_000),
    ("ms", 1),
];

/// Reads a Prometheus duration: one or more `<integer><unit>` with units among
/// `y w d h m s ms`, largest first, each at most once.
pub fn parse_duration(text: &str) -> Result<Duration, PromError> {
    let bad = || PromError::BadDuration(text.to_owned());
    let mut rest = text;
    let mut total: u64 = 0;
    let mut last_unit = None;
    if rest.is_empty() {
        return Err(bad());
    }
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(bad());
        }
        let n: u64 = rest[..digits].parse().map_err(|_| bad())?;
        rest = &rest[digits..];
        // "ms" before "m": the longest unit that matches.
        let (i, (unit, ms)) = UNITS
            .iter()
            .enumerate()
            .filter(|(_, (u, _))| rest.starts_with(u))
            .max_by_key(|(_, (u, _))| u.len())
            .ok_or_else(bad)?;
        if last_unit.is_some_and(|l| i <= l) {
            return Err(bad());
        }
        last_unit = Some(i);
        rest = &rest[unit.len()..];
        total = n
            .checked_mul(*ms)
            .and_then(|v| total.checked_add(v))
            .ok_or_else(bad)?;
    }
    Ok(Duration::from_millis(total))
}

/// Writes a duration the way Prometheus reads it, largest units first (`90s` → `1m30s`).
pub fn format_duration(d: Duration) -> String {
    let mut ms = u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
    if ms == 0 {
        return "0s".into();
    }
    let mut out = String::new();
    for (unit, len) in UNITS {
        if ms >= len {
            out.push_str(&format!("{}{unit}", ms / len));
            ms %= len;
        }
    }
    out
}

fn scale(d: Duration, factor: u32) -> Duration {
    if d.is_zero() {
        return d;
    }
    // Never below a millisecond: a zero window does not parse.
    (d / factor).max(Duration::from_millis(1))
}

/// A copy of a Prometheus rule file with every time window divided by `factor`: range and
/// subquery selectors (`[5m]` → `[5s]` for 60, `[30m:1m]`) and every `for:` value. Names stay
/// as they are (a recording rule called `…:rate5m` keeps its name), and so does anything
/// between brackets that is not a duration.
///
/// Alerts are written for minutes; a test of a short scenario loads the scaled copy to see
/// them fire, pend or stay quiet within seconds.
pub fn scale_rule_durations(text: &str, factor: u32) -> Result<String, PromError> {
    if factor == 0 {
        return Err(PromError::BadDuration("a factor of 0".into()));
    }
    let mut out = String::with_capacity(text.len());
    for line in text.split_inclusive('\n') {
        out.push_str(&scale_line(line, factor)?);
    }
    Ok(out)
}

fn scale_line(line: &str, factor: u32) -> Result<String, PromError> {
    let trimmed = line.trim_start();
    let indent = &line[..line.len() - trimmed.len()];
    let key = trimmed.strip_prefix("- ").unwrap_or(trimmed);
    if let Some(value) = key.strip_prefix("for:") {
        let end = value.trim_end_matches(['\n', '\r']);
        let newline = &value[end.len()..];
        let d = parse_duration(end.trim())?;
        let prefix = &trimmed[..trimmed.len() - key.len()];
        return Ok(format!(
            "{indent}{prefix}for: {}{newline}",
            format_duration(scale(d, factor))
        ));
    }
    let mut out = String::with_capacity(line.len());
    let mut rest = line;
    while let Some(open) = rest.find('[') {
        out.push_str(&rest[..=open]);
        rest = &rest[open + 1..];
        let Some(close) = rest.find(']') else {
            break;
        };
        let inside = &rest[..close];
        out.push_str(&scale_selector(inside, factor).unwrap_or_else(|| inside.to_owned()));
        rest = &rest[close..];
    }
    out.push_str(rest);
    Ok(out)
}

/// `5m` or `30m:1m` or `30m:` scaled; `None` when the text is not such a selector.
fn scale_selector(inside: &str, factor: u32) -> Option<String> {
    let mut parts = Vec::new();
    for part in inside.split(':') {
        if part.is_empty() {
            parts.push(String::new());
        } else {
            let d = parse_duration(part.trim()).ok()?;
            parts.push(format_duration(scale(d, factor)));
        }
    }
    if parts.len() > 2 || parts[0].is_empty() {
        return None;
    }
    Some(parts.join(":"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compound_durations_parse_largest_unit_first() {
        assert_eq!(parse_duration("5m").unwrap(), Duration::from_secs(300));
        assert_eq!(parse_duration("1h30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(
            parse_duration("1m500ms").unwrap(),
            Duration::from_millis(60_500)
        );
        for bad in ["", "5", "m", "30m1h", "5m5m", "5 m", "1.5m", "-1s"] {
            assert!(parse_duration(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn durations_format_the_way_prometheus_reads_them() {
        assert_eq!(format_duration(Duration::from_secs(90)), "1m30s");
        assert_eq!(format_duration(Duration::from_millis(5_000)), "5s");
        assert_eq!(format_duration(Duration::from_millis(1_250)), "1s250ms");
        assert_eq!(format_duration(Duration::ZERO), "0s");
        for d in ["1h", "2d3h", "15s", "7ms"] {
            assert_eq!(format_duration(parse_duration(d).unwrap()), d);
        }
    }

    #[test]
    fn windows_and_for_shrink_names_and_other_brackets_stay() {
        let rules = "\
groups:
  - name: g
    rules:
      - record: upstream:x:rate5m
        expr: sum(rate(x_total{a=~\"b\"}[5m])) / sum(rate(y_total[5m]))
      - alert: A
        expr: max_over_time(z[1h]) > 0 and avg_over_time(w[30m:1m]) > 1
        for: 10m
        labels: {tags: [a, b]}
";
        let scaled = scale_rule_durations(rules, 60).unwrap();
        assert!(scaled.contains("record: upstream:x:rate5m"), "{scaled}");
        assert!(
            scaled.contains("sum(rate(x_total{a=~\"b\"}[5s])) / sum(rate(y_total[5s]))"),
            "{scaled}"
        );
        assert!(scaled.contains("z[1m]"), "{scaled}");
        assert!(scaled.contains("w[30s:1s]"), "{scaled}");
        assert!(scaled.contains("        for: 10s\n"), "{scaled}");
        assert!(scaled.contains("[a, b]"), "{scaled}");
    }

    #[test]
    fn a_window_never_scales_to_zero() {
        let scaled = scale_rule_durations("expr: rate(x[1s])\nfor: 0s\n", 5000).unwrap();
        assert_eq!(scaled, "expr: rate(x[1ms])\nfor: 0s\n");
    }
}
