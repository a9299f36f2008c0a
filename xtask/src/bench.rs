//! `cargo xtask bench-capture`: what attaching `tracer capture` or `tracer agent` costs a
//! busy proxy.
//!
//! nginx (or Caddy) → nginx with upstream keep-alive in the lab's namespaces. Each round
//! runs two loads from the client namespace: `wrk` at full speed (saturation), then a
//! fixed-rate open-loop load (`xtask rate-load`, p99 from when each request was due).
//! Rounds of the proxy alone (the baseline) alternate with rounds where something is
//! attached: `tcpdump -w /dev/null` with the filter of `--all-data` (what the kernel's copy
//! to userspace alone costs, for reference), `tracer capture --all-data`, `tracer capture`
//! as it runs by default (the kernel's selection), both with the kernel probe, and `tracer
//! agent`, which finds the proxy by itself and follows its namespace as the node agent does.
//! Each round is compared with the baselines around it; the ratios of throughput and p99
//! are printed with the machine's CPU per request, the attached process's own CPU, peak
//! memory and kernel events per request. Targets: at most 3% throughput loss and 5% p99
//! increase; the agent at most `tcpdump`'s cost.
//!
//! `--busy` repeats every round with unrelated traffic in namespaces of their own (see
//! [`Busy`]), each condition with its own baselines, so that what that traffic does to each
//! kind's cost can be read off side by side.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use tracer_lab::net::Net;
use tracer_lab::procs::Procs;
use tracer_lab::scenario::{Hosts, Launcher, PROXY_PORT, UPSTREAM_PORT};

use crate::bench_agent::{AgentNames, AgentRun, Busy, BusyTraffic};

#[derive(clap::Args)]
pub struct BenchArgs {
    /// Seconds per round.
    #[arg(long, default_value_t = 8)]
    seconds: u32,
    /// Rounds of each kind (baseline, with tracer), alternated.
    #[arg(long, default_value_t = 3)]
    rounds: u32,
    /// wrk connections (and the fixed-rate load's).
    #[arg(long, default_value_t = 32)]
    connections: u32,
    /// The fixed load, requests/s; default: half the proxy's throughput measured first.
    #[arg(long)]
    rate: Option<u32>,
    /// Which kinds of round to run against the proxy alone (default: all).
    #[arg(long, value_enum, value_delimiter = ',')]
    only: Vec<Kind>,
    /// The proxy under test: nginx (the cheapest proxying there is, so tracer's share is
    /// largest) or caddy (Go net/http, like Traefik).
    #[arg(long, value_enum, default_value_t = Proxy::Nginx)]
    proxy: Proxy,
    /// Enable the kernel's BPF run-time statistics and print each program's time per
    /// request. The statistics read a clock twice around every program run, which on some
    /// hosts costs more than the program itself: with them on, the ratios measure the
    /// instrumentation too (use `cargo xtask bench-probe` for per-call costs).
    #[arg(long)]
    bpf_stats: bool,
    /// Also measure every kind with unrelated busy traffic in other namespaces (repeatable,
    /// or comma-separated): `unfollowed` (a plain HTTP server the agent has no reason to
    /// follow), `followed` (a second proxy → nginx pair the agent follows too).
    #[arg(long, value_enum, value_delimiter = ',')]
    busy: Vec<Busy>,
    /// The busy traffic's fixed rate, requests/s; default: a quarter of the proxy's
    /// throughput measured first.
    #[arg(long)]
    busy_rate: Option<u32>,
    /// Which proxies `tracer agent` looks for: `bench` (only the bench's own, by their
    /// process name: other proxies on a shared machine stay out of the measurement) or
    /// `default` (the agent's defaults, as deployed: every nginx, Caddy, HAProxy, ... on
    /// the machine, the bench's nginx upstream included).
    #[arg(long, value_enum, default_value_t = AgentNames::Bench)]
    agent_names: AgentNames,
}

/// What is attached during a round besides the proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Kind {
    /// `tcpdump -w /dev/null` with the full capture's filter (reference).
    Tcpdump,
    /// `tracer capture --all-data`: every data segment, and the probe.
    AllData,
    /// `tracer capture` as it runs by default: the kernel's selection, and the probe.
    Sparse,
    /// `tracer agent`: it finds the proxy by its process name and follows its network
    /// namespace (the kernel's selection on `any` there, and the probe).
    Agent,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Proxy {
    Nginx,
    Caddy,
}

impl Proxy {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Proxy::Nginx => "nginx",
            Proxy::Caddy => "caddy",
        }
    }

    /// The process name the bench's proxy runs under (a link to the real program): the
    /// agent can be told to follow it alone, and not every other nginx or Caddy that
    /// happens to run on a shared machine.
    pub(crate) fn comm(self) -> &'static str {
        match self {
            Proxy::Nginx => "bench-nginx",
            Proxy::Caddy => "bench-caddy",
        }
    }
}

/// A symbolic link `<dir>/bin/<comm>` to `program`: started through it, the process is
/// named `comm` (the kernel names a process after the file it was started from).
pub(crate) fn named(dir: &Path, program: &Path, comm: &str) -> Result<std::path::PathBuf> {
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin)?;
    let link = bin.join(comm);
    if link.symlink_metadata().is_err() {
        std::os::unix::fs::symlink(program, &link)
            .with_context(|| format!("linking {} to {}", link.display(), program.display()))?;
    }
    Ok(link)
}

/// One lab stack under test: client, proxy and upstream namespaces, an nginx upstream and
/// the proxy (`front`) in front of it, both listening.
pub(crate) struct Stack {
    pub(crate) h: Hosts,
    pub(crate) procs: Procs,
    /// The proxy's URL, from the client namespace.
    pub(crate) url: String,
    /// Last: the namespaces go after the processes in them.
    _net: Net,
}

