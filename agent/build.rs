//! Builds the kernel probe (`ebpf/`) and hands the object to the agent.
//!
//! The object's path is passed as `TRACER_EBPF_OBJECT` (for `include_bytes!`). When no eBPF
//! toolchain is found the build still succeeds, with one warning, an empty object, and the
//! reason in `TRACER_EBPF_MISSING` (the probe reports it at run time), so offline analysis
//! builds anywhere. `TRACER_REQUIRE_EBPF=1` (CI) turns a missing toolchain into an error;
//! `TRACER_SKIP_EBPF=1` skips the kernel build on purpose.
use std::path::{Path, PathBuf};
use std::{env, fs};

#[path = "src/probe/toolchain.rs"]
#[allow(
    dead_code,
    reason = "shared with the agent and xtask, which use other parts"
)]
mod toolchain;

const ENV_VARS: [&str; 5] = [
    "TRACER_EBPF_RUSTC",
    "TRACER_EBPF_CARGO",
    "TRACER_BPF_LINKER",
    "TRACER_REQUIRE_EBPF",
    "TRACER_SKIP_EBPF",
];

fn main() {
    let manifest_dir = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("set by cargo"));
    let root = manifest_dir.parent().unwrap_or(&manifest_dir).to_path_buf();
    let ebpf_dir = root.join("ebpf");

    for p in [
        "ebpf/src",
        "ebpf/Cargo.toml",
        "ebpf/Cargo.lock",
        "ebpf/.cargo/config.toml",
        "common/src",
        "common/Cargo.toml",
    ] {
        println!("cargo:rerun-if-changed={}", root.join(p).display());
    }
    println!("cargo:rerun-if-changed=src/probe/toolchain.rs");
    for v in ENV_VARS {
        println!("cargo:rerun-if-env-changed={v}");
    }

    let object = out_dir.join("tracer-ebpf.o");
    let flag = |k: &str| env::var(k).is_ok_and(|v| v == "1");

    if flag("TRACER_SKIP_EBPF") {
        return without_probe(&object, "it was built with TRACER_SKIP_EBPF=1");
    }
    let tc = match toolchain::discover(&toolchain::RealHost) {
        Ok(tc) => tc,
        Err(toolchain::Missing(why)) => {
            if flag("TRACER_REQUIRE_EBPF") {
                panic!("TRACER_REQUIRE_EBPF=1 but {why}");
            }
            println!("cargo:warning=building tracer without the kernel probe: {why}");
            return without_probe(&object, &why);
        }
    };
    println!("cargo:rerun-if-changed={}", tc.linker.display());

    let target_dir = ebpf_target_dir(&out_dir);
    let mut cmd = toolchain::build_command(&tc, &ebpf_dir, &target_dir, true);
    let out = cmd.output().unwrap_or_else(|e| {
        panic!(
            "could not run {} ({}): {e}",
            tc.program.display(),
            tc.source
        )
    });
    if !out.status.success() {
        eprintln!("{}", String::from_utf8_lossy(&out.stdout));
        eprintln!("{}", String::from_utf8_lossy(&out.stderr));
        panic!(
            "building the kernel probe (ebpf/) with {} failed ({}); the compiler output is \
             above. Set TRACER_SKIP_EBPF=1 to build tracer without the probe.",
            tc.source, out.status
        );
    }
    let built = toolchain::object_path(&target_dir, true);
    fs::copy(&built, &object)
        .unwrap_or_else(|e| panic!("copying {} to {}: {e}", built.display(), object.display()));
    println!("cargo:rustc-env=TRACER_EBPF_OBJECT={}", object.display());
    println!("cargo:rustc-env=TRACER_EBPF_MISSING=");
    println!(
        "cargo:rustc-env=TRACER_EBPF_TOOLCHAIN={}",
        toolchain::describe(&tc).replace('\n', " ")
    );
}

/// Embeds an empty object and the reason.
fn without_probe(object: &Path, why: &str) {
    fs::write(object, b"").unwrap_or_else(|e| panic!("writing {}: {e}", object.display()));
    println!("cargo:rustc-env=TRACER_EBPF_OBJECT={}", object.display());
    println!(
        "cargo:rustc-env=TRACER_EBPF_MISSING={}",
        why.replace('\n', " ")
    );
    println!("cargo:rustc-env=TRACER_EBPF_TOOLCHAIN=");
}

/// `<workspace target dir>/ebpf`, shared by every profile and by `cargo xtask build-ebpf`:
/// the first ancestor of `OUT_DIR` that holds cargo's `CACHEDIR.TAG` is the target dir.
fn ebpf_target_dir(out_dir: &Path) -> PathBuf {
    out_dir
        .ancestors()
        .find(|a| a.join("CACHEDIR.TAG").is_file())
        .map_or_else(|| out_dir.join("ebpf-target"), |t| t.join("ebpf"))
}
