//! Finding and running the toolchain that builds the kernel probe (`ebpf/`).
//!
//! Shared, std only, by three users: `agent/build.rs` (includes this file with `#[path]`),
//! `cargo xtask build-ebpf` (`xtask/src/ebpf.rs`, same trick) and the agent's unit tests.
//! The discovery itself is pure over a [`Host`], so it is tested with a fake one.
//!
//! Order: `TRACER_EBPF_RUSTC`/`TRACER_EBPF_CARGO` if set; else Debian's `rustc-web` (its
//! `/usr/bin/rustc` with the `rust-web-src` sources, run with `RUSTC_BOOTSTRAP=1`); else a
//! rustup `nightly` toolchain that has `rust-src`. The linker: `TRACER_BPF_LINKER`, else
//! `bpf-linker` on `PATH`, else in `$CARGO_HOME/bin` or `~/.cargo/bin`.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The one line that installs what the Rust kernel side needs on Debian 12 (see docs/building.md).
pub const INSTALL_HINT: &str = "run ./bootstrap.sh, or `apt-get install rustc-web rust-web-src \
cargo-web llvm-22-dev` and `LLVM_PREFIX=/usr/lib/llvm-22 cargo install bpf-linker@0.13.0 \
--no-default-features --features llvm-22 --locked`, or point TRACER_EBPF_RUSTC, \
TRACER_EBPF_CARGO and TRACER_BPF_LINKER at a toolchain with rust-src and a bpf-linker";

/// Debian's `rustc-web` compiler (a standard package path, not this machine's).
const DEBIAN_RUSTC: &str = "/usr/bin/rustc";
/// Debian's `cargo-web`.
const DEBIAN_CARGO: &str = "/usr/bin/cargo";
/// Where `rust-web-src` puts the standard library sources for `-Z build-std`.
const DEBIAN_RUST_SRC: &str = "/usr/lib/rustlib/src/rust/library/core/Cargo.toml";

/// What discovery may ask of the machine; the real one is [`RealHost`].
pub trait Host {
    /// An environment variable, `None` when unset or empty.
    fn var(&self, key: &str) -> Option<String>;
    /// Whether a file exists.
    fn exists(&self, path: &Path) -> bool;
    /// The sysroot of rustup's `nightly` toolchain, if rustup and that toolchain exist.
    fn rustup_nightly_sysroot(&self) -> Option<PathBuf>;
}

/// How the kernel crate will be compiled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Toolchain {
    /// Which route was taken, for messages: "TRACER_EBPF_*", "debian rustc-web", "rustup nightly".
    pub source: &'static str,
    /// The program to run (a cargo, or rustup).
    pub program: PathBuf,
    /// Arguments before cargo's own (`run nightly cargo` for rustup).
    pub prefix_args: Vec<String>,
    /// `RUSTC` for the inner cargo, when it must not find the rustup proxy on `PATH`.
    pub rustc: Option<PathBuf>,
    /// The `bpf-linker` to use.
    pub linker: PathBuf,
}

/// Why no toolchain was found: one sentence for `cargo:warning=` and for runtime.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Missing(pub String);

fn nonempty(s: Option<String>) -> Option<String> {
    s.filter(|v| !v.trim().is_empty())
}

/// Finds `bpf-linker`.
pub fn find_linker(host: &dyn Host) -> Option<PathBuf> {
    if let Some(p) = nonempty(host.var("TRACER_BPF_LINKER")) {
        return Some(PathBuf::from(p));
    }
    if let Some(path) = host.var("PATH") {
        for dir in std::env::split_paths(&path) {
            let candidate = dir.join("bpf-linker");
            if host.exists(&candidate) {
                return Some(candidate);
            }
        }
    }
    let homes = [
        nonempty(host.var("CARGO_HOME")).map(PathBuf::from),
        nonempty(host.var("HOME")).map(|h| Path::new(&h).join(".cargo")),
    ];
    homes
        .into_iter()
        .flatten()
        .map(|h| h.join("bin").join("bpf-linker"))
        .find(|c| host.exists(c))
}

