//! Checks the tracepoint context offsets compiled into the probe (`tracer_common::tp`)
//! against the running kernel's `events/<category>/<event>/format` files, so a kernel with
//! another layout is refused with a clear error instead of producing wrong events.

use std::path::Path;

use tracer_common::tp;

use super::ProbeError;

/// One `field:` line of a format file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FormatField {
    pub name: String,
    pub offset: usize,
    pub size: usize,
}

/// Parses the `field:` lines of a tracepoint format file. Lines it cannot read are skipped.
pub fn parse_format(text: &str) -> Vec<FormatField> {
    text.lines().filter_map(parse_field_line).collect()
}

fn parse_field_line(line: &str) -> Option<FormatField> {
    // "\tfield:__u8 saddr[4];\toffset:32;\tsize:4;\tsigned:0;"
    let mut decl = None;
    let mut offset = None;
    let mut size = None;
    for part in line.trim().split(';') {
        let part = part.trim();
        if let Some(d) = part.strip_prefix("field:") {
            decl = Some(d);
        } else if let Some(o) = part.strip_prefix("offset:") {
            offset = o.trim().parse().ok();
        } else if let Some(s) = part.strip_prefix("size:") {
            size = s.trim().parse().ok();
        }
    }
    let last = decl?.split_whitespace().last()?;
    let name = last.split('[').next()?.trim_start_matches('*');
    Some(FormatField {
        name: name.to_owned(),
        offset: offset?,
        size: size?,
    })
}

/// Checks every offset in `tracer_common::tp::FIELDS` under `tracefs/events`.
pub fn verify(tracefs: &Path) -> Result<(), ProbeError> {
    let mut current: Option<(&str, &str, Vec<FormatField>)> = None;
    for &(category, event, field, offset) in tp::FIELDS {
        let fresh = !matches!(&current, Some((c, e, _)) if *c == category && *e == event);
        if fresh {
            let path = tracefs
                .join("events")
                .join(category)
                .join(event)
                .join("format");
            let text =
                std::fs::read_to_string(&path).map_err(|source| ProbeError::TracepointMissing {
                    tracepoint: format!("{category}:{event}"),
                    path: path.clone(),
                    source,
                })?;
            current = Some((category, event, parse_format(&text)));
        }
        let Some((_, _, fields)) = &current else {
            continue;
        };
        let found = fields.iter().find(|f| f.name == field).map(|f| f.offset);
        if found != Some(offset) {
            return Err(ProbeError::LayoutMismatch {
                tracepoint: format!("{category}:{event}"),
                field: field.to_owned(),
                expected: offset,
                found,
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `events/sock/sock_send_length/format` on Linux 6.18, verbatim.
    const SEND_FORMAT: &str = "name: sock_send_length
ID: 1540
format:
\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;
\tfield:unsigned char common_flags;\toffset:2;\tsize:1;\tsigned:0;
\tfield:unsigned char common_preempt_count;\toffset:3;\tsize:1;\tsigned:0;
\tfield:int common_pid;\toffset:4;\tsize:4;\tsigned:1;

\tfield:void * sk;\toffset:8;\tsize:8;\tsigned:0;
\tfield:__u16 family;\toffset:16;\tsize:2;\tsigned:0;
\tfield:__u16 protocol;\toffset:18;\tsize:2;\tsigned:0;
\tfield:int ret;\toffset:20;\tsize:4;\tsigned:1;
\tfield:int flags;\toffset:24;\tsize:4;\tsigned:1;

print fmt: \"sk address = %p\", REC->sk
";

    #[test]
    fn format_fields_are_parsed_with_pointer_and_array_names() {
        let f = parse_format(SEND_FORMAT);
        assert_eq!(f.len(), 9);
        assert_eq!(
            f[4],
            FormatField {
                name: "sk".into(),
                offset: 8,
                size: 8
            }
        );
        let arr = parse_field_line("\tfield:__u8 saddr_v6[16];\toffset:40;\tsize:16;\tsigned:0;");
        assert_eq!(arr.unwrap().name, "saddr_v6");
        let enum_field =
            parse_field_line("\tfield:enum sk_rst_reason reason;\toffset:28;\tsize:4;\tsigned:0;");
        assert_eq!(enum_field.unwrap().offset, 28);
    }

    /// `events/tcp/tcp_receive_reset/format` on Linux 6.18, verbatim.
    const RESET_FORMAT: &str = "name: tcp_receive_reset
ID: 2279
format:
\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;
\tfield:unsigned char common_flags;\toffset:2;\tsize:1;\tsigned:0;
\tfield:unsigned char common_preempt_count;\toffset:3;\tsize:1;\tsigned:0;
\tfield:int common_pid;\toffset:4;\tsize:4;\tsigned:1;

\tfield:const void * skaddr;\toffset:8;\tsize:8;\tsigned:0;
\tfield:__u16 sport;\toffset:16;\tsize:2;\tsigned:0;
\tfield:__u16 dport;\toffset:18;\tsize:2;\tsigned:0;
\tfield:__u16 family;\toffset:20;\tsize:2;\tsigned:0;
\tfield:__u8 saddr[4];\toffset:22;\tsize:4;\tsigned:0;
\tfield:__u8 daddr[4];\toffset:26;\tsize:4;\tsigned:0;
\tfield:__u8 saddr_v6[16];\toffset:30;\tsize:16;\tsigned:0;
\tfield:__u8 daddr_v6[16];\toffset:46;\tsize:16;\tsigned:0;
\tfield:__u64 sock_cookie;\toffset:64;\tsize:8;\tsigned:0;

print fmt: \"family=%s sport=%hu\", __print_symbolic(REC->family, { 2, \"AF_INET\" }), REC->sport
";

    #[test]
    fn compiled_offsets_match_the_recorded_format() {
        let f = parse_format(RESET_FORMAT);
        let mut checked = 0;
        for &(cat, ev, field, off) in tp::FIELDS {
            if (cat, ev) == ("tcp", "tcp_receive_reset") {
                checked += 1;
                assert_eq!(
                    f.iter().find(|x| x.name == field).map(|x| x.offset),
                    Some(off),
                    "{field}"
                );
            }
        }
        assert_eq!(checked, 8, "the probe reads 8 fields of tcp_receive_reset");
    }

    #[test]
    fn garbage_lines_are_skipped() {
        assert!(parse_format("field:\noffset:x;\n\0\u{7f}").is_empty());
    }

    #[test]
    fn running_kernel_matches_when_tracefs_is_readable() {
        let root = Path::new(super::super::sys::TRACEFS);
        if !root
            .join("events/sock/inet_sock_set_state/format")
            .is_file()
        {
            eprintln!("skipped: tracefs is not mounted at {}", root.display());
            return;
        }
        verify(root).unwrap();
    }
}
