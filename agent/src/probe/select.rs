//! Sparse capture's socket filter: the `select` program of the kernel object, attached to
//! each capture socket so the kernel copies only the segments that can explain a 5xx
//! (the rule is `tracer_common::select`).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aya::maps::{MapData, PerCpuHashMap};
use aya::programs::{SocketFilter, TestRun, TestRunOptions, TestRunResult};
use aya::{Ebpf, EbpfLoader};
use tracer_common::names;
use tracer_common::select::RESPONSE_KEY_SIZE;

use super::{built_with_probe, sys, PodConfig, ProbeConfig, ProbeError, OBJECT};

/// A loaded `select` program; cheap to clone, attachable to any number of sockets.
#[derive(Clone)]
pub struct Selector {
    fd: Arc<OwnedFd>,
    /// Its count of responses by sender and status class (`None` where the object has no
    /// such map).
    responses: Option<Arc<Mutex<ResponseMap>>>,
}

impl std::fmt::Debug for Selector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Selector")
            .field("fd", &self.fd)
            .finish_non_exhaustive()
    }
}

type ResponseMap = PerCpuHashMap<MapData, [u8; RESPONSE_KEY_SIZE], u64>;

/// How many responses of one status class one sender sent, since `select` was loaded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResponseCount {
    /// Who sent them (the server side of their connection).
    pub sender: SocketAddr,
    /// 1 to 5.
    pub class: u8,
    pub count: u64,
}

/// A `RESPONSES` key (`tracer_common::select::ResponseKey`'s bytes) and its per-CPU
/// counts, summed.
fn response_count(key: &[u8; RESPONSE_KEY_SIZE], per_cpu: &[u64]) -> Option<ResponseCount> {
    let mut addr = [0u8; 16];
    addr.copy_from_slice(&key[..16]);
    let port = u16::from_ne_bytes([key[16], key[17]]);
    let (class, family) = (key[18], key[19]);
    let ip = match family {
        4 => IpAddr::V4(Ipv4Addr::new(addr[0], addr[1], addr[2], addr[3])),
        6 => IpAddr::V6(Ipv6Addr::from(addr)),
        _ => return None,
    };
    Some(ResponseCount {
        sender: SocketAddr::new(ip, port),
        class,
        count: per_cpu.iter().sum(),
    })
}

/// The kernel object loaded on its own (no tracepoints), with `config`, for a capture
/// without the probe or a benchmark of `select`.
fn load_object(config: &ProbeConfig) -> Result<Ebpf, ProbeError> {
    built_with_probe().map_err(ProbeError::NotBuilt)?;
    if let Some(why) = sys::effective_caps().and_then(sys::missing_caps) {
        return Err(ProbeError::MissingCapability(why));
    }
    // A failure to raise RLIMIT_MEMLOCK is harmless on kernels that account BPF memory
    // to the cgroup; the load below says so if it is not.
    let _ = sys::raise_memlock();
    // No tracepoint runs in this object: the namespace and process filters are theirs
    // (`select` sees only its capture socket's namespace, and the ports), and the
    // namespace filter would need the BTF offsets that only the probe reads.
    let standalone = ProbeConfig {
        netns: None,
        pid: None,
        ..config.clone()
    };
    let raw = standalone.to_raw(None)?;
    EbpfLoader::new()
        .override_global(names::CONFIG, &PodConfig(raw), true)
        .load(OBJECT)
        .map_err(ProbeError::Load)
}

/// Loads `select` in `ebpf` (through the verifier) and hands it back.
fn load_select(ebpf: &mut Ebpf) -> Result<&mut SocketFilter, ProbeError> {
    let program = names::SELECT;
    let load_err = |source| ProbeError::ProgramLoad {
        program: program.to_owned(),
        source,
    };
    let prog: &mut SocketFilter = ebpf
        .program_mut(program)
        .ok_or_else(|| ProbeError::ProgramMissing(program.to_owned()))?
        .try_into()
        .map_err(load_err)?;
    prog.load().map_err(load_err)?;
    Ok(prog)
}

impl Selector {
    /// Loads the kernel object on its own (no tracepoints) and its `select` program, for a
    /// capture without the probe.
    pub fn load(config: &ProbeConfig) -> Result<Self, ProbeError> {
        Self::from_object(&mut load_object(config)?)
    }

