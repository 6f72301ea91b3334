//! The study's tables with three columns: the study's figure, resid on the
//! corpus base, resid on the random-init control. Markdown, so the same text
//! reads in a terminal and in `REPORT.md`.

use resid::analysis::{Hypothesis, Report};
use resid::report::document::{Block, Section, Table};

use crate::pipeline::{ReproReport, RunResult};

/// The study's published figures (seed/residual-structure-paper.txt).
pub mod study {
    pub const KURTOSIS_ALL: f64 = 33.16;
    pub const KURTOSIS_ATTN: f64 = 49.23;
    pub const KURTOSIS_MLP: f64 = 1.02;
    pub const ENTROPY: f64 = 3.62;
    pub const ENTROPY_RANDOM: f64 = 6.62;
    pub const PR_ATTN: f64 = 35.8;
    pub const PR_MLP: f64 = 124.6;
    pub const ADJ_R: f64 = 0.007;
    pub const LOWFREQ: f64 = 0.96;
    pub const KMEANS_VE_MAX: f64 = 0.0002;
    pub const LAYER_ENTROPY: [f64; 8] = [3.36, 3.90, 3.79, 3.64, 3.71, 3.82, 3.62, 3.69];
}

fn cell(x: Option<f64>) -> String {
    match x {
        Some(x) if x.is_finite() => {
            if x != 0.0 && x.abs() < 0.01 {
                format!("{x:.4}")
            } else {
                format!("{x:.2}")
            }
        }
        _ => "n/a".into(),
    }
}

/// Column label of a run or analysis, e.g. "resid (corpus base)".
pub fn label(name: &str) -> String {
    let what = match name {
        "csb" => "corpus base",
        "random" => "random-init control",
        "mimetic" => "mimetic init",
        "csb-subspace" => "corpus base, subspace residual",
        other => other,
    };
    format!("resid ({what})")
}

/// The first step whose held-out loss is at or below `level`.
pub fn steps_to(curve: &[(usize, f64)], level: f64) -> Option<usize> {
    curve.iter().find(|(_, l)| *l <= level).map(|(s, _)| *s)
}

fn table(caption: &str, header: Vec<String>, rows: Vec<Vec<String>>) -> Block {
    Block::Table(Table {
        caption: caption.into(),
        header,
        rows,
    })
}

fn section(title: &str, blocks: Vec<Block>) -> Section {
    Section {
        title: title.into(),
        blocks,
    }
}

/// The losses of each run: start, trained, and steps to the bigram level
/// and to 2.0 nats/byte (issue #5's comparison of inits).
fn losses(r: &ReproReport) -> Section {
    let mut rows = vec![vec![
        "uniform / unigram / bigram count models".into(),
        format!(
            "{:.3} / {:.3} / {:.3}",
            r.baselines.uniform, r.baselines.unigram, r.baselines.bigram
        ),
        String::new(),
        String::new(),
        String::new(),
        String::new(),
    ]];
    let reach = |run: &RunResult, level: f64| {
        steps_to(&run.curve, level).map_or_else(|| "not reached".into(), |s| s.to_string())
    };
    for run in &r.runs {
        rows.push(vec![
            format!("from {}", run.name),
            format!("{:.3}", run.start_loss),
            format!("{:.3}", run.trained_loss),
            reach(run, r.baselines.bigram),
            reach(run, 2.0),
            format!(
                "{} steps, {:.0} s, {:.0} tok/s",
                run.steps, run.seconds, run.tokens_per_s
            ),
        ]);
    }
    section(
        &format!(
            "Losses (held-out nats per byte, {} preset, {} parameters)",
            r.preset, r.n_params
        ),
        vec![table(
            "Same seed, data and budget for every start point; steps counted at the evaluation points of the curve.",
            [
                "model",
                "start",
                "trained",
                "steps to bigram level",
                "steps to 2.0",
                "budget",
            ]
            .map(String::from)
            .to_vec(),
            rows,
        )],
    )
}

/// The analysis columns in order: the runs, then extra analyses.
fn analysis_names(r: &ReproReport) -> Vec<String> {
    let mut names: Vec<String> = r
        .runs
        .iter()
        .map(|x| x.name.clone())
        .filter(|n| r.analysis.contains_key(n))
        .collect();
    for k in r.analysis.keys() {
        if !names.contains(k) {
            names.push(k.clone());
        }
    }
    names
}

