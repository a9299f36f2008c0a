//! `tracer` as a user meets it on hostile or awkward input, offline (no root needed):
//! private output files, secrets kept out of reports, no all-clear when nothing could be
//! read, one side of the proxy only, standard input, empty and zero-packet files.
//!
//! Every capture here is a lab fixture (recorded by `cargo xtask fixtures`) or a few bytes
//! built by the test; the request ids come from the lab client's own `X-Request-Id`.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use serde_json::Value;

fn fixture(scenario: &str, file: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures")
        .join(scenario)
        .join(file)
}

fn tracer(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tracer"))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("tracer runs")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn json(out: &Output) -> Value {
    assert!(out.status.success(), "tracer failed: {}", text(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("tracer prints JSON")
}

/// A scratch directory for one test, removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new(test: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!("tracer-cli-{test}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create scratch dir");
        Scratch(dir)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }

    fn str(&self, name: &str) -> String {
        self.path(name).display().to_string()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn mode(p: &Path) -> u32 {
    std::fs::symlink_metadata(p).unwrap().permissions().mode() & 0o777
}

fn seed(file: &str) -> String {
    fixture("seed", file).display().to_string()
}

// ---- private output (`--evidence`; `--out` shares the code, see capture_signals.rs) ----

#[test]
fn evidence_directory_is_0700_and_its_files_0600() {
    let s = Scratch::new("modes");
    let ev = s.str("ev");
    let out = tracer(&[
        "analyze",
        &seed("client.pcap"),
        &seed("upstream.pcap"),
        "--evidence",
        &ev,
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(mode(&s.path("ev")), 0o700, "the evidence directory");
    for f in ["evidence.pcapng", "report.json", "report.html"] {
        assert_eq!(mode(&s.path("ev").join(f)), 0o600, "{f}");
    }
}

#[test]
fn a_non_empty_evidence_directory_is_refused_without_force() {
    let s = Scratch::new("nonempty");
    std::fs::create_dir(s.path("ev")).unwrap();
    std::fs::write(s.path("ev/report.json"), "an older report").unwrap();
    let ev = s.str("ev");
    let out = tracer(&["analyze", &seed("client.pcap"), "--evidence", &ev]);
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert!(
        err.contains("not empty") && err.contains("--force") && err.contains(&ev),
        "{err}"
    );
    assert_eq!(
        std::fs::read_to_string(s.path("ev/report.json")).unwrap(),
        "an older report"
    );
    // With --force the old files are replaced.
    let out = tracer(&[
        "analyze",
        &seed("client.pcap"),
        "--evidence",
        &ev,
        "--force",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let report = std::fs::read_to_string(s.path("ev/report.json")).unwrap();
    assert!(report.contains("tracer.report/v1"), "{report}");
}

#[test]
fn a_symlink_planted_in_the_evidence_directory_is_not_followed() {
    let s = Scratch::new("symlink");
    std::fs::write(s.path("victim"), "precious").unwrap();
    std::fs::create_dir(s.path("ev")).unwrap();
    for f in ["evidence.pcapng", "report.json", "report.html"] {
        std::os::unix::fs::symlink(s.path("victim"), s.path("ev").join(f)).unwrap();
    }
    let ev = s.str("ev");
    let out = tracer(&[
        "analyze",
        &seed("client.pcap"),
        "--evidence",
        &ev,
        "--force",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        std::fs::read_to_string(s.path("victim")).unwrap(),
        "precious"
    );
    for f in ["evidence.pcapng", "report.json", "report.html"] {
        let m = std::fs::symlink_metadata(s.path("ev").join(f)).unwrap();
        assert!(m.file_type().is_file(), "{f} is still a link");
        assert_eq!(m.mode() & 0o777, 0o600, "{f}");
    }
}

#[test]
fn an_evidence_directory_that_is_a_symlink_is_refused() {
    let s = Scratch::new("dirlink");
    std::fs::create_dir(s.path("elsewhere")).unwrap();
    std::os::unix::fs::symlink(s.path("elsewhere"), s.path("ev")).unwrap();
    let ev = s.str("ev");
    let out = tracer(&[
        "analyze",
        &seed("client.pcap"),
        "--evidence",
        &ev,
        "--force",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("symbolic link"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(std::fs::read_dir(s.path("elsewhere")).unwrap().count(), 0);
}

/// A write that fails (here: past RLIMIT_FSIZE, EFBIG) is one sentence naming the file
/// once, not the operating system's message twice.
#[test]
fn a_failed_write_names_the_file_and_the_reason_once() {
    use std::os::unix::process::CommandExt;
    let s = Scratch::new("efbig");
    let ev = s.str("ev");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tracer"));
    cmd.args(["analyze", &seed("client.pcap"), "--evidence", &ev]);
    // SAFETY: between fork and exec only async-signal-safe calls (signal, setrlimit) run.
    unsafe {
        cmd.pre_exec(|| {
            libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
            let lim = libc::rlimit {
                rlim_cur: 4096,
                rlim_max: 4096,
            };
            if libc::setrlimit(libc::RLIMIT_FSIZE, &lim) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let out = cmd.output().expect("tracer runs");
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    let file = s.path("ev/evidence.pcapng").display().to_string();
    assert_eq!(err.matches("os error 27").count(), 1, "{err}");
    assert_eq!(err.matches(&file).count(), 1, "{err}");
}

// ---- secrets in reports ----

/// The lab's requests are `POST /path?rid=N`: the query value stands for a token.
fn has_raw_query(s: &str) -> bool {
    s.match_indices("?rid=")
        .any(|(i, m)| s[i + m.len()..].starts_with(|c: char| c.is_ascii_digit()))
}

#[test]
fn query_values_are_redacted_in_every_report_unless_asked() {
    let s = Scratch::new("redact");
    let (c, u) = (seed("client.pcap"), seed("upstream.pcap"));
    let ev = s.str("ev");
    let out = tracer(&["analyze", &c, &u, "-v", "--evidence", &ev]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let report = text(&out.stdout);
    assert!(report.contains("?rid=<redacted>"), "{report}");
    assert!(!has_raw_query(&report), "a query value in the text report");
    let saved = std::fs::read_to_string(s.path("ev/report.json")).unwrap();
    assert!(!has_raw_query(&saved), "a query value in report.json");

    let j = json(&tracer(&["analyze", &c, &u, "--format", "json"]));
    assert!(!has_raw_query(&j.to_string()), "a query value in the JSON");
    let verdicts = j["verdicts"].as_array().unwrap();
    let targets: Vec<&str> = verdicts
        .iter()
        .filter_map(|v| v["downstream"]["target"].as_str())
        .collect();
    assert!(!targets.is_empty());
    for t in &targets {
        assert!(t.ends_with("?rid=<redacted>"), "{t}");
    }
    // The request ids the lab joins verdicts by are still there.
    assert!(verdicts.iter().any(|v| v["request_id"]
        .as_str()
        .is_some_and(|r| r.parse::<u64>().is_ok())));

    // Asked for: shown.
    let shown = tracer(&["analyze", &c, &u, "-v", "--show-query"]);
    assert!(has_raw_query(&text(&shown.stdout)));
    let j = json(&tracer(&[
        "analyze",
        &c,
        &u,
        "--format",
        "json",
        "--show-query",
    ]));
    assert!(j["verdicts"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|v| v["downstream"]["target"].as_str())
        .all(has_raw_query));
}

#[test]
fn help_says_the_evidence_pcap_keeps_full_packets() {
    for sub in ["analyze", "capture"] {
        let out = tracer(&[sub, "--help"]);
        let help = text(&out.stdout);
        assert!(help.contains("--show-query"), "{sub}: {help}");
        assert!(help.contains("full packets"), "{sub}: {help}");
    }
}

// ---- no false all-clear ----

/// A pcapng file with one interface of `linktype` and one packet on it.
fn pcapng_one_packet(linktype: u16) -> Vec<u8> {
    fn block(ty: u32, body: &[u8]) -> Vec<u8> {
        let len = (12 + body.len()).div_ceil(4) * 4;
        let mut b = Vec::new();
        b.extend_from_slice(&ty.to_le_bytes());
        b.extend_from_slice(&(len as u32).to_le_bytes());
        b.extend_from_slice(body);
        b.resize(len - 4, 0);
        b.extend_from_slice(&(len as u32).to_le_bytes());
        b
    }
    let mut shb = Vec::new();
    shb.extend_from_slice(&0x1a2b_3c4du32.to_le_bytes());
    shb.extend_from_slice(&1u16.to_le_bytes());
    shb.extend_from_slice(&0u16.to_le_bytes());
    shb.extend_from_slice(&u64::MAX.to_le_bytes());
    let mut idb = Vec::new();
    idb.extend_from_slice(&linktype.to_le_bytes());
    idb.extend_from_slice(&0u16.to_le_bytes());
    idb.extend_from_slice(&65_535u32.to_le_bytes());
    let data = [0x55u8; 60];
    let mut epb = Vec::new();
    epb.extend_from_slice(&0u32.to_le_bytes());
    epb.extend_from_slice(&0u32.to_le_bytes());
    epb.extend_from_slice(&1_000_000u32.to_le_bytes());
    epb.extend_from_slice(&(data.len() as u32).to_le_bytes());
    epb.extend_from_slice(&(data.len() as u32).to_le_bytes());
    epb.extend_from_slice(&data);
    [block(0x0a0d_0d0a, &shb), block(1, &idb), block(6, &epb)].concat()
}

#[test]
fn a_pcapng_whose_only_interface_cannot_be_decoded_is_an_error() {
    let s = Scratch::new("linktype");
    // 105: IEEE 802.11, which tracer does not decode.
    std::fs::write(s.path("wifi.pcapng"), pcapng_one_packet(105)).unwrap();
    let out = tracer(&["analyze", &s.str("wifi.pcapng")]);
    let (stdout, err) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(2), "{stdout}{err}");
    assert!(!stdout.contains("no 5xx"), "{stdout}");
    assert!(err.contains("could be decoded"), "{err}");
}

#[test]
fn capture_refuses_a_snaplen_too_short_for_a_status_line() {
    let out = tracer(&[
        "capture",
        "--snaplen",
        "10",
        "--duration",
        "1s",
        "--no-probe",
        "-i",
        "lo",
    ]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("--snaplen") && err.contains("status line"),
        "{err}"
    );
    assert!(!text(&out.stdout).contains("no 5xx"));
}

#[test]
fn capture_refuses_until_zero() {
    let out = tracer(&[
        "capture",
        "--until",
        "0",
        "--duration",
        "1s",
        "--no-probe",
        "-i",
        "lo",
    ]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("--until"), "{err}");
    assert!(!text(&out.stdout).contains("no 5xx"));
}

#[test]
fn capture_refuses_a_zero_duration() {
    let out = tracer(&["capture", "--duration", "0s", "--no-probe", "-i", "lo"]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("--duration") && err.contains("zero"), "{err}");
    assert!(!text(&out.stdout).contains("no 5xx"));
}

// ---- one side of the proxy only ----

/// Each reason the verdicts give (read from the JSON, whatever its wording) appears at
/// most once in the text report of the same capture: no hint repeated under every verdict.
fn reasons_are_said_once(args: &[&str]) {
    let j = json(&tracer(&[args, &["--format", "json"]].concat()));
    let reasons: std::collections::BTreeSet<&str> = j["verdicts"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|v| v["reason"].as_str())
        .collect();
    assert!(!reasons.is_empty());
    let report = text(&tracer(args).stdout);
    for r in reasons {
        assert!(report.matches(r).count() <= 1, "repeated: {r}\n{report}");
    }
}

#[test]
fn the_client_side_alone_says_once_that_the_upstream_side_is_missing() {
    let client = seed("client.pcap");
    let out = tracer(&["analyze", &client]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let report = text(&out.stdout);
    assert_eq!(report.matches("one side only").count(), 1, "{report}");
    reasons_are_said_once(&["analyze", &client]);

    let named = ["analyze", &client, "--proxy", "198.18.1.2"];
    let report = text(&tracer(&named).stdout);
    // The text report breaks long sentences onto indented continuation lines.
    let paragraphs = report.replace("\n  ", " ");
    let lines: Vec<&str> = paragraphs
        .lines()
        .filter(|l| l.contains("one side only"))
        .collect();
    let [line] = lines[..] else {
        panic!("not one one-side line in {report}");
    };
    assert!(line.contains("upstream side"), "{line}");
    assert!(line.contains("does not mean the proxy made it"), "{line}");
    reasons_are_said_once(&named);
    let j = json(&tracer(&[&named[..], &["--format", "json"]].concat()));
    assert_eq!(j["capture"]["missing_side"], "upstream");
}

#[test]
fn the_upstream_side_alone_says_the_client_side_is_missing() {
    let j = json(&tracer(&[
        "analyze",
        &seed("upstream.pcap"),
        "--upstream",
        "198.18.2.2",
        "--format",
        "json",
    ]));
    assert_eq!(j["capture"]["missing_side"], "client");
}

#[test]
fn both_sides_give_no_one_side_line() {
    let out = tracer(&["analyze", &seed("client.pcap"), &seed("upstream.pcap")]);
    assert!(!text(&out.stdout).contains("one side only"));
    let j = json(&tracer(&[
        "analyze",
        &seed("client.pcap"),
        &seed("upstream.pcap"),
        "--format",
        "json",
    ]));
    assert!(
        j["capture"].get("missing_side").is_none(),
        "{}",
        j["capture"]
    );
}

#[test]
fn unexplained_claims_no_confidence_in_text_or_json() {
    let out = tracer(&["analyze", &seed("client.pcap")]);
    let report = text(&out.stdout);
    assert!(report.contains(" unexplained"), "{report}");
    assert!(!report.contains("unexplained (probable)"), "{report}");
    assert!(!report.contains("unexplained (proven)"), "{report}");
    let j = json(&tracer(&[
        "analyze",
        &seed("client.pcap"),
        "--format",
        "json",
    ]));
    let verdicts = j["verdicts"].as_array().unwrap();
    assert!(!verdicts.is_empty());
    for v in verdicts {
        if v["cause"] == "unexplained" {
            assert!(v["confidence"].is_null(), "{v}");
        } else {
            assert!(v["confidence"].is_string(), "{v}");
        }
    }
}

// ---- smaller input edges ----

#[test]
fn dash_reads_the_capture_from_standard_input() {
    let from_file = json(&tracer(&[
        "analyze",
        &seed("client.pcap"),
        "--format",
        "json",
    ]));
    let out = Command::new(env!("CARGO_BIN_EXE_tracer"))
        .args(["analyze", "-", "--format", "json"])
        .stdin(std::fs::File::open(fixture("seed", "client.pcap")).unwrap())
        .output()
        .unwrap();
    let from_stdin = json(&out);
    assert_eq!(from_stdin["capture"], from_file["capture"]);
    assert_eq!(
        from_stdin["verdicts"].as_array().map(Vec::len),
        from_file["verdicts"].as_array().map(Vec::len)
    );
}

#[test]
fn a_zero_packet_file_next_to_a_good_one_is_reported() {
    let s = Scratch::new("zeropackets");
    // A pcap file header (microseconds, Ethernet) and nothing after it.
    let mut h = Vec::new();
    h.extend_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
    h.extend_from_slice(&2u16.to_le_bytes());
    h.extend_from_slice(&4u16.to_le_bytes());
    h.extend_from_slice(&[0; 8]);
    h.extend_from_slice(&65_535u32.to_le_bytes());
    h.extend_from_slice(&1u32.to_le_bytes());
    std::fs::write(s.path("empty-capture.pcap"), h).unwrap();
    let out = tracer(&[
        "analyze",
        &seed("client.pcap"),
        &s.str("empty-capture.pcap"),
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    let warning = err
        .lines()
        .find(|l| l.contains("empty-capture.pcap"))
        .unwrap_or_else(|| panic!("no word about the zero-packet file: {err}"));
    assert!(warning.contains("no packets"), "{warning}");
}

#[test]
fn an_empty_file_is_called_empty_not_text() {
    let s = Scratch::new("emptyfile");
    std::fs::write(s.path("nothing.pcap"), b"").unwrap();
    let out = tracer(&["analyze", &s.str("nothing.pcap")]);
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert!(
        err.contains("nothing.pcap") && err.contains("empty"),
        "{err}"
    );
    assert!(!err.contains("looks like text"), "{err}");
}

#[test]
fn a_bundle_whose_last_event_line_was_cut_is_read_with_a_warning() {
    let s = Scratch::new("cutevents");
    std::fs::create_dir(s.path("bundle")).unwrap();
    std::fs::copy(
        fixture("seed", "client.pcap"),
        s.path("bundle/capture.pcap"),
    )
    .unwrap();
    // What a SIGKILL can leave: the last event written halfway.
    std::fs::write(s.path("bundle/events.jsonl"), "{\"ts_ns\":17958").unwrap();
    let out = tracer(&["analyze", &s.str("bundle")]);
    let err = text(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("events.jsonl") && err.contains("cut"), "{err}");
    assert!(text(&out.stdout).starts_with("tracer: 4000 packets"));
}
