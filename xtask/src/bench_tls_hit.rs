//! What one uprobe hit costs on this machine, measured in the same run as `bench-tls`: a
//! function of this program called in a loop, bare, with an entry uprobe, and with an entry
//! and a return uprobe. The probes are the kernel's own trace events (`uprobe_events`,
//! enabled in a trace instance of this run's own), so the figure is the trap and the
//! kernel's uprobe machinery, not a BPF program: on most machines a microsecond or two, far
//! more where the hypervisor takes every trap.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};

/// The function the calibration probes.
#[no_mangle]
#[inline(never)]
pub extern "C" fn tracer_bench_tls_target(x: u64) -> u64 {
    std::hint::black_box(x).wrapping_add(1)
}

/// Calls of the target per measurement.
const CALLS: u64 = 20_000;

/// Nanoseconds per call of the target.
fn per_call() -> f64 {
    let start = Instant::now();
    let mut x = 0;
    for _ in 0..CALLS {
        x = tracer_bench_tls_target(x);
    }
    std::hint::black_box(x);
    start.elapsed().as_nanos() as f64 / CALLS as f64
}

/// The probes, removed on drop.
struct Events {
    tracefs: PathBuf,
    group: String,
    instance: PathBuf,
    names: Vec<&'static str>,
}

impl Events {
    fn new(tracefs: &Path) -> Result<Self> {
        let group = format!("tracer_bench_{}", std::process::id());
        let instance = tracefs.join("instances").join(&group);
        std::fs::create_dir(&instance)
            .with_context(|| format!("creating the trace instance {}", instance.display()))?;
        Ok(Self {
            tracefs: tracefs.to_path_buf(),
            group,
            instance,
            names: Vec::new(),
        })
    }

    /// Defines and enables `kind` (`p` entry, `r` return) at `offset` of `exe`.
    fn add(&mut self, kind: char, name: &'static str, exe: &Path, offset: u64) -> Result<()> {
        let def = format!(
            "{kind}:{}/{name} {}:{offset:#x}\n",
            self.group,
            exe.display()
        );
        append(&self.tracefs.join("uprobe_events"), &def)?;
        self.names.push(name);
        std::fs::write(
            self.instance
                .join("events")
                .join(&self.group)
                .join(name)
                .join("enable"),
            "1",
        )
        .with_context(|| format!("enabling {name}"))
    }
}

impl Drop for Events {
    fn drop(&mut self) {
        for n in &self.names {
            let _ = std::fs::write(
                self.instance
                    .join("events")
                    .join(&self.group)
                    .join(n)
                    .join("enable"),
                "0",
            );
        }
        let _ = std::fs::remove_dir(&self.instance);
        for n in &self.names {
            let _ = append(
                &self.tracefs.join("uprobe_events"),
                &format!("-:{}/{n}\n", self.group),
            );
        }
    }
}

fn append(file: &Path, line: &str) -> Result<()> {
    use std::io::Write;
    std::fs::OpenOptions::new()
        .append(true)
        .open(file)
        .and_then(|mut f| f.write_all(line.as_bytes()))
        .with_context(|| format!("writing {}", file.display()))
}

/// Microseconds a call costs more with an entry uprobe, and with an entry and a return
/// uprobe, than bare (medians of `rounds`, alternated).
pub fn uprobe_hit_us(tracefs: &Path, rounds: u32) -> Result<(f64, f64)> {
    let exe = std::env::current_exe().context("finding this program")?;
    let data = std::fs::read(&exe).context("reading this program")?;
    let elf = tracer::probe::elf::Elf::parse(&data)?;
    let offset = elf.function("tracer_bench_tls_target")?.file_offset;
    let (mut entry, mut both) = (Vec::new(), Vec::new());
    for _ in 0..rounds.max(1) {
        let bare = per_call();
        let mut ev = Events::new(tracefs)?;
        ev.add('p', "entry", &exe, offset)?;
        let one = per_call();
        ev.add('r', "ret", &exe, offset)?;
        let two = per_call();
        drop(ev);
        entry.push((one - bare) / 1e3);
        both.push((two - bare) / 1e3);
    }
    let (e, b) = (crate::bench::median(&entry), crate::bench::median(&both));
    if e <= 0.0 {
        bail!("an entry uprobe cost nothing: the probe did not fire");
    }
    Ok((e, b))
}
