//! The evidence bundle `tracer capture --out DIR` writes, and `tracer analyze DIR` reads:
//!
//! | file | what |
//! |---|---|
//! | `capture.pcap` | every packet tracer analysed, in the order it analysed them (raw IP) |
//! | `events.jsonl` | the kernel probe's events, one JSON object a line, on the pcap clock |
//! | `evidence.pcapng` | just the connections behind the verdicts, for Wireshark; each packet a verdict rests on carries a comment (`frame.comment`) with the verdict's cause and summary |
//! | `report.json` | the report (`tracer.report/v1`) |
//! | `report.html` | the report as one self-contained page, with timelines |
//!
//! Reading `capture.pcap` and `events.jsonl` again gives the same verdicts.
//!
//! The files hold full packets and headers (`Authorization`, `Cookie`, query strings), so
//! they are private: a directory tracer creates is 0700, every file 0600, created new
//! (never through a symbolic link planted where it writes). A directory that already
//! holds files is refused unless the caller forces it, and then only tracer's own file
//! names are replaced.
//!
//! While a capture runs, its packets and events reach the disk at least every
//! [`FLUSH_EVERY`] (written and synced by a thread of the writer's own), so a SIGKILL or a
//! power loss costs at most about that much; `tracer analyze` reads a bundle cut that way
//! (a truncated `capture.pcap`, a last line of `events.jsonl` written halfway) with a
//! warning.

use std::collections::{HashMap, HashSet};
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc, Mutex, PoisonError};
use std::time::Duration;

use crate::capture::{
    open_many_with_frames, CaptureError, LinkType, PcapWriter, PcapngWriter, RawPacket,
};
use crate::flow::{key, Key};
use crate::kernel::{KernelEvent, Ledger};
use crate::verdict::Verdict;

pub const CAPTURE: &str = "capture.pcap";
pub const EVENTS: &str = "events.jsonl";
pub const EVIDENCE: &str = "evidence.pcapng";
pub const REPORT: &str = "report.json";
pub const HTML: &str = "report.html";
/// Present when the capture was sparse (what `tracer capture` does by default): the packets are a
/// selection, and `tracer analyze` must read them as such.
pub const SPARSE: &str = "SPARSE";
/// Every file name a bundle may hold: what a forced write replaces.
pub const FILES: [&str; 6] = [CAPTURE, EVENTS, EVIDENCE, REPORT, HTML, SPARSE];
/// A live bundle's packets and events reach the disk at least this often.
pub const FLUSH_EVERY: Duration = Duration::from_secs(1);

/// Why a bundle could not be written or read. Each names the path it is about once.
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    /// A file of the bundle could not be created, written or read.
    #[error("{}: {error}", path.display())]
    Io {
        path: PathBuf,
        /// Not a `source`: the message above already says it, and a chain would say it
        /// twice.
        error: std::io::Error,
    },
    /// The packet files could not be written or read back.
    #[error(transparent)]
    Capture(#[from] CaptureError),
    /// A line of `events.jsonl` is not an event.
    #[error("{}:{line}: not a probe event: {message}", path.display())]
    BadEvent {
        path: PathBuf,
        line: usize,
        message: String,
    },
    /// The output directory already holds files.
    #[error(
        "{}: the directory is not empty: give a new or empty directory, or --force to \
         replace tracer's files in it",
        path.display()
    )]
    NotEmpty { path: PathBuf },
    /// The output path is a symbolic link.
    #[error(
        "{}: is a symbolic link: tracer does not write through links; give the directory \
         itself",
        path.display()
    )]
    Symlink { path: PathBuf },
    /// The output path exists and is not a directory.
    #[error("{}: exists and is not a directory", path.display())]
    NotADirectory { path: PathBuf },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> BundleError + '_ {
    move |error| BundleError::Io {
        path: path.to_owned(),
        error,
    }
}

/// Whether `path` is a bundle directory.
#[must_use]
pub fn is_bundle(path: &Path) -> bool {
    path.is_dir() && path.join(CAPTURE).is_file()
}

/// Whether the bundle at `dir` holds a sparse capture.
#[must_use]
pub fn is_sparse(dir: &Path) -> bool {
    dir.join(SPARSE).is_file()
}

