//! The kernel probe's userspace side: load `ebpf/`, configure it, attach its tracepoints,
//! read its events.
//!
//! ```no_run
//! use tracer::probe::{Probe, ProbeConfig};
//! let mut probe = Probe::load(&ProbeConfig { ports: vec![8080], ..ProbeConfig::default() })?;
//! let events = probe.poll(Some(std::time::Duration::from_millis(100)))?;
//! # Ok::<(), tracer::probe::ProbeError>(())
//! ```

mod btf;
mod check;
mod clock;
pub mod elf;
mod event;
pub mod gopclntab;
#[cfg(test)]
mod installed;
mod layout;
mod select;
mod sys;
pub mod tls;
pub mod toolchain;

use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::path::PathBuf;
use std::time::Duration;

use aya::maps::{MapData, MapError, PerCpuArray, RingBuf};
use aya::programs::{ProgramError, RawTracePoint, TracePoint};
use aya::{Ebpf, EbpfError, EbpfLoader};
use tracer_common::tls::{tls_names, TlsConfig};
use tracer_common::{names, Config, Tracepoint, MAX_FILTER_PORTS, TRACEPOINTS};

pub use check::{check, CheckItem, CheckReport, CheckStatus};
pub use clock::{monotonic_now_ns, ClockAlignment, ClockSample};
pub use event::{
    decode, decode_raw, decode_raw_tls, from_raw, from_raw_tls, DecodeError, SockEvent,
    SockEventKind,
};
pub use select::{ResponseCount, SelectTestRun, Selector};
pub use sys::{ensure_tracefs, missing_caps, Tracefs};
pub use tls::{Library, TlsAttachment};
pub use tracer_common::{kind, tcp_state, RawSockEvent};

/// The kernel object built by `build.rs` (empty when it was built without the toolchain).
static OBJECT: &[u8] = aya::include_bytes_aligned!(env!("TRACER_EBPF_OBJECT"));
/// Why [`OBJECT`] is empty (empty when it is not).
const MISSING: &str = env!("TRACER_EBPF_MISSING");
/// The compiler and linker that built [`OBJECT`], with their versions (empty when it was
/// not built). The kernel programs' code generation, and so what the verifier accepts and
/// what exact-output kernel tests see, depends on them.
pub const TOOLCHAIN: &str = env!("TRACER_EBPF_TOOLCHAIN");

/// Whether this binary carries the kernel probe; `Err` says why not and how to fix it.
pub fn built_with_probe() -> Result<(), String> {
    if OBJECT.is_empty() {
        Err(if MISSING.is_empty() {
            "the probe object is empty".to_owned()
        } else {
            MISSING.to_owned()
        })
    } else {
        Ok(())
    }
}

