//! What every Caddy-fronted scenario shares: the Caddyfile (plain HTTP, or TLS with Caddy's
//! own internal CA for the clients), starting Caddy with everything in the run directory,
//! and turning its JSON access and error logs into ground truth by request id.

use std::collections::HashMap;
use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result};

use crate::load::{outcome_key, ClientResult, Outcome};
use crate::logs::caddy::{self, Kind};
use crate::scenario::{require_program, Launcher, PROXY_PORT};
use crate::truth::TruthRow;

/// Writes the Caddyfile proxying to `upstream` (`ip:port`) and starts Caddy in the proxy
/// namespace; with `tls`, the clients' side is HTTPS for the lab's name
/// ([`crate::load_tls::SERVER_NAME`]) with a certificate from Caddy's own internal CA
/// (nothing is installed in the system's trust store). Returns once it listens.
pub fn start(l: &mut dyn Launcher, upstream: &str, tls: bool) -> Result<()> {
    let h = l.hosts().clone();
    let dir = l.dir().to_path_buf();
    let (global, site, site_tls) = if tls {
        (
            "\tauto_https disable_redirects\n\tskip_install_trust\n",
            format!("https://{}:{PROXY_PORT}", crate::load_tls::SERVER_NAME),
            "\ttls internal\n",
        )
    } else {
        ("\tauto_https off\n", format!("http://:{PROXY_PORT}"), "")
    };
    let caddyfile = format!(
        "{{\n\tadmin off\n{global}\tlog default {{\n\t\toutput file {d}/caddy-error.log\n\t\tformat json\n\t}}\n}}\n\
         {site} {{\n\tbind {front}\n{site_tls}\tlog {{\n\t\toutput file {d}/caddy-access.log\n\t\tformat json\n\t}}\n\
         \treverse_proxy {upstream}\n}}\n",
        d = dir.display(),
        front = h.proxy_front_ip,
    );
    std::fs::write(dir.join("Caddyfile"), caddyfile)?;
    let mut caddy = Command::new(require_program("caddy", "caddy")?);
    caddy
        .args(["run", "--adapter", "caddyfile", "--config", "Caddyfile"])
        .env("HOME", &dir)
        .env("XDG_DATA_HOME", dir.join("caddy-data"))
        .env("XDG_CONFIG_HOME", dir.join("caddy-config"));
    l.spawn(&h.proxy_ns, "caddy", caddy)?;
    l.wait_listening(&h.proxy_ns, h.proxy_front_ip, PROXY_PORT)
}

/// One row per non-2xx result: the cause Go's transport error names in Caddy's error log,
/// or `upstream_generated` for a 5xx Caddy only passed on.
pub fn ground_truth(dir: &Path, results: &[ClientResult]) -> Result<Vec<TruthRow>> {
    let mut access: HashMap<u64, caddy::CaddyEntry> = HashMap::new();
    let mut errors: HashMap<u64, caddy::CaddyEntry> = HashMap::new();
    for file in ["caddy-access.log", "caddy-error.log"] {
        // Behind TLS, Caddy may write the site's access lines to its default log alone.
        if file == "caddy-access.log" && !dir.join(file).exists() {
            continue;
        }
        let text =
            std::fs::read_to_string(dir.join(file)).with_context(|| format!("reading {file}"))?;
        for e in text.lines().filter_map(caddy::parse_line) {
            let Some(rid) = e.rid else { continue };
            match e.kind {
                Kind::Access => access.insert(rid, e),
                Kind::Error => errors.insert(rid, e),
            };
        }
    }
    Ok(results
        .iter()
        .filter(|r| !matches!(r.outcome, Outcome::Status(200..=299)))
        .map(|r| {
            let logged = access.get(&r.rid);
            let error = errors.get(&r.rid);
            let (cause, subcause) = match (error, logged) {
                (Some(e), _) => match caddy::race_cause(&e.msg) {
                    Some((c, s)) => (c.to_owned(), s.map(str::to_owned)),
                    None => ("unknown".to_owned(), None),
                },
                (None, Some(a)) if a.status.is_some_and(|s| s >= 500) => {
                    ("upstream_generated".to_owned(), None)
                }
                _ => ("unknown".to_owned(), None),
            };
            let evidence = match (error, logged) {
                (Some(e), _) => e.line.clone(),
                (None, Some(a)) => a.line.clone(),
                (None, None) => "the proxy logged nothing for this request id".to_owned(),
            };
            TruthRow {
                rid: r.rid,
                client: outcome_key(&r.outcome),
                proxy_status: logged
                    .and_then(|a| a.status)
                    .or(error.and_then(|e| e.status)),
                cause,
                subcause,
                evidence,
                capture_lost: false,
            }
        })
        .collect())
}
