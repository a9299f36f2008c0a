//! Packet captures of the proxy's two interfaces with tcpdump (large buffers; drops counted).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};

use crate::procs::Procs;
use crate::scenario::{require_program, Launcher};

/// Bytes kept of each packet: enough for every HTTP message head the lab sends or receives.
pub const SNAPLEN: u32 = 512;
/// Kernel capture buffer per interface, in KiB (tcpdump `-B`): at the default 2 MiB tcpdump
/// lost ~20% of packets at ~2,800 requests/s on this kind of machine.
pub const BUFFER_KIB: u32 = 65_536;

/// What tcpdump reported when it stopped.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CaptureCounts {
    pub captured: u64,
    pub received_by_filter: u64,
    pub dropped_by_kernel: u64,
}

/// Starts tcpdump on `ifname` inside `ns`, writing `file`; returns once it listens.
pub fn start(procs: &mut Procs, ns: &str, ifname: &str, name: &str, file: &Path) -> Result<()> {
    let tcpdump = require_program("tcpdump", "tcpdump")?;
    let mut cmd = Command::new(tcpdump);
    cmd.args([
        "-i",
        ifname,
        "-n",
        "-U",
        "-s",
        &SNAPLEN.to_string(),
        "-B",
        &BUFFER_KIB.to_string(),
    ])
    .arg("-w")
    .arg(file)
    .arg("tcp");
    procs.spawn(ns, name, cmd)?;
    let err = procs.dir().join(format!("{name}.err"));
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if std::fs::read_to_string(&err).is_ok_and(|s| s.contains("listening on")) {
            return Ok(());
        }
        if let Some(status) = procs.exited(name) {
            bail!(
                "tcpdump on {ifname} exited ({status}): {}",
                std::fs::read_to_string(&err).unwrap_or_default().trim()
            );
        }
        if Instant::now() > deadline {
            bail!("tcpdump on {ifname} did not start within 10 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

impl CaptureCounts {
    /// Packets that matched the filter but are not in the file: dropped by the kernel, or
    /// still in its buffer when tcpdump stopped.
    pub fn lost(&self) -> u64 {
        self.dropped_by_kernel + self.received_by_filter.saturating_sub(self.captured)
    }
}

/// How long a capture may take to write what the kernel already handed it.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// Stops the capture started under `name` and reads its counters from its stderr.
///
/// tcpdump does not drain the kernel's ring when it is told to stop, and here it was seen
/// to start writing up to a second after it said it listens: stopped early, a capture
/// loses its last packets. So first wait, asking for its counters with SIGUSR1, until it
/// has written everything its filter received.
pub fn stop(procs: &mut Procs, name: &str) -> CaptureCounts {
    let err: PathBuf = procs.dir().join(format!("{name}.err"));
    let read = || parse_counts(&std::fs::read_to_string(&err).unwrap_or_default());
    let deadline = Instant::now() + DRAIN_TIMEOUT;
    let mut last = None;
    while Instant::now() < deadline {
        procs.signal(name, nix::sys::signal::Signal::SIGUSR1);
        std::thread::sleep(Duration::from_millis(150));
        let c = read();
        if c.captured >= c.received_by_filter && last.as_ref() == Some(&c) {
            break;
        }
        last = Some(c);
    }
    procs.stop(name);
    read()
}

/// Parses tcpdump's closing lines (`N packets captured`, `N packets received by filter`,
/// `N packets dropped by kernel`).
pub fn parse_counts(stderr: &str) -> CaptureCounts {
    let mut c = CaptureCounts::default();
    // On exit each counter has its own line; on SIGUSR1 they share one:
    // `tcpdump: 384 packets captured, 384 packets received by filter, 0 packets dropped…`.
    let pieces = stderr
        .lines()
        .flat_map(|l| l.trim_start_matches("tcpdump:").split(','));
    for line in pieces {
        let mut words = line.split_whitespace();
        let Some(n) = words.next().and_then(|w| w.parse::<u64>().ok()) else {
            continue;
        };
        let rest: Vec<&str> = words.collect();
        match rest.as_slice() {
            ["packets", "captured", ..] | ["packet", "captured", ..] => c.captured = n,
            ["packets", "received", "by", "filter", ..]
            | ["packet", "received", "by", "filter", ..] => {
                c.received_by_filter = n;
            }
            ["packets", "dropped", "by", "kernel", ..]
            | ["packet", "dropped", "by", "kernel", ..] => {
                c.dropped_by_kernel = n;
            }
            _ => {}
        }
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tcpdump_closing_lines_give_the_counts() {
        let s = "tcpdump: listening on tlf1, link-type EN10MB (Ethernet), snapshot length 512 bytes\n\
                 1234 packets captured\n1300 packets received by filter\n66 packets dropped by kernel\n";
        assert_eq!(
            parse_counts(s),
            CaptureCounts {
                captured: 1234,
                received_by_filter: 1300,
                dropped_by_kernel: 66
            }
        );
    }

    #[test]
    fn the_sigusr1_line_gives_the_counts_too() {
        let s = "tcpdump: listening on tlf1, link-type EN10MB (Ethernet), snapshot length 512 bytes\n\
                 tcpdump: 384 packets captured, 390 packets received by filter, 0 packets dropped by kernel\n";
        assert_eq!(
            parse_counts(s),
            CaptureCounts {
                captured: 384,
                received_by_filter: 390,
                dropped_by_kernel: 0
            }
        );
    }

    #[test]
    fn a_single_packet_is_singular() {
        let s = "1 packet captured\n1 packet received by filter\n0 packets dropped by kernel\n";
        assert_eq!(parse_counts(s).captured, 1);
        assert_eq!(parse_counts(s).dropped_by_kernel, 0);
    }
}
