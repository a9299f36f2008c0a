//! The HTML report of every lab scenario (the recorded fixtures, one per scenario) as a
//! browser draws it: `tracer analyze --html` on each, a screenshot by headless Chromium
//! (Debian's `chromium`), and a page that is neither blank nor broken: its title and
//! summary are in it, every cause the proxy's own logs name (`truth.json`) is in its table
//! with a timeline drawn, and the screenshot has enough ink and colours to be a drawing.
//! The screenshots stay in `target/tmp/html-report/` to be looked at.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use serde_json::Value;

mod chromium;

fn fixtures() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures");
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(&root)
        .expect("tests/fixtures exists")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.join("truth.json").is_file())
        .collect();
    dirs.sort();
    dirs
}

fn out_dir() -> PathBuf {
    let d = Path::new(env!("CARGO_TARGET_TMPDIR")).join("html-report");
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// `tracer analyze --html` on a fixture: the page.
fn render(dir: &Path, html: &Path) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_tracer"))
        .arg("analyze")
        .arg(dir.join("client.pcap"))
        .arg(dir.join("upstream.pcap"))
        .arg("--html")
        .arg(html)
        .output()
        .expect("tracer runs");
    assert!(
        out.status.success(),
        "{}: {}",
        dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::read_to_string(html).unwrap()
}

#[test]
fn every_scenario_renders_in_chromium() {
    let Some(browser) = chromium::browser() else {
        eprintln!("skipped: chromium is not installed (bootstrap.sh installs it)");
        return;
    };
    let out = out_dir();
    let start = Instant::now();
    let dirs = fixtures();
    assert!(dirs.len() >= 10, "the lab's fixtures are missing");
    // Two browsers at a time: each is mostly waiting on its own start-up.
    let problems: Vec<String> = std::thread::scope(|s| {
        let halves: Vec<Vec<&PathBuf>> = vec![
            dirs.iter().step_by(2).collect(),
            dirs.iter().skip(1).step_by(2).collect(),
        ];
        let handles: Vec<_> = halves
            .into_iter()
            .enumerate()
            .map(|(i, part)| {
                let out = &out;
                s.spawn(move || {
                    let profile = out.join(format!("profile-{i}"));
                    let mut problems = Vec::new();
                    for dir in part {
                        if let Err(p) =
                            std::panic::catch_unwind(|| check(browser, dir, out, &profile))
                        {
                            let msg = p
                                .downcast_ref::<String>()
                                .cloned()
                                .or_else(|| p.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                                .unwrap_or_default();
                            problems.push(format!("{}: {msg}", dir.display()));
                        }
                    }
                    let _ = std::fs::remove_dir_all(&profile);
                    problems
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect()
    });
    eprintln!(
        "{} pages rendered in {:.1} s; screenshots in {}",
        dirs.len(),
        start.elapsed().as_secs_f64(),
        out.display()
    );
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

fn check(browser: &str, dir: &Path, out: &Path, profile: &Path) {
    let name = dir.file_name().unwrap().to_string_lossy().into_owned();
    let html = out.join(format!("{name}.html"));
    let png = out.join(format!("{name}.png"));
    let page = render(dir, &html);
    let truth: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("truth.json")).unwrap()).unwrap();
    let rows = truth["rows"].as_array().unwrap();

    // The page says what it is about.
    assert!(page.starts_with("<!DOCTYPE html>"), "{name}");
    assert!(page.contains("<title>tracer report: "), "{name}");
    assert!(
        page.contains("client.pcap") && page.contains("packets"),
        "{name}: no summary"
    );
    assert!(page.trim_end().ends_with("</html>"), "{name}: cut short");
    // Self-contained: nothing loaded from anywhere.
    let lower = page.to_lowercase();
    for bad in [
        "<script",
        "src=\"http",
        "href=\"http",
        "url(http",
        "@import",
    ] {
        assert!(!lower.contains(bad), "{name}: {bad}");
    }
    if rows.is_empty() {
        assert!(
            page.contains("No 5xx, 499 or failed upstream attempt found."),
            "{name}"
        );
    } else {
        for r in rows {
            let cause = r["cause"].as_str().unwrap();
            assert!(
                page.contains(&format!("<td class=\"cause\">{cause}")),
                "{name}: the proxy's logs say {cause}, the page's table does not"
            );
        }
        assert!(page.contains("<svg class=\"tl\""), "{name}: no timeline");
    }

    chromium::screenshot(browser, &html, &png, profile).unwrap();
    let chromium::Ink {
        inked,
        colours,
        red,
    } = chromium::ink(&png).unwrap();
    eprintln!(
        "{name}: {:.1}% inked, {colours} colours, {red} red pixels",
        inked * 100.0
    );
    // A blank page is all white; a page of plain text has a handful of greys. A page
    // without verdicts is short (its summary and the words that nothing failed).
    let (min_ink, min_colours) = if rows.is_empty() {
        (0.005, 8)
    } else {
        (0.03, 24)
    };
    assert!(
        inked > min_ink,
        "{name}: {:.2}% of the page inked",
        inked * 100.0
    );
    assert!(colours >= min_colours, "{name}: {colours} colours");
    let errors = rows
        .iter()
        .any(|r| r["client"].as_str().is_some_and(|c| c.starts_with('5')));
    let tls = truth["scenario"]
        .as_str()
        .and_then(tracer_lab::scenarios::by_name)
        .is_some_and(|s| s.client().encrypted());
    if errors && !tls {
        // The red of the client's 5xx is drawn in the timelines (the count at the top
        // alone is under a hundred pixels); an encrypted client side shows none.
        assert!(red > 300, "{name}: {red} red pixels: no error drawn");
    }
}
