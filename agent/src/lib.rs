//! tracer: proves why a reverse proxy answered 502 (or 500, 504, 499).
//!
//! Data flow (see docs/architecture.md): sources produce [`segment::Segment`]s, the engine tracks
//! TCP flows and HTTP exchanges, correlates client-facing errors with the upstream attempt
//! that failed, and emits verdicts with evidence.

pub mod advice;
pub mod agent;
pub mod bundle;
pub mod capture;
pub mod correlate;
pub mod engine;
pub mod flow;
pub mod headroom;
pub mod http;
pub mod kernel;
pub mod live;
pub mod plaintext;
pub mod pod;
pub mod probe;
pub mod procfs;
pub mod report;
pub mod segment;
pub mod session;
pub mod timeouts;
pub mod verdict;
