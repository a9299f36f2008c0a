//! An open-loop load at a fixed rate (what `wrk` cannot do): `cargo xtask rate-load`, run by
//! `bench-capture` inside the client namespace.
//!
//! Each of `connections` keep-alive connections sends GETs on a fixed schedule, the
//! requests of all connections interleaved so that together they arrive at `rate` per
//! second. A request's latency runs from when it was *due*, not from when it went out, so
//! a stall behind a slow response counts against the proxy (no coordinated omission). The
//! result is one JSON line on stdout.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use serde_json::json;

#[derive(clap::Args, Clone)]
pub struct RateArgs {
    /// Proxy address (IP:PORT).
    #[arg(long)]
    pub target: SocketAddr,
    /// Requests per second, all connections together.
    #[arg(long)]
    pub rate: u32,
    /// Keep-alive connections.
    #[arg(long, default_value_t = 32)]
    pub connections: u32,
    /// Seconds of load.
    #[arg(long, default_value_t = 6)]
    pub seconds: u32,
}

/// What one connection saw.
#[derive(Default)]
struct Tally {
    latencies_us: Vec<u32>,
    errors: u64,
}

pub fn run(args: &RateArgs) -> Result<()> {
    anyhow::ensure!(
        args.rate > 0 && args.connections > 0,
        "rate and connections must be positive"
    );
    let start = Instant::now() + Duration::from_millis(200);
    let end = start + Duration::from_secs(u64::from(args.seconds));
    let interval = Duration::from_secs(1).as_nanos() as f64 / f64::from(args.rate);
    let threads: Vec<_> = (0..args.connections)
        .map(|c| {
            let a = args.clone();
            std::thread::spawn(move || connection(&a, c, start, end, interval))
        })
        .collect();
    let mut all = Vec::new();
    let mut errors = 0;
    for t in threads {
        let tally = t
            .join()
            .map_err(|_| anyhow::anyhow!("a load thread panicked"))?;
        all.extend(tally.latencies_us);
        errors += tally.errors;
    }
    all.sort_unstable();
    let pct = |p: f64| {
        all.get(((all.len() as f64 * p) as usize).min(all.len().saturating_sub(1)))
            .map_or(0.0, |&us| f64::from(us) / 1000.0)
    };
    println!(
        "{}",
        json!({
            "requests": all.len(),
            "errors": errors,
            "rps": all.len() as f64 / f64::from(args.seconds),
            "p50_ms": pct(0.50),
            "p99_ms": pct(0.99),
        })
    );
    Ok(())
}

/// Connection `c`: requests `c`, `c + n`, `c + 2n`, … of the global schedule.
fn connection(args: &RateArgs, c: u32, start: Instant, end: Instant, interval: f64) -> Tally {
    let mut tally = Tally::default();
    let mut stream: Option<TcpStream> = None;
    let mut buf = vec![0u8; 16 * 1024];
    for k in 0u64.. {
        let due = start
            + Duration::from_nanos(
                ((k * u64::from(args.connections) + u64::from(c)) as f64 * interval) as u64,
            );
        if due >= end {
            break;
        }
        let now = Instant::now();
        if due > now {
            std::thread::sleep(due - now);
        }
        let s = match stream.take() {
            Some(s) => s,
            None => match connect(args.target) {
                Ok(s) => s,
                Err(_) => {
                    tally.errors += 1;
                    continue;
                }
            },
        };
        match exchange(&s, &mut buf) {
            Ok(()) => {
                let us = due.elapsed().as_micros();
                tally
                    .latencies_us
                    .push(u32::try_from(us).unwrap_or(u32::MAX));
                stream = Some(s);
            }
            Err(_) => tally.errors += 1,
        }
    }
    tally
}

fn connect(target: SocketAddr) -> Result<TcpStream> {
    let s = TcpStream::connect_timeout(&target, Duration::from_secs(2))?;
    s.set_nodelay(true)?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    Ok(s)
}

/// One GET and its response (head, then a Content-Length body).
fn exchange(mut s: &TcpStream, buf: &mut [u8]) -> Result<()> {
    s.write_all(b"GET / HTTP/1.1\r\nHost: bench\r\n\r\n")?;
    let mut have = 0;
    loop {
        let n = s.read(&mut buf[have..])?;
        anyhow::ensure!(n > 0, "connection closed");
        have += n;
        if let Some(head_end) = find(&buf[..have], b"\r\n\r\n") {
            let head = std::str::from_utf8(&buf[..head_end]).context("response head")?;
            anyhow::ensure!(head.starts_with("HTTP/1.1 200"), "status: {head}");
            let len: usize = head
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse().ok())?
                })
                .context("no Content-Length")?;
            let mut body = have - (head_end + 4);
            while body < len {
                let n = s.read(buf)?;
                anyhow::ensure!(n > 0, "connection closed in the body");
                body += n;
            }
            return Ok(());
        }
        anyhow::ensure!(have < buf.len(), "response head too long");
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_local_server_is_loaded_at_the_rate_asked() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let target = listener.local_addr().unwrap();
        std::thread::spawn(move || {
            for s in listener.incoming().flatten() {
                std::thread::spawn(move || {
                    let mut s = s;
                    let mut b = [0u8; 1024];
                    while let Ok(n) = s.read(&mut b) {
                        if n == 0
                            || s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nok\n")
                                .is_err()
                        {
                            break;
                        }
                    }
                });
            }
        });
        let args = RateArgs {
            target,
            rate: 200,
            connections: 4,
            seconds: 1,
        };
        let start = Instant::now();
        let end = start + Duration::from_secs(1);
        let interval = 1e9 / 200.0;
        let tallies: Vec<Tally> = (0..4)
            .map(|c| connection(&args, c, start, end, interval))
            .collect();
        // Run one after another here, each connection still sends its share: 50 each.
        for t in &tallies {
            assert_eq!(t.errors, 0);
            assert_eq!(t.latencies_us.len(), 50);
        }
    }
}
