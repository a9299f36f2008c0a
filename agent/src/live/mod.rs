//! Live packet capture: one thread per interface, optionally inside another network
//! namespace, feeding the same [`Segment`]s (and raw frames, for evidence bundles) that
//! capture files give.
//!
//! libpcap 1.10.3's read timeout never fires on an idle interface, so each capture runs in
//! non-blocking mode and waits on its file descriptor with `poll(2)`.

mod filter;
mod iface;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use serde::Serialize;

pub use filter::{default_filter, full_filter, http_heads_filter};

use crate::capture::RawPacket;
use crate::segment::Segment;

/// What to capture.
#[derive(Debug, Clone)]
pub struct LiveOptions {
    /// Interfaces to open (`any` works too, giving Linux cooked frames).
    pub interfaces: Vec<String>,
    /// A network namespace to open them in: a path such as `/proc/PID/ns/net` or
    /// `/run/netns/NAME`.
    pub netns: Option<PathBuf>,
    /// Bytes kept of each packet.
    pub snaplen: u32,
    /// Kernel buffer per interface, bytes.
    pub buffer_bytes: u32,
    /// A BPF filter expression (tcpdump syntax).
    pub filter: String,
    /// Sparse capture: the kernel's `select` program replaces [`Self::filter`] on every
    /// capture socket, so only the segments that can explain a 5xx are copied.
    pub selector: Option<crate::probe::Selector>,
    /// Keep each packet's frame (for writing a capture file); otherwise only the segment.
    pub keep_frames: bool,
    /// Let the kernel hand packets over in blocks, at most this many milliseconds late,
    /// instead of waking tracer for every packet (`None`: immediately). Batching costs the
    /// proxy's host far fewer wake-ups under load.
    pub batch_ms: Option<u32>,
}

/// One packet from a live interface.
#[derive(Debug, Clone)]
pub struct LivePacket {
    /// Which of [`LiveOptions::interfaces`] it came from.
    pub iface: usize,
    pub segment: Segment,
    /// The frame, when [`LiveOptions::keep_frames`] asked for it.
    pub raw: Option<RawPacket>,
}

/// Counters of one interface (from `pcap_stats` and our own channel).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct IfaceStats {
    pub interface: String,
    /// Packets the kernel handed to the capture.
    pub received: u64,
    /// Packets the kernel dropped because the capture buffer was full.
    pub dropped: u64,
    /// Packets the interface (driver) dropped.
    pub if_dropped: u64,
    /// Frames that were not TCP or could not be decoded.
    pub skipped: u64,
    /// Segments dropped because the engine did not keep up (channel full).
    pub backlog_dropped: u64,
}

/// Why a live capture could not start.
#[derive(Debug, thiserror::Error)]
pub enum LiveError {
    /// The capture could not be opened (no such interface, or no permission).
    #[error("cannot capture on {interface}: {message}{hint}")]
    Open {
        interface: String,
        message: String,
        hint: &'static str,
    },
    /// The sparse-capture filter could not be attached to the capture socket.
    #[error("cannot attach the sparse-capture filter on {interface}: {source}")]
    Select {
        interface: String,
        #[source]
        source: std::io::Error,
    },
    /// The BPF filter expression does not compile.
    #[error("the capture filter `{filter}` is invalid: {message}")]
    Filter { filter: String, message: String },
    /// Entering the network namespace failed.
    #[error("cannot enter network namespace {path}: {message}")]
    Netns { path: String, message: String },
    /// A capture thread could not be spawned.
    #[error("cannot start a capture thread: {0}")]
    Thread(#[from] std::io::Error),
}

/// A running live capture. Dropping it stops the threads.
pub struct LiveCapture {
    rx: Receiver<LivePacket>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    stats: Arc<Mutex<Vec<IfaceStats>>>,
}

/// Segments buffered between the capture threads and the engine.
const CHANNEL_DEPTH: usize = 65_536;

impl LiveCapture {
    /// Opens every interface (each on its own thread, inside `opts.netns` if given) and
    /// starts capturing. Returns once every interface is open, or the first error.
    pub fn start(opts: &LiveOptions) -> Result<LiveCapture, LiveError> {
        let (tx, rx) = std::sync::mpsc::sync_channel(CHANNEL_DEPTH);
        let stop = Arc::new(AtomicBool::new(false));
        let stats = Arc::new(Mutex::new(Vec::new()));
        let mut threads = Vec::new();
        for (i, name) in opts.interfaces.iter().enumerate() {
            if let Ok(mut s) = stats.lock() {
                s.push(IfaceStats {
                    interface: name.clone(),
                    ..IfaceStats::default()
                });
            }
            let (ready_tx, ready_rx) = std::sync::mpsc::channel();
            let ctx = iface::Ctx {
                name: name.clone(),
                opts: opts.clone(),
                tx: tx.clone(),
                stop: stop.clone(),
                stats: stats.clone(),
                index: i,
            };
            let handle = std::thread::Builder::new()
                .name(format!("capture-{name}"))
                .spawn(move || iface::run(ctx, &ready_tx))?;
            threads.push(handle);
            match ready_rx.recv() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    stop.store(true, Ordering::Relaxed);
                    return Err(e);
                }
                Err(_) => {
                    stop.store(true, Ordering::Relaxed);
                    return Err(LiveError::Open {
                        interface: name.clone(),
                        message: "the capture thread ended before opening it".into(),
                        hint: "",
                    });
                }
            }
        }
        drop(tx);
        Ok(LiveCapture {
            rx,
            stop,
            threads,
            stats,
        })
    }

    /// The packets, in arrival order across interfaces (not strictly by timestamp).
    pub fn packets(&self) -> &Receiver<LivePacket> {
        &self.rx
    }

    /// Current counters per interface.
    pub fn stats(&self) -> Vec<IfaceStats> {
        self.stats.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// Stops every capture thread and waits for them; the final counters stay readable.
    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl Drop for LiveCapture {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Hands a packet to the engine without ever blocking the capture thread: when the engine
/// is behind, the packet is counted as dropped (the report says so) rather than stalling
/// the kernel buffer.
fn offer(tx: &SyncSender<LivePacket>, p: LivePacket) -> bool {
    match tx.try_send(p) {
        Ok(()) => true,
        Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => false,
    }
}