impl Stack {
    pub(crate) fn start(dir: &Path, proxy: Proxy) -> Result<Self> {
        std::fs::create_dir_all(dir)?;
        let net = Net::create()?;
        let h = net.hosts().clone();
        let mut procs = Procs::new(h.clone(), dir.to_path_buf());
        let nginx = tracer_lab::scenario::require_program("nginx", "nginx")?;
        start_nginx(
            &mut procs,
            &nginx,
            &h.upstream_ns,
            "backend",
            &backend_conf(dir, &h),
        )?;
        procs.wait_listening(&h.upstream_ns, h.upstream_ip, UPSTREAM_PORT)?;
        // The proxy runs under a name of its own (see [`Proxy::comm`]).
        let program = match proxy {
            Proxy::Nginx => nginx,
            Proxy::Caddy => tracer_lab::scenario::require_program("caddy", "caddy")?,
        };
        let program = named(dir, &program, proxy.comm())?;
        match proxy {
            Proxy::Nginx => start_nginx(
                &mut procs,
                &program,
                &h.proxy_ns,
                "front",
                &front_conf(dir, &h),
            )?,
            Proxy::Caddy => start_caddy(&mut procs, &program, &h.proxy_ns, dir, &h)?,
        }
        procs.wait_listening(&h.proxy_ns, h.proxy_front_ip, PROXY_PORT)?;
        let url = format!("http://{}:{PROXY_PORT}/", h.proxy_front_ip);
        Ok(Self {
            h,
            procs,
            url,
            _net: net,
        })
    }

    /// A plain HTTP server and its clients, no proxy: nginx answering by itself on the
    /// proxy's address, under the process name `comm` (named `front` in `procs`).
    pub(crate) fn start_origin(dir: &Path, comm: &str) -> Result<Self> {
        std::fs::create_dir_all(dir)?;
        let net = Net::create()?;
        let h = net.hosts().clone();
        let mut procs = Procs::new(h.clone(), dir.to_path_buf());
        let nginx = tracer_lab::scenario::require_program("nginx", "nginx")?;
        let conf = backend_conf(dir, &h).replace(
            &format!("listen {}:{UPSTREAM_PORT};", h.upstream_ip),
            &format!("listen {}:{PROXY_PORT};", h.proxy_front_ip),
        );
        start_nginx(
            &mut procs,
            &named(dir, &nginx, comm)?,
            &h.proxy_ns,
            "front",
            &conf,
        )?;
        procs.wait_listening(&h.proxy_ns, h.proxy_front_ip, PROXY_PORT)?;
        let url = format!("http://{}:{PROXY_PORT}/", h.proxy_front_ip);
        Ok(Self {
            h,
            procs,
            url,
            _net: net,
        })
    }
}

/// `tcpdump -w /dev/null` on the stack's two capture interfaces with the filter of
/// `--all-data`: what copying the same packets to userspace costs without any analysis.
pub(crate) fn start_tcpdump(st: &mut Stack) -> Result<()> {
    let tcpdump = tracer_lab::scenario::require_program("tcpdump", "tcpdump")?;
    for (i, ifname) in [&st.h.front_if, &st.h.back_if].into_iter().enumerate() {
        let mut td = Command::new(&tcpdump);
        td.args(["-i", ifname, "-n", "-s", "512", "-B", "65536"])
            .args(["-w", "/dev/null"])
            .arg(tracer::live::default_filter(&[]));
        st.procs
            .spawn(&st.h.proxy_ns, &format!("tcpdump-ref-{i}"), td)?;
    }
    Ok(())
}

pub(crate) fn stop_tcpdump(st: &mut Stack) {
    st.procs.stop("tcpdump-ref-0");
    st.procs.stop("tcpdump-ref-1");
}

#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Round {
    pub(crate) rps: f64,
    pub(crate) p99_ms: f64,
    pub(crate) requests: f64,
    /// CPU seconds the whole machine was busy during the load (steal excluded), minus wrk's.
    cpu_s: f64,
    /// CPU seconds of the front nginx (the proxy) during the load.
    proxy_cpu_s: f64,
    /// CPU seconds spent in tracer's kernel programs (probe and filter) during the load.
    bpf_s: f64,
    /// CPU seconds of the attached processes (tracer, or both tcpdumps) during the load.
    pub(crate) attached_s: f64,
    /// Their context switches during the load (voluntary: wake-ups; and preemptions).
    attached_cs: f64,
    /// At the fixed load: achieved requests/s, p99 latency from when each request was due,
    /// and failed requests.
    fixed_rps: f64,
    pub(crate) fixed_p99_ms: f64,
    fixed_errors: u64,
    /// CPU seconds the whole machine was busy during the fixed load, minus the load
    /// generator's: at a load every kind of round serves alike, what the attached process
    /// costs shows here wherever it is spent (its process, the kernel's copies and
    /// programs in the proxy's time or in softirq), without saturation's noise.
    fixed_cpu_s: f64,
    /// Requests the fixed load completed.
    fixed_requests: f64,
}

impl Round {
    /// Machine CPU per request, microseconds (load generator excluded).
    fn cpu_us(&self) -> f64 {
        self.cpu_s / self.requests.max(1.0) * 1e6
    }
    /// The proxy's own CPU per request, microseconds.
    fn proxy_us(&self) -> f64 {
        self.proxy_cpu_s / self.requests.max(1.0) * 1e6
    }
    /// Machine CPU per request at the fixed load, microseconds (load generator excluded).
    fn fixed_cpu_us(&self) -> f64 {
        self.fixed_cpu_s / self.fixed_requests.max(1.0) * 1e6
    }
}

