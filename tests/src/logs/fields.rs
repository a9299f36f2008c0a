//! `key=value` log lines: the formats the lab gives nginx and HAProxy.

use std::collections::HashMap;

/// `key=value` and `key="value with spaces"` pairs of a line (other words are skipped).
pub fn key_values(line: &str) -> HashMap<String, String> {
    let mut out = HashMap::new();
    let mut rest = line;
    while let Some(eq) = rest.find('=') {
        let key = rest[..eq].rsplit(' ').next().unwrap_or("").to_owned();
        let after = &rest[eq + 1..];
        let (value, next) = if let Some(quoted) = after.strip_prefix('"') {
            match quoted.find('"') {
                Some(end) => (&quoted[..end], &quoted[end + 1..]),
                None => (quoted, ""),
            }
        } else {
            let end = after.find(' ').unwrap_or(after.len());
            (&after[..end], &after[end..])
        };
        if !key.is_empty() {
            out.insert(key, value.to_owned());
        }
        rest = next;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_and_quoted_values() {
        let f = key_values(r#"1.5 a=1 b="x, y" c= d="unterminated"#);
        assert_eq!(f["a"], "1");
        assert_eq!(f["b"], "x, y");
        assert_eq!(f["c"], "");
        assert_eq!(f["d"], "unterminated");
        assert_eq!(f.len(), 4);
    }

    #[test]
    fn no_pairs_in_garbage() {
        assert!(key_values("").is_empty());
        assert!(key_values("no pairs at all").is_empty());
        assert!(key_values("=").is_empty());
    }
}
