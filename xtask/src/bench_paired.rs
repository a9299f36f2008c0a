//! `cargo xtask bench-paired`: `bench-capture`'s question with the host's noise cancelled.
//!
//! On a shared VM, identical rounds run a minute apart differ by 5-30% in throughput and
//! several-fold in p99, far more than the few per cent being measured. Here two identical
//! stacks (client, proxy, upstream namespaces each) take the same fixed load at the same
//! time, and the thing measured is attached to one of them: whatever the host does to one
//! stack in that round it does to the other. The attached stack alternates (A, then B) so
//! that any difference between the stacks cancels, and rounds with nothing attached measure
//! the ratio's own spread (the noise floor).
//!
//! That ratio measures what the attached thing adds to the proxy's own path (the kernel
//! side, per packet and per call). What it does to the whole machine (its process's CPU and
//! wake-ups, the probe's tracepoints on every socket) reaches both stacks and cancels in the
//! ratio, so it is measured apart: the p99 of the stack without, against the rounds with
//! nothing attached just before and after. That comparison is between rounds, so the host's
//! drift enters it; `--reference tcpdump` interleaves rounds with `tcpdump` attached, so the
//! drift falls on both alike and the two can be compared.

use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::Duration;

use anyhow::Result;

use crate::bench::{
    closing_line, context_switches, fixed_load, increase, list, median, noise_pct, paired, run_wrk,
    start_tcpdump, start_tracer, stop_tcpdump, usage, Kind, Proxy, Stack,
};
use crate::bench_agent::AgentRun;

#[derive(clap::Args)]
pub struct PairedArgs {
    /// Seconds of each load.
    #[arg(long, default_value_t = 4)]
    seconds: u32,
    /// Rounds with the kind attached (half on each stack); as many with `--reference`
    /// attached when given, and one more than all those with nothing attached.
    #[arg(long, default_value_t = 12)]
    rounds: u32,
    /// Connections per stack of the fixed-rate load (and of the wrk run that finds the
    /// capacity).
    #[arg(long, default_value_t = 16)]
    connections: u32,
    /// The fixed load per stack, requests/s; default: a quarter of one stack's throughput
    /// while both run.
    #[arg(long)]
    rate: Option<u32>,
    /// What to attach: tracer capture as it runs by default, with --all-data, tcpdump, or
    /// tracer agent (told to follow the one stack's namespace).
    #[arg(long, value_enum, default_value_t = Kind::Sparse)]
    kind: Kind,
    /// A second kind measured in the same run, its rounds interleaved with the first's
    /// (e.g. `tcpdump`: what any capture does to the machine, under the same drift).
    #[arg(long, value_enum)]
    reference: Option<Kind>,
    /// The proxy under test.
    #[arg(long, value_enum, default_value_t = Proxy::Nginx)]
    proxy: Proxy,
    /// More arguments for `tracer capture` or `tracer agent` (e.g. `--tracer-arg=--no-probe`).
    #[arg(long = "tracer-arg", value_name = "ARG", allow_hyphen_values = true)]
    tracer_args: Vec<String>,
}

/// Throughput and p99 of both stacks under the same fixed load at the same time.
#[derive(Debug, Clone, Copy, Default)]
struct Both {
    rps: [f64; 2],
    p99: [f64; 2],
    errors: u64,
}

/// `f` on both stacks at once, one thread each; the results in stack order.
fn on_both<T: Send>(stacks: &[Stack; 2], f: impl Fn(&Stack) -> Result<T> + Sync) -> Result<[T; 2]> {
    std::thread::scope(|s| {
        let [a, b] = stacks.each_ref().map(|st| s.spawn(|| f(st))).map(|t| {
            t.join()
                .map_err(|_| anyhow::anyhow!("a load thread panicked"))?
        });
        Ok([a?, b?])
    })
}

fn fixed_both(stacks: &[Stack; 2], args: &PairedArgs, rate: u32) -> Result<Both> {
    let fixed = on_both(stacks, |st| {
        fixed_load(
            &st.h.client_ns,
            &st.url,
            rate,
            args.connections,
            args.seconds,
        )
    })?;
    let mut b = Both::default();
    for (i, (rps, p99, errors)) in fixed.into_iter().enumerate() {
        b.rps[i] = rps;
        b.p99[i] = p99;
        b.errors += errors;
    }
    Ok(b)
}

/// What is attached to one stack for a round.
enum Attached {
    /// `tracer capture`, and the file its stderr goes to.
    Tracer(Child, PathBuf),
    Tcpdump,
    /// `tracer agent`, told to follow this stack's namespace only.
    Agent(AgentRun),
}