/// Chooses the compiler and linker, or says in one sentence what is missing.
pub fn discover(host: &dyn Host) -> Result<Toolchain, Missing> {
    for key in [
        "TRACER_EBPF_RUSTC",
        "TRACER_EBPF_CARGO",
        "TRACER_BPF_LINKER",
    ] {
        if let Some(p) = nonempty(host.var(key)) {
            // A bare name ("cargo") is looked up on PATH by the OS; a path must exist.
            if p.contains('/') && !host.exists(Path::new(&p)) {
                return Err(Missing(format!(
                    "{key} names {p}, which does not exist: fix or unset it, or {INSTALL_HINT}"
                )));
            }
        }
    }
    let compiler = find_compiler(host);
    let linker = find_linker(host);
    match (compiler, linker) {
        (Some((source, program, prefix_args, rustc)), Some(linker)) => Ok(Toolchain {
            source,
            program,
            prefix_args,
            rustc,
            linker,
        }),
        (None, linker) => Err(Missing(format!(
            "no compiler for the eBPF target was found (Debian's rustc-web with rust-web-src, \
             or a rustup nightly with rust-src{}): {INSTALL_HINT}",
            if linker.is_none() {
                ", and no bpf-linker"
            } else {
                ""
            }
        ))),
        (Some(_), None) => Err(Missing(format!(
            "bpf-linker was not found on PATH or in ~/.cargo/bin: {INSTALL_HINT}"
        ))),
    }
}

