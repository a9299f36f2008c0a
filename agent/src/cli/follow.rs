//! The options `tracer capture` and `tracer agent` share: which packets the kernel copies,
//! which ports, how much of each packet, whether the probe loads, how many connections the
//! engine tracks.

use std::time::Duration;

use tracer::session::CopyMode;

use super::capture::{parse_duration, parse_snaplen};

#[derive(clap::Args)]
pub struct Following {
    /// Copy every TCP segment with data or SYN/FIN/RST instead of the kernel's selection:
    /// every request is seen, at several times the cost on a busy proxy.
    #[arg(long)]
    pub all_data: bool,
    /// With the kernel's selection: quiet time after which a connection's next exchange is
    /// captured.
    #[arg(long, value_parser = parse_duration, value_name = "DURATION", default_value = "500ms")]
    pub sparse_idle: Duration,
    /// With the kernel's selection: how long a connection is copied whole after its SYN,
    /// its first data, a reuse or the reply to a kept request. Longer keeps more of long
    /// responses, at a cost that grows with it on busy connections; a 5xx response head
    /// always keeps the next 250 ms.
    #[arg(long, value_parser = parse_duration, value_name = "DURATION", default_value = "25ms")]
    pub sparse_hot: Duration,
    /// Only these TCP ports (repeatable), for the capture filter and the probe.
    #[arg(long = "port", value_name = "PORT")]
    pub ports: Vec<u16>,
    /// Bytes kept of each packet (enough for HTTP message heads); at least 134, what a
    /// status line behind the longest link, IP and TCP headers needs.
    #[arg(long, default_value_t = 512, value_parser = parse_snaplen)]
    pub snaplen: u32,
    /// Packets only: do not load the kernel probe.
    #[arg(long)]
    pub no_probe: bool,
    /// Connections tracked at once (by each followed proxy's engine, for the agent); when
    /// full, the oldest idle or half-open are forgotten first: counted (in the report,
    /// in tracer_connections_evicted_total), and verdicts on them are unexplained.
    #[arg(long, value_name = "N", default_value_t = tracer::flow::DEFAULT_MAX_CONNECTIONS)]
    pub max_connections: usize,
}

impl Following {
    /// The kernel's selection, or every data segment with `--all-data`.
    pub fn copy_mode(&self) -> CopyMode {
        if self.all_data {
            CopyMode::AllData
        } else {
            CopyMode::Sparse {
                idle: self.sparse_idle,
                hot: self.sparse_hot,
            }
        }
    }
}
