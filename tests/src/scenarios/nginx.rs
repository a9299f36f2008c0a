//! What every nginx-fronted scenario shares: the config (upstream keep-alive, the lab's
//! access-log format, the error log at `info` so that 499s are explained), starting nginx in
//! the foreground with everything inside the run directory, and turning its two logs into
//! ground truth.

use std::collections::HashMap;
use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result};

use crate::load::{outcome_key, ClientResult, Outcome};
use crate::logs::nginx::{self, AccessEntry, ErrorEntry, ErrorKind};
use crate::scenario::{require_program, Launcher, PROXY_PORT};
use crate::truth::TruthRow;

pub const ACCESS_LOG: &str = "nginx-access.log";
pub const ERROR_LOG: &str = "nginx-error.log";

/// Writes `nginx.conf` into the run directory, proxying to `upstream` (`ip:port`) through a
/// keep-alive pool of `keepalive` connections, with `extra` directives in the location, and
/// starts nginx in the proxy namespace; returns once it listens.
pub fn start(l: &mut dyn Launcher, upstream: &str, keepalive: u32, extra: &str) -> Result<()> {
    start_with(l, upstream, keepalive, extra, "", "")
}

/// [`start`], with `listen` appended to the `listen` directive (` ssl`) and `server`
/// lines in the `server` block (the certificate).
pub fn start_with(
    l: &mut dyn Launcher,
    upstream: &str,
    keepalive: u32,
    extra: &str,
    listen: &str,
    server: &str,
) -> Result<()> {
    let h = l.hosts().clone();
    let dir = l.dir().to_path_buf();
    let d = dir.display();
    std::fs::create_dir_all(dir.join("nginx-tmp"))?;
    let conf = format!(
        "# Written by the tracer lab.\n\
         worker_processes 1;\n\
         pid {d}/nginx.pid;\n\
         error_log {d}/{ERROR_LOG} info;\n\
         events {{ worker_connections 4096; }}\n\
         http {{\n\
         \x20 client_body_temp_path {d}/nginx-tmp/body;\n\
         \x20 proxy_temp_path {d}/nginx-tmp/proxy;\n\
         \x20 fastcgi_temp_path {d}/nginx-tmp/fastcgi;\n\
         \x20 uwsgi_temp_path {d}/nginx-tmp/uwsgi;\n\
         \x20 scgi_temp_path {d}/nginx-tmp/scgi;\n\
         \x20 log_format lab '{format}';\n\
         \x20 access_log {d}/{ACCESS_LOG} lab;\n\
         \x20 upstream app {{\n\
         \x20   server {upstream};\n\
         \x20   keepalive {keepalive};\n\
         \x20 }}\n\
         \x20 server {{\n\
         \x20   listen {front}:{PROXY_PORT}{listen};\n\
         \x20   {server}\n\
         \x20   location / {{\n\
         \x20     proxy_pass http://app;\n\
         \x20     proxy_http_version 1.1;\n\
         \x20     proxy_set_header Connection \"\";\n\
         \x20     # The default, spelled out: a POST whose request was sent is never retried\n\
         \x20     # (that would take `non_idempotent`), so every failed attempt reaches the client.\n\
         \x20     proxy_next_upstream error timeout;\n\
         \x20     {extra}\n\
         \x20   }}\n\
         \x20 }}\n\
         }}\n",
        format = nginx::LOG_FORMAT,
        front = h.proxy_front_ip,
    );
    std::fs::write(dir.join("nginx.conf"), conf)?;
    let mut cmd = Command::new(require_program("nginx", "nginx")?);
    cmd.arg("-p")
        .arg(&dir)
        .arg("-c")
        .arg(dir.join("nginx.conf"))
        .arg("-e")
        .arg(dir.join(ERROR_LOG))
        .args(["-g", "daemon off;"]);
    l.spawn(&h.proxy_ns, "nginx", cmd)?;
    l.wait_listening(&h.proxy_ns, h.proxy_front_ip, PROXY_PORT)
}

/// What a reset or an early EOF from the upstream means in a scenario.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamLoss {
    /// The upstream closes idle keep-alive connections: a reset or EOF where a response
    /// header was due is the proxy's request crossing that close.
    KeepaliveRace,
    /// The upstream breaks busy connections: a reset is a crash, an EOF an early close.
    Crash,
}

/// The proxy's logs, by request id.
#[derive(Debug, Default)]
pub struct Logs {
    pub access: HashMap<u64, AccessEntry>,
    pub errors: HashMap<u64, Vec<ErrorEntry>>,
}

impl Logs {
    /// Reads nginx's access and error logs from the run directory.
    pub fn read(dir: &Path) -> Result<Logs> {
        let read =
            |f: &str| std::fs::read_to_string(dir.join(f)).with_context(|| format!("reading {f}"));
        Ok(Logs::parse(&read(ACCESS_LOG)?, &read(ERROR_LOG)?))
    }

    pub fn parse(access: &str, errors: &str) -> Logs {
        let mut logs = Logs::default();
        for a in access.lines().filter_map(nginx::parse_access) {
            if let Some(rid) = a.rid {
                logs.access.insert(rid, a);
            }
        }
        for e in errors.lines().filter_map(nginx::parse_error) {
            if let Some(rid) = e.rid {
                logs.errors.entry(rid).or_default().push(e);
            }
        }
        logs
    }
}

