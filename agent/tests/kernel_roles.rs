//! Roles from the kernel, live: nginx, its clients and its (refused) upstream all on one
//! loopback, where addresses say nothing about which side a connection is on — the sidecar
//! shape. `tracer capture` with the probe must call every 502 `upstream_refused` (never
//! "its role is unknown"), and a shell's connection to a closed port is not one of the
//! proxy's upstream attempts. Needs root, nginx and the kernel probe; skips otherwise.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// A network namespace with nginx in it; both gone when dropped.
struct Sidecar {
    ns: String,
    dir: PathBuf,
}

impl Drop for Sidecar {
    fn drop(&mut self) {
        if let Ok(pid) = std::fs::read_to_string(self.dir.join("nginx.pid")) {
            if let Ok(pid) = pid.trim().parse::<i32>() {
                // SAFETY: kill has no memory-safety preconditions; the pid is nginx's master,
                // started by this test.
                unsafe { libc::kill(pid, libc::SIGTERM) };
            }
        }
        std::thread::sleep(Duration::from_millis(200));
        let _ = Command::new("ip").args(["netns", "del", &self.ns]).status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn skip_reason() -> Option<String> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        return Some("needs root (network namespaces, the kernel probe)".into());
    }
    if let Err(why) = tracer::probe::built_with_probe() {
        return Some(format!("tracer was built without the kernel probe: {why}"));
    }
    for (program, package) in [("ip", "iproute2"), ("nginx", "nginx"), ("bash", "bash")] {
        let found = ["/usr/sbin", "/usr/bin", "/sbin", "/bin"]
            .iter()
            .any(|d| Path::new(d).join(program).is_file());
        if !found {
            return Some(format!("needs `{program}` ({package})"));
        }
    }
    None
}

fn start_sidecar() -> Sidecar {
    let ns = format!("tracer-sidecar-{}", std::process::id());
    let dir = std::env::temp_dir().join(&ns);
    std::fs::create_dir_all(&dir).unwrap();
    let s = Sidecar { ns, dir };
    for args in [
        vec!["netns", "add", &s.ns],
        vec!["-n", &s.ns, "link", "set", "lo", "up"],
    ] {
        assert!(Command::new("ip").args(args).status().unwrap().success());
    }
    let d = s.dir.display();
    let conf = format!(
        "worker_processes 1;\npid {d}/nginx.pid;\nerror_log {d}/error.log info;\n\
         events {{ worker_connections 64; }}\n\
         http {{\n access_log {d}/access.log;\n client_body_temp_path {d}/body;\n\
          proxy_temp_path {d}/proxy;\n fastcgi_temp_path {d}/fastcgi;\n uwsgi_temp_path {d}/uwsgi;\n\
          scgi_temp_path {d}/scgi;\n\
          server {{ listen 127.0.0.1:8080; location / {{ proxy_pass http://127.0.0.1:9; }} }}\n}}\n"
    );
    std::fs::write(s.dir.join("nginx.conf"), conf).unwrap();
    let ok = Command::new("ip")
        .args(["netns", "exec", &s.ns, "nginx", "-p"])
        .arg(&s.dir)
        .arg("-c")
        .arg(s.dir.join("nginx.conf"))
        .status()
        .unwrap()
        .success();
    assert!(ok, "nginx did not start: see {}", s.dir.display());
    s
}

/// Runs `f` on a thread inside namespace `ns`.
fn in_netns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let path = format!("/run/netns/{ns}");
    std::thread::spawn(move || {
        let file = std::fs::File::open(path).unwrap();
        // SAFETY: `file` is open for the duration of the call; setns changes only this thread.
        let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "cannot enter the namespace");
        f()
    })
    .join()
    .unwrap()
}

#[test]
fn on_one_loopback_the_probe_names_the_sides() {
    if let Some(why) = skip_reason() {
        eprintln!("SKIPPED: {why}");
        return;
    }
    let s = start_sidecar();
    let out = s.dir.join("bundle");
    let err_path = s.dir.join("tracer.err");
    let tracer = Command::new(env!("CARGO_BIN_EXE_tracer"))
        .args(["capture", "--netns", &s.ns, "-i", "lo", "--duration", "6s"])
        .args(["--format", "json", "--out"])
        .arg(&out)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&err_path).unwrap())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !std::fs::read_to_string(&err_path).is_ok_and(|e| e.contains("Ctrl-C to stop")) {
        assert!(Instant::now() < deadline, "tracer capture did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    // A shell probes a port where nothing listens: refused, and not the proxy's doing.
    let _ = Command::new("ip")
        .args(["netns", "exec", &s.ns, "bash", "-c"])
        .arg("exec 3<>/dev/tcp/127.0.0.1/8081")
        .stderr(Stdio::null())
        .status();
    let statuses: Vec<String> = in_netns(&s.ns, || {
        (1..=5)
            .map(|rid| {
                let mut c = TcpStream::connect("127.0.0.1:8080").unwrap();
                c.write_all(
                    format!("POST /orders?rid={rid} HTTP/1.1\r\nHost: x\r\nX-Request-Id: {rid}\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
                        .as_bytes(),
                )
                .unwrap();
                let mut buf = String::new();
                let _ = c.read_to_string(&mut buf);
                std::thread::sleep(Duration::from_millis(100));
                buf.split(' ').nth(1).unwrap_or("").to_owned()
            })
            .collect()
    });
    assert!(statuses.iter().all(|s| s == "502"), "{statuses:?}");
    let output = tracer.wait_with_output().unwrap();
    let report: Value = serde_json::from_slice(&output.stdout).unwrap_or(Value::Null);
    let err = std::fs::read_to_string(&err_path).unwrap_or_default();
    assert!(err.contains("kernel probe attached"), "{err}");
    let verdicts = report["verdicts"].as_array().cloned().unwrap_or_default();
    let errors: Vec<&Value> = verdicts.iter().filter(|v| v["status"] == 502).collect();
    assert_eq!(errors.len(), 5, "{verdicts:#?}\n{err}");
    for v in &errors {
        assert_eq!(v["cause"], "upstream_refused", "{v:#?}");
        assert!(
            v["process"]
                .as_str()
                .is_some_and(|p| p.starts_with("nginx")),
            "{v:#?}"
        );
    }
    for v in &verdicts {
        let conn = v["upstream"]["connection"].as_str().unwrap_or("");
        assert!(
            !conn.ends_with(":8081"),
            "the shell's connection was taken for an upstream attempt: {v:#?}"
        );
    }
    // The bundle, read again offline, names the same sides.
    let again = Command::new(env!("CARGO_BIN_EXE_tracer"))
        .args(["analyze", "--format", "json"])
        .arg(&out)
        .output()
        .unwrap();
    let again: Value = serde_json::from_slice(&again.stdout).unwrap_or(Value::Null);
    let refused = again["verdicts"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|v| v["status"] == 502 && v["cause"] == "upstream_refused")
        .count();
    assert_eq!(refused, 5, "{again:#?}");
}
