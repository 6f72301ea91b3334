//! Renders a full analysis report of a generated pair, and a bench-codec
//! report, in headless Chromium
//! and checks that the page loads with no errors and that every figure is
//! there and draws something.
//!
//! Skips (passes, saying so) when no Chromium is installed, unless
//! `RESID_REQUIRE_CHROMIUM=1`, which CI sets: then a missing browser fails.
//! The browser is `$RESID_CHROMIUM`, else the first of chromium,
//! chromium-browser, google-chrome on PATH.

use std::path::{Path, PathBuf};
use std::process::Command;

use resid_analysis::{analyze_with_figures, FigureOptions, Options};
use resid_io::synth::{write_pair, Arch, ResidualKind, SynthOptions};
use resid_io::{Checkpoint, Dtype};
use resid_report::analysis::{analysis_document, write_analysis_report};

fn find_chromium() -> Option<PathBuf> {
    if let Ok(p) = std::env::var("RESID_CHROMIUM") {
        return Some(PathBuf::from(p));
    }
    let path = std::env::var_os("PATH")?;
    for dir in std::env::split_paths(&path) {
        for name in ["chromium", "chromium-browser", "google-chrome"] {
            let p = dir.join(name);
            if p.is_file() {
                return Some(p);
            }
        }
    }
    None
}

fn chromium(bin: &Path, profile: &Path, args: &[String]) -> std::process::Output {
    let mut cmd = Command::new(bin);
    cmd.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        "--hide-scrollbars",
    ]);
    cmd.arg(format!("--user-data-dir={}", profile.display()));
    cmd.args(args);
    cmd.output().expect("run chromium")
}

/// The probe appended to a copy of the page: records script errors and,
/// for each figure, its SVG's drawn size and number of shapes.
const PROBE: &str = r#"<script>
var resid_errors = [];
window.addEventListener('error', function (e) { resid_errors.push(String(e.message || e.type)); }, true);
window.addEventListener('load', function () {
  var out = [];
  document.querySelectorAll('figure').forEach(function (f) {
    var s = f.querySelector('svg');
    if (!s) { out.push(f.id + ':nosvg'); return; }
    var b = s.getBBox();
    var r = s.getBoundingClientRect();
    var n = s.querySelectorAll('rect,path,polyline,polygon,circle,line').length;
    var t = s.querySelectorAll('text').length;
    out.push([f.id, Math.round(b.width), Math.round(b.height), Math.round(r.width), Math.round(r.height), n, t].join(':'));
  });
  var d = document.createElement('pre');
  d.id = 'resid-probe';
  d.textContent = 'FIGS ' + out.join(' ') + ' ERRORS ' + resid_errors.length + ' ' + resid_errors.join('|') + ' END';
  document.body.appendChild(d);
});
</script>"#;

/// Loads `dir/index.html` with the probe in Chromium: no script or console
/// errors, and every figure of `ids`, in order, drawn at a readable size
/// with shapes and labels.
fn check_page(bin: &Path, dir: &Path, ids: &[String]) {
    let tmp = tempfile::tempdir().unwrap();
    let html = std::fs::read_to_string(dir.join("index.html")).unwrap();
    let probe = html.replace("</body>", &format!("{PROBE}\n</body>"));
    let probe_path = tmp.path().join("probe.html");
    std::fs::write(&probe_path, probe).unwrap();
    let profile = tempfile::tempdir().unwrap();
    let out = chromium(
        bin,
        profile.path(),
        &[
            "--window-size=1200,3000".into(),
            "--virtual-time-budget=5000".into(),
            "--dump-dom".into(),
            format!("file://{}", probe_path.display()),
        ],
    );
    let dom = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "chromium failed: {stderr}");
    let marker = "<pre id=\"resid-probe\">";
    let start = dom
        .find(marker)
        .map(|i| i + marker.len())
        .unwrap_or_else(|| {
            panic!(
                "probe did not run; stderr: {stderr}\nDOM head: {}",
                &dom[..dom.len().min(500)]
            )
        });
    let end = start + dom[start..].find(" END</pre>").expect("probe end");
    let probe_out = &dom[start..end];
    let (figs_part, errs) = probe_out.split_once(" ERRORS ").unwrap();
    assert!(errs.trim_start().starts_with("0 "), "page errors: {errs}");
    assert!(!stderr.contains("Uncaught"), "console errors: {stderr}");
    let seen: Vec<&str> = figs_part
        .trim_start_matches("FIGS ")
        .split_whitespace()
        .collect();
    assert_eq!(seen.len(), ids.len(), "figures in the DOM: {seen:?}");
    for (entry, id) in seen.iter().zip(ids) {
        let f: Vec<&str> = entry.split(':').collect();
        assert_eq!(f[0], id, "{entry}");
        assert_eq!(f.len(), 7, "{entry}: no svg");
        let num = |i: usize| f[i].parse::<i64>().unwrap();
        assert!(num(1) > 300 && num(2) > 200, "{entry}: drawing too small");
        assert!(num(3) > 300 && num(4) > 150, "{entry}: shown too small");
        assert!(num(5) >= 5, "{entry}: too few shapes");
        assert!(num(6) >= 3, "{entry}: too few labels");
    }
}

