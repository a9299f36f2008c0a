//! What the kernel must allow before the probe loads: tracefs, capabilities, memlock.

use std::ffi::CString;
use std::path::{Path, PathBuf};

use super::ProbeError;

/// Where tracefs is normally mounted.
pub const TRACEFS: &str = "/sys/kernel/tracing";
/// The old place, under debugfs.
pub const DEBUGFS_TRACING: &str = "/sys/kernel/debug/tracing";

/// How tracefs was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Tracefs {
    /// Already mounted at this path.
    Mounted(PathBuf),
    /// Not mounted; tracer mounted it at this path.
    MountedNow(PathBuf),
}

impl Tracefs {
    /// The tracefs root.
    pub fn path(&self) -> &Path {
        match self {
            Self::Mounted(p) | Self::MountedNow(p) => p,
        }
    }
}

/// Finds tracefs, mounting it at [`TRACEFS`] when it is missing.
pub fn ensure_tracefs() -> Result<Tracefs, ProbeError> {
    for root in [TRACEFS, DEBUGFS_TRACING] {
        if Path::new(root).join("events").is_dir() {
            return Ok(Tracefs::Mounted(root.into()));
        }
    }
    mount_tracefs(TRACEFS).map_err(|source| ProbeError::Tracefs {
        path: TRACEFS.into(),
        source,
    })?;
    if Path::new(TRACEFS).join("events").is_dir() {
        Ok(Tracefs::MountedNow(TRACEFS.into()))
    } else {
        Err(ProbeError::Tracefs {
            path: TRACEFS.into(),
            source: std::io::Error::other("mounted, but it has no events/ directory"),
        })
    }
}

fn mount_tracefs(target: &str) -> std::io::Result<()> {
    let src = CString::new("nodev").map_err(std::io::Error::other)?;
    let tgt = CString::new(target).map_err(std::io::Error::other)?;
    let fstype = CString::new("tracefs").map_err(std::io::Error::other)?;
    // SAFETY: all three are valid NUL-terminated strings that outlive the call; a null
    // `data` pointer is allowed for tracefs.
    let rc = unsafe {
        libc::mount(
            src.as_ptr(),
            tgt.as_ptr(),
            fstype.as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Lifts RLIMIT_MEMLOCK (needed for BPF maps on kernels before 5.11). `Err` holds a warning
/// sentence: on newer kernels memory is charged to the cgroup and loading works anyway.
pub fn raise_memlock() -> Result<(), String> {
    let lim = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: `lim` is a valid rlimit that outlives the call.
    let rc = unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &lim) };
    if rc == 0 {
        Ok(())
    } else {
        Err(format!(
            "could not raise RLIMIT_MEMLOCK ({}); on Linux 5.11 and later BPF memory is \
             charged to the cgroup instead, so loading usually still works",
            std::io::Error::last_os_error()
        ))
    }
}

/// Linux capability numbers that matter here.
pub mod cap {
    pub const SYS_ADMIN: u32 = 21;
    pub const PERFMON: u32 = 38;
    pub const BPF: u32 = 39;
}

/// The effective capability set, from `CapEff:` in `/proc/self/status`.
pub fn effective_caps() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    parse_cap_eff(&status)
}

/// Parses the `CapEff:` line of a `/proc/<pid>/status` text.
pub fn parse_cap_eff(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
}

/// `None` when `caps` can load and attach the probe (CAP_BPF and CAP_PERFMON, or
/// CAP_SYS_ADMIN), else one sentence naming what is missing and what to do.
pub fn missing_caps(caps: u64) -> Option<String> {
    let has = |c: u32| caps & (1u64 << c) != 0;
    if has(cap::SYS_ADMIN) || (has(cap::BPF) && has(cap::PERFMON)) {
        return None;
    }
    let missing: Vec<&str> = [(cap::BPF, "CAP_BPF"), (cap::PERFMON, "CAP_PERFMON")]
        .into_iter()
        .filter(|(c, _)| !has(*c))
        .map(|(_, n)| n)
        .collect();
    Some(format!(
        "the kernel probe needs CAP_BPF and CAP_PERFMON (or CAP_SYS_ADMIN) and this process \
         lacks {}: run tracer as root, or grant them with `setcap cap_bpf,cap_perfmon+ep` on \
         the binary, or in Kubernetes add BPF and PERFMON to \
         securityContext.capabilities.add",
        missing.join(" and ")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cap_eff_is_read_from_status() {
        let status = "Name:\ttracer\nCapInh:\t0000000000000000\nCapEff:\t000001ffffffffff\n";
        assert_eq!(parse_cap_eff(status), Some(0x1ff_ffff_ffff));
        assert_eq!(parse_cap_eff("Name: x\n"), None);
        assert_eq!(parse_cap_eff("CapEff:\tzz\n"), None);
    }

    #[test]
    fn root_or_bpf_plus_perfmon_is_enough() {
        assert_eq!(missing_caps(0x1ff_ffff_ffff), None);
        assert_eq!(missing_caps(1 << cap::SYS_ADMIN), None);
        assert_eq!(missing_caps((1 << cap::BPF) | (1 << cap::PERFMON)), None);
    }

    #[test]
    fn missing_capability_is_named_with_a_fix() {
        let msg = missing_caps(1 << cap::BPF).unwrap();
        assert!(msg.contains("lacks CAP_PERFMON:"), "{msg}");
        assert!(msg.contains("setcap"), "{msg}");
        let msg = missing_caps(0).unwrap();
        assert!(msg.contains("lacks CAP_BPF and CAP_PERFMON"), "{msg}");
    }
}