pub fn bench_capture(args: &BenchArgs) -> Result<()> {
    tracer_lab::run::preflight()?;
    let wrk = tracer_lab::scenario::require_program("wrk", "wrk")?;
    let tracer = crate::build_tracer()?;
    let dir = std::env::temp_dir().join(format!("tracer-bench-{}", std::process::id()));
    let mut stack = Stack::start(&dir, args.proxy)?;
    let h = stack.h.clone();
    let url = stack.url.clone();

    // Run-time statistics of BPF programs, for as long as this descriptor is open.
    let _stats = args
        .bpf_stats
        .then(|| {
            aya::sys::enable_stats(aya::sys::Stats::RunTime)
                .map_err(|e| eprintln!("warning: BPF run-time statistics unavailable: {e}"))
                .ok()
        })
        .flatten();
    // Warm up the keep-alive pools and caches, and find the proxy's capacity.
    let capacity = run_wrk(&wrk, &h.client_ns, &url, 3, args.connections)?.rps;
    let rate = args.rate.unwrap_or((capacity / 2.0) as u32).max(1);
    let busy_rate = args.busy_rate.unwrap_or((capacity / 4.0) as u32).max(1);
    eprintln!("capacity {capacity:.0} req/s; fixed load {rate} req/s");
    // The kinds of round, alternated so that drift in the machine hits them all alike.
    let all = [Kind::Tcpdump, Kind::AllData, Kind::Sparse, Kind::Agent];
    let kinds: Vec<Option<Kind>> = std::iter::once(None)
        .chain(
            all.iter()
                .filter(|k| args.only.is_empty() || args.only.contains(k))
                .map(|k| Some(*k)),
        )
        .collect();
    // The conditions: the machine as it is, then with each kind of unrelated busy traffic
    // asked for; each has its own rounds of the proxy alone to compare with.
    let conditions: Vec<Option<Busy>> = std::iter::once(None)
        .chain(args.busy.iter().map(|b| Some(*b)))
        .collect();
    let agent_args = crate::bench_agent::agent_args(args.agent_names, args.proxy);
    let mut results: Vec<Condition> = conditions
        .iter()
        .map(|_| Condition {
            rounds: vec![Vec::new(); kinds.len()],
            cost: vec![Cost::default(); kinds.len()],
        })
        .collect();
    // A condition's rounds (its baseline and each kind) run back to back under the same
    // busy traffic, which starts before them and stops after.
    let per_mode = 2 * args.seconds + 12;
    let busy_seconds = per_mode * u32::try_from(kinds.len()).unwrap_or(8) + 60;
    for round in 0..=args.rounds {
        let last = round == args.rounds;
        for (c, cond) in conditions.iter().enumerate() {
            let busy = match cond {
                Some(b) => Some(BusyTraffic::start(
                    *b,
                    &dir.join(format!("busy-{round}-{c}")),
                    args.proxy,
                    busy_rate,
                    busy_seconds,
                )?),
                None => None,
            };
            // The agent must follow the bench's proxy, and the busy proxy when one runs.
            let follow: Vec<u32> = stack
                .procs
                .pid("front")
                .into_iter()
                .chain(busy.as_ref().and_then(BusyTraffic::proxy_pid))
                .collect();
            // The baseline opens each round; the other kinds rotate, so that none always
            // follows the same one (a full capture's exit, for one, leaves the machine
            // reclaiming memory for a while). A last baseline closes the run, so that every
            // round sits between two.
            let others = kinds.len() - 1;
            let order: Vec<usize> = if last {
                vec![0]
            } else {
                std::iter::once(0)
                    .chain((0..others).map(|k| 1 + (k + round as usize) % others))
                    .collect()
            };
            for m in order {
                let err = dir.join(format!("tracer-{round}-{c}-{m}.err"));
                let run = Attach {
                    wrk: &wrk,
                    tracer: &tracer,
                    args,
                    rate,
                    agent_args: &agent_args,
                    follow: &follow,
                };
                let r = run.measure(&mut stack, kinds[m], &err, &mut results[c].cost[m])?;
                eprintln!(
                    "round {round}{}: {}: {:.0} req/s, p99 {:.2} ms; fixed load: {:.0} req/s, p99 {:.2} ms, {} errors",
                    cond.map_or(String::new(), |b| format!(" ({})", b.name())),
                    mode_name(kinds[m]),
                    r.rps,
                    r.p99_ms,
                    r.fixed_rps,
                    r.fixed_p99_ms,
                    r.fixed_errors
                );
                results[c].rounds[m].push(r);
            }
        }
    }
    drop(stack);
    let _ = std::fs::remove_dir_all(&dir);

    println!(
        "bench-capture: {} -> nginx, {} connections x {} s, {} rounds of each, alternated",
        args.proxy.name(),
        args.connections,
        args.seconds,
        args.rounds
    );
    println!(
        "  two loads per round: wrk at full speed (saturation), then a fixed {rate} req/s open-loop load (p99 from when each request was due)"
    );
    if kinds.contains(&Some(Kind::Agent)) {
        println!("  tracer agent: {}", agent_args.join(" "));
    }
    for (cond, res) in conditions.iter().zip(&results) {
        match cond {
            None => println!("condition: quiet (no traffic but the bench's)"),
            Some(b) => println!(
                "condition: {} at {busy_rate} req/s in namespaces of their own: {}",
                b.name(),
                b.about()
            ),
        }
        report_condition(args, &kinds, res);
    }
    crate::bench_agent::summary(&conditions, &kinds, &results);
    Ok(())
}

