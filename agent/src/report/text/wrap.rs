//! Lines of at most [`WIDTH`] characters: long sentences are broken between words and
//! their continuation lines indented.

/// The widest line the text report writes, where it can.
pub const WIDTH: usize = 100;

/// `text` as lines starting with `first` (a space between it and the text unless it ends
/// with one), continued with `rest`, broken between words so that no line is wider than
/// [`WIDTH`] unless one word is. Ends with a newline.
#[must_use]
pub fn wrap(first: &str, rest: &str, text: &str) -> String {
    let mut out = String::new();
    let mut line = first.to_owned();
    // Whether the next word needs a space before it.
    let mut empty = first.is_empty() || first.ends_with(' ');
    for word in text.split(' ').filter(|w| !w.is_empty()) {
        let width = line.chars().count();
        if !empty && width + 1 + word.chars().count() > WIDTH {
            out.push_str(&line);
            out.push('\n');
            line = rest.to_owned();
            empty = true;
        }
        if !empty {
            line.push(' ');
        }
        line.push_str(word);
        empty = false;
    }
    out.push_str(&line);
    out.push('\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_sentences_break_between_words_and_indent() {
        let text = "word ".repeat(60);
        let out = wrap("  - ", "    ", &text);
        let lines: Vec<&str> = out.lines().collect();
        assert!(lines.len() >= 3, "{out}");
        assert!(lines.iter().all(|l| l.chars().count() <= WIDTH), "{out}");
        assert!(lines[0].starts_with("  - word"));
        assert!(lines[1].starts_with("    word"));
        assert_eq!(out.matches("word").count(), 60);
    }

    #[test]
    fn a_word_wider_than_a_line_stays_whole() {
        let long = "x".repeat(150);
        let out = wrap("  ", "    ", &format!("a {long} b"));
        assert_eq!(out, format!("  a\n    {long}\n    b\n"));
    }

    #[test]
    fn a_short_sentence_is_one_line() {
        assert_eq!(wrap("fix: ", "  ", "do it"), "fix: do it\n");
        assert_eq!(wrap("fix:", "  ", "do it"), "fix: do it\n");
        assert_eq!(wrap("", "  ", "do it"), "do it\n");
    }
}
