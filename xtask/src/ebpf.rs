//! `cargo xtask build-ebpf`: builds the kernel probe (`ebpf/`) into `target/ebpf`, with the
//! same toolchain discovery as `agent/build.rs` (which normally does this by itself).
use std::path::Path;

use anyhow::{bail, Context, Result};

#[path = "../../agent/src/probe/toolchain.rs"]
#[allow(
    dead_code,
    reason = "shared with agent/build.rs, which uses other parts"
)]
mod toolchain;

/// Builds `ebpf/` and prints where the object is.
pub fn build_ebpf(release: bool) -> Result<()> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .context("xtask has no parent directory")?;
    let tc = match toolchain::discover(&toolchain::RealHost) {
        Ok(tc) => tc,
        Err(toolchain::Missing(why)) => bail!("cannot build the kernel probe: {why}"),
    };
    let target_dir = std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| root.join("target"), Into::into)
        .join("ebpf");
    eprintln!(
        "==> building ebpf/ with {} ({}), linker {}",
        tc.source,
        tc.program.display(),
        tc.linker.display()
    );
    let status = toolchain::build_command(&tc, &root.join("ebpf"), &target_dir, release)
        .status()
        .with_context(|| format!("running {}", tc.program.display()))?;
    if !status.success() {
        bail!("building ebpf/ failed ({status})");
    }
    let object = toolchain::object_path(&target_dir, release);
    eprintln!("==> {}", object.display());
    Ok(())
}