/// One row per non-2xx client result, its cause from what nginx logged for that request.
pub fn ground_truth(logs: &Logs, results: &[ClientResult], loss: UpstreamLoss) -> Vec<TruthRow> {
    results
        .iter()
        .filter(|r| !matches!(r.outcome, Outcome::Status(200..=299)))
        .map(|r| {
            let access = logs.access.get(&r.rid);
            let errors = logs.errors.get(&r.rid).map_or(&[][..], Vec::as_slice);
            let (cause, error) = cause(access, errors, loss);
            let mut evidence: Vec<&str> = error.iter().map(|e| e.line.as_str()).collect();
            evidence.extend(access.map(|a| a.line.as_str()));
            let mut evidence = evidence.join("\n");
            if evidence.is_empty() {
                evidence = "nginx logged nothing for this request id".to_owned();
            } else if cause == "unknown" {
                evidence = format!("nginx's logs do not name a cause: {evidence}");
            }
            if access.is_some_and(|a| a.attempts() > 1) {
                evidence.push_str("\n(nginx retried this request upstream)");
            }
            let subcause = error
                .filter(|_| cause == "keepalive_race")
                .and_then(ErrorEntry::race_subcause)
                .map(str::to_owned);
            TruthRow {
                rid: r.rid,
                client: outcome_key(&r.outcome),
                proxy_status: access.and_then(|a| a.status),
                cause: cause.to_owned(),
                subcause,
                evidence,
                capture_lost: false,
            }
        })
        .collect()
}

/// The cause of one failed request, and the error line it rests on.
///
/// The error log names what nginx saw; without an error line, a 5xx that came from the
/// upstream (`$upstream_status` equals `$status`) is the upstream's own answer.
pub fn cause<'a>(
    access: Option<&AccessEntry>,
    errors: &'a [ErrorEntry],
    loss: UpstreamLoss,
) -> (&'static str, Option<&'a ErrorEntry>) {
    let named = errors.iter().find(|e| e.kind != ErrorKind::Other);
    if let Some(e) = named {
        let cause = match (e.kind, loss) {
            (ErrorKind::Refused, _) => "upstream_refused",
            (ErrorKind::Timeout, _) => "proxy_timeout",
            (ErrorKind::ClientClosed, _) => "client_abort",
            (ErrorKind::Reset | ErrorKind::PrematureClose, UpstreamLoss::KeepaliveRace) => {
                "keepalive_race"
            }
            (ErrorKind::Reset, UpstreamLoss::Crash) => "upstream_reset",
            (ErrorKind::PrematureClose, UpstreamLoss::Crash) => "upstream_closed_early",
            (ErrorKind::Other, _) => "unknown",
        };
        return (cause, Some(e));
    }
    let first = errors.first();
    match access {
        Some(a) if a.status == Some(499) => ("client_abort", first),
        Some(a)
            if a.status.is_some_and(|s| s >= 500)
                && errors.is_empty()
                && a.status_from_upstream() =>
        {
            ("upstream_generated", None)
        }
        _ => ("unknown", first),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ACCESS: &str = concat!(
        r#"1795638925.018 rid="57" arg_rid="57" status=502 upstream_status="502" upstream_addr="198.18.2.2:9000" request_time=0.005 upstream_connect_time="0.000" upstream_response_time="0.003""#,
        "\n",
        r#"1795638925.019 rid="58" arg_rid="58" status=500 upstream_status="500" upstream_addr="198.18.2.2:9000" request_time=0.001 upstream_connect_time="0.000" upstream_response_time="0.001""#,
        "\n",
        r#"1795638925.019 rid="59" arg_rid="59" status=502 upstream_status="502" upstream_addr="198.18.2.2:9000" request_time=0.001 upstream_connect_time="0.000" upstream_response_time="0.001""#,
        "\n"
    );
    const ERRORS: &str = concat!(
        "2026/11/25 20:31:04 [notice] 11949#11949: using the \"epoll\" event method\n",
        r#"2026/11/25 20:35:25 [error] 17374#17374: *2236 recv() failed (104: Connection reset by peer) while reading response header from upstream, client: 198.18.1.1, server: , request: "POST /x?rid=57 HTTP/1.1", upstream: "http://198.18.2.2:9000/x?rid=57", host: "lab.tracer""#,
        "\n"
    );

    fn result(rid: u64, status: u16) -> ClientResult {
        ClientResult {
            rid,
            method: "POST".into(),
            path: "/x".into(),
            start_ns: 0,
            end_ns: 1,
            outcome: Outcome::Status(status),
        }
    }

    #[test]
    fn reset_is_a_race_or_a_crash_by_scenario() {
        let logs = Logs::parse(ACCESS, ERRORS);
        let race = ground_truth(&logs, &[result(57, 502)], UpstreamLoss::KeepaliveRace);
        assert_eq!(race[0].cause, "keepalive_race");
        assert_eq!(race[0].subcause.as_deref(), Some("closed_unread"));
        assert_eq!(race[0].proxy_status, Some(502));
        assert!(
            race[0].evidence.starts_with("2026/11/25 20:35:25 [error]"),
            "{}",
            race[0].evidence
        );
        let crash = ground_truth(&logs, &[result(57, 502)], UpstreamLoss::Crash);
        assert_eq!(crash[0].cause, "upstream_reset");
    }

    #[test]
    fn a_5xx_without_an_error_line_came_from_the_upstream() {
        let logs = Logs::parse(ACCESS, ERRORS);
        let rows = ground_truth(
            &logs,
            &[result(58, 500), result(59, 502)],
            UpstreamLoss::Crash,
        );
        assert_eq!(rows[0].cause, "upstream_generated");
        assert_eq!(rows[1].cause, "upstream_generated");
    }

    #[test]
    fn successes_have_no_row_and_unlogged_failures_are_unknown() {
        let logs = Logs::parse(ACCESS, ERRORS);
        let rows = ground_truth(
            &logs,
            &[result(1, 200), result(60, 502)],
            UpstreamLoss::KeepaliveRace,
        );
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].cause, "unknown");
        assert_eq!(rows[0].proxy_status, None);
        assert!(rows[0].evidence.contains("logged nothing"));
    }
}
