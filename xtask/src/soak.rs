//! `cargo xtask soak-agent`: `tracer agent` under lab load for many minutes, its memory
//! sampled, so that a leak shows as a slope.
//!
//! The agent starts before any proxy, told to follow the soak's proxy namespace only
//! (other proxies on a shared machine stay out of the figures). The soak then runs cycles:
//! each starts a lab scenario's servers afresh in the same namespaces (the seed by default,
//! or `--scenarios` in turn, e.g. seed,nginx-node: both race, so verdicts keep coming) and sends the scenario's load again and again
//! until the cycle's time is up, then stops the servers. Each cycle is therefore one of the
//! agent's sessions from start to end (it follows the new proxy by itself and lets it go
//! when it exits), and the sessions follow one another in one agent process, as pods come
//! and go on a node.
//!
//! Every `--sample-seconds` the agent's resident memory (`VmRSS`, of which `RssAnon`, and
//! `VmHWM` from `/proc/PID/status`), its threads and open descriptors, and from its
//! `/metrics` the proxies followed, connections tracked, verdicts and series exposed are
//! sampled. Printed: the series once a minute, each cycle's client-side errors against the
//! verdicts the agent counted, and the least-squares slope of RSS (KiB per minute) over the
//! whole soak and after the warm-up (the agent's capture buffers fill, the kernel records
//! it keeps for a minute and its tables' room reach their steady state), with whether that
//! is flat.

use std::collections::BTreeMap;
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use tracer_lab::load::{Outcome, STOP};
use tracer_lab::net::Net;
use tracer_lab::procs::Procs;
use tracer_lab::scenario::PROXY_PORT;

use crate::bench::median;
use crate::bench_agent::{http_get, AgentRun};
use crate::exposition::{metric_by_label, metric_sum};

#[derive(clap::Args)]
pub struct SoakArgs {
    /// Minutes of load.
    #[arg(long, default_value_t = 60)]
    minutes: u32,
    /// Seconds between two samples of the agent's memory.
    #[arg(long, default_value_t = 10)]
    sample_seconds: u32,
    /// Lab scenarios, one per cycle in turn (comma-separated). The default repeats the
    /// busiest, so that each session can be laid beside the one before.
    #[arg(long, value_delimiter = ',', default_value = "seed")]
    scenarios: Vec<String>,
    /// Minutes per cycle: each starts the next scenario's servers afresh (a new session of
    /// the agent).
    #[arg(long, default_value_t = 30)]
    cycle_minutes: u32,
    /// Seconds of pause between two loads (the machine is shared).
    #[arg(long, default_value_t = 5)]
    pause_seconds: u32,
    /// Minutes at the start of each cycle left out of its steady state (the session's
    /// capture buffer fills, the kernel records it keeps for a minute and the tables'
    /// room reach their level; under the seed's load RSS was still settling 7–8 minutes
    /// into a session).
    #[arg(long, default_value_t = 10)]
    warmup_minutes: u32,
    /// RSS is called flat when it grows by at most this (KiB/min) within the cycles' steady
    /// states and from one cycle of a scenario to its next.
    #[arg(long, default_value_t = 10.0)]
    flat_kib_per_min: f64,
    /// Also write every sample to this CSV file.
    #[arg(long)]
    csv: Option<PathBuf>,
    /// More arguments for `tracer agent` (e.g. `--agent-arg=--all-data`).
    #[arg(long = "agent-arg", value_name = "ARG", allow_hyphen_values = true)]
    agent_args: Vec<String>,
}

/// One look at the agent.
#[derive(Debug, Clone, Default)]
struct Sample {
    /// Seconds since the soak began.
    t_s: f64,
    rss_kib: u64,
    /// What the allocator holds for live allocations (`tracer_heap_bytes`), KiB.
    heap_kib: f64,
    anon_kib: u64,
    hwm_kib: u64,
    threads: u64,
    fds: u64,
    /// CPU seconds so far (user and system).
    cpu_s: f64,
    /// From its /metrics.
    followed: f64,
    tracked: f64,
    verdicts: f64,
    dropped: f64,
    lost: f64,
    series: usize,
    /// Entries in the engine's tables (`tracer_engine_entries`), by table, summed over
    /// the proxies followed: what a step in memory can be laid beside.
    tables: BTreeMap<String, f64>,
}

