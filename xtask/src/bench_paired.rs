//! `cargo xtask bench-paired`: `bench-capture`'s question with the host's noise cancelled.
//!
//! On a shared VM, identical rounds run a minute apart differ by 5-30% in throughput and
//! several-fold in p99, far more than the few per cent being measured. Here two identical
//! stacks (client, proxy, upstream namespaces each) are loaded at the same time, and the
//! thing measured is attached to one of them: whatever the host does to one stack in that
//! round it does to the other. The attached stack alternates (A, then B) so that any
//! difference between the stacks cancels, and rounds with nothing attached measure the
//! ratio's own spread (the noise floor). Both stacks share the machine, so the CPU that
//! tracer's process takes is taken from both: the ratio measures what tracer adds to the
//! proxy's own path (the kernel side, per packet and per call), and tracer's process CPU is
//! printed beside it.

use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::Duration;

use anyhow::Result;

use crate::bench::{
    closing_line, fixed_load, list, median, run_wrk, start_tcpdump, start_tracer, stop_tcpdump,
    usage, Kind, Proxy, Stack,
};

#[derive(clap::Args)]
pub struct PairedArgs {
    /// Seconds of each load.
    #[arg(long, default_value_t = 5)]
    seconds: u32,
    /// Rounds with the kind attached (half on each stack); as many with nothing attached.
    #[arg(long, default_value_t = 6)]
    rounds: u32,
    /// wrk connections per stack (and the fixed-rate load's).
    #[arg(long, default_value_t = 16)]
    connections: u32,
    /// The fixed load per stack, requests/s; default: a quarter of one stack's throughput
    /// while both run.
    #[arg(long)]
    rate: Option<u32>,
    /// What to attach: tracer capture as it runs by default, with --all-data, or tcpdump.
    #[arg(long, value_enum, default_value_t = Kind::Sparse)]
    kind: Kind,
    /// The proxy under test.
    #[arg(long, value_enum, default_value_t = Proxy::Nginx)]
    proxy: Proxy,
    /// More arguments for `tracer capture` (e.g. `--tracer-arg=--background`).
    #[arg(long = "tracer-arg", value_name = "ARG", allow_hyphen_values = true)]
    tracer_args: Vec<String>,
}

/// Throughput and p99 of both stacks under the same two loads at the same time.
#[derive(Debug, Clone, Copy, Default)]
struct Both {
    rps: [f64; 2],
    fixed_rps: [f64; 2],
    fixed_p99: [f64; 2],
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

fn run_both(wrk: &Path, stacks: &[Stack; 2], args: &PairedArgs, rate: u32) -> Result<Both> {
    let (seconds, connections) = (args.seconds, args.connections);
    let sat = on_both(stacks, |st| {
        run_wrk(wrk, &st.h.client_ns, &st.url, seconds, connections)
    })?;
    let fixed = on_both(stacks, |st| {
        fixed_load(&st.h.client_ns, &st.url, rate, connections, seconds)
    })?;
    let mut b = Both::default();
    for i in 0..2 {
        b.rps[i] = sat[i].rps;
        b.fixed_rps[i] = fixed[i].0;
        b.fixed_p99[i] = fixed[i].1;
        b.errors += fixed[i].2;
    }
    Ok(b)
}

/// What is attached to one stack for a round.
enum Attached {
    Nothing,
    /// `tracer capture`, and the file its stderr goes to.
    Tracer(Child, PathBuf),
    Tcpdump,
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
    let warm = run_both(&wrk, &stacks, args, 100)?;
    let each = warm.rps[0].min(warm.rps[1]);
    let rate = args.rate.unwrap_or((each / 4.0) as u32).max(1);
    eprintln!("each stack: {each:.0} req/s while both run; fixed load {rate} req/s per stack");