/// What is measured in one condition: per kind (index 0: the proxy alone), its rounds and
/// what the attached process cost.
pub(crate) struct Condition {
    pub(crate) rounds: Vec<Vec<Round>>,
    pub(crate) cost: Vec<Cost>,
}

/// What the attached process cost over all rounds of a kind.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Cost {
    /// CPU seconds over the process's whole life (start, attach, load, exit).
    cpu_s: f64,
    /// The highest peak resident memory, KiB.
    peak_kib: u64,
    /// Kernel events (tracer capture's closing line).
    events: u64,
    /// Packets dropped and kernel events lost (tracer agent's self-metrics).
    dropped: u64,
    lost: u64,
}

fn mode_name(kind: Option<Kind>) -> &'static str {
    match kind {
        None => "proxy alone",
        Some(Kind::Tcpdump) => "reference: tcpdump -w /dev/null, same filter as the full capture",
        Some(Kind::AllData) => "tracer capture --all-data + probe",
        Some(Kind::Sparse) => "tracer capture (default: kernel selection) + probe",
        Some(Kind::Agent) => {
            "tracer agent (finds the proxy itself; kernel selection on `any` in its namespace + probe)"
        }
    }
}

/// What a round needs to measure a kind.
struct Attach<'a> {
    wrk: &'a Path,
    tracer: &'a Path,
    args: &'a BenchArgs,
    rate: u32,
    agent_args: &'a [String],
    /// The proxies' pids the agent must report following before the load starts.
    follow: &'a [u32],
}

impl Attach<'_> {
    /// One round of `kind` (`None`: the proxy alone): attach, load, detach.
    fn measure(
        &self,
        stack: &mut Stack,
        kind: Option<Kind>,
        err: &Path,
        cost: &mut Cost,
    ) -> Result<Round> {
        let (h, url) = (stack.h.clone(), stack.url.clone());
        let proxy = stack.procs.pid("front");
        let load = |attached: &[u32]| {
            measured(
                self.wrk,
                &h.client_ns,
                &url,
                self.args,
                self.rate,
                proxy,
                attached,
            )
        };
        let mut account = |pid: u32| {
            let (c, p) = usage(pid);
            cost.cpu_s += c;
            cost.peak_kib = cost.peak_kib.max(p);
        };
        Ok(match kind {
            None => load(&[])?,
            Some(Kind::Tcpdump) => {
                start_tcpdump(stack)?;
                std::thread::sleep(Duration::from_millis(1500));
                let pids: Vec<u32> = ["tcpdump-ref-0", "tcpdump-ref-1"]
                    .iter()
                    .filter_map(|n| stack.procs.pid(n))
                    .collect();
                let r = load(&pids)?;
                pids.iter().for_each(|p| account(*p));
                stop_tcpdump(stack);
                r
            }
            Some(Kind::Agent) => {
                let mut agent = AgentRun::start(self.tracer, self.agent_args, err)?;
                agent.wait_following(self.follow, Duration::from_secs(30))?;
                std::thread::sleep(Duration::from_millis(1500)); // as long as the others get
                let r = load(&[agent.pid()])?;
                account(agent.pid());
                let end = agent.stop()?;
                cost.dropped += end.packets_dropped;
                cost.lost += end.events_lost;
                r
            }
            Some(k @ (Kind::Sparse | Kind::AllData)) => {
                let extra: &[&str] = if k == Kind::AllData {
                    &["--all-data"]
                } else {
                    &[]
                };
                let mut t = start_tracer(self.tracer, &h, 2 * self.args.seconds + 6, extra, err)?;
                std::thread::sleep(Duration::from_millis(1500)); // probe attached, captures open
                let r = load(&[t.id()])?;
                account(t.id());
                let _ = t.wait();
                cost.events += kernel_events(err);
                r
            }
        })
    }
}

