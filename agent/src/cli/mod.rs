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

/// Writes the HTML report `page` to `path` (replaced when it exists; a new file is 0600,
/// as the page names clients and upstreams).
pub fn write_html(path: &std::path::Path, page: &str) -> anyhow::Result<()> {
    use anyhow::Context as _;
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot write the HTML report to {}", path.display()))?;
    f.write_all(page.as_bytes())
        .with_context(|| format!("cannot write the HTML report to {}", path.display()))
}
