//! `tracer capture --out DIR` on real traffic, stopped the ways an operator's tools stop it:
//! SIGTERM (`timeout`, systemd, Docker, Kubernetes) and SIGHUP (a dropped SSH session) end it
//! like Ctrl-C — report printed, bundle finished, exit 0 — and after SIGKILL the bundle
//! still holds everything up to about a second before the kill. `tracer analyze DIR` then
//! reads the bundle. Needs root (a network namespace of the test's own, packet capture).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long the traffic runs under the capture before the signal.
const TRAFFIC_BEFORE_SIGNAL: Duration = Duration::from_secs(3);
/// After SIGKILL the bundle may lack at most about a second (the flush period); this is that
/// second with room for a loaded machine.
const KILL_LOSS_BOUND: Duration = Duration::from_millis(2500);

fn skip_reason() -> Option<String> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        return Some("needs root (network namespaces and packet capture)".into());
    }
    if Command::new("ip").arg("-V").output().is_err() {
        return Some("needs `ip` (iproute2)".into());
    }
    None
}

/// A network namespace with its loopback up, deleted when dropped.
struct Netns(String);

impl Netns {
    fn create(tag: &str) -> Netns {
        let ns = Netns(format!("tracer-sig-{tag}-{}", std::process::id()));
        let _ = Command::new("ip")
            .args(["netns", "del", &ns.0])
            .stderr(Stdio::null())
            .status();
        assert!(Command::new("ip")
            .args(["netns", "add", &ns.0])
            .status()
            .unwrap()
            .success());
        assert!(Command::new("ip")
            .args(["-n", &ns.0, "link", "set", "lo", "up"])
            .status()
            .unwrap()
            .success());
        ns
    }
}

/// Moves this thread into the network namespace `name`.
fn enter(name: &str) {
    let f = std::fs::File::open(format!("/run/netns/{name}")).unwrap();
    // SAFETY: `f` is open for the duration of the call; setns changes only this thread.
    assert_eq!(unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) }, 0);
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

