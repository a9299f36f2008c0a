//! Sparse capture's socket filter: the `select` program of the kernel object, attached to
//! each capture socket so the kernel copies only the segments that can explain a 5xx
//! (the rule is `tracer_common::select`).

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::sync::Arc;

use aya::programs::SocketFilter;
use aya::{Ebpf, EbpfLoader};
use tracer_common::names;

use super::{built_with_probe, sys, PodConfig, ProbeConfig, ProbeError, OBJECT};

/// A loaded `select` program; cheap to clone, attachable to any number of sockets.
#[derive(Debug, Clone)]
pub struct Selector {
    fd: Arc<OwnedFd>,
}

impl Selector {
    /// Loads the kernel object on its own (no tracepoints) and its `select` program, for a
    /// capture without the probe.
    pub fn load(config: &ProbeConfig) -> Result<Self, ProbeError> {
        built_with_probe().map_err(ProbeError::NotBuilt)?;
        if let Some(why) = sys::effective_caps().and_then(sys::missing_caps) {
            return Err(ProbeError::MissingCapability(why));
        }
        // A failure to raise RLIMIT_MEMLOCK is harmless on kernels that account BPF memory
        // to the cgroup; the load below says so if it is not.
        let _ = sys::raise_memlock();
        let raw = config.to_raw(None)?;
        let mut ebpf = EbpfLoader::new()
            .override_global(names::CONFIG, &PodConfig(raw), true)
            .load(OBJECT)
            .map_err(ProbeError::Load)?;
        Self::from_object(&mut ebpf)
    }

    /// Loads `select` from an already loaded object (sharing its configuration).
    pub(super) fn from_object(ebpf: &mut Ebpf) -> Result<Self, ProbeError> {
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
        // The program lives as long as a descriptor refers to it, and it holds its map:
        // keeping a duplicate lets the object (and its unrelated maps) go.
        let fd = prog
            .fd()
            .map_err(load_err)?
            .as_fd()
            .try_clone_to_owned()
            .map_err(ProbeError::Dup)?;
        Ok(Self { fd: Arc::new(fd) })
    }

    /// The program's descriptor (for `BPF_PROG_TEST_RUN` in benchmarks).
    pub fn program_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
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
