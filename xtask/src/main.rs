//! `cargo xtask …`: build and development tasks for tracer.
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};

mod bench;
mod bench_agent;
mod bench_analyze;
mod bench_flood;
mod bench_paired;
mod bench_probe;
mod bench_tls;
mod bench_tls_hit;
mod ebpf;
mod exposition;
mod lab;
mod rate;
mod soak;

#[derive(Parser)]
#[command(about = "Build and development tasks for tracer")]
struct Cli {
    #[command(subcommand)]
    command: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Run lab scenarios: real proxies and upstreams in network namespaces (needs root).
    Lab(lab::LabArgs),
    /// The built-in demo: the seed scenario of the lab, then tracer's diagnosis of it.
    Demo {
        /// Where to keep the run (captures, logs, ground truth).
        #[arg(long, default_value = "lab-runs/demo")]
        out: PathBuf,
    },
    /// Record small lab runs of every scenario into tests/fixtures/ (needs root).
    Fixtures {
        /// Only these scenarios (default: all).
        scenarios: Vec<String>,
    },
    /// What CI runs: cargo fmt --check, clippy -D warnings, then every test.
    Test,
    /// Benchmark: tracer analyze on a large capture, against tshark (packets/s, memory).
    BenchAnalyze(bench_analyze::BenchArgs),
    /// Benchmark: tracer analyze's peak memory under a growing flood of half-open connections.
    BenchFlood(bench_flood::FloodArgs),
    /// Benchmark: a busy proxy's throughput and p99 with and without `tracer capture` or
    /// `tracer agent` (and `tcpdump`), optionally beside unrelated busy traffic.
    BenchCapture(bench::BenchArgs),
    /// Benchmark: bench-capture's question on two stacks loaded at once, cancelling host noise.
    BenchPaired(bench_paired::PairedArgs),
    /// Benchmark: the kernel side's cost per system call and per packet (loopback, no proxy).
    BenchProbe(bench_probe::BenchArgs),
    /// What the TLS uprobes cost a TLS-terminating nginx per request, against nginx alone
    /// and the probe without uprobes, in the same run.
    BenchTls(bench_tls::BenchArgs),
    /// Soak: `tracer agent` under lab load for many minutes, its memory sampled (slope).
    SoakAgent(soak::SoakArgs),
    /// An open-loop load at a fixed rate, one JSON line of results (used by bench-capture).
    #[command(hide = true)]
    RateLoad(rate::RateArgs),
    /// Build the kernel probe (ebpf/) alone and print where the object is.
    BuildEbpf {
        /// A debug build of the probe instead of release.
        #[arg(long)]
        debug: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Task::Lab(args) => lab::run(&args),
        Task::Demo { out } => demo(&out),
        Task::Fixtures { scenarios } => lab::fixtures(&scenarios),
        Task::Test => test(),
        Task::BenchCapture(args) => bench::bench_capture(&args),
        Task::BenchAnalyze(args) => bench_analyze::bench_analyze(&args),
        Task::BenchFlood(args) => bench_flood::bench_flood(&args),
        Task::BenchProbe(args) => bench_probe::bench_probe(&args),
        Task::BenchTls(args) => bench_tls::bench_tls(&args),
        Task::BenchPaired(args) => bench_paired::bench_paired(&args),
        Task::SoakAgent(args) => soak::soak_agent(&args),
        Task::RateLoad(args) => rate::run(&args),
        Task::BuildEbpf { debug } => ebpf::build_ebpf(!debug),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
}

fn cargo() -> Command {
    let mut c = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    c.current_dir(workspace_root());
    c
}

fn status(mut c: Command, what: &str) -> Result<()> {
    eprintln!("==> {what}");
    let s = c.status().with_context(|| format!("running {what}"))?;
    if !s.success() {
        bail!("{what} failed ({s})");
    }
    Ok(())
}

/// A program from PATH (or /usr/sbin), if installed.
fn lab_program(name: &str) -> Option<PathBuf> {
    tracer_lab::scenario::require_program(name, name).ok()
}

/// Builds the `tracer` binary (release) and returns its path.
fn build_tracer() -> Result<PathBuf> {
    let mut c = cargo();
    c.args(["build", "--release", "--quiet", "--bin", "tracer"]);
    status(c, "cargo build --release --bin tracer")?;
    Ok(workspace_root().join("target/release/tracer"))
}

fn test() -> Result<()> {
    let mut fmt = cargo();
    fmt.args(["fmt", "--all", "--", "--check"]);
    status(fmt, "cargo fmt --check")?;
    let mut clippy = cargo();
    // The suite includes the kernel probe's tests: a build without the probe is a failure
    // here, not a silent skip (agent/build.rs reads this).
    clippy.env("TRACER_REQUIRE_EBPF", "1");
    clippy.args([
        "clippy",
        "--workspace",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ]);
    status(clippy, "cargo clippy -D warnings")?;
    let mut test = cargo();
    test.env("TRACER_REQUIRE_EBPF", "1");
    // Lab tests share the machine's two cores and must not race each other for them.
    test.args(["test", "--workspace", "--", "--test-threads=2"]);
    status(test, "cargo test --workspace")
}

fn demo(out: &Path) -> Result<()> {
    let scenario =
        tracer_lab::scenarios::by_name("seed").context("the seed scenario is missing")?;
    lab::install_ctrlc();
    let run = tracer_lab::run::run(
        scenario.as_ref(),
        out,
        &tracer_lab::run::RunOptions::default(),
    )?;
    println!("{}", run.summary());
    println!("captures, logs and ground truth: {}", run.dir.display());
    let mut analyze = cargo();
    analyze
        .args([
            "run",
            "--quiet",
            "--release",
            "--bin",
            "tracer",
            "--",
            "analyze",
        ])
        .arg(run.dir.join("client.pcap"))
        .arg(run.dir.join("upstream.pcap"));
    status(analyze, "tracer analyze client.pcap upstream.pcap")
}
