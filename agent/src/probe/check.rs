//! `tracer check`: load and attach everything, make one loopback connection, and say what
//! works on this node, one line per item.

use std::fmt;
use std::io::Read;
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

use serde::Serialize;

use super::{
    btf, built_with_probe, layout, sys, ClockAlignment, Probe, ProbeConfig, SockEvent,
    SockEventKind,
};

/// How one item fared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckStatus {
    Ok,
    /// Works, with a limitation.
    Warn,
    /// Does not work; the detail says what to do.
    Fail,
}

/// One checked item.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CheckItem {
    pub name: String,
    pub status: CheckStatus,
    pub detail: String,
}

/// Everything `check` found.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct CheckReport {
    pub items: Vec<CheckItem>,
}

impl CheckReport {
    fn push(&mut self, name: &str, status: CheckStatus, detail: impl Into<String>) {
        self.items.push(CheckItem {
            name: name.to_owned(),
            status,
            detail: detail.into(),
        });
    }

    /// True when nothing failed.
    pub fn ok(&self) -> bool {
        self.items.iter().all(|i| i.status != CheckStatus::Fail)
    }
}

impl fmt::Display for CheckReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for i in &self.items {
            let tag = match i.status {
                CheckStatus::Ok => "ok  ",
                CheckStatus::Warn => "warn",
                CheckStatus::Fail => "FAIL",
            };
            writeln!(f, "{tag}  {:<28} {}", i.name, i.detail)?;
        }
        Ok(())
    }
}

/// Loads and attaches the probe and proves that events flow, reporting each step.
pub fn check() -> CheckReport {
    use CheckStatus::{Fail, Ok as Good, Warn};
    let mut r = CheckReport::default();

    match built_with_probe() {
        Ok(()) => r.push(
            "probe object",
            Good,
            format!("embedded in this binary, built with {}", super::TOOLCHAIN),
        ),
        Err(why) => {
            r.push(
                "probe object",
                Fail,
                format!("this tracer was built without the kernel probe: {why}"),
            );
            return r;
        }
    }
    match sys::effective_caps() {
        Some(caps) => match sys::missing_caps(caps) {
            None => r.push("capabilities", Good, format!("CapEff {caps:#x}")),
            Some(why) => {
                r.push("capabilities", Fail, why);
                return r;
            }
        },
        None => r.push(
            "capabilities",
            Warn,
            "could not read CapEff from /proc/self/status",
        ),
    }
    let tracefs = match sys::ensure_tracefs() {
        Ok(t @ sys::Tracefs::Mounted(_)) => {
            r.push("tracefs", Good, format!("{}", t.path().display()));
            t
        }
        Ok(t) => {
            r.push(
                "tracefs",
                Good,
                format!("was not mounted; mounted it at {}", t.path().display()),
            );
            t
        }
        Err(e) => {
            r.push("tracefs", Fail, e.to_string());
            return r;
        }
    };
    match sys::raise_memlock() {
        Ok(()) => r.push("RLIMIT_MEMLOCK", Good, "raised"),
        Err(w) => r.push("RLIMIT_MEMLOCK", Warn, w),
    }
    match layout::verify(tracefs.path()) {
        Ok(()) => r.push("tracepoint layouts", Good, "match the probe's offsets"),
        Err(e) => {
            r.push("tracepoint layouts", Fail, e.to_string());
            return r;
        }
    }
    let kernel_btf = btf::kernel();
    match btf::verify_raw_tracepoints(&kernel_btf) {
        Ok(None) => r.push(
            "raw tracepoint arguments",
            Good,
            "match the probe (kernel BTF)",
        ),
        Ok(Some(why)) => r.push(
            "raw tracepoint arguments",
            Warn,
            format!("not checked: {why}"),
        ),
        Err(e) => {
            r.push("raw tracepoint arguments", Fail, e);
            return r;
        }
    }
    match btf::netns_offsets(&kernel_btf) {
        Ok((a, b)) => r.push(
            "kernel BTF",
            Good,
            format!("netns readable (sock.skc_net at {a}, net.ns.inum at {b})"),
        ),
        Err(e) => r.push(
            "kernel BTF",
            Warn,
            format!("netns will not be reported: {e}"),
        ),
    }
    match ClockAlignment::sample(1000) {
        Some(c) => r.push(
            "clock alignment",
            Good,
            format!("REALTIME−MONOTONIC known within {} ns", c.uncertainty_ns),
        ),
        None => r.push("clock alignment", Fail, "clock_gettime failed"),
    }

    let listener = match TcpListener::bind("127.0.0.1:0") {
        Ok(l) => l,
        Err(e) => {
            r.push(
                "self-test",
                Fail,
                format!("binding a loopback listener: {e}"),
            );
            return r;
        }
    };
    let port = listener.local_addr().map(|a| a.port()).unwrap_or(0);
    let config = ProbeConfig {
        ports: vec![port],
        tls: true,
        ..ProbeConfig::default()
    };
    let started = Instant::now();
    let mut probe = match Probe::load(&config) {
        Ok(p) => p,
        Err(e) => {
            r.push("load", Fail, e.to_string());
            return r;
        }
    };
    r.push(
        "load",
        Good,
        format!("loaded and attached in {:?}", started.elapsed()),
    );
    for a in probe.attached() {
        match &a.error {
            None => r.push(&a.tracepoint, Good, "attached"),
            Some(e) => r.push(&a.tracepoint, Fail, e.clone()),
        }
    }
    tls_items(&mut r, probe.tls());
    // The sparse-capture filter: loaded by the verifier, attachable to a socket.
    let select = match probe.selector() {
        Err(e) => Err(e.to_string()),
        Ok(sel) => std::net::UdpSocket::bind("127.0.0.1:0")
            .and_then(|sock| sel.attach(std::os::fd::AsFd::as_fd(&sock)))
            .map_err(|e| format!("attaching it to a socket failed: {e}")),
    };
    match select {
        Ok(()) => r.push(
            "socket filter select",
            Good,
            "loaded and attachable (tracer capture selects packets with it)",
        ),
        Err(e) => r.push("socket filter select", Fail, e),
    }
    // The memlock warning is already its own item above.
    for w in probe
        .warnings()
        .iter()
        .filter(|w| !w.contains("RLIMIT_MEMLOCK"))
    {
        r.push("warning", Warn, w.clone());
    }

    match self_test(&listener, &mut probe) {
        Ok(events) => {
            let me = std::process::id();
            let states = events
                .iter()
                .filter(|e| matches!(e.kind, SockEventKind::StateChange { .. }))
                .count();
            let mine = events.iter().filter(|e| e.pid == Some(me)).count();
            let eof = events
                .iter()
                .any(|e| e.kind == SockEventKind::RecvEofOrError { ret: 0 });
            if states > 0 && mine > 0 {
                r.push(
                    "events",
                    Good,
                    format!(
                        "loopback connection seen: {} events, {states} state changes, \
                         {mine} with this pid, EOF read {}",
                        events.len(),
                        if eof { "seen" } else { "not seen" }
                    ),
                );
            } else {
                r.push(
                    "events",
                    Fail,
                    format!(
                        "a loopback connection on port {port} produced {} events \
                         ({states} state changes, {mine} with this pid)",
                        events.len()
                    ),
                );
            }
        }
        Err(e) => r.push("events", Fail, format!("self-test connection failed: {e}")),
    }
    match probe.lost() {
        Ok(0) => r.push("lost events", Good, "0"),
        Ok(n) => r.push("lost events", Warn, format!("{n} lost (ring buffer full)")),
        Err(e) => r.push("lost events", Fail, e.to_string()),
    }
    r
}

