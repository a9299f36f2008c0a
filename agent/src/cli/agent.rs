//! `tracer agent`: the node agent (see `tracer::agent`). This file only turns flags into
//! [`AgentOptions`].
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use tracer::agent::discover::Selection;
use tracer::agent::{AgentOptions, VerdictSink, DEFAULT_LISTEN};

use super::capture::parse_duration;

#[derive(clap::Args)]
pub struct Args {
    /// Serve /metrics, /healthz and /readyz here.
    #[arg(long, value_name = "ADDR:PORT", default_value = DEFAULT_LISTEN)]
    pub listen: SocketAddr,
    /// Also follow processes with this name (repeatable); the defaults are traefik, nginx,
    /// envoy, haproxy, caddy, httpd and apache2.
    #[arg(long = "name", value_name = "NAME")]
    pub names: Vec<String>,
    /// Follow only the names given with --name, not the defaults.
    #[arg(long, requires = "names")]
    pub only_names: bool,
    /// Follow only this process (whatever its name) and the proxies in its network namespace.
    #[arg(long, value_name = "PID")]
    pub pid: Option<u32>,
    /// Follow only proxies in this network namespace: a name from `ip netns list` or a
    /// path such as /proc/PID/ns/net.
    #[arg(long, value_name = "NAME|PATH")]
    pub netns: Option<String>,
    /// Where the verdicts go, one JSON object per line: `-` (standard output), a file
    /// (appended to), or `off`.
    #[arg(long, value_name = "FILE|-|off", default_value = "-")]
    pub verdicts: String,
    /// How often to look for proxies that started or exited.
    #[arg(long, value_parser = parse_duration, value_name = "DURATION", default_value = "2s")]
    pub rescan: Duration,
    #[command(flatten)]
    pub following: super::follow::Following,
    /// Attach uprobes to the proxies' TLS libraries (OpenSSL, Go's crypto/tls), so that the
    /// errors they encrypt for their clients are seen; off by default on a node agent until
    /// their cost on a busy TLS proxy is down (see docs/tls.md).
    #[arg(long)]
    pub tls: bool,
    /// Where the kubelet keeps pod logs, which name this node's pods: a proxy in a pod is
    /// labelled with its namespace and pod.
    #[arg(long, value_name = "DIR", default_value = "/var/log/pods")]
    pub pods_dir: PathBuf,
    /// Distinct upstreams labelled in the metrics; the rest are counted as `other`.
    #[arg(long, value_name = "N", default_value_t = 64)]
    pub max_upstreams: usize,
}

pub fn run(args: &Args) -> ExitCode {
    let opts = match options(args) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("tracer agent: {e:#}");
            return ExitCode::from(2);
        }
    };
    match tracer::agent::run(opts) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tracer agent: {e}");
            ExitCode::from(2)
        }
    }
}

fn options(args: &Args) -> anyhow::Result<AgentOptions> {
    use std::os::unix::fs::MetadataExt;
    let mut selection = Selection::with_names(&args.names, args.only_names);
    selection.pid = args.pid;
    if let Some(ns) = &args.netns {
        let named = std::path::Path::new("/run/netns").join(ns);
        let path = if !ns.contains('/') && named.exists() {
            named
        } else {
            PathBuf::from(ns)
        };
        let meta = std::fs::metadata(&path).map_err(|e| {
            anyhow::anyhow!(
                "network namespace `{ns}` ({}): {e}: give a name from `ip netns list` or a path like /proc/PID/ns/net",
                path.display()
            )
        })?;
        selection.netns = Some(meta.ino());
    }
    if args.rescan.is_zero() {
        anyhow::bail!("--rescan must be longer than zero");
    }
    Ok(AgentOptions {
        listen: args.listen,
        selection,
        proc_root: PathBuf::from("/proc"),
        pods_dir: args.pods_dir.clone(),
        rescan: args.rescan,
        copy: args.following.copy_mode(),
        snaplen: args.following.snaplen,
        probe: !args.following.no_probe,
        ports: args.following.ports.clone(),
        verdicts: match args.verdicts.as_str() {
            "-" => VerdictSink::Stdout,
            "off" => VerdictSink::Off,
            path => VerdictSink::File(PathBuf::from(path)),
        },
        max_upstreams: args.max_upstreams,
        max_connections: args.following.max_connections,
        tls: args.tls,
    })
}
