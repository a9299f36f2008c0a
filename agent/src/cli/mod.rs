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
pub mod follow;

use tracer::engine::Analysis;
use tracer::report::{self, CaptureSummary, Limit, Options};

/// How much of the verdicts the text report lists (`analyze`, `capture`).
#[derive(clap::Args, Debug, Clone, Copy)]
pub struct Listing {
    /// List every verdict (the text report lists the clearest two of each cause and
    /// upstream), and the fix for every proxy and upstream tracer knows, not only those
    /// recognised.
    #[arg(long, conflicts_with = "limit")]
    pub all: bool,
    /// List the clearest N verdicts of each cause and upstream.
    #[arg(long, value_name = "N")]
    pub limit: Option<usize>,
}

impl Listing {
    #[must_use]
    pub fn limit(self) -> Limit {
        match (self.all, self.limit) {
            (true, _) => Limit::All,
            (false, Some(n)) => Limit::PerGroup(n),
            (false, None) => Limit::default(),
        }
    }
}

/// Report formats on stdout.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Text,
    Json,
}

/// Prints the report on stdout; JSON is serialized straight to it. `read`: the files or
/// interfaces the packets came from, as the text report names them.
pub fn print_report(
    a: &Analysis,
    capture: CaptureSummary,
    format: Format,
    opts: Options,
    read: &[String],
) -> std::io::Result<()> {
    use std::io::Write;
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    match format {
        Format::Text => {
            out.write_all(report::text::render_read(a, capture, opts, read).as_bytes())?;
        }
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