/// Errors of loading and running the probe. Each says what to do next.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    /// The binary was built without an eBPF toolchain, so it has no kernel object.
    #[error("this tracer was built without the kernel probe: {0}")]
    NotBuilt(String),
    /// The process lacks a capability the probe needs (the sentence names it and the fix).
    #[error("{0}")]
    MissingCapability(String),
    /// tracefs is not mounted and could not be mounted.
    #[error("tracefs is not mounted and mounting it at {path} failed ({source}): run `mount -t tracefs nodev {path}` as root, or give the container /sys/kernel/tracing")]
    Tracefs {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A tracepoint the probe uses does not exist on this kernel (its format is unreadable).
    #[error("tracepoint {tracepoint} is not available on this kernel ({path}: {source})")]
    TracepointMissing {
        tracepoint: String,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The running kernel lays out a tracepoint differently from the one the probe was built
    /// for; reading it would give wrong events.
    #[error("tracepoint {tracepoint} field `{field}` is at offset {} on this kernel, the probe expects {expected}: update tracer_common::tp from the format file and rebuild", found.map_or_else(|| "nowhere".to_owned(), |o| o.to_string()))]
    LayoutMismatch {
        tracepoint: String,
        field: String,
        expected: usize,
        found: Option<usize>,
    },
    /// A raw tracepoint passes other arguments on this kernel than its program reads.
    #[error("{0}")]
    RawTracepointMismatch(String),
    /// A filter in [`ProbeConfig`] cannot be applied.
    #[error("invalid probe configuration: {0}")]
    InvalidConfig(String),
    /// The kernel refused the object (maps, BTF or a program); the message holds the
    /// verifier log when there is one.
    #[error("loading the kernel probe failed: {0}")]
    Load(#[source] EbpfError),
    /// The object lacks a program the agent expects: agent and probe are out of step.
    #[error("the kernel probe has no program `{0}`: rebuild tracer")]
    ProgramMissing(String),
    /// The verifier rejected a program.
    #[error("the kernel rejected program `{program}`: {source}")]
    ProgramLoad {
        program: String,
        #[source]
        source: ProgramError,
    },
    /// `sock:inet_sock_set_state`, which everything else builds on, could not be attached.
    #[error("attaching tracepoint {tracepoint} failed: {source}")]
    Attach {
        tracepoint: String,
        #[source]
        source: ProgramError,
    },
    /// `BPF_PROG_TEST_RUN` of a program on a crafted input failed.
    #[error("running program `{program}` on a test packet failed: {source}")]
    TestRun {
        program: String,
        #[source]
        source: ProgramError,
    },
    /// A map the agent reads is missing or of the wrong type.
    #[error("probe map {name}: {source}")]
    Map {
        name: &'static str,
        #[source]
        source: MapError,
    },
    /// `poll(2)` on the ring buffer failed.
    #[error("waiting for probe events failed: {0}")]
    Poll(#[source] std::io::Error),
    /// Keeping a descriptor of the sparse-capture filter failed.
    #[error("duplicating the sparse-capture filter's descriptor failed: {0}")]
    Dup(#[source] std::io::Error),
}

/// What to trace. `Default` traces every TCP socket with a 1 s idle threshold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeConfig {
    /// A write after at least this much idle time on a socket is reported.
    pub idle_threshold: Duration,
    /// Only sockets with one of these as local or remote port (at most 8); empty = any.
    pub ports: Vec<u16>,
    /// Only sockets in this network namespace (inode, as in `ls -Li /proc/<pid>/ns/net`).
    pub netns: Option<u32>,
    /// Only sockets owned by this process id.
    pub pid: Option<u32>,
    /// Sparse capture ([`Selector`]): a data segment after this much quiet on its
    /// connection (a pooled connection's reuse) is kept.
    pub sparse_idle: Duration,
    /// Sparse capture: how long a connection is kept whole after its SYN, its first data,
    /// a reuse or the reply to a kept request (5xx heads keep it for longer).
    pub sparse_hot: Duration,
    /// Attach uprobes to the TLS library of the followed servers ([`tls`]): the `pid`
    /// process and its children, else the processes with a listening TCP socket in `netns`.
    pub tls: bool,
}

impl Default for ProbeConfig {
    fn default() -> Self {
        Self {
            idle_threshold: Duration::from_nanos(Config::DEFAULT_IDLE_THRESHOLD_NS),
            ports: Vec::new(),
            netns: None,
            pid: None,
            sparse_idle: Duration::from_nanos(Config::DEFAULT_IDLE_THRESHOLD_NS),
            sparse_hot: Duration::from_nanos(Config::DEFAULT_SELECT_HOT_NS),
            tls: false,
        }
    }
}

impl ProbeConfig {
    /// The kernel-side layout; `offsets` are `skc_net` in `struct sock` and `ns.inum` in
    /// `struct net`, when the kernel's BTF gave them.
    pub fn to_raw(&self, offsets: Option<(u32, u32)>) -> Result<Config, ProbeError> {
        let mut c = Config::DEFAULT;
        c.idle_threshold_ns = u64::try_from(self.idle_threshold.as_nanos()).unwrap_or(u64::MAX);
        c.select_idle_ns = u64::try_from(self.sparse_idle.as_nanos()).unwrap_or(u64::MAX);
        c.select_hot_ns = u64::try_from(self.sparse_hot.as_nanos()).unwrap_or(u64::MAX);
        if self.ports.len() > MAX_FILTER_PORTS {
            return Err(ProbeError::InvalidConfig(format!(
                "{} ports given, the probe filters on at most {MAX_FILTER_PORTS}",
                self.ports.len()
            )));
        }
        if self.ports.contains(&0) {
            return Err(ProbeError::InvalidConfig(
                "port 0 cannot be filtered on".into(),
            ));
        }
        c.ports[..self.ports.len()].copy_from_slice(&self.ports);
        c.pid = self.pid.unwrap_or(0);
        if let Some((sk_net, inum)) = offsets {
            c.sk_net_offset = sk_net;
            c.net_inum_offset = inum;
        }
        if let Some(ns) = self.netns {
            if offsets.is_none() {
                return Err(ProbeError::InvalidConfig(
                    "a network namespace filter needs the kernel's BTF \
                     (/sys/kernel/btf/vmlinux), which could not be read"
                        .into(),
                ));
            }
            c.netns = ns;
        }
        Ok(c)
    }
}

/// [`Config`] as aya global data.
#[derive(Clone, Copy)]
#[repr(transparent)]
struct PodConfig(Config);
// SAFETY: `Config` is `#[repr(C)]`, made of integers and integer arrays with no padding
// (its size is pinned in tracer-common), so every bit pattern is valid.
unsafe impl aya::Pod for PodConfig {}

/// [`TlsConfig`] as aya global data.
#[derive(Clone, Copy)]
#[repr(transparent)]
struct PodTls(TlsConfig);
// SAFETY: `TlsConfig` is `#[repr(C)]`, two `u32`s (its size is pinned in tracer-common).
unsafe impl aya::Pod for PodTls {}

/// Whether one tracepoint attached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttachOutcome {
    /// `category:event`.
    pub tracepoint: String,
    /// `None` when attached, else why not.
    pub error: Option<String>,
}

/// A loaded and attached probe. Dropping it detaches everything.
pub struct Probe {
    ebpf: Ebpf,
    events: RingBuf<MapData>,
    attached: Vec<AttachOutcome>,
    warnings: Vec<String>,
    tracefs: Tracefs,
    config: Config,
    decode_errors: u64,
    tls: Vec<TlsAttachment>,
}

impl std::fmt::Debug for Probe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Probe")
            .field("attached", &self.attached)
            .field("warnings", &self.warnings)
            .field("tracefs", &self.tracefs)
            .field("config", &self.config)
            .field("tls", &self.tls)
            .finish_non_exhaustive()
    }
}

