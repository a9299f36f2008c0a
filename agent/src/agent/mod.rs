//! `tracer agent`: the node agent. It finds the proxies on the node ([`discover`]), follows
//! each network namespace that holds one with a [`LiveSession`] (the kernel's selection
//! and the probe, the same engine as `tracer capture`), and exports what it finds as
//! Prometheus metrics ([`metrics`]) and a stream of verdicts as JSON lines.
//!
//! Threads: the tokio runtime serves the HTTP endpoints, rescans `/proc` and waits for
//! SIGTERM/SIGINT; each followed namespace has a thread of its own running its session's
//! blocking loop, so that a busy proxy never delays a scrape and a failing one stops only
//! its own session.

pub mod discover;
mod heap;
pub mod metrics;
mod serve;
pub mod sockets;

use std::collections::BTreeMap;
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use discover::{Selection, Target};
use metrics::{Metrics, MetricsError, ProxyLabels};

use crate::session::{CopyMode, LiveSession, SessionOptions, SessionStats};
use crate::verdict::Verdict;

/// The agent's default `--listen` address (9464: no other well-known exporter uses it).
pub const DEFAULT_LISTEN: &str = "0.0.0.0:9464";
/// How long a stopping session may take to hand over its last verdicts.
const STOP_GRACE: Duration = Duration::from_secs(5);
/// How often a session's counters and inferred timeouts are copied into the metrics.
const METRICS_EVERY: Duration = Duration::from_secs(1);
/// How often the proxy's sockets are read again from `/proc` (to attribute responses).
const SOCKETS_EVERY: Duration = Duration::from_secs(5);
/// For this long after a session starts, the sockets are read at every metrics tick while
/// some sender's responses wait to be attributed (see [`Responses::waiting`]).
const EAGER_SOCKETS_FOR: Duration = Duration::from_secs(30);

/// Where the verdicts go, one JSON object per line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VerdictSink {
    Stdout,
    File(PathBuf),
    Off,
}

/// What the agent follows and where it reports.
#[derive(Debug, Clone)]
pub struct AgentOptions {
    pub listen: SocketAddr,
    pub selection: Selection,
    /// Where processes are listed (`/proc`).
    pub proc_root: PathBuf,
    /// The kubelet's pod log directory (`/var/log/pods`): where a proxy's pod is named.
    pub pods_dir: PathBuf,
    /// How often `/proc` is scanned for proxies that started or exited.
    pub rescan: Duration,
    pub copy: CopyMode,
    pub snaplen: u32,
    /// Load the kernel probe (and fail at start when it cannot load).
    pub probe: bool,
    pub ports: Vec<u16>,
    pub verdicts: VerdictSink,
    /// Distinct `upstream` label values kept.
    pub max_upstreams: usize,
    /// Bound of each session's connection table.
    pub max_connections: usize,
    /// Attach uprobes to the proxies' TLS libraries (see `docs/tls.md` for the cost).
    pub tls: bool,
}