/// Checks, without writing anything, that `dir` can take a bundle: it does not exist yet,
/// or is an empty directory, or (with `force`) any directory; never a symbolic link.
///
/// # Errors
/// [`BundleError::Symlink`], [`BundleError::NotADirectory`], [`BundleError::NotEmpty`], or
/// an I/O error naming `dir`.
pub fn check_dir(dir: &Path, force: bool) -> Result<(), BundleError> {
    let meta = match std::fs::symlink_metadata(dir) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io(dir)(e)),
    };
    if meta.file_type().is_symlink() {
        return Err(BundleError::Symlink {
            path: dir.to_owned(),
        });
    }
    if !meta.is_dir() {
        return Err(BundleError::NotADirectory {
            path: dir.to_owned(),
        });
    }
    if !force && std::fs::read_dir(dir).map_err(io(dir))?.next().is_some() {
        return Err(BundleError::NotEmpty {
            path: dir.to_owned(),
        });
    }
    Ok(())
}

/// Makes `dir` ready for a bundle: created 0700 when missing (its parents as usual), else
/// checked as by [`check_dir`]; with `force`, tracer's own files in it are removed (a
/// symbolic link among them is removed, not followed). An existing directory keeps its
/// mode: the files are private either way.
///
/// # Errors
/// As [`check_dir`], or when creating or cleaning the directory fails.
pub fn prepare_dir(dir: &Path, force: bool) -> Result<(), BundleError> {
    check_dir(dir, force)?;
    if std::fs::symlink_metadata(dir).is_err() {
        if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(io(parent))?;
        }
        match std::fs::DirBuilder::new().mode(0o700).create(dir) {
            Ok(()) => return Ok(()),
            // Made by someone else meanwhile: check it like any existing directory.
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => check_dir(dir, force)?,
            Err(e) => return Err(io(dir)(e)),
        }
    }
    if force {
        for name in FILES {
            let p = dir.join(name);
            match std::fs::remove_file(&p) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(io(&p)(e)),
            }
        }
    }
    Ok(())
}

/// Creates `path` as a new file only its owner can read (0600): never an existing file,
/// never through a symbolic link.
///
/// # Errors
/// An I/O error naming `path` (`File exists` when something is already there).
pub fn create_private(path: &Path) -> Result<File, BundleError> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
        .map_err(io(path))
}

/// Writes `contents` into a new private file at `path` (see [`create_private`]).
///
/// # Errors
/// An I/O error naming `path`.
pub fn write_private(path: &Path, contents: &[u8]) -> Result<(), BundleError> {
    let mut f = create_private(path)?;
    f.write_all(contents).map_err(io(path))?;
    f.sync_data().map_err(io(path))
}

/// The files a live bundle writes into, shared with its flushing thread.
struct Files {
    packets: PcapWriter<BufWriter<File>>,
    events: BufWriter<File>,
    /// Something was written since the last flush.
    dirty: bool,
    /// The first error of a flush in the background, for the next caller to return.
    failed: Option<BundleError>,
}

impl Files {
    /// Hands the packets and events written so far to the kernel.
    fn flush(&mut self, dir: &Path) -> Result<(), BundleError> {
        self.dirty = false;
        let capture = dir.join(CAPTURE);
        self.packets.flush().map_err(|e| e.in_file(&capture))?;
        let events = dir.join(EVENTS);
        self.events.flush().map_err(io(&events))
    }
}

fn lock(files: &Mutex<Files>) -> std::sync::MutexGuard<'_, Files> {
    files.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The thread that puts a live bundle on disk every [`FLUSH_EVERY`]; it stops when its
/// sender is dropped.
struct Flusher {
    stop: mpsc::Sender<()>,
    thread: std::thread::JoinHandle<()>,
}