/// The figures of one condition, kind by kind, against its own rounds of the proxy alone.
fn report_condition(args: &BenchArgs, kinds: &[Option<Kind>], res: &Condition) {
    let base = &res.rounds[0];
    let mean = |v: &[Round], f: fn(&Round) -> f64| v.iter().map(f).sum::<f64>() / v.len() as f64;
    println!(
        "  baseline (proxy alone): {:.0} req/s, p99 {:.2} ms (mean of {} rounds)",
        mean(base, |r| r.rps),
        mean(base, |r| r.p99_ms),
        base.len()
    );
    // Each round is compared with the baselines just before and after it, which cancels the
    // machine's drift; the median over rounds is reported, with the baseline's own
    // round-to-round change as the noise floor.
    let field = |v: &[Round], f: fn(&Round) -> f64| v.iter().map(f).collect::<Vec<f64>>();
    let noise = noise_pct(&field(base, |r| r.rps));
    println!(
        "  noise floor: consecutive baselines differ by a median {:.1}% (max {:.1}%); a loss below that is not measurable here",
        median(&noise),
        noise.iter().copied().fold(0.0, f64::max)
    );
    for (m, kind) in kinds.iter().enumerate().skip(1) {
        let rounds = &res.rounds[m];
        let ratio = |f: fn(&Round) -> f64| paired(&field(rounds, f), &field(base, f));
        let rps = ratio(|r| r.rps);
        let p99 = ratio(|r| r.p99_ms);
        let (f_rps, f_p99) = (ratio(|r| r.fixed_rps), ratio(|r| r.fixed_p99_ms));
        let errors: u64 = rounds.iter().map(|r| r.fixed_errors).sum();
        println!(
            "  {}: {:.0} req/s, p99 {:.2} ms",
            mode_name(*kind),
            mean(rounds, |r| r.rps),
            mean(rounds, |r| r.p99_ms)
        );
        println!(
            "    saturation: throughput {} (rounds {}), p99 {}",
            increase(&rps),
            list(&rps),
            increase(&p99)
        );
        println!(
            "    fixed load: throughput ratio {:.3} (loss {:.1}%, target <= 3%), p99 {} (target <= +5%; rounds {}), {errors} errors",
            median(&f_rps),
            (1.0 - median(&f_rps)) * 100.0,
            increase(&f_p99),
            list(&f_p99)
        );
        // CPU per request: robust to a noisy host, since stolen time is not counted. What
        // the attached process adds (anywhere: its own process, the kernel's filter and
        // copies) as a share of what the proxy itself spends per request is the throughput
        // a CPU-bound proxy host would lose.
        let extra: Vec<f64> = rounds
            .iter()
            .enumerate()
            .map(|(i, r)| {
                let b = |f: fn(&Round) -> f64| (f(&base[i]) + f(&base[i + 1])) / 2.0;
                (r.cpu_us() - b(Round::cpu_us)) / b(Round::proxy_us)
            })
            .collect();
        println!(
            "    CPU per request: {:.1} us for the machine vs {:.1} us alone; the extra is {:.1}% of the proxy's own {:.1} us (target <= 3%; rounds {})",
            mean(rounds, Round::cpu_us),
            mean(base, Round::cpu_us),
            median(&extra) * 100.0,
            mean(base, Round::proxy_us),
            extra.iter().map(|x| format!("{:.1}", x * 100.0)).collect::<Vec<_>>().join(" ")
        );
        // At the fixed load the same requests are served in every round: the machine's
        // extra CPU per request is the whole cost of what is attached, tcpdump's packet
        // copies and tracer's kernel programs included, each round against the baselines
        // just before and after it.
        let fixed_extra: Vec<f64> = rounds
            .iter()
            .enumerate()
            .map(|(i, r)| {
                r.fixed_cpu_us() - (base[i].fixed_cpu_us() + base[i + 1].fixed_cpu_us()) / 2.0
            })
            .collect();
        println!(
            "    CPU per request at the fixed load: {:.1} us for the machine vs {:.1} us alone: {:+.2} us (rounds {})",
            mean(rounds, Round::fixed_cpu_us),
            mean(base, Round::fixed_cpu_us),
            median(&fixed_extra),
            fixed_extra.iter().map(|x| format!("{x:+.2}")).collect::<Vec<_>>().join(" ")
        );
        // The attributable cost: the attached process (and with --bpf-stats tracer's kernel
        // programs), per request, as a share of the proxy's own CPU per request in the same
        // round. Both are CPU time in one window, so a slow host inflates them alike.
        let share: Vec<f64> = rounds
            .iter()
            .map(|r| (r.attached_s + r.bpf_s) / r.proxy_cpu_s.max(1e-9))
            .collect();
        let kernel = if *kind == Some(Kind::Tcpdump) {
            String::new()
        } else if args.bpf_stats {
            format!(
                " + its kernel programs {:.2} us",
                mean(rounds, |r| r.bpf_s / r.requests.max(1.0) * 1e6)
            )
        } else {
            " + its kernel programs (not measured without --bpf-stats)".to_owned()
        };
        println!(
            "    attributable CPU: its process {:.2} us{kernel} per request = {:.1}% of the proxy's own (rounds {}); {:.0} context switches per second",
            median(&field(rounds, |r| r.attached_s / r.requests.max(1.0) * 1e6)),
            median(&share) * 100.0,
            share.iter().map(|x| format!("{:.1}", x * 100.0)).collect::<Vec<_>>().join(" "),
            median(&field(rounds, |r| r.attached_cs)) / f64::from(args.seconds)
        );
        let requests: f64 = rounds.iter().map(|r| r.requests).sum();
        let cost = res.cost[m];
        let per_round = cost.cpu_s / rounds.len().max(1) as f64;
        let extra = match kind {
            Some(Kind::Sparse | Kind::AllData) => format!(
                ", kernel events per request {:.3}",
                cost.events as f64 / requests.max(1.0)
            ),
            Some(Kind::Agent) => format!(
                ", packets dropped {}, kernel events lost {}",
                cost.dropped, cost.lost
            ),
            _ => String::new(),
        };
        println!(
            "    in all: {per_round:.2} CPU s per round ({:.1}% of one core), peak memory {} MiB{extra}",
            per_round / f64::from(args.seconds + 3) * 100.0,
            cost.peak_kib / 1024
        );
    }
}

/// Each round's value against the mean of the baselines just before and after it
/// (`base` holds one more round than `xs`: every round sits between two baselines).
pub(crate) fn paired(xs: &[f64], base: &[f64]) -> Vec<f64> {
    xs.iter()
        .zip(base.windows(2))
        .map(|(x, b)| x / ((b[0] + b[1]) / 2.0))
        .collect()
}

/// How much consecutive baselines differ, per cent: the noise floor of [`paired`].
pub(crate) fn noise_pct(base: &[f64]) -> Vec<f64> {
    base.windows(2)
        .map(|w| (w[1] / w[0] - 1.0).abs() * 100.0)
        .collect()
}

/// Ratios for a results line: `0.97 1.02 …`.
pub(crate) fn list(v: &[f64]) -> String {
    v.iter()
        .map(|x| format!("{x:.2}"))
        .collect::<Vec<_>>()
        .join(" ")
}