fn chromium_or_skip() -> Option<PathBuf> {
    let required = std::env::var("RESID_REQUIRE_CHROMIUM").is_ok_and(|v| v == "1");
    let bin = find_chromium();
    if bin.is_none() {
        if required {
            panic!("RESID_REQUIRE_CHROMIUM=1 but no chromium found (apt-get install -y chromium, or set RESID_CHROMIUM)");
        }
        use std::io::Write;
        let _ = writeln!(
            std::io::stderr(),
            "SKIPPED: no chromium on PATH (install Debian's `chromium` or set RESID_CHROMIUM); the HTML report was not rendered"
        );
    }
    bin
}

#[test]
fn bench_codec_report_renders_in_headless_chromium() {
    use resid_report::rate::{rate_document, RatePoint};
    let Some(bin) = chromium_or_skip() else {
        return;
    };
    let p = |m: &str, b: f64, e: f64| RatePoint {
        method: m.into(),
        setting: format!("{b}"),
        bits_per_param: b,
        rel_error: e,
        weight_cosine: 1.0 - e * e / 2.0,
        encode_mb_s: 100.0,
        decode_mb_s: 150.0,
    };
    let rows = vec![
        p("resid lossless", 2.6, 0.0),
        p("resid lossy", 0.5, 0.03),
        p("resid lossy", 1.0, 0.012),
        p("resid lossy", 2.0, 0.003),
        p("top-k", 0.5, 0.17),
        p("top-k", 1.0, 0.08),
        p("BitDelta", 1.0, 0.99),
    ];
    let doc = rate_document(&["base: a".into(), "trained: b".into()], &rows).unwrap();
    let ids: Vec<String> = doc.figures().map(|f| format!("fig-{}", f.id)).collect();
    assert_eq!(ids, ["fig-rate-distortion"]);
    let tmp = tempfile::tempdir().unwrap();
    resid_report::document::write_document(tmp.path(), &doc, Some("[]")).unwrap();
    check_page(&bin, tmp.path(), &ids);
}

#[test]
fn analysis_report_renders_in_headless_chromium() {
    let Some(bin) = chromium_or_skip() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let pair = tmp.path().join("pair");
    let opts = SynthOptions {
        arch: Arch::named("custom:3,64,160,512").unwrap(),
        dtype: Dtype::F32,
        residual: ResidualKind::Sparse,
        scale: 0.1,
        seed: 5,
        shard_bytes: 1 << 30,
    };
    write_pair(&pair, &opts, |_, _| {}).unwrap();
    let base = Checkpoint::open(&pair.join("base")).unwrap();
    let trained = Checkpoint::open(&pair.join("trained")).unwrap();
    let (report, figs) = analyze_with_figures(
        &base,
        &trained,
        &Options::default(),
        &FigureOptions::default(),
        &|_| {},
    )
    .unwrap();
    let dir = tmp.path().join("report");
    write_analysis_report(&dir, &report, Some(&figs)).unwrap();
    let doc = analysis_document(&report, Some(&figs)).unwrap();
    let ids: Vec<String> = doc.figures().map(|f| format!("fig-{}", f.id)).collect();
    for want in [
        "fig-hist-all",
        "fig-bars-kurtosis",
        "fig-interlayer",
        "fig-spectrum",
        "fig-powermap",
        "fig-kmeans",
    ] {
        assert!(
            ids.iter().any(|i| i == want),
            "figure {want} missing from {ids:?}"
        );
    }

    check_page(&bin, &dir, &ids);
    let profile = tempfile::tempdir().unwrap();

    // A screenshot of the page itself (no probe) is a non-trivial PNG.
    let png = tmp.path().join("shot.png");
    let out = chromium(
        &bin,
        profile.path(),
        &[
            "--window-size=1200,2400".into(),
            format!("--screenshot={}", png.display()),
            format!("file://{}", dir.join("index.html").display()),
        ],
    );
    assert!(
        out.status.success(),
        "screenshot failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let bytes = std::fs::read(&png).unwrap();
    assert_eq!(&bytes[1..4], b"PNG");
    assert!(
        bytes.len() > 50_000,
        "screenshot only {} bytes",
        bytes.len()
    );
}