/// Why the agent could not start.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// The metrics endpoint's address could not be bound.
    #[error("cannot listen on {addr}: {source} (choose another with --listen)")]
    Listen {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    /// The async runtime could not start.
    #[error("cannot start the agent's runtime: {0}")]
    Runtime(#[source] std::io::Error),
    #[error(transparent)]
    Metrics(#[from] MetricsError),
    /// The kernel probe cannot run here.
    #[error(
        "the kernel probe cannot run on this node: {0} (or run with --no-probe, packets only)"
    )]
    Probe(String),
    /// The verdict stream's file could not be opened.
    #[error("cannot open {path} for the verdicts: {source}")]
    Sink {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Serving the endpoints failed.
    #[error("the HTTP endpoint failed: {0}")]
    Serve(#[source] std::io::Error),
}

/// The state of one followed namespace, for `/readyz`.
#[derive(Debug, Clone)]
struct Followed {
    name: String,
    /// The probe and the selection (as asked for) are attached.
    attached: bool,
    /// Why the session stopped, if it failed.
    failed: Option<String>,
}

/// What the endpoints and the sessions share.
pub struct Shared {
    metrics: Metrics,
    sink: Mutex<Option<Box<dyn Write + Send>>>,
    followed: Mutex<BTreeMap<u64, Followed>>,
    /// Whether the sessions are expected to attach the probe and the selection.
    wants_probe: bool,
    wants_selection: bool,
}

impl Shared {
    /// `Ok(summary)` when every followed proxy has what it needs attached.
    fn readiness(&self) -> Result<String, String> {
        let followed = self
            .followed
            .lock()
            .map_err(|_| "internal state poisoned")?;
        let mut waiting = Vec::new();
        for (ns, f) in followed.iter() {
            if let Some(why) = &f.failed {
                waiting.push(format!("{} (netns {ns}) failed: {why}", f.name));
            } else if !f.attached {
                waiting.push(format!("{} (netns {ns}) is starting", f.name));
            }
        }
        if waiting.is_empty() {
            Ok(format!("{} proxies followed", followed.len()))
        } else {
            Err(waiting.join("; "))
        }
    }

    fn set_followed(&self, netns: u64, f: Option<Followed>) {
        if let Ok(mut m) = self.followed.lock() {
            match f {
                Some(f) => {
                    m.insert(netns, f);
                }
                None => {
                    m.remove(&netns);
                }
            }
        }
    }

    /// Writes one verdict of proxy `p` (in network namespace `netns`) as a JSON line, and
    /// counts it.
    fn verdict(&self, p: &ProxyLabels, netns: u64, v: &Verdict) {
        self.metrics.verdict(p, v);
        let Ok(mut sink) = self.sink.lock() else {
            return;
        };
        let Some(w) = sink.as_mut() else {
            return;
        };
        let mut value = crate::report::json::verdict_value(v);
        if let Some(obj) = value.as_object_mut() {
            obj.insert("proxy".into(), p.proxy.clone().into());
            obj.insert("netns".into(), netns.into());
            if !p.namespace.is_empty() {
                obj.insert("namespace".into(), p.namespace.clone().into());
                obj.insert("pod".into(), p.pod.clone().into());
            }
        }
        // A log shipper that went away must not stop the agent: the metrics go on.
        if serde_json::to_writer(&mut *w, &value).is_ok() {
            let _ = w.write_all(b"\n");
            let _ = w.flush();
        }
    }
}

/// One followed namespace's thread.
struct Follower {
    stop: Arc<AtomicBool>,
    /// The proxy's processes in the namespace now (they change when it reloads).
    pids: Arc<Mutex<Vec<u32>>>,
    thread: JoinHandle<()>,
}

/// The labels of a followed proxy: its name, and its Kubernetes namespace and pod when
/// its process runs in a pod's cgroup that the kubelet's layout names.
fn labels_for(target: &Target, opts: &AgentOptions) -> ProxyLabels {
    let mut node = crate::pod::Node::with_pods_dir(&opts.pods_dir);
    node.proc_dir.clone_from(&opts.proc_root);
    let pod = target
        .pids
        .iter()
        .find_map(|pid| node.pod_of_pid(*pid).ok().flatten());
    ProxyLabels {
        proxy: target.name.clone(),
        namespace: pod
            .as_ref()
            .and_then(|p| p.namespace.clone())
            .unwrap_or_default(),
        pod: pod.and_then(|p| p.name).unwrap_or_default(),
    }
}

/// Checks at start that the probe and the selection can load, so that a node without the
/// capabilities fails at once with the reason instead of never becoming ready.
fn preflight(opts: &AgentOptions) -> Result<(), AgentError> {
    if !opts.probe {
        return Ok(());
    }
    let config = crate::probe::ProbeConfig::default();
    let probe = crate::probe::Probe::load(&config).map_err(|e| AgentError::Probe(e.to_string()))?;
    for w in probe.warnings() {
        eprintln!("tracer agent: warning: {w}");
    }
    Ok(())
}

fn open_sink(s: &VerdictSink) -> Result<Option<Box<dyn Write + Send>>, AgentError> {
    Ok(match s {
        VerdictSink::Off => None,
        VerdictSink::Stdout => Some(Box::new(std::io::stdout())),
        VerdictSink::File(path) => {
            let f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map_err(|source| AgentError::Sink {
                    path: path.clone(),
                    source,
                })?;
            Some(Box::new(std::io::LineWriter::new(f)))
        }
    })
}

/// Runs the agent until SIGTERM or SIGINT; then stops every session (each hands over its
/// last verdicts) and returns.
///
/// # Errors
/// When the agent cannot start: the address is taken, the probe cannot run, the verdict
/// file cannot be opened.
pub fn run(opts: AgentOptions) -> Result<(), AgentError> {
    preflight(&opts)?;
    heap::settle();
    let shared = Arc::new(Shared {
        metrics: Metrics::new(opts.max_upstreams)?,
        sink: Mutex::new(open_sink(&opts.verdicts)?),
        followed: Mutex::new(BTreeMap::new()),
        wants_probe: opts.probe,
        wants_selection: matches!(opts.copy, CopyMode::Sparse { .. }),
    });
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()
        .map_err(AgentError::Runtime)?;
    rt.block_on(async_main(opts, shared))
}

async fn async_main(opts: AgentOptions, shared: Arc<Shared>) -> Result<(), AgentError> {
    use tokio::signal::unix::{signal, SignalKind};
    let listener = tokio::net::TcpListener::bind(opts.listen)
        .await
        .map_err(|source| AgentError::Listen {
            addr: opts.listen,
            source,
        })?;
    let bound = listener.local_addr().unwrap_or(opts.listen);
    eprintln!(
        "tracer agent: serving /metrics, /healthz and /readyz on http://{bound}; following {}",
        opts.selection.names.join(", ")
    );
    let mut term = signal(SignalKind::terminate()).map_err(AgentError::Runtime)?;
    let mut int = signal(SignalKind::interrupt()).map_err(AgentError::Runtime)?;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let server = {
        let mut rx = stop_rx.clone();
        tokio::spawn(serve::serve(listener, shared.clone(), async move {
            let _ = rx.wait_for(|s| *s).await;
        }))
    };
    let mut followers: BTreeMap<u64, Follower> = BTreeMap::new();
    let mut tick = tokio::time::interval(opts.rescan);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let signal_name = loop {
        tokio::select! {
            _ = term.recv() => break "SIGTERM",
            _ = int.recv() => break "SIGINT",
            _ = tick.tick() => rescan(&opts, &shared, &mut followers),
        }
    };
    eprintln!("tracer agent: {signal_name}: stopping");
    for f in followers.values() {
        f.stop.store(true, Ordering::Relaxed);
    }
    let deadline = Instant::now() + STOP_GRACE;
    for (_, f) in std::mem::take(&mut followers) {
        while !f.thread.is_finished() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        if f.thread.is_finished() {
            let _ = f.thread.join();
        }
    }
    let _ = stop_tx.send(true);
    match server.await {
        Ok(r) => r.map_err(AgentError::Serve),
        Err(e) => Err(AgentError::Serve(std::io::Error::other(e))),
    }
}

/// Looks for proxies that started or exited: starts a session for each new namespace,
/// stops the sessions of namespaces left without a proxy, and reaps finished threads.
fn rescan(opts: &AgentOptions, shared: &Arc<Shared>, followers: &mut BTreeMap<u64, Follower>) {
    let targets = discover::choose(&discover::scan(&opts.proc_root), &opts.selection);
    followers.retain(|ns, f| {
        let alive = !f.thread.is_finished();
        let wanted = targets.iter().any(|t| t.netns == *ns);
        if !wanted {
            f.stop.store(true, Ordering::Relaxed);
        }
        if alive {
            return true; // a stopping session is reaped once finished
        }
        shared.set_followed(*ns, None);
        false
    });
    for t in targets {
        if let Some(f) = followers.get(&t.netns) {
            if let Ok(mut pids) = f.pids.lock() {
                pids.clone_from(&t.pids);
            }
            continue;
        }
        let stop = Arc::new(AtomicBool::new(false));
        let pids = Arc::new(Mutex::new(t.pids.clone()));
        let thread = {
            let (t, stop, shared, opts, pids) = (
                t.clone(),
                stop.clone(),
                shared.clone(),
                opts.clone(),
                pids.clone(),
            );
            std::thread::Builder::new()
                .name(format!("follow-{}", t.netns))
                .spawn(move || follow(&t, &opts, &shared, &stop, &pids))
        };
        match thread {
            Ok(thread) => {
                shared.set_followed(
                    t.netns,
                    Some(Followed {
                        name: t.name.clone(),
                        attached: false,
                        failed: None,
                    }),
                );
                followers.insert(t.netns, Follower { stop, pids, thread });
            }
            Err(e) => {
                eprintln!("tracer agent: cannot start following {}: {e}", t.name);
                shared.metrics.sessions_failed.inc();
            }
        }
    }
    let live = followers
        .values()
        .filter(|f| !f.stop.load(Ordering::Relaxed))
        .count();
    shared
        .metrics
        .proxies_followed
        .set(i64::try_from(live).unwrap_or(i64::MAX));
}

/// Follows one namespace until told to stop (or the capture fails).
fn follow(
    target: &Target,
    opts: &AgentOptions,
    shared: &Shared,
    stop: &AtomicBool,
    pids: &Mutex<Vec<u32>>,
) {
    let labels = labels_for(target, opts);
    let who = if labels.pod.is_empty() {
        format!(
            "{} (pid {}, netns {})",
            target.name, target.pids[0], target.netns
        )
    } else {
        format!(
            "{} in pod {}/{} (pid {}, netns {})",
            target.name, labels.namespace, labels.pod, target.pids[0], target.netns
        )
    };
    let started = LiveSession::start(SessionOptions {
        interfaces: Vec::new(),
        netns: Some(target.netns_path(&opts.proc_root)),
        pid: None,
        ports: opts.ports.clone(),
        snaplen: opts.snaplen,
        copy: opts.copy.clone(),
        probe: opts.probe,
        proxy: None,
        upstream: None,
        bundle: None,
        keep_verdicts: false,
        max_connections: opts.max_connections,
        tls: opts.tls,
    });
    let mut session = match started {
        Ok((s, notices)) => {
            for n in notices {
                eprintln!("tracer agent: {who}: {n}");
            }
            s
        }
        Err(e) => {
            eprintln!("tracer agent: {who}: not followed: {e}");
            shared.metrics.sessions_failed.inc();
            shared.set_followed(
                target.netns,
                Some(Followed {
                    name: target.name.clone(),
                    attached: false,
                    failed: Some(e.to_string()),
                }),
            );
            return;
        }
    };
    let attached = (!shared.wants_probe || session.has_probe())
        && (!shared.wants_selection || session.is_sparse());
    shared.set_followed(
        target.netns,
        Some(Followed {
            name: target.name.clone(),
            attached,
            failed: (!attached).then(|| "the probe or the selection did not attach".to_owned()),
        }),
    );
    eprintln!("tracer agent: following {who}");
    let mut last = SessionStats::default();
    let mut last_metrics = Instant::now();
    let mut responses = Responses::default();
    let mut last_sockets: Option<Instant> = None;
    let mut last_trim = Instant::now();
    let started = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        if last_trim.elapsed() >= TRIM_EVERY {
            last_trim = Instant::now();
            heap::give_back();
        }
        match session.step(Duration::from_millis(100)) {
            Ok(verdicts) => {
                for v in &verdicts {
                    shared.verdict(&labels, target.netns, v);
                }
            }
            Err(e) => {
                eprintln!("tracer agent: {who}: stopped: {e}");
                shared.metrics.sessions_failed.inc();
                break;
            }
        }
        if last_metrics.elapsed() >= METRICS_EVERY {
            last_metrics = Instant::now();
            // A session can start before the proxy listens: while a sender waits to be
            // told the proxy's, its first seconds read the sockets at every tick, so that a
            // short run is not over before they are read again.
            let eager = responses.waiting && started.elapsed() < EAGER_SOCKETS_FOR;
            if eager || last_sockets.is_none_or(|t| t.elapsed() >= SOCKETS_EVERY) {
                last_sockets = Some(Instant::now());
                responses.pids = pids.lock().map(|p| p.clone()).unwrap_or_default();
                sockets::proxy_sockets(&opts.proc_root, &responses.pids, &mut responses.sockets);
            }
            last = publish(shared, &labels, &mut session, &last);
            responses.publish(shared, &labels, &session);
        }
    }
    responses.publish(shared, &labels, &session);
    match session.finish() {
        Ok(end) => {
            for v in &end.analysis.verdicts {
                shared.verdict(&labels, target.netns, v);
            }
            let gone = SessionStats {
                connections: 0,
                ..end.stats
            };
            publish_counters(shared, &last, &gone);
        }
        Err(e) => eprintln!("tracer agent: {who}: could not finish: {e}"),
    }
    shared.metrics.forget_timeouts(&labels);
    eprintln!("tracer agent: stopped following {who}");
    // a session that followed a busy proxy frees a lot at once: without this, the agent
    // stayed at that session's peak after the proxy was gone
    heap::give_back();
}

/// How often a running session hands freed memory back (see [`heap::give_back`]):
/// the engine frees connections and kernel records all the time, and the allocator's arenas
/// otherwise keep and fragment what it freed (the soak's RSS crept up in steps while every
/// table of the engine stayed flat).
const TRIM_EVERY: Duration = Duration::from_secs(60);

/// Copies a session's counters and inferred timeouts into the metrics; returns the
/// counters, for the next call's deltas.
fn publish(
    shared: &Shared,
    labels: &ProxyLabels,
    session: &mut LiveSession,
    last: &SessionStats,
) -> SessionStats {
    let now = session.stats();
    publish_counters(shared, last, &now);
    for s in session.take_samples() {
        match s {
            crate::correlate::Sample::UpstreamIdleClose { upstream, idle_ns } => shared
                .metrics
                .upstream_idle_close(labels, &upstream.to_string(), idle_ns as f64 / 1e9),
            crate::correlate::Sample::ProxyReuse { upstream, idle_ns } => shared
                .metrics
                .proxy_reuse_idle(labels, &upstream.to_string(), idle_ns as f64 / 1e9),
        }
    }
    shared.metrics.engine_tables(labels, &session.tables());
    for t in session.timeouts() {
        let up = t.upstream.to_string();
        let keepalive = if t.closes_after_every_response {
            Some(0.0)
        } else {
            t.upstream_idle_close_ms.map(|ms| ms / 1000.0)
        };
        shared.metrics.timeouts(
            labels,
            &up,
            keepalive,
            t.proxy_idle_close_ms.map(|ms| ms / 1000.0),
        );
    }
    now
}

/// The kernel's response counts of one session, attributed to the proxy's clients or to
/// one of its upstreams once its sockets say which; counts of other senders (services
/// sharing the namespace) are never published.
#[derive(Default)]
struct Responses {
    sockets: sockets::ProxySockets,
    /// The proxy's processes now.
    pids: Vec<u32>,
    /// What was published so far, per (sender, class).
    published: std::collections::HashMap<(SocketAddr, u8), u64>,
    /// At the last publish, some sender's responses were not yet known to be the proxy's.
    waiting: bool,
}

impl Responses {
    fn publish(&mut self, shared: &Shared, labels: &ProxyLabels, session: &LiveSession) {
        self.waiting = false;
        for c in session.responses() {
            let upstream = if self.sockets.is_listener(c.sender) {
                None
            } else if self.sockets.upstreams.contains(&c.sender)
                || session
                    .opener_of(c.sender)
                    .is_some_and(|pid| self.pids.contains(&pid))
            {
                Some(c.sender.to_string())
            } else {
                self.waiting = true;
                continue; // not known to be the proxy's (yet): its total waits
            };
            let done = self.published.entry((c.sender, c.class)).or_insert(0);
            // An LRU eviction in the kernel restarts a sender's count from zero.
            let delta = c.count.checked_sub(*done).unwrap_or(c.count);
            if delta > 0 {
                shared
                    .metrics
                    .responses(labels, upstream.as_deref(), c.class, delta);
            }
            *done = c.count;
        }
    }
}

/// Adds the growth of a session's counters since `last` to the node-wide metrics.
fn publish_counters(shared: &Shared, last: &SessionStats, now: &SessionStats) {
    let m = &shared.metrics;
    m.packets_dropped
        .inc_by(now.packets_dropped.saturating_sub(last.packets_dropped));
    m.events_lost
        .inc_by(now.events_lost.saturating_sub(last.events_lost));
    m.connections_evicted.inc_by(
        now.connections_evicted
            .saturating_sub(last.connections_evicted),
    );
    let delta = i64::try_from(now.connections).unwrap_or(i64::MAX)
        - i64::try_from(last.connections).unwrap_or(i64::MAX);
    m.connections_tracked.add(delta);
}
