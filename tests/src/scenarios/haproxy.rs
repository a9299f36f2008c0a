//! What every HAProxy-fronted scenario shares: the config (`http-reuse always`, the lab's
//! log format on stdout), starting HAProxy in the foreground, and turning its log into
//! ground truth by request id.

use std::collections::HashMap;
use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result};

use crate::load::{outcome_key, ClientResult, Outcome};
use crate::logs::haproxy::{self, Entry};
use crate::scenario::{require_program, Launcher, PROXY_PORT};
use crate::truth::TruthRow;

/// HAProxy logs to its stdout, which the launcher writes here.
pub const LOG: &str = "haproxy.out";

/// Writes `haproxy.cfg` proxying to `upstream` (`ip:port`) and starts HAProxy in the proxy
/// namespace; returns once it listens.
pub fn start(l: &mut dyn Launcher, upstream: &str) -> Result<()> {
    start_with(l, upstream, "")
}

/// [`start`] with `bind` appended to the frontend's `bind` line (` ssl crt …`).
pub fn start_with(l: &mut dyn Launcher, upstream: &str, bind: &str) -> Result<()> {
    let h = l.hosts().clone();
    let dir = l.dir().to_path_buf();
    let cfg = format!(
        "# Written by the tracer lab.\n\
         global\n\
         \x20 log stdout format raw local0\n\
         \x20 nbthread 1\n\
         \x20 pidfile {pid}\n\
         defaults\n\
         \x20 mode http\n\
         \x20 log global\n\
         \x20 timeout connect 5s\n\
         \x20 timeout client 30s\n\
         \x20 timeout server 30s\n\
         frontend lab\n\
         \x20 bind {front}:{PROXY_PORT}{bind}\n\
         \x20 http-request capture req.hdr(X-Request-Id) len 24\n\
         \x20 log-format \"{format}\"\n\
         \x20 default_backend app\n\
         backend app\n\
         \x20 http-reuse always\n\
         \x20 server up {upstream}\n",
        pid = dir.join("haproxy.pid").display(),
        front = h.proxy_front_ip,
        format = haproxy::LOG_FORMAT,
    );
    std::fs::write(dir.join("haproxy.cfg"), cfg)?;
    let mut cmd = Command::new(require_program("haproxy", "haproxy")?);
    cmd.arg("-db").arg("-f").arg(dir.join("haproxy.cfg"));
    l.spawn(&h.proxy_ns, "haproxy", cmd)?;
    l.wait_listening(&h.proxy_ns, h.proxy_front_ip, PROXY_PORT)
}

/// The ground truth of a run whose upstream closes idle keep-alive connections, from
/// HAProxy's log in `dir`.
pub fn read_ground_truth(dir: &Path, results: &[ClientResult]) -> Result<Vec<TruthRow>> {
    let text = std::fs::read_to_string(dir.join(LOG)).with_context(|| format!("reading {LOG}"))?;
    Ok(ground_truth(&text, results))
}

/// One row per non-2xx result, its cause from HAProxy's termination state; a race row says
/// which earlier request the same server-side connection had carried.
pub fn ground_truth(log: &str, results: &[ClientResult]) -> Vec<TruthRow> {
    let entries: Vec<Entry> = log.lines().filter_map(haproxy::parse_line).collect();
    let by_rid: HashMap<u64, usize> = entries
        .iter()
        .enumerate()
        .filter_map(|(i, e)| Some((e.rid?, i)))
        .collect();
    results
        .iter()
        .filter(|r| !matches!(r.outcome, Outcome::Status(200..=299)))
        .map(|r| {
            let entry = by_rid.get(&r.rid).map(|&i| (i, &entries[i]));
            let (cause, evidence) = match entry {
                None => ("unknown", "haproxy logged nothing for this request id".to_owned()),
                Some((i, e)) => {
                    let cause = haproxy::cause(e, true);
                    let mut evidence = e.line.clone();
                    if let Some(prev) = earlier_on_same_connection(&entries[..i], e) {
                        evidence.push_str(&format!(
                            "\n(its server-side connection, source port {}, had carried rid {} before)",
                            e.backend_port.unwrap_or(0),
                            prev.rid.map_or("?".to_owned(), |r| r.to_string())
                        ));
                    }
                    if cause == "unknown" {
                        evidence = format!("haproxy's termination state names no cause: {evidence}");
                    }
                    (cause, evidence)
                }
            };
            TruthRow {
                rid: r.rid,
                client: outcome_key(&r.outcome),
                proxy_status: entry.and_then(|(_, e)| e.status),
                cause: cause.to_owned(),
                subcause: None,
                evidence,
                capture_lost: false,
            }
        })
        .collect()
}

/// The latest earlier request logged on a server-side connection with the same source port.
fn earlier_on_same_connection<'a>(before: &'a [Entry], e: &Entry) -> Option<&'a Entry> {
    let port = e.backend_port?;
    before.iter().rev().find(|p| p.backend_port == Some(port))
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOG: &str = concat!(
        r#"25/Nov/2026:20:44:24.275 rid=20 status=200 tsc=---- retries=0 timers=0/0/1/930/931 server=app/gunicorn backend_port=55960 req="POST /api/orders?rid=20 HTTP/1.1""#,
        "\n",
        r#"25/Nov/2026:20:44:26.205 rid=62 status=502 tsc=SH-- retries=0 timers=0/0/0/-1/1 server=app/gunicorn backend_port=55960 req="POST /api/orders?rid=62 HTTP/1.1""#,
        "\n"
    );

    fn result(rid: u64, outcome: Outcome) -> ClientResult {
        ClientResult {
            rid,
            method: "POST".into(),
            path: "/api/orders".into(),
            start_ns: 0,
            end_ns: 1,
            outcome,
        }
    }

    #[test]
    fn a_race_row_names_the_request_its_connection_carried_before() {
        let rows = ground_truth(
            LOG,
            &[
                result(20, Outcome::Status(200)),
                result(62, Outcome::Status(502)),
            ],
        );
        assert_eq!(rows.len(), 1);
        assert_eq!((rows[0].rid, rows[0].proxy_status), (62, Some(502)));
        assert_eq!(rows[0].cause, "keepalive_race");
        assert!(
            rows[0].evidence.contains("had carried rid 20 before"),
            "{}",
            rows[0].evidence
        );
    }

    #[test]
    fn an_unlogged_failure_is_unknown() {
        let rows = ground_truth(LOG, &[result(99, Outcome::Error("read: reset".into()))]);
        assert_eq!(
            (rows[0].cause.as_str(), rows[0].client.as_str()),
            ("unknown", "error")
        );
    }
}