/// What one cycle's load saw and the agent counted.
struct Cycle {
    scenario: String,
    loads: u32,
    requests: u64,
    /// Client outcomes other than 2xx, by status (or `timeout`, `error`).
    failures: BTreeMap<String, u64>,
    /// Growth of `tracer_verdicts_total` from before the servers started to after the agent
    /// let them go.
    verdicts: f64,
    /// When the agent followed the servers, and when they stopped (seconds into the soak).
    start_s: f64,
    end_s: f64,
}

pub fn soak_agent(args: &SoakArgs) -> Result<()> {
    tracer_lab::run::preflight()?;
    if args.minutes == 0 || args.sample_seconds == 0 || args.cycle_minutes == 0 {
        bail!("--minutes, --sample-seconds and --cycle-minutes must be positive");
    }
    if args.warmup_minutes >= args.cycle_minutes {
        bail!(
            "--warmup-minutes ({}) must be shorter than --cycle-minutes ({}): each session's steady state is what follows its warm-up",
            args.warmup_minutes,
            args.cycle_minutes
        );
    }
    let scenarios = args
        .scenarios
        .iter()
        .map(|n| {
            tracer_lab::scenarios::by_name(n)
                .with_context(|| format!("no lab scenario `{n}` (cargo xtask lab --list)"))
        })
        .collect::<Result<Vec<_>>>()?;
    let tracer = crate::build_tracer()?;
    crate::lab::install_ctrlc();
    let dir = std::env::temp_dir().join(format!("tracer-soak-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let net = Net::create().context("building the lab network")?;
    let h = net.hosts().clone();

    // The agent first, before any proxy exists, as on a node.
    let mut agent_args = vec!["--netns".to_owned(), h.proxy_ns.clone()];
    agent_args.extend(args.agent_args.iter().cloned());
    let mut agent = AgentRun::start(&tracer, &agent_args, &dir.join("agent.err"))?;
    agent.wait_following(&[], Duration::from_secs(30))?;
    let began = Instant::now();
    let samples = Arc::new(Mutex::new(Vec::<Sample>::new()));
    let done = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (samples, done) = (samples.clone(), done.clone());
        let (pid, addr, every) = (
            agent.pid(),
            agent.addr(),
            Duration::from_secs(u64::from(args.sample_seconds)),
        );
        std::thread::spawn(move || {
            while !done.load(Ordering::Relaxed) {
                let s = sample(pid, addr, began.elapsed().as_secs_f64());
                if let Ok(mut v) = samples.lock() {
                    v.push(s);
                }
                let next = began
                    + every
                        * u32::try_from(samples.lock().map_or(0, |v| v.len())).unwrap_or(u32::MAX);
                while Instant::now() < next && !done.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        })
    };

    let end = began + Duration::from_secs(u64::from(args.minutes) * 60);
    let mut cycles = Vec::new();
    let mut result = Ok(());
    let mut n = 0;
    while Instant::now() < end && !STOP.load(Ordering::Relaxed) {
        let scenario = &scenarios[n % scenarios.len()];
        let until =
            end.min(Instant::now() + Duration::from_secs(u64::from(args.cycle_minutes) * 60));
        match cycle(
            &mut agent,
            &h,
            scenario.as_ref(),
            &dir.join(format!("cycle-{n}")),
            n,
            (began, until),
            args,
        ) {
            Ok(c) => {
                eprintln!(
                    "cycle {n} ({}): {} loads, {} requests, client failures {:?}, agent verdicts +{:.0}",
                    c.scenario, c.loads, c.requests, c.failures, c.verdicts
                );
                cycles.push(c);
            }
            Err(e) => {
                result = Err(e);
                break;
            }
        }
        n += 1;
    }
    done.store(true, Ordering::Relaxed);
    let _ = sampler.join();
    let last = sample(agent.pid(), agent.addr(), began.elapsed().as_secs_f64());
    let stopped = agent.stop();
    drop(net);
    result?;
    let _ = std::fs::remove_dir_all(&dir);
    let mut samples = samples.lock().map(|v| v.clone()).unwrap_or_default();
    samples.push(last);
    if let Some(path) = &args.csv {
        write_csv(path, &samples)?;
    }
    report(args, &cycles, &samples);
    match stopped {
        Ok(_) => println!("  SIGTERM: the agent exited with status 0"),
        Err(e) => bail!("{e:#}"),
    }
    Ok(())
}

/// One cycle: the scenario's servers start in the soak's namespaces, the agent follows
/// them, the load repeats until `until`, the servers stop and the agent lets them go.
fn cycle(
    agent: &mut AgentRun,
    h: &tracer_lab::scenario::Hosts,
    scenario: &dyn tracer_lab::scenario::Scenario,
    dir: &std::path::Path,
    n: usize,
    (began, until): (Instant, Instant),
    args: &SoakArgs,
) -> Result<Cycle> {
    std::fs::create_dir_all(dir)?;
    let verdicts_before = verdicts(agent);
    let mut procs = Procs::new(h.clone(), dir.to_path_buf());
    scenario
        .start(&mut procs)
        .with_context(|| format!("starting scenario {}", scenario.name()))?;
    wait(agent, "follow the new proxy", |a| a.follow_counts().0 > n)?;
    let mut c = Cycle {
        scenario: scenario.name().to_owned(),
        loads: 0,
        requests: 0,
        failures: BTreeMap::new(),
        verdicts: 0.0,
        start_s: began.elapsed().as_secs_f64(),
        end_s: 0.0,
    };
    let target = SocketAddr::from((h.proxy_front_ip, PROXY_PORT));
    let profile = scenario.load();
    while Instant::now() < until && !STOP.load(Ordering::Relaxed) {
        let results = tracer_lab::load::run(&h.client_ns, target, &profile)?;
        c.loads += 1;
        c.requests += results.len() as u64;
        for r in &results {
            if !matches!(r.outcome, Outcome::Status(200..=299)) {
                *c.failures
                    .entry(tracer_lab::load::outcome_key(&r.outcome))
                    .or_insert(0) += 1;
            }
        }
        let pause = Duration::from_secs(u64::from(args.pause_seconds));
        std::thread::sleep(pause.min(until.saturating_duration_since(Instant::now())));
    }
    c.end_s = began.elapsed().as_secs_f64();
    procs.stop_all();
    drop(procs);
    wait(agent, "let the proxy go", |a| a.follow_counts().1 > n)?;
    c.verdicts = verdicts(agent) - verdicts_before;
    // The servers' logs grow with every load; nothing reads them.
    let _ = std::fs::remove_dir_all(dir);
    Ok(c)
}

fn verdicts(agent: &AgentRun) -> f64 {
    agent
        .scrape()
        .map_or(0.0, |t| metric_sum(&t, "tracer_verdicts_total"))
}

fn wait(agent: &mut AgentRun, what: &str, done: impl Fn(&AgentRun) -> bool) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !done(agent) {
        if Instant::now() > deadline {
            bail!("the agent did not {what} within 30 s:\n{}", agent.log());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(())
}

fn sample(pid: u32, addr: SocketAddr, t_s: f64) -> Sample {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| status_field(&status, name).unwrap_or(0);
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count() as u64);
    let metrics = http_get(addr, "/metrics")
        .map(|(_, b)| b)
        .unwrap_or_default();
    Sample {
        t_s,
        rss_kib: field("VmRSS:"),
        heap_kib: metric_sum(&metrics, "tracer_heap_bytes") / 1024.0,
        anon_kib: field("RssAnon:"),
        hwm_kib: field("VmHWM:"),
        threads: field("Threads:"),
        fds,
        cpu_s: cpu_s(pid),
        followed: metric_sum(&metrics, "tracer_proxies_followed"),
        tracked: metric_sum(&metrics, "tracer_connections_tracked"),
        verdicts: metric_sum(&metrics, "tracer_verdicts_total"),
        dropped: metric_sum(&metrics, "tracer_packets_dropped_total"),
        lost: metric_sum(&metrics, "tracer_events_lost_total"),
        series: metrics
            .lines()
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .count(),
        tables: metric_by_label(&metrics, "tracer_engine_entries", "table"),
    }
}

/// CPU seconds (user and system) of process `pid` so far, from `/proc/PID/stat`.
fn cpu_s(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces): state is the 3rd field,
    // utime and stime the 14th and 15th.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let ticks: f64 = rest
        .split_whitespace()
        .skip(11)
        .take(2)
        .filter_map(|f| f.parse::<f64>().ok())
        .sum();
    ticks / 100.0
}

/// The number in a `/proc/PID/status` line such as `VmRSS:     1234 kB`.
fn status_field(status: &str, name: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix(name))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Least-squares slope of `y` over `x` shared by several groups of points, each with a
/// level of its own (the slope within the groups, whatever the jumps between them), with
/// its standard error; `None` without enough points.
fn fit(groups: &[Vec<(f64, f64)>]) -> Option<(f64, f64)> {
    let groups: Vec<&Vec<(f64, f64)>> = groups.iter().filter(|g| !g.is_empty()).collect();
    let n: usize = groups.iter().map(|g| g.len()).sum();
    if n < groups.len() + 2 {
        return None;
    }
    let centred: Vec<(f64, f64)> = groups
        .iter()
        .flat_map(|g| {
            let len = g.len() as f64;
            let mx = g.iter().map(|p| p.0).sum::<f64>() / len;
            let my = g.iter().map(|p| p.1).sum::<f64>() / len;
            g.iter().map(move |p| (p.0 - mx, p.1 - my))
        })
        .collect();
    let sxx: f64 = centred.iter().map(|p| p.0 * p.0).sum();
    if sxx == 0.0 {
        return None;
    }
    let slope = centred.iter().map(|p| p.0 * p.1).sum::<f64>() / sxx;
    let residual: f64 = centred.iter().map(|p| (p.1 - slope * p.0).powi(2)).sum();
    let dof = (n - groups.len() - 1) as f64;
    Some((slope, (residual / dof / sxx).sqrt()))
}

fn report(args: &SoakArgs, cycles: &[Cycle], samples: &[Sample]) {
    let minutes = samples.last().map_or(0.0, |s| s.t_s / 60.0);
    println!(
        "soak-agent: {minutes:.1} min of lab load ({} in {}-minute cycles, {} s pause between loads), tracer agent sampled every {} s ({} samples)",
        args.scenarios.join(", "),
        args.cycle_minutes,
        args.pause_seconds,
        args.sample_seconds,
        samples.len()
    );
    println!("  | minute | RSS KiB | of it anon KiB | peak KiB | live heap KiB | CPU % since the last line | threads | fds | followed | connections tracked | verdicts | packets dropped | events lost | series |");
    println!("  |---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    let per_minute = (60 / args.sample_seconds).max(1) as usize;
    let mut prev: Option<&Sample> = None;
    for (i, s) in samples.iter().enumerate() {
        if i % per_minute == 0 || i + 1 == samples.len() {
            let cpu = prev.map_or(String::new(), |p| {
                format!(
                    "{:.1}",
                    (s.cpu_s - p.cpu_s) / (s.t_s - p.t_s).max(1e-9) * 100.0
                )
            });
            println!(
                "  | {:.1} | {} | {} | {} | {:.0} | {cpu} | {} | {} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} | {} |",
                s.t_s / 60.0,
                s.rss_kib,
                s.anon_kib,
                s.hwm_kib,
                s.heap_kib,
                s.threads,
                s.fds,
                s.followed,
                s.tracked,
                s.verdicts,
                s.dropped,
                s.lost,
                s.series
            );
            prev = Some(s);
        }
    }
    // Each cycle's steady state: its samples after the warm-up, while its servers ran.
    let warmup_s = f64::from(args.warmup_minutes) * 60.0;
    // Each cycle's samples of one measure after the warm-up, while its servers ran.
    let steady_of = |f: fn(&Sample) -> f64| -> Vec<Vec<(f64, f64)>> {
        cycles
            .iter()
            .map(|c| {
                samples
                    .iter()
                    .filter(|s| s.t_s >= c.start_s + warmup_s && s.t_s <= c.end_s)
                    .map(|s| (s.t_s / 60.0, f(s)))
                    .collect()
            })
            .collect()
    };
    let steady = steady_of(|s| s.rss_kib as f64);
    println!("  | cycle | scenario | minutes | requests | failed at the client | verdicts | steady RSS KiB (median) | slope in it KiB/min |");
    println!("  |---|---|---|---|---|---|---|---|");
    for (i, (c, g)) in cycles.iter().zip(&steady).enumerate() {
        let failed: u64 = c.failures.values().sum();
        println!(
            "  | {i} | {} | {:.1} to {:.1} | {} | {failed} ({}) | {:.0} | {:.0} | {} |",
            c.scenario,
            c.start_s / 60.0,
            c.end_s / 60.0,
            c.requests,
            c.failures
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(" "),
            c.verdicts,
            level(g),
            fit(std::slice::from_ref(g)).map_or("-".to_owned(), |(s, _)| format!("{s:+.1}"))
        );
    }
    let rss: Vec<u64> = samples.iter().map(|s| s.rss_kib).collect();
    println!(
        "  RSS: first {} KiB, min {} KiB, max {} KiB, last {} KiB (nothing followed)",
        rss.first().copied().unwrap_or(0),
        rss.iter().min().copied().unwrap_or(0),
        rss.iter().max().copied().unwrap_or(0),
        rss.last().copied().unwrap_or(0)
    );
    let whole: Vec<(f64, f64)> = samples
        .iter()
        .map(|s| (s.t_s / 60.0, s.rss_kib as f64))
        .collect();
    if let Some((slope, se)) = fit(&[whole]) {
        println!(
            "  RSS slope over the whole soak, sessions' starts and ends included: {slope:+.1} KiB/min (standard error {se:.1})"
        );
    }
    judge("RSS", args, cycles, &steady);
    judge("live heap", args, cycles, &steady_of(|s| s.heap_kib));
}

/// The median of a steady state's values.
fn level(g: &[(f64, f64)]) -> f64 {
    median(&g.iter().map(|p| p.1).collect::<Vec<_>>())
}

/// Prints the slope of `what` within the sessions' steady states and from one session of
/// a scenario to its last, and whether both are flat.
fn judge(what: &str, args: &SoakArgs, cycles: &[Cycle], steady: &[Vec<(f64, f64)>]) {
    let limit = args.flat_kib_per_min;
    let mut flat = true;
    match fit(steady) {
        Some((slope, se)) => {
            flat &= slope <= limit;
            println!(
                "  {what} slope within the sessions' steady states (after each one's first {} min): {slope:+.1} KiB/min (standard error {se:.1}; {:+.1} MiB a day at that rate)",
                args.warmup_minutes,
                slope * 60.0 * 24.0 / 1024.0
            );
        }
        None => {
            flat = false;
            println!("  {what} slope within the sessions: too few samples (cycles longer than the warm-up, please)");
        }
    }
    // From one session of a scenario to its last: what a session leaves behind.
    for name in &args.scenarios {
        let runs: Vec<(f64, f64)> = cycles
            .iter()
            .zip(steady)
            .filter(|(c, g)| &c.scenario == name && !g.is_empty())
            .map(|(c, g)| ((c.start_s + c.end_s) / 120.0, level(g)))
            .collect();
        if let (Some(first), Some(last)) = (runs.first(), runs.last()) {
            if runs.len() > 1 {
                let per_min = (last.1 - first.1) / (last.0 - first.0);
                flat &= per_min <= limit;
                println!(
                    "  {name}: steady {what} {:.0} KiB in its first session, {:.0} KiB in its last ({} sessions): {per_min:+.1} KiB/min",
                    first.1,
                    last.1,
                    runs.len()
                );
            }
        }
    }
    println!(
        "  {what}: {} (flat means growing by at most {limit} KiB/min in both)",
        if flat { "flat" } else { "GROWING" }
    );
}

fn write_csv(path: &std::path::Path, samples: &[Sample]) -> Result<()> {
    let mut f = std::io::BufWriter::new(
        std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?,
    );
    let tables: std::collections::BTreeSet<&String> =
        samples.iter().flat_map(|s| s.tables.keys()).collect();
    write!(
        f,
        "t_s,rss_kib,anon_kib,hwm_kib,heap_kib,cpu_s,threads,fds,followed,connections_tracked,verdicts,packets_dropped,events_lost,series"
    )?;
    for t in &tables {
        write!(f, ",{t}")?;
    }
    writeln!(f)?;
    for s in samples {
        write!(
            f,
            "{:.1},{},{},{},{:.0},{:.2},{},{},{},{},{},{},{},{}",
            s.t_s,
            s.rss_kib,
            s.anon_kib,
            s.hwm_kib,
            s.heap_kib,
            s.cpu_s,
            s.threads,
            s.fds,
            s.followed,
            s.tracked,
            s.verdicts,
            s.dropped,
            s.lost,
            s.series
        )?;
        for t in &tables {
            write!(f, ",{}", s.tables.get(*t).copied().unwrap_or(0.0))?;
        }
        writeln!(f)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slope_is_found_within_groups_whatever_their_levels() {
        let line: Vec<(f64, f64)> = (0..10)
            .map(|i| (f64::from(i), 3.0 * f64::from(i) + 7.0))
            .collect();
        let (slope, se) = fit(std::slice::from_ref(&line)).unwrap();
        assert!((slope - 3.0).abs() < 1e-9);
        assert!(se < 1e-9);
        // Two flat groups at different levels: no slope within them, though a line through
        // all the points would climb.
        let low: Vec<(f64, f64)> = (0..5).map(|i| (f64::from(i), 100.0)).collect();
        let high: Vec<(f64, f64)> = (10..15).map(|i| (f64::from(i), 500.0)).collect();
        let (slope, _) = fit(&[low.clone(), high.clone()]).unwrap();
        assert!(slope.abs() < 1e-9);
        let all: Vec<(f64, f64)> = low.into_iter().chain(high).collect();
        assert!(fit(&[all]).unwrap().0 > 10.0);
        // Noise around a flat line: a slope near zero, with a standard error.
        let noisy = vec![
            (0.0, 10.0),
            (1.0, 12.0),
            (2.0, 10.0),
            (3.0, 12.0),
            (4.0, 10.0),
        ];
        let (slope, se) = fit(std::slice::from_ref(&noisy)).unwrap();
        assert!(slope.abs() < 0.5 && se > 0.0);
        assert_eq!(fit(&[noisy[..2].to_vec()]), None);
    }

    #[test]
    fn status_fields_are_read_in_kib() {
        let status = "Name:\ttracer\nVmHWM:\t   20480 kB\nVmRSS:\t   18000 kB\nRssAnon:\t    9000 kB\nThreads:\t5\n";
        assert_eq!(status_field(status, "VmRSS:"), Some(18000));
        assert_eq!(status_field(status, "RssAnon:"), Some(9000));
        assert_eq!(status_field(status, "Threads:"), Some(5));
        assert_eq!(status_field(status, "VmSwap:"), None);
    }
}