impl Probe {
    /// Checks privileges and kernel layout, loads the probe with `config`, attaches every
    /// tracepoint. Fails only when nothing useful can run; a tracepoint other than
    /// `sock:inet_sock_set_state` that will not attach is reported in [`Self::attached`].
    pub fn load(config: &ProbeConfig) -> Result<Self, ProbeError> {
        built_with_probe().map_err(ProbeError::NotBuilt)?;
        if let Some(why) = sys::effective_caps().and_then(sys::missing_caps) {
            return Err(ProbeError::MissingCapability(why));
        }
        let tracefs = sys::ensure_tracefs()?;
        let mut warnings = Vec::new();
        if let Err(w) = sys::raise_memlock() {
            warnings.push(w);
        }
        layout::verify(tracefs.path())?;
        let kernel_btf = btf::kernel();
        match btf::verify_raw_tracepoints(&kernel_btf) {
            Ok(None) => {}
            Ok(Some(why)) => warnings.push(format!(
                "the arguments of the send and receive tracepoints could not be checked: {why}"
            )),
            Err(e) => return Err(ProbeError::RawTracepointMismatch(e)),
        }
        let offsets = match btf::netns_offsets(&kernel_btf) {
            Ok(o) => Some(o),
            Err(e) => {
                warnings.push(format!("network namespaces will not be reported: {e}"));
                None
            }
        };
        let raw = config.to_raw(offsets)?;
        let tls_plan = if config.tls {
            tls::plan(
                std::path::Path::new(crate::procfs::HOST),
                config.pid,
                config.netns,
            )
        } else {
            Vec::new()
        };
        let tls_on = TlsConfig {
            enabled: u32::from(tls_plan.iter().any(|(_, s)| s.is_ok())),
            _pad0: 0,
        };

        let mut ebpf = EbpfLoader::new()
            .override_global(names::CONFIG, &PodConfig(raw), true)
            .override_global(tls_names::CONFIG, &PodTls(tls_on), true)
            .load(OBJECT)
            .map_err(ProbeError::Load)?;

        let mut attached = Vec::with_capacity(TRACEPOINTS.len());
        for tp in TRACEPOINTS {
            let tracepoint = format!("{}:{}", tp.category, tp.event);
            let program = tp.program;
            let result = attach_one(&mut ebpf, &tp);
            match result {
                Ok(()) => attached.push(AttachOutcome {
                    tracepoint,
                    error: None,
                }),
                Err(e @ (ProbeError::ProgramMissing(_) | ProbeError::ProgramLoad { .. })) => {
                    return Err(e)
                }
                Err(ProbeError::Attach { tracepoint, source })
                    if program == "inet_sock_set_state" =>
                {
                    return Err(ProbeError::Attach { tracepoint, source })
                }
                Err(e) => attached.push(AttachOutcome {
                    tracepoint,
                    error: Some(e.to_string()),
                }),
            }
        }

        let tls = tls::attach(&mut ebpf, &tls_plan);

        let map = ebpf.take_map(names::EVENTS).ok_or(ProbeError::Map {
            name: names::EVENTS,
            source: MapError::InvalidName {
                name: names::EVENTS.into(),
            },
        })?;
        let events = RingBuf::try_from(map).map_err(|source| ProbeError::Map {
            name: names::EVENTS,
            source,
        })?;
        Ok(Self {
            ebpf,
            events,
            attached,
            warnings,
            tracefs,
            config: raw,
            decode_errors: 0,
            tls,
        })
    }

