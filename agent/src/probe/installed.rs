//! Tests only: where this machine keeps the real programs and libraries the probe's ELF
//! readers are tried on, found as the system finds them (no path of one machine's layout).

use std::path::PathBuf;

/// `program` on `PATH` (or in the sbin directories), as the lab finds it.
pub fn program(program: &str, package: &str) -> Option<PathBuf> {
    tracer_lab::scenario::require_program(program, package)
        .map_err(|e| eprintln!("SKIPPED: {e:#}"))
        .ok()
}

/// The shared library `soname` the dynamic linker would load (`ldconfig -p`).
pub fn library(soname: &str, package: &str) -> Option<PathBuf> {
    let found = std::process::Command::new("ldconfig")
        .arg("-p")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|cache| in_ld_cache(&cache, soname));
    if found.is_none() {
        eprintln!("SKIPPED: {soname} is not installed (apt-get install {package})");
    }
    found
}

/// The path `ldconfig -p` gives for `soname` (the first, native entry).
fn in_ld_cache(cache: &str, soname: &str) -> Option<PathBuf> {
    cache.lines().find_map(|l| {
        let (name, path) = l.trim().split_once(" => ")?;
        (name.split_whitespace().next() == Some(soname)).then(|| PathBuf::from(path.trim()))
    })
}

#[test]
fn the_ld_cache_names_a_library_by_its_soname() {
    let cache = "2 libs found in cache `ld.so.cache'
\tlibssl.so.3 (libc6,x86-64) => lib/libssl.so.3
\tlibssl.so (libc6,x86-64) => lib/libssl.so
";
    assert_eq!(
        in_ld_cache(cache, "libssl.so.3"),
        Some(PathBuf::from("lib/libssl.so.3"))
    );
    assert_eq!(in_ld_cache(cache, "libcrypto.so.3"), None);
}