/// An HTTP server on the namespace's loopback that answers every third request with 502,
/// and a client sending one request per fresh connection every 100 ms (light: the
/// bundle must reach the disk by time, not by filling a buffer), until dropped.
struct Traffic {
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Traffic {
    fn start(ns: &Netns, port: u16) -> Traffic {
        let stop = Arc::new(AtomicBool::new(false));
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let name = ns.0.clone();
        let s = stop.clone();
        let server = std::thread::spawn(move || {
            enter(&name);
            let l = TcpListener::bind(("127.0.0.1", port)).unwrap();
            l.set_nonblocking(true).unwrap();
            ready_tx.send(()).unwrap();
            let mut n = 0u32;
            while !s.load(Ordering::Relaxed) {
                let Ok((mut c, _)) = l.accept() else {
                    std::thread::sleep(Duration::from_millis(2));
                    continue;
                };
                c.set_nonblocking(false).unwrap();
                c.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
                let mut buf = [0u8; 1024];
                let _ = c.read(&mut buf);
                n += 1;
                let status = if n.is_multiple_of(3) {
                    "502 Bad Gateway"
                } else {
                    "200 OK"
                };
                let _ = c.write_all(
                    format!(
                        "HTTP/1.1 {status}\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"
                    )
                    .as_bytes(),
                );
            }
        });
        ready_rx.recv().unwrap();
        let name = ns.0.clone();
        let s = stop.clone();
        let client = std::thread::spawn(move || {
            enter(&name);
            let mut rid = 0u32;
            while !s.load(Ordering::Relaxed) {
                rid += 1;
                if let Ok(mut c) = TcpStream::connect(("127.0.0.1", port)) {
                    let _ = c.write_all(
                        format!(
                            "GET /t?token=secret&rid={rid} HTTP/1.1\r\nHost: x\r\nX-Request-Id: {rid}\r\n\r\n"
                        )
                        .as_bytes(),
                    );
                    let _ = c.set_read_timeout(Some(Duration::from_secs(2)));
                    let mut buf = Vec::new();
                    let _ = c.read_to_end(&mut buf);
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        });
        Traffic {
            stop,
            threads: vec![server, client],
        }
    }
}

impl Drop for Traffic {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

struct Run {
    dir: PathBuf,
    child: Child,
    stdout: PathBuf,
}

impl Drop for Run {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Starts `tracer capture --out DIR` on the namespace's loopback and returns once it
/// captures. With `close_stderr`, its stderr is a pipe closed right after the start line,
/// as a terminal is gone after a dropped SSH session.
fn start_capture(ns: &Netns, port: u16, tag: &str, close_stderr: bool) -> Run {
    let dir = std::env::temp_dir().join(format!("tracer-sig-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let stdout = dir.join("report.txt");
    let mut child = Command::new(env!("CARGO_BIN_EXE_tracer"))
        .args([
            "capture",
            "--netns",
            &ns.0,
            "-i",
            "lo",
            "--port",
            &port.to_string(),
        ])
        .arg("--out")
        .arg(dir.join("bundle"))
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&stdout).unwrap())
        .stderr(Stdio::piped())
        .spawn()
        .expect("tracer capture starts");
    let mut err = BufReader::new(child.stderr.take().unwrap());
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut seen = String::new();
    loop {
        let mut line = String::new();
        if err.read_line(&mut line).unwrap_or(0) == 0 || Instant::now() > deadline {
            let _ = child.kill();
            panic!("tracer capture did not start: {seen}");
        }
        seen.push_str(&line);
        if line.contains("to stop") {
            break;
        }
    }
    if close_stderr {
        drop(err);
    } else {
        // Keep reading so that the pipe never fills.
        std::thread::spawn(move || {
            let mut rest = String::new();
            let _ = err.read_to_string(&mut rest);
            eprint!("{rest}");
        });
    }
    Run { dir, child, stdout }
}

fn signal(child: &Child, sig: libc::c_int) {
    let pid = libc::pid_t::try_from(child.id()).unwrap();
    // SAFETY: kill has no memory-safety preconditions; the pid is our own child's.
    assert_eq!(unsafe { libc::kill(pid, sig) }, 0);
}

fn wait(child: &mut Child, within: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + within;
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return s;
        }
        assert!(Instant::now() < deadline, "tracer capture did not exit");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `tracer analyze DIR`: its text report (the command must succeed).
fn analyze(bundle: &Path) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_tracer"))
        .arg("analyze")
        .arg(bundle)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "tracer analyze {} failed: {}",
        bundle.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `N` of the report's first line, `tracer: N packets, …` (live verdict lines come before
/// it).
fn packets(report: &str) -> u64 {
    report
        .lines()
        .find_map(|l| l.strip_prefix("tracer: "))
        .and_then(|r| r.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("not a report: {report}"))
}

fn mode(p: &Path) -> u32 {
    std::fs::symlink_metadata(p).unwrap().permissions().mode() & 0o777
}

/// A clean stop by `sig`: exit 0, the report printed, the bundle finished and private, and
/// `tracer analyze` of the bundle sees the same packets.
fn stops_like_ctrl_c(sig: libc::c_int, tag: &str, port: u16, close_stderr: bool) {
    if let Some(why) = skip_reason() {
        eprintln!("SKIPPED: {why}");
        return;
    }
    let ns = Netns::create(tag);
    let mut run = start_capture(&ns, port, tag, close_stderr);
    let traffic = Traffic::start(&ns, port);
    std::thread::sleep(TRAFFIC_BEFORE_SIGNAL);
    signal(&run.child, sig);
    let status = wait(&mut run.child, Duration::from_secs(60));
    drop(traffic);
    assert_eq!(status.code(), Some(0), "{tag}: {status}");
    let report = std::fs::read_to_string(&run.stdout).unwrap();
    let live = packets(&report);
    assert!(live > 0, "{tag}: nothing captured: {report}");
    let bundle = run.dir.join("bundle");
    assert_eq!(mode(&bundle), 0o700, "{tag}: bundle directory");
    for f in [
        "capture.pcap",
        "events.jsonl",
        "evidence.pcapng",
        "report.json",
        "report.html",
    ] {
        let p = bundle.join(f);
        if f != "events.jsonl" || p.exists() {
            assert_eq!(mode(&p), 0o600, "{tag}: {f}");
        }
    }
    let saved: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(bundle.join("report.json")).unwrap())
            .unwrap();
    assert_eq!(saved["capture"]["packets"], live, "{tag}: report.json");
    assert_eq!(
        packets(&analyze(&bundle)),
        live,
        "{tag}: the bundle read again"
    );
}

#[test]
fn sigterm_stops_a_capture_like_ctrl_c() {
    stops_like_ctrl_c(libc::SIGTERM, "term", 18_191, false);
}

#[test]
fn sighup_with_the_terminal_gone_stops_a_capture_like_ctrl_c() {
    stops_like_ctrl_c(libc::SIGHUP, "hup", 18_192, true);
}

#[test]
fn after_sigkill_the_bundle_holds_all_but_the_last_second() {
    if let Some(why) = skip_reason() {
        eprintln!("SKIPPED: {why}");
        return;
    }
    let ns = Netns::create("kill");
    let port = 18_193;
    let mut run = start_capture(&ns, port, "kill", false);
    let traffic = Traffic::start(&ns, port);
    std::thread::sleep(TRAFFIC_BEFORE_SIGNAL);
    let killed_ns = i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos(),
    )
    .unwrap();
    signal(&run.child, libc::SIGKILL);
    wait(&mut run.child, Duration::from_secs(10));
    drop(traffic);
    let bundle = run.dir.join("bundle");
    let mut segments = tracer::capture::open_many(&[bundle.join("capture.pcap")])
        .expect("the bundle's capture.pcap opens");
    let last = segments.by_ref().map(|s| s.ts_ns).max();
    let last = last.expect("capture.pcap holds packets");
    let lost = Duration::from_nanos(u64::try_from(killed_ns - last).unwrap_or(0));
    assert!(
        lost <= KILL_LOSS_BOUND,
        "the last packet in the bundle is {lost:?} older than the kill"
    );
    let report = analyze(&bundle);
    assert!(packets(&report) > 0, "{report}");
}
