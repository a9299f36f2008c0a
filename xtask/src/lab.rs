//! `cargo xtask lab` and `cargo xtask fixtures`.
use std::path::PathBuf;
use std::sync::atomic::Ordering;

use anyhow::{bail, Context, Result};
use tracer_lab::run::{run as run_scenario, RunOptions};
use tracer_lab::scenarios;

#[derive(clap::Args)]
pub struct LabArgs {
    /// Scenario names, or `all`; `--list` shows them.
    scenarios: Vec<String>,
    /// List the scenarios and exit.
    #[arg(long)]
    list: bool,
    /// Directory for the runs (one subdirectory per scenario).
    #[arg(long, default_value = "lab-runs")]
    out: PathBuf,
    /// Send this many requests instead of the scenario's default.
    #[arg(long)]
    requests: Option<u32>,
    /// Also run `tracer capture` live on the proxy's namespace (release build) and write
    /// its report next to the ground truth.
    #[arg(long)]
    with_tracer: bool,
}

/// Ctrl-C stops the load; the run then tears everything down as on any other exit.
pub fn install_ctrlc() {
    let _ = ctrlc::set_handler(|| {
        eprintln!("\ninterrupted: stopping the load and cleaning up");
        tracer_lab::load::STOP.store(true, Ordering::Relaxed);
    });
}

pub fn run(args: &LabArgs) -> Result<()> {
    if args.list || args.scenarios.is_empty() {
        for s in scenarios::all() {
            println!("{:18} {}", s.name(), s.about());
        }
        return Ok(());
    }
    let chosen = choose(&args.scenarios)?;
    let tracer = if args.with_tracer {
        Some(crate::build_tracer()?)
    } else {
        None
    };
    install_ctrlc();
    let mut failed = Vec::new();
    for s in chosen {
        let dir = args.out.join(s.name());
        eprintln!("==> lab {}: {}", s.name(), s.about());
        let out = run_scenario(
            s.as_ref(),
            &dir,
            &RunOptions {
                requests: args.requests,
                tracer: tracer.clone(),
                ..RunOptions::default()
            },
        )
        .with_context(|| format!("lab {}", s.name()))?;
        println!("{}", out.summary());
        for p in out.misses.iter().chain(&out.disagreements).take(20) {
            println!("    {p}");
        }
        if !(out.misses.is_empty() && out.disagreements.is_empty()) {
            failed.push(s.name());
        }
        if tracer_lab::load::STOP.load(Ordering::Relaxed) {
            bail!("interrupted");
        }
    }
    if !failed.is_empty() {
        bail!(
            "scenarios that missed their expectation: {}",
            failed.join(", ")
        );
    }
    Ok(())
}

fn choose(names: &[String]) -> Result<Vec<Box<dyn tracer_lab::scenario::Scenario>>> {
    if names.iter().any(|n| n == "all") {
        return Ok(scenarios::all());
    }
    names
        .iter()
        .map(|n| {
            scenarios::by_name(n).with_context(|| {
                let known: Vec<_> = scenarios::all().iter().map(|s| s.name()).collect();
                format!("no scenario `{n}`; known: {}", known.join(", "))
            })
        })
        .collect()
}

/// Small runs of each scenario, kept as test fixtures: captures, ground truth, logs.
pub fn fixtures(names: &[String]) -> Result<()> {
    let chosen = if names.is_empty() {
        scenarios::all()
    } else {
        choose(names)?
    };
    install_ctrlc();
    let root = crate::workspace_root().join("tests/fixtures");
    for s in chosen {
        let dir = std::env::temp_dir().join(format!("tracer-fixture-{}", s.name()));
        let requests = (s.load().requests / 4).clamp(40, 400);
        let out = run_scenario(
            s.as_ref(),
            &dir,
            &RunOptions {
                requests: Some(requests),
                ..RunOptions::default()
            },
        )?;
        println!("{}", out.summary());
        if !out.disagreements.is_empty() {
            bail!(
                "{}: ground truth disagrees with the client: {:?}",
                s.name(),
                out.disagreements
            );
        }
        let dest = root.join(s.name());
        std::fs::create_dir_all(&dest)?;
        for f in ["client.pcap", "upstream.pcap", "truth.json", "client.jsonl"] {
            std::fs::copy(out.dir.join(f), dest.join(f)).with_context(|| format!("copying {f}"))?;
        }
        std::fs::remove_dir_all(&out.dir).ok();
    }
    Ok(())
}