impl Attached {
    fn start(
        kind: Kind,
        st: &mut Stack,
        tracer: &Path,
        extra: &[&str],
        err: PathBuf,
        proxy: Proxy,
    ) -> Result<Self> {
        Ok(match kind {
            Kind::Tcpdump => {
                start_tcpdump(st)?;
                Attached::Tcpdump
            }
            Kind::Agent => {
                // Both stacks' proxies have the same name: the namespace picks this one.
                let mut args: Vec<String> = ["--netns", &st.h.proxy_ns, "--name", proxy.comm()]
                    .map(str::to_owned)
                    .into();
                args.extend(extra.iter().map(|s| (*s).to_owned()));
                let mut agent = AgentRun::start(tracer, &args, &err)?;
                let front: Vec<u32> = st.procs.pid("front").into_iter().collect();
                agent.wait_following(&front, Duration::from_secs(30))?;
                Attached::Agent(agent)
            }
            Kind::Sparse | Kind::AllData => {
                let mut args: Vec<&str> = Vec::new();
                if kind == Kind::AllData {
                    args.push("--all-data");
                }
                args.extend_from_slice(extra);
                // The duration is a safety net: the round stops it with SIGINT (Ctrl-C).
                let t = start_tracer(tracer, &st.h, 60, &args, &err)?;
                Attached::Tracer(t, err)
            }
        })
    }

    /// The processes attached (tracer, or the two `tcpdump`s).
    fn pids(&self, st: &Stack) -> Vec<u32> {
        match self {
            Attached::Tracer(t, _) => vec![t.id()],
            Attached::Agent(a) => vec![a.pid()],
            Attached::Tcpdump => ["tcpdump-ref-0", "tcpdump-ref-1"]
                .iter()
                .filter_map(|n| st.procs.pid(n))
                .collect(),
        }
    }

    /// Stops it; for tracer, its closing line.
    fn stop(self, st: &mut Stack) -> Option<String> {
        match self {
            Attached::Tracer(mut t, err) => {
                if let Ok(pid) = libc::pid_t::try_from(t.id()) {
                    // SAFETY: kill(2) with a pid of our own child, which has not been waited
                    // for, so the pid cannot have been reused.
                    unsafe { libc::kill(pid, libc::SIGINT) };
                }
                let _ = t.wait();
                closing_line(&err).map(|l| format!("tracer capture: done: {l}"))
            }
            Attached::Tcpdump => {
                stop_tcpdump(st);
                None
            }
            Attached::Agent(a) => Some(match a.stop() {
                Ok(end) => format!(
                    "tracer agent: {} packets dropped, {} kernel events lost",
                    end.packets_dropped, end.events_lost
                ),
                Err(e) => format!("tracer agent: {e:#}"),
            }),
        }
    }
}

/// What the rounds with one kind attached measured.
#[derive(Default)]
struct Arm {
    /// With / without, per round: fixed-load throughput and p99.
    rps_ratio: Vec<f64>,
    p99_ratio: Vec<f64>,
    /// p99 of the stack without, and the rounds' index (for its calm neighbours).
    beside: Vec<(usize, f64)>,
    /// The attached processes' CPU per request of their stack, microseconds.
    cpu_us: Vec<f64>,
    /// Their context switches (wake-ups, and preemptions) per second of load.
    wakeups: Vec<f64>,
}

/// CPU seconds and context switches of `pids` so far (all their threads).
fn cost(pids: &[u32]) -> (f64, u64) {
    pids.iter()
        .map(|&p| (usage(p).0, context_switches(p)))
        .fold((0.0, 0), |(c, w), (pc, pw)| (c + pc, w + pw))
}

