//! `REPORT.md` with its figures (SVG files beside it): the training curves,
//! the needle test, and the codec's loss at each rate beside top-p and random-p.

use std::path::Path;

use resid::report::document::{Block, Document, Figure, Section, Table};
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

/// The y range of the gain figures: a random p% with 1/p rescale can be
/// tens of times worse than the start, which would flatten every curve
/// that matters into the 0..1 band; such points are drawn at the floor
/// (the tables hold their values).
const GAIN_RANGE: (f64, f64) = (-0.5, 1.1);

/// Points clamped into `GAIN_RANGE`.
fn clamp_gain(mut s: Vec<LineSeries>) -> Vec<LineSeries> {
    for x in &mut s {
        for p in &mut x.points {
            p.1 = p.1.clamp(GAIN_RANGE.0, GAIN_RANGE.1);
        }
    }
    s
}

/// The figures: (id, caption, data); the Markdown file is `fig-{id}.svg`.
pub fn figures(r: &ReproReport) -> Vec<(String, String, LinesData)> {
    let mut out = Vec::new();
    // Training curves.
    // The fine-tune's curve is on the second corpus: not on this axis.
    let mut s: Vec<LineSeries> = r
        .runs
        .iter()
        .filter(|x| x.name != crate::pipeline::FINETUNE)
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
        "training".into(),
        "Held-out loss while training from each start point (same seed, data, budget); the dashed line is the bigram count model.".into(),
        LinesData {
            title: format!(
                "Training from {}",
                r.runs.iter().map(|x| x.name.as_str()).collect::<Vec<_>>().join(", ")
            ),
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
        s.push(LineSeries {
            markers: false,
            ..series(
                &format!("{run}: random p%, as is"),
                rows.iter()
                    .map(|x| (x.frac * 100.0, x.random_plain_gain))
                    .collect(),
                true,
                i + 3,
            )
        });
        s.push(series(
            &format!("{run}: random p%, x 1/p"),
            rows.iter()
                .map(|x| (x.frac * 100.0, x.random_gain))
                .collect(),
            true,
            i,
        ));
    }
    out.push((
        "needle".into(),
        "Needle test: share of the training gain recovered by adding back p% of the residual's entries to the start point: the largest by |r|, a random p% as is, and the same random p% times 1/p as DARE does (points below -0.5 drawn at -0.5; the table has their values). The fine-tune's gains are on the second corpus.".into(),
        LinesData {
            title: "Needle test: gain recovered vs entries added back".into(),
            x_label: "entries added back (% of parameters, log scale)".into(),
            y_label: "share of training gain recovered".into(),
            log_x: true,
            log_y: false,
            series: clamp_gain(s),
            y_range: Some(GAIN_RANGE),
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
            // A seeded random mask costs no bits: only its fp16 values.
            s.push(LineSeries {
                markers: false,
                ..series(
                    &format!("{run}: random p% as is, fp16 values"),
                    n.iter()
                        .map(|x| (16.0 * x.frac, x.random_plain_gain))
                        .collect(),
                    true,
                    i + 3,
                )
            });
        }
    }
    out.push((
        "codec".into(),
        "Gain recovered per stored bit: resid's lossy residual file vs top-p% (fp16 values and an entropy-coded mask) and random p% added back as is (fp16 values, seeded mask); points below -0.5 drawn at -0.5.".into(),
        LinesData {
            title: "Residual file vs top-p at equal bits".into(),
            x_label: "bits per parameter (log scale)".into(),
            y_label: "share of training gain recovered".into(),
            log_x: true,
            log_y: false,
            series: clamp_gain(s),
            y_range: Some(GAIN_RANGE),
            legend: Legend::UpperLeft,
        },
    ));
    out
}

/// The whole report as a document: the tables, the figures and how to
/// read them.
pub fn document(r: &ReproReport) -> Result<Document> {
    let mut sections = crate::summary::sections(r);
    let mut blocks = Vec::new();
    for (id, caption, data) in figures(r) {
        let svg = render(&data, DEFAULT_SIZE).map_err(|e| ReproError::at("report", e))?;
        blocks.push(Block::Figure(Figure { id, svg, caption }));
    }
    sections.push(Section {
        title: "Figures".into(),
        blocks,
    });
    let mut reports: Vec<String> = r
        .analysis
        .keys()
        .map(|k| format!("analysis-{k}/index.html"))
        .collect();
    reports.sort();
    sections.push(Section {
        title: "Reading it".into(),
        blocks: vec![
            Block::Table(Table {
                caption: String::new(),
                header: ["hypothesis", "what it means", "what would show it"]
                    .map(String::from)
                    .to_vec(),
                rows: [
                    ["sparse", "training changes a few entries a lot", "heavy tails (kurtosis well above a Gaussian's 0, much energy in the top 1%); then top-p% by abs(r) recovers most of the gain at small p"],
                    ["smooth", "the change varies slowly across a matrix", "power at low spatial frequencies above white noise's"],
                    ["coordinated", "the same change recurs in adjacent layers", "adjacent-layer correlation outside the null band"],
                    ["clustered", "rows of the change fall into a few types", "k-means explains more variance than on shuffled rows"],
                ]
                .iter()
                .map(|r| r.map(String::from).to_vec())
                .collect(),
            }),
            Block::Text(format!(
                "Each residual's full analysis report (histograms, spectra, heatmaps, margins): {}.",
                reports.join(", ")
            )),
        ],
    });
    Ok(Document {
        title: "resid repro: what training adds to a small GPT".into(),
        subtitle: vec![
            format!(
                "Preset {} ({} parameters), seed {}, on {} held-out bytes. Regenerate with: resid repro --preset {} --seed {} --out DIR",
                r.preset, r.n_params, r.seed, r.baselines.heldout_bytes, r.preset, r.seed
            ),
            format!(
                "The study's claims are hypotheses; these are measurements. Corpus base: weights derived from corpus statistics; random-init control: nanoGPT's init with the same seed, data and budget{}. Each residual is the trained weights minus their own start; the subspace residual is the corpus-base model's trained weights with the top {} directions of its own token embedding projected out (each matrix's mean row removed first).",
                if r.runs.iter().any(|x| x.name == "mimetic") {
                    "; mimetic: random init with attention set as Trockman & Kolter (2023) do, W_Q W_K^T near 0.7 Z + 0.7 I and W_V W_O near 0.4 Z - 0.4 I"
                } else {
                    ""
                },
                crate::pipeline::SUBSPACE_K
            ),
        ],
        verdict: Vec::new(),
        sections,
    })
}

/// Writes `dir/REPORT.md` with its SVG figures and `dir/index.html`
/// (self-contained), each file atomically.
pub fn write(dir: &Path, r: &ReproReport) -> Result<()> {
    let w = |p: &Path, b: &[u8]| {
        resid::io::atomic::write_atomic(p, b).map_err(|e| ReproError::at("report", e))
    };
    let doc = document(r)?;
    let (md, files) = resid::report::markdown::render(&doc);
    for (name, svg) in &files {
        w(&dir.join(name), svg.as_bytes())?;
    }
    w(&dir.join("REPORT.md"), md.as_bytes())?;
    w(
        &dir.join("index.html"),
        resid::report::html::render(&doc).as_bytes(),
    )
}