pub(crate) fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    match s.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => s[n / 2],
        n => (s[n / 2 - 1] + s[n / 2]) / 2.0,
    }
}

/// A distribution-free 95% confidence interval of the median of `v` (by order statistics:
/// the k-th smallest and k-th largest values, with k the largest such that fewer than k of
/// n values fall below the true median with probability at most 2.5%). `None` below 6
/// values, where even the extremes cover less than 95%.
pub(crate) fn median_ci(v: &[f64]) -> Option<(f64, f64)> {
    let n = v.len();
    if n < 6 {
        return None;
    }
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    // P(X <= j) for X ~ Binomial(n, 1/2), accumulated from the lower tail.
    let mut below = 0.0;
    let mut coef = 1.0_f64; // C(n, j)
    let half_n = 0.5_f64.powi(i32::try_from(n).ok()?);
    let mut k = 0;
    for j in 0..n {
        below += coef * half_n;
        if below > 0.025 {
            break;
        }
        k = j + 1;
        coef = coef * (n - j) as f64 / (j + 1) as f64;
    }
    let k = k.max(1);
    Some((s[k - 1], s[n - k]))
}

/// A median with its 95% interval, as an increase in per cent: `+1.8% (95% CI -0.4% to +3.9%)`.
pub(crate) fn increase(v: &[f64]) -> String {
    let pct = |x: f64| format!("{:+.1}%", (x - 1.0) * 100.0);
    match median_ci(v) {
        Some((lo, hi)) => format!("{} (95% CI {} to {})", pct(median(v)), pct(lo), pct(hi)),
        None => format!("{} (too few rounds for an interval)", pct(median(v))),
    }
}

fn backend_conf(dir: &Path, h: &Hosts) -> String {
    format!(
        "worker_processes 1;\npid {d}/backend.pid;\nerror_log {d}/backend-error.log;\nevents {{ worker_connections 4096; }}\n\
         http {{\n access_log off;\n client_body_temp_path {d}/tmp-b;\n proxy_temp_path {d}/tmp-b;\n\
         keepalive_requests 100000;\n server {{\n  listen {ip}:{UPSTREAM_PORT};\n  location / {{ return 200 \"ok\\n\"; }}\n }}\n}}\n",
        d = dir.display(),
        ip = h.upstream_ip
    )
}

fn front_conf(dir: &Path, h: &Hosts) -> String {
    format!(
        "worker_processes 1;\npid {d}/front.pid;\nerror_log {d}/front-error.log;\nevents {{ worker_connections 4096; }}\n\
         http {{\n access_log off;\n client_body_temp_path {d}/tmp-f;\n proxy_temp_path {d}/tmp-f;\n\
         upstream app {{ server {up}:{UPSTREAM_PORT}; keepalive 64; keepalive_requests 100000; }}\n\
         server {{\n  listen {ip}:{PROXY_PORT};\n  keepalive_requests 100000;\n  location / {{\n   proxy_pass http://app;\n   proxy_http_version 1.1;\n   proxy_set_header Connection \"\";\n  }}\n }}\n}}\n",
        d = dir.display(),
        up = h.upstream_ip,
        ip = h.proxy_front_ip
    )
}

/// Caddy as the proxy, named `front` like nginx: keep-alive to the upstream with an idle
/// pool larger than any load's concurrency (Caddy's default of 32 per host makes it close
/// and reopen connections under wrk -c32, until its ports run out), no logs.
fn start_caddy(procs: &mut Procs, program: &Path, ns: &str, dir: &Path, h: &Hosts) -> Result<()> {
    let conf = dir.join("Caddyfile");
    std::fs::write(
        &conf,
        format!(
            "{{\n\tadmin off\n\tauto_https off\n}}\n\
             http://:{PROXY_PORT} {{\n\tbind {front}\n\treverse_proxy {up}:{UPSTREAM_PORT} {{\n\
             \t\ttransport http {{\n\t\t\tkeepalive 60s\n\t\t\tkeepalive_idle_conns 256\n\t\t\tkeepalive_idle_conns_per_host 256\n\t\t}}\n\t}}\n}}\n",
            front = h.proxy_front_ip,
            up = h.upstream_ip,
        ),
    )?;
    let mut cmd = Command::new(program);
    cmd.args(["run", "--adapter", "caddyfile", "--config"])
        .arg(&conf)
        .env("HOME", dir)
        .env("XDG_DATA_HOME", dir.join("caddy-data"))
        .env("XDG_CONFIG_HOME", dir.join("caddy-config"));
    procs.spawn(ns, "front", cmd)
}

pub(crate) fn start_nginx(
    procs: &mut Procs,
    program: &Path,
    ns: &str,
    name: &str,
    conf: &str,
) -> Result<()> {
    let path = procs.dir().join(format!("{name}.conf"));
    std::fs::write(&path, conf)?;
    let mut cmd = Command::new(program);
    cmd.arg("-p")
        .arg(procs.dir())
        .arg("-c")
        .arg(&path)
        .args(["-g", "daemon off;"]);
    procs.spawn(ns, name, cmd)
}

pub(crate) fn start_tracer(
    tracer: &Path,
    h: &Hosts,
    seconds: u32,
    extra: &[&str],
    err: &Path,
) -> Result<Child> {
    Command::new(tracer)
        .arg("capture")
        .args(["--netns", &h.proxy_ns, "-i", &h.front_if, "-i", &h.back_if])
        .args(["--duration", &format!("{seconds}s")])
        .args(extra)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(err)?)
        .spawn()
        .context("starting tracer capture")
}

