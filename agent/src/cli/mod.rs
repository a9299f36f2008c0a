//! One module per subcommand. Each exposes `Args` (clap) and `run`.
pub mod analyze;
pub mod capture;
pub mod check;