/// One item per server of this network namespace that uses a TLS library: whether the
/// uprobes that read its plaintext attached. Without them tracer still works, from packets
/// and the tracepoints, but cannot read the client side of a TLS connection.
fn tls_items(r: &mut CheckReport, tls: &[super::TlsAttachment]) {
    if tls.is_empty() {
        r.push(
            "TLS uprobes",
            CheckStatus::Ok,
            "no server in this network namespace uses OpenSSL or Go crypto/tls: nothing to attach \
             (tracer capture attaches to the proxies it follows)",
        );
    }
    for t in tls {
        let status = if t.error.is_none() && t.probes > 0 {
            CheckStatus::Ok
        } else {
            CheckStatus::Warn
        };
        r.push("TLS uprobes", status, t.to_string());
    }
}

/// Connects to `listener`, lets the server side close, reads the EOF, then collects events.
fn self_test(listener: &TcpListener, probe: &mut Probe) -> std::io::Result<Vec<SockEvent>> {
    let addr = listener.local_addr()?;
    let mut client = TcpStream::connect(addr)?;
    let (server, _) = listener.accept()?;
    drop(server);
    client.set_read_timeout(Some(Duration::from_secs(2)))?;
    let mut buf = [0u8; 16];
    let _ = client.read(&mut buf)?;
    drop(client);
    let mut events = Vec::new();
    let deadline = Instant::now() + Duration::from_millis(500);
    while Instant::now() < deadline {
        events.extend(
            probe
                .poll(Some(Duration::from_millis(50)))
                .map_err(std::io::Error::other)?,
        );
    }
    Ok(events)
}