/// What `tracer capture` wrote to stderr (`err`) when it ended, after `done: `: packets,
/// kernel events and what was lost.
pub(crate) fn closing_line(err: &Path) -> Option<String> {
    std::fs::read_to_string(err)
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("tracer capture: done: "))
        .map(str::to_owned)
}

/// The kernel events `tracer capture` reported in its closing line.
fn kernel_events(err: &Path) -> u64 {
    closing_line(err)
        .and_then(|l| {
            l.split(", ")
                .find_map(|p| p.strip_suffix(" kernel events")?.parse().ok())
        })
        .unwrap_or(0)
}

/// [`run_wrk`] with the CPU the machine, the proxy (`proxy`: the nginx master, with its
/// worker), the attached processes (`attached`) and tracer's kernel programs spent
/// meanwhile, and the attached processes' context switches.
fn measured(
    wrk: &Path,
    ns: &str,
    url: &str,
    args: &BenchArgs,
    rate: u32,
    proxy: Option<u32>,
    attached: &[u32],
) -> Result<Round> {
    let snap = || {
        (
            busy_s(),
            children_cpu_s(),
            proxy.map_or(0.0, tree_cpu_s),
            attached.iter().map(|p| usage(*p).0).sum::<f64>(),
            attached.iter().map(|p| context_switches(*p)).sum::<u64>(),
            bpf_programs(),
        )
    };
    let (busy0, wrk0, proxy0, attached0, cs0, progs0) = snap();
    let mut r = run_wrk(wrk, ns, url, args.seconds, args.connections)?;
    let (busy1, wrk1, proxy1, attached1, cs1, progs1) = snap();
    let run_s = |progs: &[(String, f64, u64)]| progs.iter().map(|(_, s, _)| s).sum::<f64>();
    r.bpf_s = run_s(&progs1) - run_s(&progs0);
    if !attached.is_empty() && args.bpf_stats {
        let per: Vec<String> = progs1
            .iter()
            .zip(&progs0)
            .filter(|(a, b)| a.2 > b.2)
            .map(|(a, b)| {
                let runs = (a.2 - b.2) as f64;
                format!(
                    "{} {:.0} ns x {:.1}/req",
                    a.0,
                    (a.1 - b.1) / runs * 1e9,
                    runs / r.requests.max(1.0)
                )
            })
            .collect();
        eprintln!("    kernel programs: {}", per.join(", "));
    }
    r.cpu_s = (busy1 - busy0) - (wrk1 - wrk0);
    r.proxy_cpu_s = proxy1 - proxy0;
    r.attached_s = attached1 - attached0;
    r.attached_cs = cs1.saturating_sub(cs0) as f64;
    let (busy0, gen0) = (busy_s(), children_cpu_s());
    (r.fixed_rps, r.fixed_p99_ms, r.fixed_errors) =
        fixed_load(ns, url, rate, args.connections, args.seconds)?;
    r.fixed_cpu_s = (busy_s() - busy0) - (children_cpu_s() - gen0);
    r.fixed_requests = r.fixed_rps * f64::from(args.seconds);
    Ok(r)
}

/// Each of tracer's kernel programs: (name, seconds run, runs), summed over loaded copies
/// (counted while run-time statistics are enabled).
fn bpf_programs() -> Vec<(String, f64, u64)> {
    let ours: Vec<String> = tracer_common::TRACEPOINTS
        .iter()
        .map(|t| t.program)
        .chain([tracer_common::names::SELECT])
        .map(|p| p.chars().take(15).collect())
        .collect();
    let mut out: Vec<(String, f64, u64)> = ours.iter().map(|n| (n.clone(), 0.0, 0)).collect();
    for p in aya::programs::loaded_programs().filter_map(Result::ok) {
        if let Some(o) = out
            .iter_mut()
            .find(|o| p.name_as_str() == Some(o.0.as_str()))
        {
            o.1 += p.run_time().as_secs_f64();
            o.2 += p.run_count();
        }
    }
    out
}

/// Seconds the machine's CPUs were busy since boot: user, nice, system, irq and softirq
/// (idle, iowait and time stolen by the hypervisor left out).
fn busy_s() -> f64 {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let fields: Vec<f64> = stat
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .skip(1)
        .filter_map(|f| f.parse().ok())
        .collect();
    [0, 1, 2, 5, 6]
        .iter()
        .filter_map(|&i| fields.get(i))
        .sum::<f64>()
        / CLK_TCK
}

/// CPU seconds of this process's waited-for children (wrk, once it has exited).
fn children_cpu_s() -> f64 {
    // SAFETY: an all-zero rusage is a valid value to be overwritten, and the pointer is valid
    // for the call.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: as above; RUSAGE_CHILDREN only reads accounting.
    unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &raw mut ru) };
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// CPU seconds of process `pid` and its children (an nginx master and its worker).
fn tree_cpu_s(pid: u32) -> f64 {
    let kids =
        std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap_or_default();
    std::iter::once(pid)
        .chain(kids.split_whitespace().filter_map(|k| k.parse().ok()))
        .map(|p| usage(p).0)
        .sum()
}

