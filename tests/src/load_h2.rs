//! An HTTP/2 load: `curl --http2` over TLS, every request of the load multiplexed on one
//! connection (`--parallel`, `concurrency` streams at a time), each with its id like the
//! plain load's. curl reports each transfer's status, or its error, on a line of its own.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};

use crate::load::{ClientResult, LoadProfile, Outcome};
use crate::load_tls::SERVER_NAME;
use crate::scenario::require_program;

/// curl's config for `profile`: one transfer per request, each with its own id.
pub fn curl_config(target: SocketAddr, profile: &LoadProfile) -> String {
    let mut c = String::new();
    for rid in 1..=u64::from(profile.requests) {
        let body = format!(
            "{{\\\"rid\\\":{rid},\\\"pad\\\":\\\"{}\\\"}}",
            "x".repeat(profile.body_len.saturating_sub(20))
        );
        let _ = write!(
            c,
            "url = \"https://{SERVER_NAME}:{port}{path}?rid={rid}\"\n\
             resolve = \"{SERVER_NAME}:{port}:{ip}\"\n\
             http2\ninsecure\nsilent\nshow-error\n\
             header = \"X-Request-Id: {rid}\"\n\
             header = \"Content-Type: application/json\"\n\
             data-binary = \"{body}\"\n\
             max-time = {timeout}\n\
             output = \"/dev/null\"\n\
             write-out = \"%{{http_code}} {rid} %{{errormsg}}\\n\"\n",
            port = target.port(),
            ip = target.ip(),
            path = profile.path,
            timeout = profile.client_timeout.as_secs_f64(),
        );
        if rid < u64::from(profile.requests) {
            c.push_str("next\n");
        }
    }
    c
}

/// One line of curl's `write-out`: `CODE RID ERRORMSG`.
pub fn parse_line(line: &str) -> Option<(u64, Outcome)> {
    let mut f = line.splitn(3, ' ');
    let code: u16 = f.next()?.parse().ok()?;
    let rid = f.next()?.parse().ok()?;
    let err = f.next().unwrap_or("").trim();
    let outcome = if code != 0 {
        Outcome::Status(code)
    } else if err.contains("timed out") {
        Outcome::Timeout
    } else if err.is_empty() {
        Outcome::Error("no response".into())
    } else {
        Outcome::Error(err.to_owned())
    };
    Some((rid, outcome))
}

fn unix_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
}

/// Sends `profile` with curl from namespace `ns`.
pub fn run(ns: &str, target: SocketAddr, profile: &LoadProfile) -> Result<Vec<ClientResult>> {
    let curl = require_program("curl", "curl")?;
    let dir = std::env::temp_dir().join(format!("tracer-lab-h2-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let config = dir.join("curl.conf");
    std::fs::write(&config, curl_config(target, profile))?;
    let parallel = profile.concurrency.max(1).to_string();
    let max = profile.max_duration.as_secs().max(1).to_string();
    let start_ns = unix_ns();
    let out = crate::net::in_netns(ns, move || {
        Command::new(&curl)
            .args(["--parallel", "--parallel-max", &parallel])
            .args(["--max-time", &max])
            .arg("--config")
            .arg(&config)
            .output()
    })?
    .context("running curl")?;
    let end_ns = unix_ns();
    std::fs::remove_dir_all(&dir).ok();
    let text = String::from_utf8_lossy(&out.stdout);
    let mut results: Vec<ClientResult> = text
        .lines()
        .filter_map(parse_line)
        .map(|(rid, outcome)| ClientResult {
            rid,
            method: "POST".into(),
            path: profile.path.clone(),
            start_ns,
            end_ns,
            outcome,
        })
        .collect();
    if results.is_empty() {
        bail!(
            "curl reported no transfer: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    results.sort_by_key(|r| r.rid);
    Ok(results)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn curl_lines_give_status_or_error() {
        assert_eq!(parse_line("502 17 "), Some((17, Outcome::Status(502))));
        assert_eq!(
            parse_line("000 18 Operation timed out after 5000 milliseconds"),
            Some((18, Outcome::Timeout))
        );
        assert_eq!(
            parse_line("000 19 HTTP/2 stream 3 was not closed cleanly"),
            Some((
                19,
                Outcome::Error("HTTP/2 stream 3 was not closed cleanly".into())
            ))
        );
        assert_eq!(parse_line("curl: (6) bad"), None);
    }

    #[test]
    fn every_request_is_its_own_transfer_with_its_id() {
        let p = LoadProfile {
            requests: 2,
            concurrency: 2,
            pacing: crate::load::Pacing::BackToBack,
            max_duration: Duration::from_secs(5),
            client_timeout: Duration::from_secs(5),
            path: "/x".into(),
            body_len: 30,
        };
        let c = curl_config("198.18.0.1:8080".parse().unwrap(), &p);
        assert_eq!(c.matches("next\n").count(), 1);
        assert!(c.contains("header = \"X-Request-Id: 2\""));
        assert!(c.contains("url = \"https://lab.tracer:8080/x?rid=1\""));
    }
}