type Compiler = (&'static str, PathBuf, Vec<String>, Option<PathBuf>);

fn find_compiler(host: &dyn Host) -> Option<Compiler> {
    let rustc = nonempty(host.var("TRACER_EBPF_RUSTC")).map(PathBuf::from);
    let cargo = nonempty(host.var("TRACER_EBPF_CARGO")).map(PathBuf::from);
    if rustc.is_some() || cargo.is_some() {
        // A cargo beside the named rustc, else the named cargo, else the one on PATH.
        let cargo = cargo
            .or_else(|| {
                let sibling = rustc.as_ref()?.parent()?.join("cargo");
                host.exists(&sibling).then_some(sibling)
            })
            .unwrap_or_else(|| PathBuf::from("cargo"));
        return Some((
            "TRACER_EBPF_RUSTC/TRACER_EBPF_CARGO",
            cargo,
            Vec::new(),
            rustc,
        ));
    }
    let (d_rustc, d_cargo) = (Path::new(DEBIAN_RUSTC), Path::new(DEBIAN_CARGO));
    if host.exists(d_rustc) && host.exists(d_cargo) && host.exists(Path::new(DEBIAN_RUST_SRC)) {
        return Some((
            "debian rustc-web",
            d_cargo.to_path_buf(),
            Vec::new(),
            Some(d_rustc.to_path_buf()),
        ));
    }
    let sysroot = host.rustup_nightly_sysroot()?;
    let src = sysroot.join("lib/rustlib/src/rust/library/core/Cargo.toml");
    if !host.exists(&src) {
        return None;
    }
    Some((
        "rustup nightly",
        PathBuf::from("rustup"),
        vec!["run".into(), "nightly".into(), "cargo".into()],
        None,
    ))
}

/// Whether the outer build's variable `key` must not reach the inner cargo: it would make
/// the inner build use the outer compiler, flags, target dir or jobserver.
pub fn is_outer_build_var(key: &str) -> bool {
    const KEEP: [&str; 1] = ["CARGO_HOME"];
    const KEEP_PREFIXES: [&str; 4] = [
        "CARGO_NET_",
        "CARGO_HTTP_",
        "CARGO_REGISTRIES_",
        "CARGO_REGISTRY_",
    ];
    const DROP: [&str; 16] = [
        "RUSTC",
        "RUSTC_WRAPPER",
        "RUSTC_WORKSPACE_WRAPPER",
        "RUSTC_LINKER",
        "RUSTDOC",
        "RUSTFLAGS",
        "RUSTDOCFLAGS",
        "RUSTUP_TOOLCHAIN",
        "MAKEFLAGS",
        "MFLAGS",
        "OUT_DIR",
        "TARGET",
        "HOST",
        "NUM_JOBS",
        "OPT_LEVEL",
        "PROFILE",
    ];
    if KEEP.contains(&key) || KEEP_PREFIXES.iter().any(|p| key.starts_with(p)) {
        return false;
    }
    DROP.contains(&key)
        || key == "DEBUG"
        || key == "CARGO"
        || key.starts_with("CARGO_")
        || key.starts_with("DEP_")
        || key.starts_with("RUSTC_")
        || key.starts_with("__CARGO")
}

/// The command that builds `ebpf/` into `target_dir`. `ebpf_dir` is the crate's directory
/// (its `.cargo/config.toml` sets the target and `build-std`).
pub fn build_command(tc: &Toolchain, ebpf_dir: &Path, target_dir: &Path, release: bool) -> Command {
    let mut cmd = Command::new(&tc.program);
    cmd.args(&tc.prefix_args);
    let outer: Vec<OsString> = std::env::vars_os()
        .map(|(k, _)| k)
        .filter(|k| k.to_str().is_some_and(is_outer_build_var))
        .collect();
    for k in outer {
        cmd.env_remove(k);
    }
    if let Some(rustc) = &tc.rustc {
        cmd.env("RUSTC", rustc);
    }
    // Debian's compiler is stable: let it accept -Z build-std. Harmless on nightly.
    cmd.env("RUSTC_BOOTSTRAP", "1");
    cmd.env("CARGO_TARGET_BPFEL_UNKNOWN_NONE_LINKER", &tc.linker);
    cmd.current_dir(ebpf_dir)
        .arg("build")
        .arg("--locked")
        .arg("--target")
        .arg("bpfel-unknown-none")
        .arg("-Z")
        .arg("build-std=core")
        .arg("--target-dir")
        .arg(target_dir);
    if release {
        cmd.arg("--release");
    }
    cmd
}

/// One line naming the compiler and linker `tc` runs, with their own version lines
/// ("rustc 1.96.0 … (debian rustc-web); bpf-linker 0.13.0"), for `tracer check` and the
/// kernel tests' failure messages: the probe's code generation depends on both.
pub fn describe(tc: &Toolchain) -> String {
    let first_line = |mut c: Command| {
        c.output()
            .ok()
            .filter(|o| o.status.success())
            .and_then(|o| {
                String::from_utf8_lossy(&o.stdout)
                    .lines()
                    .next()
                    .map(|l| l.trim().to_owned())
            })
            .unwrap_or_else(|| "version unknown".to_owned())
    };
    let rustc = if let Some(rustc) = &tc.rustc {
        let mut c = Command::new(rustc);
        c.arg("--version");
        c
    } else {
        // rustup: `rustup run nightly rustc --version`; a named cargo: its rustc beside it.
        let mut c = Command::new(&tc.program);
        if tc.prefix_args.is_empty() {
            c.arg("--version");
        } else {
            c.args(&tc.prefix_args[..tc.prefix_args.len() - 1])
                .arg("rustc")
                .arg("--version");
        }
        c
    };
    let mut linker = Command::new(&tc.linker);
    linker.arg("--version");
    format!(
        "{} ({}); {}",
        first_line(rustc),
        tc.source,
        first_line(linker)
    )
}

/// Where the inner build leaves the object.
pub fn object_path(target_dir: &Path, release: bool) -> PathBuf {
    target_dir
        .join("bpfel-unknown-none")
        .join(if release { "release" } else { "debug" })
        .join("tracer-ebpf")
}

/// The machine itself.
pub struct RealHost;

impl Host for RealHost {
    fn var(&self, key: &str) -> Option<String> {
        nonempty(std::env::var(key).ok())
    }
    fn exists(&self, path: &Path) -> bool {
        path.is_file()
    }
    fn rustup_nightly_sysroot(&self) -> Option<PathBuf> {
        let out = Command::new("rustup")
            .args(["run", "nightly", "rustc", "--print", "sysroot"])
            .env_remove("RUSTUP_TOOLCHAIN")
            .env_remove("RUSTC")
            .output()
            .ok()?;
        if !out.status.success() {
            return None;
        }
        let s = String::from_utf8(out.stdout).ok()?;
        Some(PathBuf::from(s.trim()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[derive(Default)]
    struct Fake {
        vars: HashMap<&'static str, String>,
        files: Vec<PathBuf>,
        nightly: Option<PathBuf>,
    }

    impl Host for Fake {
        fn var(&self, key: &str) -> Option<String> {
            nonempty(self.vars.get(key).cloned())
        }
        fn exists(&self, path: &Path) -> bool {
            self.files.iter().any(|f| f == path)
        }
        fn rustup_nightly_sysroot(&self) -> Option<PathBuf> {
            self.nightly.clone()
        }
    }

    fn debian() -> Fake {
        Fake {
            files: vec![
                DEBIAN_RUSTC.into(),
                DEBIAN_CARGO.into(),
                DEBIAN_RUST_SRC.into(),
                "/home/u/.cargo/bin/bpf-linker".into(),
            ],
            vars: HashMap::from([("HOME", "/home/u".into()), ("PATH", "/usr/bin:/bin".into())]),
            nightly: None,
        }
    }

    #[test]
    fn debian_rustc_web_is_chosen_with_linker_from_cargo_home() {
        let tc = discover(&debian()).unwrap();
        assert_eq!(tc.source, "debian rustc-web");
        assert_eq!(tc.program, Path::new(DEBIAN_CARGO));
        assert_eq!(tc.rustc.as_deref(), Some(Path::new(DEBIAN_RUSTC)));
        assert_eq!(tc.linker, Path::new("/home/u/.cargo/bin/bpf-linker"));
    }

    #[test]
    fn env_override_wins_over_debian() {
        let mut f = debian();
        f.vars
            .insert("TRACER_EBPF_RUSTC", "/opt/r/bin/rustc".into());
        f.files.push("/opt/r/bin/cargo".into());
        f.files.push("/opt/r/bin/rustc".into());
        let tc = discover(&f).unwrap();
        assert_eq!(tc.program, Path::new("/opt/r/bin/cargo"));
        assert_eq!(tc.rustc.as_deref(), Some(Path::new("/opt/r/bin/rustc")));
    }

    #[test]
    fn linker_on_path_wins_over_cargo_home() {
        let mut f = debian();
        f.files.push("/bin/bpf-linker".into());
        assert_eq!(discover(&f).unwrap().linker, Path::new("/bin/bpf-linker"));
    }

    #[test]
    fn debian_without_rust_src_falls_back_to_nightly_with_rust_src() {
        let mut f = debian();
        f.files.retain(|p| p != Path::new(DEBIAN_RUST_SRC));
        f.nightly = Some("/n".into());
        f.files
            .push("/n/lib/rustlib/src/rust/library/core/Cargo.toml".into());
        let tc = discover(&f).unwrap();
        assert_eq!(tc.source, "rustup nightly");
        assert_eq!(tc.prefix_args, ["run", "nightly", "cargo"]);
    }

    #[test]
    fn nightly_without_rust_src_is_missing_and_says_how_to_install() {
        let mut f = debian();
        f.files.retain(|p| p != Path::new(DEBIAN_RUST_SRC));
        f.nightly = Some("/n".into());
        let Missing(msg) = discover(&f).unwrap_err();
        assert!(msg.contains("rust-web-src"), "{msg}");
        assert!(msg.contains("bootstrap.sh"), "{msg}");
    }

    #[test]
    fn override_naming_a_missing_file_is_reported() {
        let mut f = debian();
        f.vars
            .insert("TRACER_BPF_LINKER", "/nope/bpf-linker".into());
        let Missing(msg) = discover(&f).unwrap_err();
        assert!(
            msg.starts_with("TRACER_BPF_LINKER names /nope/bpf-linker"),
            "{msg}"
        );
    }

    #[test]
    fn missing_linker_is_named() {
        let mut f = debian();
        f.files.retain(|p| !p.ends_with("bpf-linker"));
        let Missing(msg) = discover(&f).unwrap_err();
        assert!(msg.starts_with("bpf-linker was not found"), "{msg}");
    }

    #[test]
    fn outer_build_variables_are_stripped_but_registry_settings_kept() {
        for k in [
            "RUSTC",
            "RUSTC_WRAPPER",
            "RUSTC_WORKSPACE_WRAPPER",
            "CARGO_ENCODED_RUSTFLAGS",
            "CARGO_TARGET_DIR",
            "CARGO_MAKEFLAGS",
            "CARGO_BUILD_TARGET",
            "CARGO_PKG_NAME",
            "RUSTUP_TOOLCHAIN",
            "OUT_DIR",
            "CARGO",
        ] {
            assert!(is_outer_build_var(k), "{k}");
        }
        for k in [
            "CARGO_HOME",
            "CARGO_NET_OFFLINE",
            "PATH",
            "HOME",
            "RUSTUP_HOME",
        ] {
            assert!(!is_outer_build_var(k), "{k}");
        }
    }
}