impl Flusher {
    fn start(
        dir: PathBuf,
        files: Arc<Mutex<Files>>,
        sync: Vec<(PathBuf, File)>,
    ) -> std::io::Result<Self> {
        let (stop, stopped) = mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("tracer-bundle".into())
            .spawn(move || {
                while let Err(mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(FLUSH_EVERY) {
                    // Into the kernel under the lock (a copy in memory), onto the disk
                    // outside it, so the capture never waits for the disk.
                    let flushed = {
                        let mut f = lock(&files);
                        if !f.dirty || f.failed.is_some() {
                            continue;
                        }
                        match f.flush(&dir) {
                            Ok(()) => true,
                            Err(e) => {
                                f.failed = Some(e);
                                false
                            }
                        }
                    };
                    if flushed {
                        for (path, file) in &sync {
                            if let Err(e) = file.sync_data() {
                                lock(&files).failed.get_or_insert(io(path)(e));
                            }
                        }
                    }
                }
            })?;
        Ok(Flusher { stop, thread })
    }

    fn stop(self) {
        drop(self.stop);
        let _ = self.thread.join();
    }
}

/// Writes a bundle while a live capture runs.
pub struct BundleWriter {
    dir: PathBuf,
    files: Arc<Mutex<Files>>,
    flusher: Option<Flusher>,
}

impl BundleWriter {
    /// Prepares `dir` (see [`prepare_dir`]) and creates the packet and event files in it;
    /// from then on they reach the disk every [`FLUSH_EVERY`].
    ///
    /// # Errors
    /// As [`prepare_dir`] and [`create_private`].
    pub fn create(dir: &Path, force: bool) -> Result<Self, BundleError> {
        prepare_dir(dir, force)?;
        let capture_path = dir.join(CAPTURE);
        let capture = create_private(&capture_path)?;
        let events_path = dir.join(EVENTS);
        let events = create_private(&events_path)?;
        let sync = vec![
            (
                capture_path.clone(),
                capture.try_clone().map_err(io(&capture_path))?,
            ),
            (
                events_path.clone(),
                events.try_clone().map_err(io(&events_path))?,
            ),
        ];
        // Raw IP: interfaces of different framings (Ethernet, cooked `any`) in one file.
        let mut packets =
            PcapWriter::new(BufWriter::with_capacity(1 << 16, capture), LinkType::RAW)
                .map_err(|e| e.in_file(&capture_path))?;
        // The header at once: a bundle killed in its first second is an empty capture,
        // not an unreadable one.
        packets.flush().map_err(|e| e.in_file(&capture_path))?;
        let files = Arc::new(Mutex::new(Files {
            packets,
            events: BufWriter::new(events),
            dirty: false,
            failed: None,
        }));
        let flusher = Flusher::start(dir.to_owned(), files.clone(), sync).map_err(io(dir))?;
        Ok(BundleWriter {
            dir: dir.to_owned(),
            files,
            flusher: Some(flusher),
        })
    }

    /// Records that the capture is sparse (see [`SPARSE`]).
    ///
    /// # Errors
    /// An I/O error naming the marker file.
    pub fn mark_sparse(&self) -> Result<(), BundleError> {
        write_private(
            &self.dir.join(SPARSE),
            b"tracer capture --sparse: the kernel kept only control segments and selected \
              exchanges; gaps in sequence numbers are deliberate\n",
        )
    }

    /// One packet, in the order the engine received it.
    ///
    /// # Errors
    /// When writing it (or an earlier flush) failed; the error names the file.
    pub fn packet(&mut self, p: &RawPacket) -> Result<(), BundleError> {
        let mut f = lock(&self.files);
        if let Some(e) = f.failed.take() {
            return Err(e);
        }
        f.dirty = true;
        f.packets
            .write(p)
            .map_err(|e| e.in_file(&self.dir.join(CAPTURE)).into())
    }

    /// One probe event.
    ///
    /// # Errors
    /// When writing it (or an earlier flush) failed; the error names the file.
    pub fn event(&mut self, e: &KernelEvent) -> Result<(), BundleError> {
        let mut f = lock(&self.files);
        if let Some(e) = f.failed.take() {
            return Err(e);
        }
        f.dirty = true;
        let path = self.dir.join(EVENTS);
        serde_json::to_writer(&mut f.events, e).map_err(|e| io(&path)(e.into()))?;
        f.events.write_all(b"\n").map_err(io(&path))
    }