    /// Loads `select` from an already loaded object (sharing its configuration).
    pub(super) fn from_object(ebpf: &mut Ebpf) -> Result<Self, ProbeError> {
        let prog = load_select(ebpf)?;
        // The program lives as long as a descriptor refers to it, and it holds its map:
        // keeping a duplicate lets the object (and its unrelated maps) go.
        let fd = prog
            .fd()
            .map_err(|source| ProbeError::ProgramLoad {
                program: names::SELECT.to_owned(),
                source,
            })?
            .as_fd()
            .try_clone_to_owned()
            .map_err(ProbeError::Dup)?;
        let responses = ebpf
            .take_map(names::RESPONSES)
            .and_then(|m| ResponseMap::try_from(m).ok())
            .map(|m| Arc::new(Mutex::new(m)));
        Ok(Self {
            fd: Arc::new(fd),
            responses,
        })
    }

    /// Every response counted so far (totals since load, by sender and status class).
    /// Empty when the counts cannot be read.
    #[must_use]
    pub fn responses(&self) -> Vec<ResponseCount> {
        let Some(map) = &self.responses else {
            return Vec::new();
        };
        let Ok(map) = map.lock() else {
            return Vec::new();
        };
        map.iter()
            .filter_map(Result::ok)
            .filter_map(|(k, v)| response_count(&k, &v))
            .collect()
    }

    /// Replaces `socket`'s filter with this program (`SO_ATTACH_BPF`).
    pub fn attach(&self, socket: BorrowedFd<'_>) -> std::io::Result<()> {
        let prog = self.fd.as_raw_fd();
        // SAFETY: `socket` is an open descriptor for the duration of the call, and we pass a
        // pointer to an int with its exact size, as SO_ATTACH_BPF expects.
        let rc = unsafe {
            libc::setsockopt(
                socket.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_ATTACH_BPF,
                (&raw const prog).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if rc == 0 {
            Ok(())
        } else {
            Err(std::io::Error::last_os_error())
        }
    }
}

/// `select` in an object of its own, run by the kernel on crafted packets
/// (`BPF_PROG_TEST_RUN`): what it costs per segment, without a capture around it.
pub struct SelectTestRun {
    ebpf: Ebpf,
}

impl SelectTestRun {
    pub fn load(config: &ProbeConfig) -> Result<Self, ProbeError> {
        let mut ebpf = load_object(config)?;
        load_select(&mut ebpf)?;
        Ok(Self { ebpf })
    }

    /// Runs `select` `repeat` times on `frame` (Ethernet); the kernel's mean time per run.
    /// Runs share the program's per-connection marks with each other and later calls.
    pub fn run(&self, frame: &[u8], repeat: u32) -> Result<Duration, ProbeError> {
        Ok(self.test_run(frame, repeat)?.duration)
    }

    /// Runs `select` once on `frame` (Ethernet): whether it keeps the packet. The marks it
    /// leaves are those of a live capture, so a sequence of frames is judged as one
    /// connection's segments would be.
    pub fn keeps(&self, frame: &[u8]) -> Result<bool, ProbeError> {
        Ok(self.test_run(frame, 1)?.return_value != 0)
    }

    fn test_run(&self, frame: &[u8], repeat: u32) -> Result<TestRunResult, ProbeError> {
        let program = names::SELECT;
        let err = |source| ProbeError::TestRun {
            program: program.to_owned(),
            source,
        };
        let prog: &SocketFilter = self
            .ebpf
            .program(program)
            .ok_or_else(|| ProbeError::ProgramMissing(program.to_owned()))?
            .try_into()
            .map_err(err)?;
        let opts = TestRunOptions {
            data_in: Some(frame),
            repeat,
            ..TestRunOptions::default()
        };
        prog.test_run(opts).map_err(err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn response_keys_decode_both_families() {
        let mut k = [0u8; RESPONSE_KEY_SIZE];
        k[..4].copy_from_slice(&[10, 0, 0, 3]);
        k[16..18].copy_from_slice(&9000u16.to_ne_bytes());
        k[18] = 5;
        k[19] = 4;
        let c = response_count(&k, &[2, 3]).unwrap();
        assert_eq!(c.sender, "10.0.0.3:9000".parse().unwrap());
        assert_eq!((c.class, c.count), (5, 5));
        k[..16].copy_from_slice(&Ipv6Addr::LOCALHOST.octets());
        k[19] = 6;
        assert_eq!(
            response_count(&k, &[1]).unwrap().sender,
            "[::1]:9000".parse().unwrap()
        );
        k[19] = 0;
        assert!(response_count(&k, &[1]).is_none());
    }
}
