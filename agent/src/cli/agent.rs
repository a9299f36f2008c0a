//! `tracer agent`: the node agent (see `tracer::agent`). This file only turns flags into
//! [`AgentOptions`].
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use tracer::agent::discover::Selection;
use tracer::agent::{AgentOptions, VerdictSink, DEFAULT_LISTEN};
use tracer::session::CopyMode;

use super::capture::{parse_duration, parse_snaplen};

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
    /// Copy every TCP segment with data or SYN/FIN/RST instead of the kernel's selection
    /// (every request seen, at several times the cost).
    #[arg(long)]
    pub all_data: bool,
    /// With the kernel's selection: quiet time after which a connection's next exchange is
    /// captured.
    #[arg(long, value_parser = parse_duration, value_name = "DURATION", default_value = "500ms")]
    pub sparse_idle: Duration,
    /// With the kernel's selection: how long a connection is copied whole after its SYN,
    /// its first data, a reuse or the reply to a kept request.
    #[arg(long, value_parser = parse_duration, value_name = "DURATION", default_value = "25ms")]
    pub sparse_hot: Duration,
    /// Only these TCP ports (repeatable).
    #[arg(long = "port", value_name = "PORT")]
    pub ports: Vec<u16>,
    /// Bytes kept of each packet (enough for HTTP message heads); at least 134, what a
    /// status line behind the longest link, IP and TCP headers needs.
    #[arg(long, default_value_t = 512, value_parser = parse_snaplen)]
    pub snaplen: u32,
    /// Packets only: do not load the kernel probe.
    #[arg(long)]
    pub no_probe: bool,
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
    /// Connections each followed proxy's engine tracks at most; when full, the oldest idle
    /// or half-open are forgotten first (counted in tracer_connections_evicted_total).
    #[arg(long, value_name = "N", default_value_t = tracer::flow::DEFAULT_MAX_CONNECTIONS)]
    pub max_connections: usize,
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
    if args.snaplen < 64 {
        anyhow::bail!(
            "--snaplen {} cannot hold an HTTP status line: give at least 64",
            args.snaplen
        );
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
        copy: if args.all_data {
            CopyMode::AllData
        } else {
            CopyMode::Sparse {
                idle: args.sparse_idle,
                hot: args.sparse_hot,
            }
        },
        snaplen: args.snaplen,
        probe: !args.no_probe,
        ports: args.ports.clone(),
        verdicts: match args.verdicts.as_str() {
            "-" => VerdictSink::Stdout,
            "off" => VerdictSink::Off,
            path => VerdictSink::File(PathBuf::from(path)),
        },
        max_upstreams: args.max_upstreams,
        max_connections: args.max_connections,
        tls: args.tls,
    })
}