    /// Puts the packet and event files on disk, then writes `evidence.pcapng` (the
    /// connections of `verdicts`), `report.json` and `report.html`.
    ///
    /// # Errors
    /// When any of it cannot be written; the error names the file.
    pub fn finish(
        mut self,
        verdicts: &[Verdict],
        report_json: &str,
        report_html: &str,
    ) -> Result<PathBuf, BundleError> {
        if let Some(f) = self.flusher.take() {
            f.stop();
        }
        {
            let mut f = lock(&self.files);
            if let Some(e) = f.failed.take() {
                return Err(e);
            }
            f.flush(&self.dir)?;
            let capture = self.dir.join(CAPTURE);
            f.packets
                .get_ref()
                .get_ref()
                .sync_data()
                .map_err(io(&capture))?;
            let events = self.dir.join(EVENTS);
            f.events.get_ref().sync_data().map_err(io(&events))?;
        }
        write_evidence(
            &[self.dir.join(CAPTURE)],
            &self.dir.join(EVIDENCE),
            verdicts,
        )?;
        write_private(&self.dir.join(REPORT), report_json.as_bytes())?;
        write_private(&self.dir.join(HTML), report_html.as_bytes())?;
        Ok(self.dir.clone())
    }
}

impl Drop for BundleWriter {
    fn drop(&mut self) {
        if let Some(f) = self.flusher.take() {
            f.stop();
        }
        // What was written reaches the file even when the capture ends on an error.
        let _ = lock(&self.files).flush(&self.dir);
    }
}

/// Copies every packet of the connections behind `verdicts` from `inputs` into a new
/// pcapng file at `out` (raw IP), each packet a verdict's evidence names (its connection
/// and time) with a comment per such verdict (see [`evidence_comment`]); returns how many
/// packets were written.
///
/// # Errors
/// When an input cannot be read or `out` cannot be written; the error names the file.
pub fn write_evidence(
    inputs: &[PathBuf],
    out: &Path,
    verdicts: &[Verdict],
) -> Result<u64, BundleError> {
    let mut wanted: HashSet<Key> = HashSet::new();
    let mut comments: HashMap<(Key, i64), Vec<String>> = HashMap::new();
    for v in verdicts {
        if let Some(d) = &v.downstream {
            wanted.insert(key(d.client, d.proxy));
        }
        if let Some(u) = &v.upstream {
            wanted.insert(key(u.proxy, u.server));
        }
        for e in &v.evidence {
            let c = evidence_comment(v, &e.to_string());
            let k = key(e.connection.client, e.connection.server);
            let at = comments.entry((k, e.ts_ns)).or_default();
            if !at.contains(&c) {
                at.push(c);
            }
        }
    }
    let file = create_private(out)?;
    let mut w = PcapngWriter::new(BufWriter::with_capacity(1 << 16, file), LinkType::RAW)
        .map_err(|e| e.in_file(out))?;
    for (seg, raw) in open_many_with_frames(inputs)? {
        let k = key(seg.src, seg.dst);
        if wanted.contains(&k) {
            let c = comments.get(&(k, raw.ts_ns)).map_or(&[][..], Vec::as_slice);
            w.write(&raw, c).map_err(|e| e.in_file(out))?;
        }
    }
    let n = w.written();
    let file = w.finish().map_err(|e| e.in_file(out))?;
    file.get_ref().sync_data().map_err(io(out))?;
    Ok(n)
}

/// The comment on a packet `v` rests on: `tracer: CAUSE[/SUBCAUSE] (CONFIDENCE): WHAT |
/// verdict TIME: SUMMARY`, where `what` is what the verdict's evidence says of that packet
/// and `TIME` the verdict's (RFC 3339, as the reports say it), which tells verdicts with
/// the same summary apart.
#[must_use]
pub fn evidence_comment(v: &Verdict, what: &str) -> String {
    let cause = match v.subcause {
        Some(sc) => format!("{}/{}", v.cause, sc.name()),
        None => v.cause.to_string(),
    };
    let confidence = if v.cause == crate::verdict::Cause::Unexplained {
        String::new()
    } else {
        format!(" ({})", v.confidence.name())
    };
    format!(
        "tracer: {cause}{confidence}: {what} | verdict {}: {}",
        crate::report::rfc3339(v.ts_ns),
        v.summary
    )
}

/// The probe events of a bundle, and what was odd about them.
#[derive(Debug, Default)]
pub struct Events {
    pub ledger: Ledger,
    /// E.g. a last line cut short by a capture that was killed while writing it.
    pub warnings: Vec<String>,
}

/// The probe events of a bundle (none when it has no `events.jsonl`). A last line without
/// its newline that is not a whole event was cut by a capture killed while writing it: it
/// is skipped with a warning. Any other line that is not an event is an error.
///
/// # Errors
/// When the file cannot be read, or a line other than a cut last one is not an event.
pub fn read_events(dir: &Path) -> Result<Events, BundleError> {
    let path = dir.join(EVENTS);
    let mut events = Events::default();
    let f = match File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(events),
        Err(e) => return Err(io(&path)(e)),
    };
    let mut r = BufReader::new(f);
    let mut line = Vec::new();
    for n in 1.. {
        line.clear();
        if r.read_until(b'\n', &mut line).map_err(io(&path))? == 0 {
            break;
        }
        let whole = line.last() == Some(&b'\n');
        if line.trim_ascii().is_empty() {
            continue;
        }
        match serde_json::from_slice::<KernelEvent>(&line) {
            Ok(e) => {
                events.ledger.push(e);
            }
            Err(_) if !whole => events.warnings.push(format!(
                "{}:{n}: the last line is cut short (the capture was stopped while writing \
                 it); it is skipped",
                path.display()
            )),
            Err(e) => {
                return Err(BundleError::BadEvent {
                    path,
                    line: n,
                    message: e.to_string(),
                })
            }
        }
    }
    Ok(events)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;
    use crate::probe::{SockEvent, SockEventKind};

