//! Keeps secrets carried in request targets out of reports: every query value (`?token=…`)
//! and the user information of an absolute-form target (`http://user:pass@host/…`) become
//! [`REDACTED`]; the path and the parameter names stay, so a report still says which
//! endpoint failed. Pure functions; the reports call them unless told to show queries.
//!
//! Request ids are not affected: they come from the `X-Request-Id` header, read before any
//! report is written.

use std::borrow::Cow;

/// What a hidden value reads as.
pub const REDACTED: &str = "<redacted>";

/// `target` with its query values and user information hidden:
/// `/a?token=s3cret&rid=7` → `/a?token=<redacted>&rid=<redacted>`. A parameter without
/// `=` may itself be a secret (`/cb?AbC123`) and is hidden whole; an empty value stays
/// empty. Borrowed when there is nothing to hide.
#[must_use]
pub fn target(target: &str) -> Cow<'_, str> {
    let (before_query, query) = match target.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (target, None),
    };
    let userinfo = userinfo_span(before_query);
    if query.is_none() && userinfo.is_none() {
        return Cow::Borrowed(target);
    }
    let mut out = String::with_capacity(target.len() + 16);
    match userinfo {
        Some((start, end)) => {
            out.push_str(&before_query[..start]);
            out.push_str(REDACTED);
            out.push_str(&before_query[end..]);
        }
        None => out.push_str(before_query),
    }
    if let Some(q) = query {
        out.push('?');
        for (i, param) in q.split('&').enumerate() {
            if i > 0 {
                out.push('&');
            }
            match param.split_once('=') {
                Some((name, "")) => {
                    out.push_str(name);
                    out.push('=');
                }
                Some((name, _)) => {
                    out.push_str(name);
                    out.push('=');
                    out.push_str(REDACTED);
                }
                None if param.is_empty() => {}
                None => out.push_str(REDACTED),
            }
        }
    }
    Cow::Owned(out)
}

/// Byte range of the user information in an absolute-form target's authority
/// (`scheme://USERINFO@host…`), if any.
fn userinfo_span(s: &str) -> Option<(usize, usize)> {
    let start = s.find("://")? + 3;
    let authority_end = s[start..].find('/').map_or(s.len(), |i| start + i);
    let at = s[start..authority_end].rfind('@')? + start;
    Some((start, at))
}

/// Whether a word of free text is a request target (origin form `/…` or absolute form
/// `scheme://…`), the only places a query appears in a report's sentences.
fn is_target(word: &str) -> bool {
    word.starts_with('/')
        || word.split_once("://").is_some_and(|(scheme, _)| {
            !scheme.is_empty()
                && scheme
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'-' || b == b'.')
        })
}

/// `text` (a summary, an evidence line) with every request target in it redacted as by
/// [`target`]; targets never contain spaces, so each is one space-separated word.
/// Borrowed when there is nothing to hide.
#[must_use]
pub fn text(text: &str) -> Cow<'_, str> {
    let needs = text
        .split(' ')
        .any(|w| is_target(w) && matches!(target(w), Cow::Owned(_)));
    if !needs {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 16);
    for (i, word) in text.split(' ').enumerate() {
        if i > 0 {
            out.push(' ');
        }
        if is_target(word) {
            out.push_str(&target(word));
        } else {
            out.push_str(word);
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_values_are_hidden_and_names_kept() {
        assert_eq!(
            target("/a?token=s3cret&rid=7"),
            "/a?token=<redacted>&rid=<redacted>"
        );
        assert_eq!(target("/login?next=%2Fhome"), "/login?next=<redacted>");
    }

    #[test]
    fn a_target_without_query_is_borrowed_unchanged() {
        assert!(matches!(target("/healthz"), Cow::Borrowed("/healthz")));
        assert!(matches!(target("*"), Cow::Borrowed("*")));
        assert!(matches!(target("example.com:443"), Cow::Borrowed(_)));
    }

    #[test]
    fn a_bare_parameter_may_be_a_secret_and_is_hidden() {
        assert_eq!(target("/cb?AbC123"), "/cb?<redacted>");
        assert_eq!(target("/a?debug&k=v"), "/a?<redacted>&k=<redacted>");
    }

    #[test]
    fn empty_values_and_separators_stay() {
        assert_eq!(target("/a?"), "/a?");
        assert_eq!(target("/a?x=&y=1"), "/a?x=&y=<redacted>");
        assert_eq!(target("/a?x=1&&y=2"), "/a?x=<redacted>&&y=<redacted>");
    }

    #[test]
    fn a_value_holding_equals_signs_is_hidden_whole() {
        assert_eq!(
            target("/a?sig=YWJj==&x=1"),
            "/a?sig=<redacted>&x=<redacted>"
        );
    }

    #[test]
    fn absolute_form_user_information_is_hidden() {
        assert_eq!(
            target("http://bob:pw@example.com/a?t=1"),
            "http://<redacted>@example.com/a?t=<redacted>"
        );
        assert_eq!(target("http://example.com/a"), "http://example.com/a");
        // An @ in the path is not user information.
        assert_eq!(target("http://example.com/@me"), "http://example.com/@me");
    }

    #[test]
    fn targets_inside_sentences_are_redacted() {
        assert_eq!(
            text("client sends POST /a?token=s3cret (exchange #1, fresh connection)"),
            "client sends POST /a?token=<redacted> (exchange #1, fresh connection)"
        );
        assert_eq!(
            text("proxy sends GET http://u:p@up/x?k=v"),
            "proxy sends GET http://<redacted>@up/x?k=<redacted>"
        );
    }

    #[test]
    fn sentences_without_targets_are_borrowed_unchanged() {
        let s = "why did the upstream close? nobody knows: a=b";
        assert!(matches!(text(s), Cow::Borrowed(_)));
        let s = "198.18.1.2:8080 answered 502 on 198.18.1.1:1->198.18.1.2:8080";
        assert!(matches!(text(s), Cow::Borrowed(_)));
    }
}
