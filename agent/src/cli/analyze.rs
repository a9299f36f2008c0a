//! `tracer analyze FILE…`
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct Args {
    /// Capture files (pcap or pcapng); several are merged by time.
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
}

pub fn run(args: &Args) -> ExitCode {
    eprintln!("tracer analyze: not implemented yet ({} files)", args.files.len());
    ExitCode::from(2)
}