/// `xtask rate-load` against `url` from namespace `ns`: achieved requests/s, p99 latency
/// (ms, from when each request was due) and failed requests.
pub(crate) fn fixed_load(
    ns: &str,
    url: &str,
    rate: u32,
    connections: u32,
    seconds: u32,
) -> Result<(f64, f64, u64)> {
    let target = url
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_owned();
    let out = Command::new("ip")
        .args(["netns", "exec", ns])
        .arg(std::env::current_exe().context("finding the xtask binary")?)
        .args(["rate-load", "--target", &target])
        .args(["--rate", &rate.to_string()])
        .args(["--connections", &connections.to_string()])
        .args(["--seconds", &seconds.to_string()])
        .output()
        .context("running the fixed-rate load")?;
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).with_context(|| {
        format!(
            "unexpected rate-load output: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    })?;
    Ok((
        v["rps"].as_f64().unwrap_or(0.0),
        v["p99_ms"].as_f64().unwrap_or(0.0),
        v["errors"].as_u64().unwrap_or(0),
    ))
}

pub(crate) fn run_wrk(
    wrk: &Path,
    ns: &str,
    url: &str,
    seconds: u32,
    connections: u32,
) -> Result<Round> {
    let out = Command::new("ip")
        .args(["netns", "exec", ns])
        .arg(wrk)
        .args([
            "-t2",
            &format!("-c{connections}"),
            &format!("-d{seconds}s"),
            "--latency",
            url,
        ])
        .output()
        .context("running wrk")?;
    let text = String::from_utf8_lossy(&out.stdout);
    parse_wrk(&text).with_context(|| {
        format!(
            "unexpected wrk output:\n{text}{}",
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// Requests/sec, the 99% latency and the request count from `wrk --latency`.
fn parse_wrk(text: &str) -> Result<Round> {
    let mut r = Round::default();
    for line in text.lines().map(str::trim) {
        if let Some(v) = line.strip_prefix("Requests/sec:") {
            r.rps = v.trim().parse()?;
        } else if let Some(v) = line.strip_prefix("99%") {
            r.p99_ms = latency_ms(v.trim())?;
        } else if line.contains("requests in") {
            r.requests = line.split_whitespace().next().unwrap_or("0").parse()?;
        }
    }
    if r.rps == 0.0 || r.p99_ms == 0.0 {
        bail!("no throughput or p99 in wrk's output");
    }
    Ok(r)
}

fn latency_ms(v: &str) -> Result<f64> {
    let (num, unit) = v.split_at(v.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(v.len()));
    let n: f64 = num.parse()?;
    Ok(match unit {
        "us" => n / 1000.0,
        "ms" => n,
        "s" => n * 1000.0,
        "m" => n * 60_000.0,
        _ => bail!("unknown latency unit in {v}"),
    })
}

/// CPU seconds and peak resident memory (KiB) of a running process. The CPU is its live
/// threads' run time from schedstat, to the nanosecond: `/proc/PID/stat` counts 10 ms
/// ticks, about one per benchmark round for a process as light as tracer.
pub(crate) fn usage(pid: u32) -> (f64, u64) {
    let ns = per_thread(pid, "schedstat", |s| {
        s.split_whitespace()
            .next()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    });
    (ns as f64 / 1e9, peak_rss_kib(pid))
}

/// Context switches of a live process so far, voluntary (it waited: each is a later
/// wake-up) and not (it was preempted), over all its threads; 0 once it is gone.
pub(crate) fn context_switches(pid: u32) -> u64 {
    per_thread(pid, "status", |s| {
        s.lines()
            .filter_map(|l| {
                l.strip_prefix("voluntary_ctxt_switches:")
                    .or_else(|| l.strip_prefix("nonvoluntary_ctxt_switches:"))?
                    .trim()
                    .parse::<u64>()
                    .ok()
            })
            .sum()
    })
}

/// `value` of each live thread's `/proc/PID/task/TID/<file>`, summed; 0 once the process
/// is gone.
fn per_thread(pid: u32, file: &str, value: impl Fn(&str) -> u64) -> u64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0;
    };
    tasks
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join(file)).ok())
        .map(|s| value(&s))
        .sum()
}

/// VmHWM (peak resident set) of a live process, KiB; 0 once it is gone.
pub fn peak_rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))?
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
        .unwrap_or(0)
}

/// Clock ticks per second of /proc/PID/stat times (USER_HZ: 100 on Linux x86_64 and arm64).
const CLK_TCK: f64 = 100.0;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrk_latency_output_is_parsed() {
        let out = "Running 8s test @ http://198.18.1.2:8080/\n  2 threads and 32 connections\n\
                   Latency Distribution\n     50%  600.00us\n     75%    0.90ms\n     90%    1.20ms\n     99%    3.50ms\n\
                   180000 requests in 8.00s, 30.00MB read\nRequests/sec:  22500.00\nTransfer/sec:      3.75MB\n";
        let r = parse_wrk(out).unwrap();
        assert!((r.rps - 22500.0).abs() < 1e-9);
        assert!((r.p99_ms - 3.5).abs() < 1e-9);
        assert!((r.requests - 180_000.0).abs() < 1e-9);
        assert!((latency_ms("850.00us").unwrap() - 0.85).abs() < 1e-9);
    }

    #[test]
    fn median_interval_uses_the_binomial_order_statistics() {
        // n = 16: P(X <= 3) = 0.0106 and P(X <= 4) = 0.0384, so the 4th smallest and the 4th
        // largest (the 13th) bound the interval.
        let v: Vec<f64> = (1..=16).rev().map(f64::from).collect();
        assert_eq!(median_ci(&v), Some((4.0, 13.0)));
        // n = 8: only the extremes cover 95% (P(X <= 0) = 0.0039, P(X <= 1) = 0.035).
        let v: Vec<f64> = (1..=8).map(f64::from).collect();
        assert_eq!(median_ci(&v), Some((1.0, 8.0)));
        assert_eq!(median_ci(&[1.0, 2.0, 3.0, 4.0, 5.0]), None);
        assert_eq!(
            increase(&[1.0, 1.02, 1.04, 0.98, 1.01, 1.03]),
            "+1.5% (95% CI -2.0% to +4.0%)"
        );
    }
}
