//! `REPORT.md` with its figures (SVG files beside it): the training curves,
//! the needle test, and the codec's loss at each rate beside top-p and random-p.

use std::path::Path;

use resid::report::plot::lines::{render, Legend, LineSeries, LinesData};
use resid::report::plot::DEFAULT_SIZE;

use crate::pipeline::ReproReport;
use crate::{ReproError, Result};

fn series(name: &str, points: Vec<(f64, f64)>, dashed: bool, color: usize) -> LineSeries {
    LineSeries {
        name: name.into(),
        points,
        dashed,
        markers: true,
        color: Some(color),
    }
}

/// The figures: (file name, caption, data).
pub fn figures(r: &ReproReport) -> Vec<(String, String, LinesData)> {
    let mut out = Vec::new();
    // Training curves.
    let mut s: Vec<LineSeries> = r
        .runs
        .iter()
        .enumerate()
        .map(|(i, run)| {
            series(
                &format!("from {}", run.name),
                run.curve.iter().map(|&(st, l)| (st as f64, l)).collect(),
                false,
                i,
            )
        })
        .collect();
    let last = r.runs.iter().map(|x| x.steps).max().unwrap_or(1) as f64;
    s.push(series(
        "bigram count model",
        vec![(0.0, r.baselines.bigram), (last, r.baselines.bigram)],
        true,
        6,
    ));
    out.push((
        "fig-training.svg".into(),
        "Held-out loss while training, from the corpus base and from random init (same seed, data, budget).".into(),
        LinesData {
            title: "Training: corpus base vs random init".into(),
            x_label: "optimizer step".into(),
            y_label: "held-out loss (nats/byte)".into(),
            log_x: false,
            log_y: false,
            series: s,
            y_range: None,
            legend: Legend::UpperRight,
        },
    ));
    // Needle test.
    let mut s = Vec::new();
    for (i, (run, rows)) in r.needle.iter().enumerate() {
        s.push(series(
            &format!("{run}: top p% by |r|"),
            rows.iter().map(|x| (x.frac * 100.0, x.top_gain)).collect(),
            false,
            i,
        ));
        s.push(series(
            &format!("{run}: random p%, rescaled"),
            rows.iter()
                .map(|x| (x.frac * 100.0, x.random_gain))
                .collect(),
            true,
            i,
        ));
    }
    out.push((
        "fig-needle.svg".into(),
        "Needle test: share of the training gain recovered by adding back p% of the residual's entries to the start point.".into(),
        LinesData {
            title: "Needle test: gain recovered vs entries added back".into(),
            x_label: "entries added back (% of parameters, log scale)".into(),
            y_label: "share of training gain recovered".into(),
            log_x: true,
            log_y: false,
            series: s,
            y_range: None,
            legend: Legend::UpperLeft,
        },
    ));
    // Codec vs needle at equal bits.
    let mut s = Vec::new();
    for (i, (run, rows)) in r.codec.iter().enumerate() {
        s.push(series(
            &format!("{run}: resid codec"),
            rows.iter()
                .filter(|x| x.requested_bits_per_param.is_some())
                .map(|x| (x.bits_per_param, x.gain))
                .collect(),
            false,
            i,
        ));
        if let Some(n) = r.needle.get(run) {
            s.push(series(
                &format!("{run}: top p%, fp16 values"),
                n.iter()
                    .map(|x| (x.top_bits_per_param, x.top_gain))
                    .collect(),
                true,
                i,
            ));
        }
    }
    out.push((
        "fig-codec.svg".into(),
        "Gain recovered per stored bit: resid's lossy residual file vs top-p% with fp16 values and an entropy-coded mask.".into(),
        LinesData {
            title: "Residual file vs top-p at equal bits".into(),
            x_label: "bits per parameter (log scale)".into(),
            y_label: "share of training gain recovered".into(),
            log_x: true,
            log_y: false,
            series: s,
            y_range: None,
            legend: Legend::UpperLeft,
        },
    ));
    out
}

/// Writes `dir/REPORT.md` and its SVG figures (atomically, each file).
pub fn write(dir: &Path, r: &ReproReport) -> Result<()> {
    let w = |p: &Path, b: &[u8]| {
        resid::io::atomic::write_atomic(p, b).map_err(|e| ReproError::at("report", e))
    };
    let mut md = String::new();
    md.push_str("# resid repro: what training adds to a small GPT\n\n");
    md.push_str(&format!(
        "Preset `{}` ({} parameters), seed {}, on {} held-out bytes. Regenerate with `resid repro --preset {} --seed {} --out DIR`.\n\n",
        r.preset, r.n_params, r.seed, r.baselines.heldout_bytes, r.preset, r.seed
    ));
    md.push_str("The study's claims are hypotheses; these are measurements. *Corpus base* starts from weights derived from corpus statistics; the *random-init control* starts from nanoGPT's random init with the same seed, data and budget. Each residual is the trained weights minus their own start.\n\n");
    md.push_str(&crate::summary::terminal(r));
    md.push_str("\n## Figures\n\n");
    for (file, caption, data) in figures(r) {
        let svg = render(&data, DEFAULT_SIZE).map_err(|e| ReproError::at("report", e))?;
        w(&dir.join(&file), svg.as_bytes())?;
        md.push_str(&format!("![{caption}]({file})\n\n*{caption}*\n\n"));
    }
    md.push_str("## Reading it\n\n");
    md.push_str("- **sparse**: training changes a few entries a lot (heavy tails: kurtosis well above a Gaussian's 0, many entries beyond 3 std). If so, top-p% by |r| should recover most of the gain at small p.\n");
    md.push_str("- **smooth**: the change varies slowly across the matrix (power at low spatial frequencies above white noise's).\n");
    md.push_str("- **coordinated**: the same change recurs in adjacent layers (correlation outside the null band).\n");
    md.push_str("- **clustered**: rows of the change fall into a few types (k-means explains more variance than on noise).\n");
    w(&dir.join("REPORT.md"), md.as_bytes())
}