    /// The TLS uprobes, per followed process (empty unless [`ProbeConfig::tls`] found one).
    pub fn tls(&self) -> &[TlsAttachment] {
        &self.tls
    }

    /// How often the TLS programs ran and for how long, per program name: the kernel counts
    /// only while BPF run-time statistics are enabled (`aya::sys::enable_stats`), so this is
    /// for benchmarks. One entry per loaded TLS program.
    pub fn tls_program_stats(&self) -> Vec<(&'static str, u64, Duration)> {
        [tls_names::ENTRY, tls_names::OPENSSL_RET]
            .into_iter()
            .filter_map(|name| {
                let info = self.ebpf.program(name)?.info().ok()?;
                Some((name, info.run_count(), info.run_time()))
            })
            .collect()
    }

    /// Which tracepoints attached, and why the others did not.
    pub fn attached(&self) -> &[AttachOutcome] {
        &self.attached
    }

    /// Non-fatal problems met while loading (memlock, BTF).
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    /// How tracefs was found.
    pub fn tracefs(&self) -> &Tracefs {
        &self.tracefs
    }

    /// The configuration the kernel side runs with.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Records that could not be decoded so far (each one is skipped).
    pub fn decode_errors(&self) -> u64 {
        self.decode_errors
    }

    /// The ring buffer's descriptor: readable when events are waiting (for `AsyncFd`,
    /// epoll, …; then call [`Self::drain`]).
    pub fn events_fd(&self) -> BorrowedFd<'_> {
        self.events.as_fd()
    }

    /// The events waiting now, without blocking, read one by one as the caller takes them
    /// (at most a full ring's worth: events that come meanwhile wait for the next call).
    /// Nothing is gathered first: under a busy proxy a vector of one drain's events grew
    /// to 750 KiB several times a second, each time mapped and unmapped anew.
    pub fn drain(&mut self) -> impl Iterator<Item = SockEvent> + '_ {
        let (events, errors) = (&mut self.events, &mut self.decode_errors);
        let most = tracer_common::EVENTS_RING_BYTES as usize / tracer_common::RAW_SOCK_EVENT_SIZE;
        std::iter::from_fn(move || loop {
            let item = events.next()?;
            match decode(&item) {
                Ok(e) => return Some(e),
                Err(_) => *errors += 1,
            }
        })
        .take(most)
    }

    /// Waits `timeout` (100 ms with `None`), then drains the events. The kernel side does
    /// not wake the reader per event (that would cost the traced CPUs an interrupt each),
    /// so this is a paced drain rather than a wait for the first event.
    pub fn poll(&mut self, timeout: Option<Duration>) -> Result<Vec<SockEvent>, ProbeError> {
        let ms = i32::try_from(timeout.unwrap_or(Duration::from_millis(100)).as_millis())
            .unwrap_or(i32::MAX);
        let mut pfd = libc::pollfd {
            fd: self.events.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: `pfd` is one valid pollfd for the duration of the call and the ring
        // buffer's fd stays open while `self` is borrowed.
        let rc = unsafe { libc::poll(&mut pfd, 1, ms) };
        if rc < 0 {
            let err = std::io::Error::last_os_error();
            if err.kind() != std::io::ErrorKind::Interrupted {
                return Err(ProbeError::Poll(err));
            }
        }
        Ok(self.drain().collect())
    }

    /// The sparse-capture socket filter, from this probe's object and configuration.
    pub fn selector(&mut self) -> Result<Selector, ProbeError> {
        Selector::from_object(&mut self.ebpf)
    }

    /// Events the kernel could not queue because the ring buffer was full, since load.
    pub fn lost(&self) -> Result<u64, ProbeError> {
        let map = self.ebpf.map(names::LOST).ok_or(ProbeError::Map {
            name: names::LOST,
            source: MapError::InvalidName {
                name: names::LOST.into(),
            },
        })?;
        let arr = PerCpuArray::<_, u64>::try_from(map).map_err(|source| ProbeError::Map {
            name: names::LOST,
            source,
        })?;
        let values = arr.get(&0, 0).map_err(|source| ProbeError::Map {
            name: names::LOST,
            source,
        })?;
        Ok(values.iter().copied().fold(0u64, u64::saturating_add))
    }
}

