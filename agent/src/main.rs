//! The `tracer` command line. Thin on purpose: each subcommand lives in `cli/`.
use clap::{Parser, Subcommand};

mod cli;

/// Proves why a reverse proxy answered 502 (or 500, 504, 499), with evidence.
#[derive(Parser)]
#[command(version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Diagnose every 5xx/499 in one or more capture files (pcap, pcapng).
    Analyze(cli::analyze::Args),
    /// Diagnose live: capture a proxy's traffic (and follow its sockets in the kernel),
    /// print each verdict as it is proven, and end with the full report.
    Capture(cli::capture::Args),
    /// Check that this node can run the kernel probe: load, attach, see one connection.
    Check(cli::check::Args),
    /// The node agent: follow every proxy on this node, serve Prometheus metrics and
    /// stream verdicts as JSON lines, until SIGTERM.
    Agent(cli::agent::Args),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Analyze(args) => cli::analyze::run(&args),
        Command::Check(args) => cli::check::run(&args),
        Command::Capture(args) => cli::capture::run(&args),
        Command::Agent(args) => cli::agent::run(&args),
    }
}