    let mut extra: Vec<&str> = match args.kind {
        Kind::Sparse | Kind::Tcpdump => Vec::new(),
        Kind::AllData => vec!["--all-data"],
    };
    extra.extend(args.tracer_args.iter().map(String::as_str));
    // (with / without) per round where something was attached, and (B / A) per round
    // with nothing: the noise floor.
    let mut rps_ratio = Vec::new();
    let mut p99_ratio = Vec::new();
    let mut fixed_ratio = Vec::new();
    let mut calm_rps = Vec::new();
    let mut calm_p99 = Vec::new();
    // Absolute p99s: of the stack without, in rounds with something attached; of both
    // stacks, in rounds with nothing. What tracer does to the whole machine (its own
    // threads' CPU and wake-ups) raises the first above the second.
    let mut beside_p99 = Vec::new();
    let mut calm_abs_p99 = Vec::new();
    let mut tracer_cpu = Vec::new();
    let mut errors = 0;
    for round in 0..args.rounds * 2 {
        let attached_to = (round % 2 == 0).then_some((round / 2 % 2) as usize);
        let mut attached = Attached::Nothing;
        if let Some(i) = attached_to {
            let st = &mut stacks[i];
            attached = match args.kind {
                Kind::Tcpdump => {
                    start_tcpdump(st)?;
                    Attached::Tcpdump
                }
                _ => {
                    let err = dir.join(format!("tracer-{round}.err"));
                    let t = start_tracer(&tracer, &st.h, 2 * args.seconds + 6, &extra, &err)?;
                    Attached::Tracer(t, err)
                }
            };
            std::thread::sleep(Duration::from_millis(1500));
        }
        let cpu0 = match &attached {
            Attached::Tracer(t, _) => usage(t.id()).0,
            _ => 0.0,
        };
        let b = run_both(&wrk, &stacks, args, rate)?;
        errors += b.errors;
        match (attached_to, attached) {
            (Some(i), a) => {
                let o = 1 - i;
                rps_ratio.push(b.rps[i] / b.rps[o]);
                p99_ratio.push(b.fixed_p99[i] / b.fixed_p99[o]);
                fixed_ratio.push(b.fixed_rps[i] / b.fixed_rps[o]);
                beside_p99.push(b.fixed_p99[o]);
                eprintln!(
                    "round {round}: attached to stack {}: {:.0} vs {:.0} req/s, fixed-load p99 {:.2} vs {:.2} ms",
                    ["A", "B"][i], b.rps[i], b.rps[o], b.fixed_p99[i], b.fixed_p99[o]
                );
                match a {
                    Attached::Tracer(mut t, err) => {
                        let requests = (b.rps[i] + f64::from(rate)) * f64::from(args.seconds);
                        tracer_cpu.push((usage(t.id()).0 - cpu0) / requests.max(1.0) * 1e6);
                        let _ = t.wait();
                        if let Some(done) = closing_line(&err) {
                            eprintln!("    tracer capture: done: {done}");
                        }
                    }
                    Attached::Tcpdump => stop_tcpdump(&mut stacks[i]),
                    Attached::Nothing => {}
                }
            }
            (None, _) => {
                calm_rps.push(b.rps[1] / b.rps[0]);
                calm_p99.push(b.fixed_p99[1] / b.fixed_p99[0]);
                calm_abs_p99.extend(b.fixed_p99);
                eprintln!(
                    "round {round}: nothing attached: {:.0} vs {:.0} req/s, fixed-load p99 {:.2} vs {:.2} ms",
                    b.rps[1], b.rps[0], b.fixed_p99[1], b.fixed_p99[0]
                );
            }
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
        "bench-paired: two {} -> nginx stacks loaded at once ({} connections each, {} s per load), {:?} attached to one, alternating; {} rounds each way",
        args.proxy.name(),
        args.connections,
        args.seconds,
        args.kind,
        args.rounds
    );
    println!(
        "  noise floor (nothing attached, B/A): throughput ratios {} (median spread {:.1}%), fixed-load p99 ratios {} (median spread {:.1}%)",
        list(&calm_rps),
        spread(&calm_rps),
        list(&calm_p99),
        spread(&calm_p99)
    );
    println!(
        "  saturation throughput, with / without: median {:.3} (loss {:.1}%, target <= 3%; rounds {})",
        median(&rps_ratio),
        (1.0 - median(&rps_ratio)) * 100.0,
        list(&rps_ratio)
    );
    println!(
        "  fixed load {rate} req/s: throughput with / without: median {:.3} (loss {:.1}%, target <= 3%)",
        median(&fixed_ratio),
        (1.0 - median(&fixed_ratio)) * 100.0
    );
    println!(
        "  fixed load {rate} req/s: p99 with / without: median {:.3} (increase {:.1}%, target <= 5%; rounds {}), {errors} errors",
        median(&p99_ratio),
        (median(&p99_ratio) - 1.0) * 100.0,
        list(&p99_ratio)
    );
    println!(
        "  beside it: the stack without had a median fixed-load p99 of {:.2} ms in those rounds, both stacks {:.2} ms in rounds with nothing attached (what the attached stack does to the whole machine; the host drifts between rounds too)",
        median(&beside_p99),
        median(&calm_abs_p99)
    );
    if !tracer_cpu.is_empty() {
        println!(
            "  tracer's own CPU: median {:.2} us per request of its stack (taken from both stacks alike, so not in the ratios)",
            median(&tracer_cpu)
        );
    }
    Ok(())
}