fn attach_one(ebpf: &mut Ebpf, tp: &Tracepoint) -> Result<(), ProbeError> {
    let program = tp.program;
    let load_err = |source| ProbeError::ProgramLoad {
        program: program.to_owned(),
        source,
    };
    let attach_err = |source| ProbeError::Attach {
        tracepoint: format!("{}:{}", tp.category, tp.event),
        source,
    };
    let prog = ebpf
        .program_mut(program)
        .ok_or_else(|| ProbeError::ProgramMissing(program.to_owned()))?;
    if tp.raw {
        let prog: &mut RawTracePoint = prog.try_into().map_err(load_err)?;
        prog.load().map_err(load_err)?;
        prog.attach(tp.event).map_err(attach_err)?;
    } else {
        let prog: &mut TracePoint = prog.try_into().map_err(load_err)?;
        prog.load().map_err(load_err)?;
        prog.attach(tp.category, tp.event).map_err(attach_err)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_config_traces_everything() {
        let c = ProbeConfig::default().to_raw(None).unwrap();
        assert_eq!(c, Config::DEFAULT);
    }

    #[test]
    fn ports_pid_and_threshold_reach_the_kernel_layout() {
        let c = ProbeConfig {
            idle_threshold: Duration::from_millis(250),
            ports: vec![80, 8080],
            netns: None,
            pid: Some(7),
            sparse_idle: Duration::from_millis(400),
            sparse_hot: Duration::from_millis(30),
            tls: false,
        }
        .to_raw(Some((48, 120)))
        .unwrap();
        assert_eq!(c.idle_threshold_ns, 250_000_000);
        assert_eq!(c.select_idle_ns, 400_000_000);
        assert_eq!(c.select_hot_ns, 30_000_000);
        assert_eq!(&c.ports[..3], &[80, 8080, 0]);
        assert_eq!((c.pid, c.sk_net_offset, c.net_inum_offset), (7, 48, 120));
    }

    #[test]
    fn too_many_ports_or_port_zero_are_refused() {
        let many = ProbeConfig {
            ports: (1..=9).collect(),
            ..ProbeConfig::default()
        };
        assert!(matches!(
            many.to_raw(None),
            Err(ProbeError::InvalidConfig(_))
        ));
        let zero = ProbeConfig {
            ports: vec![0],
            ..ProbeConfig::default()
        };
        assert!(matches!(
            zero.to_raw(None),
            Err(ProbeError::InvalidConfig(_))
        ));
    }

    #[test]
    fn netns_filter_without_btf_is_refused() {
        let c = ProbeConfig {
            netns: Some(4_026_531_840),
            ..ProbeConfig::default()
        };
        assert!(c.to_raw(None).is_err());
        assert_eq!(c.to_raw(Some((48, 120))).unwrap().netns, 4_026_531_840);
    }

    #[test]
    fn not_built_error_is_one_sentence_with_the_reason() {
        let e = ProbeError::NotBuilt("bpf-linker was not found".into());
        assert_eq!(
            e.to_string(),
            "this tracer was built without the kernel probe: bpf-linker was not found"
        );
    }
}
