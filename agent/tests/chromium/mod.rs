//! Headless Chromium (Debian's `chromium`) for the tests that look at the HTML report:
//! a screenshot of a page, and how much of it is drawn.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

pub const WIDTH: u32 = 1280;
pub const HEIGHT: u32 = 2000;
/// A page that takes Chromium longer than this is a hang, not a slow machine.
const LIMIT: Duration = Duration::from_secs(90);

/// The browser's command, when one is installed.
pub fn browser() -> Option<&'static str> {
    ["chromium", "chromium-browser"].into_iter().find(|c| {
        Command::new(c)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    })
}

/// Chromium's screenshot of `html` into `png` ([`WIDTH`] × [`HEIGHT`]), with its profile in
/// `profile` (one per browser running at once).
pub fn screenshot(browser: &str, html: &Path, png: &Path, profile: &Path) -> Result<(), String> {
    let _ = std::fs::remove_file(png);
    let mut child = Command::new(browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            "--no-first-run",
            "--disable-extensions",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(format!("--screenshot={}", png.display()))
        .arg(format!("--window-size={WIDTH},{HEIGHT}"))
        .arg(format!("file://{}", html.display()))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("{browser} does not start: {e}"))?;
    let deadline = Instant::now() + LIMIT;
    loop {
        match child.try_wait() {
            Ok(Some(status)) if status.success() => return Ok(()),
            Ok(Some(status)) => return Err(format!("{browser} on {}: {status}", html.display())),
            Ok(None) => {}
            Err(e) => return Err(format!("{browser}: {e}")),
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!(
                "{browser} took over {LIMIT:?} on {}",
                html.display()
            ));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// How much of a screenshot is drawn.
#[derive(Debug, Clone, Copy)]
pub struct Ink {
    /// Share of the pixels that are not the white background.
    pub inked: f64,
    /// Distinct colours (5 bits a channel).
    pub colours: usize,
    /// Pixels of the error marks' red (`#dc2626`, `#b91c1c`).
    pub red: usize,
}

/// Reads the screenshot at `png`.
pub fn ink(png: &Path) -> Result<Ink, String> {
    let file = std::fs::File::open(png).map_err(|e| format!("{}: {e}", png.display()))?;
    let decoder = png::Decoder::new(std::io::BufReader::new(file));
    let mut reader = decoder
        .read_info()
        .map_err(|e| format!("{}: not a PNG: {e}", png.display()))?;
    let mut buf = vec![0; reader.output_buffer_size()];
    let info = reader
        .next_frame(&mut buf)
        .map_err(|e| format!("{}: {e}", png.display()))?;
    if (info.width, info.height) != (WIDTH, HEIGHT) {
        return Err(format!(
            "{}: {}×{}, not {WIDTH}×{HEIGHT}",
            png.display(),
            info.width,
            info.height
        ));
    }
    let step = match info.color_type {
        png::ColorType::Rgba => 4,
        png::ColorType::Rgb => 3,
        other => return Err(format!("{}: colour type {other:?}", png.display())),
    };
    let px = &buf[..info.buffer_size()];
    let mut colours = std::collections::HashSet::new();
    let (mut inked, mut red) = (0usize, 0usize);
    for p in px.chunks_exact(step) {
        let (r, g, b) = (p[0], p[1], p[2]);
        if (r, g, b) != (255, 255, 255) {
            inked += 1;
        }
        if r > 170 && g < 60 && b < 60 {
            red += 1;
        }
        colours.insert((r >> 3, g >> 3, b >> 3));
    }
    Ok(Ink {
        inked: inked as f64 / (px.len() / step) as f64,
        colours: colours.len(),
        red,
    })
}