pub fn bench_paired(args: &PairedArgs) -> Result<()> {
    tracer_lab::run::preflight()?;
    let wrk = tracer_lab::scenario::require_program("wrk", "wrk")?;
    let tracer = crate::build_tracer()?;
    let dir = std::env::temp_dir().join(format!("tracer-paired-{}", std::process::id()));
    let mut stacks = [
        Stack::start(&dir.join("a"), args.proxy)?,
        Stack::start(&dir.join("b"), args.proxy)?,
    ];
    // Warm up the pools and find what one stack serves while both run.
    let sat = on_both(&stacks, |st| {
        run_wrk(
            &wrk,
            &st.h.client_ns,
            &st.url,
            args.seconds,
            args.connections,
        )
    })?;
    let each = sat[0].rps.min(sat[1].rps);
    let rate = args.rate.unwrap_or((each / 4.0) as u32).max(1);
    eprintln!("each stack: {each:.0} req/s while both run; fixed load {rate} req/s per stack");

    let kinds: Vec<Kind> = std::iter::once(args.kind).chain(args.reference).collect();
    let extra: Vec<&str> = args.tracer_args.iter().map(String::as_str).collect();
    let mut arms: Vec<Arm> = kinds.iter().map(|_| Arm::default()).collect();
    // Per round with nothing attached: B / A, and the mean p99 of both stacks.
    let mut calm_ratio = Vec::new();
    let mut calm_p99 = Vec::new();
    let mut errors = 0;
    let attached_rounds = args.rounds as usize * kinds.len();
    // Calm, attached, calm, attached, ..., calm: each attached round has a calm one on
    // either side. Attached rounds take the kinds in turn, each kind alternating stacks.
    for round in 0..=attached_rounds * 2 {
        if round % 2 == 0 {
            // As long a pause as an attached round's start gets.
            std::thread::sleep(Duration::from_millis(1500));
            let b = fixed_both(&stacks, args, rate)?;
            errors += b.errors;
            calm_ratio.push(b.p99[1] / b.p99[0]);
            calm_p99.push((b.p99[0] + b.p99[1]) / 2.0);
            eprintln!(
                "round {round}: nothing attached: fixed-load p99 {:.2} vs {:.2} ms",
                b.p99[1], b.p99[0]
            );
            continue;
        }
        let n = round / 2;
        let (k, turn) = (n % kinds.len(), n / kinds.len());
        let i = turn % 2;
        let o = 1 - i;
        let err = dir.join(format!("tracer-{round}.err"));
        let attached = Attached::start(kinds[k], &mut stacks[i], &tracer, &extra, err, args.proxy)?;
        std::thread::sleep(Duration::from_millis(1500));
        let pids = attached.pids(&stacks[i]);
        let before = cost(&pids);
        let b = fixed_both(&stacks, args, rate)?;
        errors += b.errors;
        let after = cost(&pids);
        let done = attached.stop(&mut stacks[i]);
        let arm = &mut arms[k];
        let requests = (b.rps[i] * f64::from(args.seconds)).max(1.0);
        arm.cpu_us.push((after.0 - before.0) / requests * 1e6);
        arm.wakeups
            .push((after.1 - before.1) as f64 / f64::from(args.seconds));
        arm.rps_ratio.push(b.rps[i] / b.rps[o]);
        arm.p99_ratio.push(b.p99[i] / b.p99[o]);
        arm.beside.push((round, b.p99[o]));
        eprintln!(
            "round {round}: {:?} attached to stack {}: fixed-load p99 {:.2} vs {:.2} ms",
            kinds[k],
            ["A", "B"][i],
            b.p99[i],
            b.p99[o]
        );
        if let Some(done) = done {
            eprintln!("    {done}");
        }
    }
    drop(stacks);
    let _ = std::fs::remove_dir_all(&dir);

    let spread = |v: &[f64]| {
        let mut d: Vec<f64> = v.iter().map(|x| (x.ln()).abs()).collect();
        d.sort_by(f64::total_cmp);
        (median(&d).exp() - 1.0) * 100.0
    };
    println!(
        "bench-paired: two {} -> nginx stacks under a fixed load of {rate} req/s each ({} connections, {} s per round), {} attached to one, alternating; {} rounds each",
        args.proxy.name(),
        args.connections,
        args.seconds,
        kinds
            .iter()
            .map(|k| format!("{k:?}"))
            .collect::<Vec<_>>()
            .join(" or "),
        args.rounds
    );
    println!(
        "  noise floor (nothing attached, B/A): p99 ratios {} (median spread {:.1}%); drift of p99 between those rounds: median {:.1}%; {errors} errors in all",
        list(&calm_ratio),
        spread(&calm_ratio),
        median(&noise_pct(&calm_p99))
    );
    // Per kind, per round: the stack without against the calm rounds either side. Calm
    // rounds are the even ones, so round r's neighbours are calm_p99[r / 2] and
    // calm_p99[r / 2 + 1].
    let beside: Vec<Vec<f64>> = arms
        .iter()
        .map(|arm| {
            arm.beside
                .iter()
                .flat_map(|&(r, p)| paired(&[p], &calm_p99[r / 2..=r / 2 + 1]))
                .collect()
        })
        .collect();
    for ((kind, arm), beside) in kinds.iter().zip(&arms).zip(&beside) {
        println!("  {kind:?}:");
        println!(
            "    in the proxy's path: p99 with / without: {} (target <= +5%; rounds {}); throughput with / without: median {:.3} (loss {:.1}%, target <= 3%)",
            increase(&arm.p99_ratio),
            list(&arm.p99_ratio),
            median(&arm.rps_ratio),
            (1.0 - median(&arm.rps_ratio)) * 100.0
        );
        println!(
            "    on the whole machine: p99 of the stack without / the rounds with nothing attached before and after: {} (rounds {})",
            increase(beside),
            list(beside)
        );
        println!(
            "    its own CPU: median {:.2} us per request of its stack; {:.0} context switches per second (taken from both stacks alike, so not in the path ratios)",
            median(&arm.cpu_us),
            median(&arm.wakeups)
        );
    }
    if let ([first, second], [a, b]) = (&kinds[..], &beside[..]) {
        // The two kinds' rounds alternate with one calm round between them: each of the
        // first's rounds against the second's next one cancels the drift that the calm
        // rounds either side only halve.
        let vs: Vec<f64> = a.iter().zip(b).map(|(x, y)| x / y).collect();
        println!(
            "  {first:?} against {second:?} on the whole machine, round by round: {} (rounds {})",
            increase(&vs),
            list(&vs)
        );
    }
    Ok(())
}
