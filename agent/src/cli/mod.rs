//! One module per subcommand. Each exposes `Args` (clap) and `run`.
pub mod agent;
pub mod analyze;
pub mod capture;
pub mod check;

use tracer::engine::Analysis;
use tracer::report::{self, CaptureSummary};

/// Report formats on stdout.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Text,
    Json,
}

/// Prints the report on stdout; JSON is serialized straight to it.
pub fn print_report(
    a: &Analysis,
    capture: CaptureSummary,
    format: Format,
    verbose: bool,
) -> std::io::Result<()> {
    use std::io::Write;
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    match format {
        Format::Text => out.write_all(report::text::render(a, capture, verbose).as_bytes())?,
        Format::Json => {
            report::json::write(a, capture, &mut out)?;
            out.write_all(b"\n")?;
        }
    }
    out.flush()
}