    /// A scratch directory for one test, removed when dropped.
    struct Scratch(PathBuf);

    impl Scratch {
        fn new(test: &str) -> Scratch {
            let dir =
                std::env::temp_dir().join(format!("tracer-bundle-{test}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            Scratch(dir)
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn mode(p: &Path) -> u32 {
        std::fs::symlink_metadata(p).unwrap().permissions().mode() & 0o777
    }

    fn packet() -> RawPacket {
        RawPacket {
            ts_ns: 1_000_000_000,
            linktype: LinkType::RAW,
            data: vec![0x45; 40],
            orig_len: 40,
        }
    }

    fn event() -> KernelEvent {
        KernelEvent {
            ts_ns: 7,
            event: SockEvent {
                ktime_ns: 7,
                skaddr: 1,
                kind: SockEventKind::Destroy,
                state: 7,
                pid: None,
                tid: None,
                comm: None,
                netns: None,
                local: None,
                remote: None,
            },
        }
    }

    #[test]
    fn a_new_bundle_is_private() {
        let s = Scratch::new("private");
        let dir = s.0.join("a/b");
        let mut w = BundleWriter::create(&dir, false).unwrap();
        w.mark_sparse().unwrap();
        w.packet(&packet()).unwrap();
        w.event(&event()).unwrap();
        w.finish(&[], "{}", "<html></html>").unwrap();
        assert_eq!(mode(&dir), 0o700);
        for f in FILES {
            assert_eq!(mode(&dir.join(f)), 0o600, "{f}");
        }
    }

    #[test]
    fn a_non_empty_directory_is_refused_unless_forced() {
        let s = Scratch::new("nonempty");
        std::fs::write(s.0.join("notes"), "mine").unwrap();
        std::fs::write(s.0.join(REPORT), "old").unwrap();
        let e = BundleWriter::create(&s.0, false).err().unwrap();
        assert!(matches!(e, BundleError::NotEmpty { .. }), "{e}");
        let w = BundleWriter::create(&s.0, true).unwrap();
        w.finish(&[], "new", "").unwrap();
        assert_eq!(std::fs::read_to_string(s.0.join(REPORT)).unwrap(), "new");
        // What is not tracer's stays.
        assert_eq!(std::fs::read_to_string(s.0.join("notes")).unwrap(), "mine");
    }

    #[test]
    fn a_planted_symlink_is_replaced_not_followed() {
        let s = Scratch::new("symlink");
        let victim = s.0.join("victim");
        std::fs::write(&victim, "precious").unwrap();
        let dir = s.0.join("out");
        std::fs::create_dir(&dir).unwrap();
        for f in FILES {
            std::os::unix::fs::symlink(&victim, dir.join(f)).unwrap();
        }
        let mut w = BundleWriter::create(&dir, true).unwrap();
        w.mark_sparse().unwrap();
        w.packet(&packet()).unwrap();
        w.finish(&[], "{}", "<html></html>").unwrap();
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
        for f in FILES {
            assert!(
                std::fs::symlink_metadata(dir.join(f)).unwrap().is_file(),
                "{f}"
            );
        }
    }

    #[test]
    fn a_link_appearing_after_the_check_makes_creation_fail() {
        let s = Scratch::new("race");
        let victim = s.0.join("victim");
        std::fs::write(&victim, "precious").unwrap();
        std::os::unix::fs::symlink(&victim, s.0.join("late")).unwrap();
        let e = create_private(&s.0.join("late")).err().unwrap();
        assert!(e.to_string().contains("late"), "{e}");
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
    }

    #[test]
    fn an_output_path_that_is_a_link_is_refused() {
        let s = Scratch::new("dirlink");
        std::fs::create_dir(s.0.join("real")).unwrap();
        std::os::unix::fs::symlink(s.0.join("real"), s.0.join("link")).unwrap();
        let e = check_dir(&s.0.join("link"), true).err().unwrap();
        assert!(matches!(e, BundleError::Symlink { .. }), "{e}");
    }

    /// The message of an I/O error and its chain of sources, as `{:#}` prints them.
    fn chain(e: &dyn std::error::Error) -> String {
        let mut s = e.to_string();
        let mut next = e.source();
        while let Some(c) = next {
            s.push_str(": ");
            s.push_str(&c.to_string());
            next = c.source();
        }
        s
    }

    #[test]
    fn an_io_error_says_its_path_and_reason_once() {
        let full = std::io::Error::from_raw_os_error(libc::ENOSPC);
        let msg = full.to_string();
        let e = io(Path::new("/x/capture.pcap"))(full);
        let text = chain(&e);
        assert_eq!(text.matches(&msg).count(), 1, "{text}");
        assert_eq!(text.matches("/x/capture.pcap").count(), 1, "{text}");
        let e = BundleError::from(
            CaptureError::from(std::io::Error::from_raw_os_error(libc::ENOSPC))
                .in_file(Path::new("/x/capture.pcap")),
        );
        let text = chain(&e);
        assert_eq!(text.matches(&msg).count(), 1, "{text}");
    }

    #[test]
    fn packets_reach_the_file_by_time_without_more_writes() {
        let s = Scratch::new("flush");
        let mut w = BundleWriter::create(&s.0, false).unwrap();
        w.packet(&packet()).unwrap();
        w.event(&event()).unwrap();
        let header = 24;
        let deadline = std::time::Instant::now() + FLUSH_EVERY * 10;
        let size = |f: &str| std::fs::metadata(s.0.join(f)).unwrap().len();
        while size(CAPTURE) <= header || size(EVENTS) == 0 {
            assert!(
                std::time::Instant::now() < deadline,
                "nothing flushed after {:?}",
                FLUSH_EVERY * 10
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        drop(w);
    }

    #[test]
    fn a_cut_last_event_line_is_skipped_with_a_warning() {
        let s = Scratch::new("cut");
        let line = serde_json::to_string(&event()).unwrap();
        std::fs::write(
            s.0.join(EVENTS),
            format!("{line}\n{line}\n{}", &line[..line.len() / 2]),
        )
        .unwrap();
        let ev = read_events(&s.0).unwrap();
        assert_eq!(ev.warnings.len(), 1, "{:?}", ev.warnings);
        assert!(ev.warnings[0].contains(":3:"), "{:?}", ev.warnings);
        // A whole last line without its newline is still an event.
        std::fs::write(s.0.join(EVENTS), format!("{line}\n{line}")).unwrap();
        assert!(read_events(&s.0).unwrap().warnings.is_empty());
    }

    #[test]
    fn a_bad_line_in_the_middle_is_an_error() {
        let s = Scratch::new("bad");
        let line = serde_json::to_string(&event()).unwrap();
        std::fs::write(s.0.join(EVENTS), format!("{line}\n{{\"cut\n{line}\n")).unwrap();
        let e = read_events(&s.0).err().unwrap();
        assert!(matches!(e, BundleError::BadEvent { line: 2, .. }), "{e}");
    }
}