fn residual(r: &ReproReport) -> Section {
    let names = analysis_names(r);
    let mut header = vec!["measure".to_string(), "study".to_string()];
    header.extend(names.iter().map(|n| label(n)));
    type Measure = fn(&Report) -> Option<f64>;
    let rows_spec: [(&str, String, Measure); 14] = [
        (
            "kurtosis, all (pooled)",
            format!("{:.2}", study::KURTOSIS_ALL),
            |a| Some(a.components.all.kurtosis_pooled),
        ),
        (
            "kurtosis, attention",
            format!("{:.2}", study::KURTOSIS_ATTN),
            |a| a.components.attention.as_ref().map(|c| c.kurtosis_pooled),
        ),
        (
            "kurtosis, MLP",
            format!("{:.2}", study::KURTOSIS_MLP),
            |a| a.components.mlp.as_ref().map(|c| c.kurtosis_pooled),
        ),
        (
            "100-bin entropy, bits",
            format!("{:.2}", study::ENTROPY),
            |a| Some(a.components.all.entropy_bits),
        ),
        (
            "same for the Gaussian null",
            format!("{:.2}", study::ENTROPY_RANDOM),
            |a| Some(a.components.all.entropy_null_bits),
        ),
        (
            "mean PR, attention",
            format!("{:.1}", study::PR_ATTN),
            |a| a.components.attention.as_ref().and_then(|c| c.pr_mean),
        ),
        ("mean PR, MLP", format!("{:.1}", study::PR_MLP), |a| {
            a.components.mlp.as_ref().and_then(|c| c.pr_mean)
        }),
        (
            "mean adjacent-layer r (every role, pooled)",
            format!("{:.3}", study::ADJ_R),
            |a| a.study.mean_adjacent_r_pooled,
        ),
        (
            "same, weight matrices only (the verdict's)",
            String::new(),
            |a| a.interlayer.matrices.mean_adjacent_r,
        ),
        (
            "low-frequency power vs null",
            format!("{:.2}", study::LOWFREQ),
            |a| a.verdict.smooth.measure,
        ),
        (
            "k-means excess VE over shuffled rows (max over K)",
            format!("<= {:.4}", study::KMEANS_VE_MAX),
            |a| a.study.kmeans_excess_ve_shuffled,
        ),
        (
            "PR / Marchenko-Pastur PR (matrices, energy-weighted)",
            String::new(),
            |a| a.verdict.low_rank.measure,
        ),
        ("energy in the top 10% of rows", String::new(), |a| {
            a.verdict.row_sparse.measure
        }),
        ("energy along -W_start", String::new(), |a| {
            a.verdict.decay_like.measure
        }),
    ];
    let rows = rows_spec
        .iter()
        .map(|(name, st, measure)| {
            let mut row = vec![name.to_string(), st.clone()];
            row.extend(
                names
                    .iter()
                    .map(|n| cell(r.analysis.get(n).and_then(measure))),
            );
            row
        })
        .collect();
    let mut vheader = vec!["hypothesis".to_string(), "study".to_string()];
    vheader.extend(names.iter().map(|n| label(n)));
    type Verdict = fn(&Report) -> &Hypothesis;
    let verdicts: [(&str, &str, Verdict); 8] = [
        ("sparse", "yes", |a| &a.verdict.sparse),
        ("smooth", "no", |a| &a.verdict.smooth),
        ("coordinated", "no", |a| &a.verdict.coordinated),
        ("clustered", "no", |a| &a.verdict.clustered),
        ("low-rank", "not tested", |a| &a.verdict.low_rank),
        ("row-sparse", "not tested", |a| &a.verdict.row_sparse),
        ("column-sparse", "not tested", |a| &a.verdict.column_sparse),
        ("decay-like", "not tested", |a| &a.verdict.decay_like),
    ];
    let vrows = verdicts
        .iter()
        .map(|(h, st, of)| {
            let mut row = vec![h.to_string(), st.to_string()];
            row.extend(names.iter().map(|n| match r.analysis.get(n).map(of) {
                Some(h) if h.measure.is_some() && h.supported => "supported".to_string(),
                Some(h) if h.measure.is_some() => "not supported".to_string(),
                _ => "n/a".to_string(),
            }));
            row
        })
        .collect();
    section(
        "The residual (trained minus its own start)",
        vec![
            table("", header, rows),
            table(
                "Verdict (rules and margins in each run's analysis report)",
                vheader,
                vrows,
            ),
        ],
    )
}

fn needle(r: &ReproReport) -> Section {
    let runs: Vec<&RunResult> = r
        .runs
        .iter()
        .filter(|x| r.needle.contains_key(&x.name))
        .collect();
    let mut header = vec!["entries added back".to_string()];
    for run in &runs {
        header.push(format!("top-p by abs(r): {}", run.name));
        header.push(format!("random p: {}", run.name));
    }
    header.push("top-p bits/param".into());
    let n = runs
        .iter()
        .map(|x| r.needle[&x.name].len())
        .max()
        .unwrap_or(0);
    let mut rows = Vec::new();
    for i in 0..n {
        let first = runs.iter().find_map(|x| r.needle[&x.name].get(i));
        let Some(first) = first else { continue };
        let mut row = vec![format!("{:.1}%", first.frac * 100.0)];
        for run in &runs {
            let x = r.needle[&run.name].get(i);
            row.push(x.map(|x| format!("{:.3}", x.top_gain)).unwrap_or_default());
            row.push(
                x.map(|x| format!("{:.3}", x.random_gain))
                    .unwrap_or_default(),
            );
        }
        row.push(format!("{:.3}", first.top_bits_per_param));
        rows.push(row);
    }
    section(
        "Needle test: share of the training gain recovered",
        vec![table(
            "(L_start - L_p) / (L_start - L_trained): 1 is all of the gain, 0 none, below 0 worse than the start.",
            header,
            rows,
        )],
    )
}

fn codec(r: &ReproReport) -> Option<Section> {
    if r.codec.is_empty() {
        return None;
    }
    let mut rows = Vec::new();
    for (run, xs) in &r.codec {
        for x in xs {
            rows.push(vec![
                run.clone(),
                x.mode.clone(),
                format!("{:.3}", x.bits_per_param),
                format!("{:.3}", x.loss),
                format!("{:.3}", x.gain),
            ]);
        }
    }
    Some(section(
        "Residual files: held-out loss after base + file",
        vec![table(
            "",
            [
                "run",
                "mode",
                "bits/param",
                "held-out nats/byte",
                "gain recovered",
            ]
            .map(String::from)
            .to_vec(),
            rows,
        )],
    ))
}

/// The study's tables beside resid's, as report sections (tables only).
pub fn sections(r: &ReproReport) -> Vec<Section> {
    let mut v = vec![losses(r), residual(r), needle(r)];
    v.extend(codec(r));
    v
}

/// The side-by-side tables as Markdown, for the terminal.
pub fn terminal(r: &ReproReport) -> String {
    resid::report::markdown::render_sections(&sections(r)).0
}
