//! One module per subcommand. Each exposes `Args` (clap) and `run`.

/// `eprintln!` that never panics. After a dropped SSH session the terminal is gone and
/// every write to it fails; a capture stopping on that SIGHUP must still finish its bundle.
macro_rules! note {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}

/// `eprint!` that never panics (see [`note!`]).
macro_rules! note_raw {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = write!(std::io::stderr(), $($arg)*);
    }};
}

pub mod agent;
pub mod analyze;
pub mod capture;
pub mod check;

use tracer::engine::Analysis;
use tracer::report::{self, CaptureSummary, Options};

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
    opts: Options,
) -> std::io::Result<()> {
    use std::io::Write;
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    match format {
        Format::Text => out.write_all(report::text::render_with(a, capture, opts).as_bytes())?,
        Format::Json => {
            report::json::write(a, capture, opts, &mut out)?;
            out.write_all(b"\n")?;
        }
    }
    out.flush()
}
