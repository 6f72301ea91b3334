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
    /// The information budget of its last section: residual entries, the
    /// "~6.5M bits", and the "~1.2M non-zero elements".
    pub const ENTRIES: f64 = 11.9e6;
    pub const BITS_CLAIMED: f64 = 6.5e6;
    pub const NONZERO: f64 = 1.2e6;
    /// Row counts of the paper shape's matrices other than the 15K-row
    /// embedding (attention 256 x 256, MLP 1024 x 256 and 256 x 1024).
    pub const MATRIX_ROWS: [usize; 2] = [256, 1024];
}

/// The 100-bin entropy's ceiling, log2(100): what a uniform variable
/// reaches, and the study's "random" 6.62.
pub fn uniform_ceiling_bits() -> f64 {
    100f64.log2()
}

/// Expected variance explained by a random partition of `n` rows into `k`
/// groups: (k - 1) / (n - 1). The best k-means partition explains at least
/// this on average, so a figure below it is not a k-means VE.
pub fn random_partition_ve(k: usize, n: usize) -> f64 {
    (k as f64 - 1.0) / (n as f64 - 1.0)
}

/// Mean over clustered tensors of (raw VE, random-partition VE) at `k`.
pub fn kmeans_at(a: &Report, k: usize) -> Option<(f64, f64)> {
    let v: Vec<(f64, f64)> = a
        .tensors
        .iter()
        .filter_map(|t| {
            let n = t.kmeans_rows?;
            let f = t.kmeans.as_ref()?.iter().find(|f| f.k == k)?;
            (f.ve.is_finite() && n > 1).then(|| (f.ve, random_partition_ve(k, n)))
        })
        .collect();
    (!v.is_empty()).then(|| {
        let m = v.len() as f64;
        (
            v.iter().map(|x| x.0).sum::<f64>() / m,
            v.iter().map(|x| x.1).sum::<f64>() / m,
        )
    })
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
        "finetune" => "fine-tune of the corpus-base model",
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
        let ft = run.name == crate::pipeline::FINETUNE;
        let reach = |level: f64| {
            if ft {
                "n/a (second corpus)".to_string()
            } else {
                reach(run, level)
            }
        };
        rows.push(vec![
            if ft {
                "csb fine-tuned on the second corpus (its held-out)".to_string()
            } else {
                format!("from {}", run.name)
            },
            format!("{:.3}", run.start_loss),
            format!("{:.3}", run.trained_loss),
            reach(r.baselines.bigram),
            reach(2.0),
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
    let (k_lo, k_hi) = (
        resid::analysis::kmeans::KS[0],
        resid::analysis::kmeans::KS[resid::analysis::kmeans::KS.len() - 1],
    );
    let study_partition = study::MATRIX_ROWS
        .iter()
        .map(|&n| format!("{:.4}", random_partition_ve(2, n)))
        .collect::<Vec<_>>()
        .join(" / ");
    let rows_spec: Vec<(String, String, Measure)> = vec![
        (
            "kurtosis, all (pooled)".into(),
            format!("{:.2}", study::KURTOSIS_ALL),
            |a| Some(a.components.all.kurtosis_pooled),
        ),
        (
            "kurtosis, attention".into(),
            format!("{:.2}", study::KURTOSIS_ATTN),
            |a| a.components.attention.as_ref().map(|c| c.kurtosis_pooled),
        ),
        (
            "kurtosis, MLP".into(),
            format!("{:.2}", study::KURTOSIS_MLP),
            |a| a.components.mlp.as_ref().map(|c| c.kurtosis_pooled),
        ),
        (
            "100-bin entropy, bits".into(),
            format!("{:.2}", study::ENTROPY),
            |a| Some(a.components.all.entropy_bits),
        ),
        (
            "uniform ceiling log2(100): the study's \"random\"".into(),
            format!("{:.2}", study::ENTROPY_RANDOM),
            |_| Some(uniform_ceiling_bits()),
        ),
        (
            "100-bin entropy of a Gaussian of the same size (the null)".into(),
            "not measured".into(),
            |a| Some(a.components.all.entropy_null_bits),
        ),
        (
            "mean PR, attention".into(),
            format!("{:.1}", study::PR_ATTN),
            |a| a.components.attention.as_ref().and_then(|c| c.pr_mean),
        ),
        (
            "mean PR, MLP".into(),
            format!("{:.1}", study::PR_MLP),
            |a| a.components.mlp.as_ref().and_then(|c| c.pr_mean),
        ),
        (
            "mean adjacent-layer r (every role, pooled)".into(),
            format!("{:.3}", study::ADJ_R),
            |a| a.study.mean_adjacent_r_pooled,
        ),
        (
            "same, weight matrices only (the verdict's)".into(),
            String::new(),
            |a| a.interlayer.matrices.mean_adjacent_r,
        ),
        (
            "low-frequency power vs null".into(),
            format!("{:.2}", study::LOWFREQ),
            |a| a.verdict.smooth.measure,
        ),
        (
            format!("k-means VE of the rows, K = {k_lo} (mean over matrices)"),
            format!("0.0000-{:.4} at all K", study::KMEANS_VE_MAX),
            |a| kmeans_at(a, resid::analysis::kmeans::KS[0]).map(|x| x.0),
        ),
        (
            format!("a random partition of the same rows, (K-1)/(n-1), K = {k_lo}"),
            format!(
                "{study_partition} for {} rows: above the study's figure",
                study::MATRIX_ROWS.map(|n| n.to_string()).join(" / ")
            ),
            |a| kmeans_at(a, resid::analysis::kmeans::KS[0]).map(|x| x.1),
        ),
        (
            format!("k-means VE of the rows, K = {k_hi}"),
            format!("<= {:.4}", study::KMEANS_VE_MAX),
            |a| {
                kmeans_at(
                    a,
                    resid::analysis::kmeans::KS[resid::analysis::kmeans::KS.len() - 1],
                )
                .map(|x| x.0)
            },
        ),
        (
            format!("a random partition of the same rows, K = {k_hi}"),
            String::new(),
            |a| {
                kmeans_at(
                    a,
                    resid::analysis::kmeans::KS[resid::analysis::kmeans::KS.len() - 1],
                )
                .map(|x| x.1)
            },
        ),
        (
            "k-means excess VE over shuffled rows, best K (resid's; another quantity)".into(),
            "not measured".into(),
            |a| a.study.kmeans_excess_ve_shuffled,
        ),
        (
            "PR / Marchenko-Pastur PR (matrices, energy-weighted)".into(),
            String::new(),
            |a| a.verdict.low_rank.measure,
        ),
        ("energy in the top 10% of rows".into(), String::new(), |a| {
            a.verdict.row_sparse.measure
        }),
        ("energy along -W_start".into(), String::new(), |a| {
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
            Block::Text(format!(
                "Read truthfully: the study's \"random\" entropy of {:.2} bits is the 100-bin ceiling log2(100) = {:.2} that only a uniform variable reaches; a Gaussian of the same size gives about 5.6, so its \"55% of random\" is measured against a ceiling, not against a Gaussian. Its k-means figure (0.00-{:.2}% of variance at all K) is below what a random partition of the rows explains, (K-1)/(n-1) ({} at K = 2 for the paper shape's {}-row matrices), which the best k-means partition beats on average: it cannot be the variance explained by k-means on the rows of those matrices. resid's excess VE over shuffled rows is another quantity (VE minus the VE of the same entries shuffled), printed beside it, not in place of it.",
                study::ENTROPY_RANDOM,
                uniform_ceiling_bits(),
                study::KMEANS_VE_MAX * 100.0,
                study_partition,
                study::MATRIX_ROWS.map(|n| n.to_string()).join(" / "),
            )),
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
        header.push(format!("random p, as is: {}", run.name));
        header.push(format!("random p, x 1/p (DARE): {}", run.name));
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
                x.map(|x| format!("{:.3}", x.random_plain_gain))
                    .unwrap_or_default(),
            );
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
            "(L_start - L_p) / (L_start - L_trained): 1 is all of the gain, 0 none, below 0 worse than the start. Random p% uses one seeded mask, added back as is (the same treatment as top-p%) and rescaled by 1/p as DARE does (which keeps the expected residual but multiplies its noise by 1/p). The fine-tune's gains are on the second corpus.",
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

/// The published peers beside resid at each rate, at resid's bytes.
fn peers(r: &ReproReport) -> Option<Section> {
    let mut rows = Vec::new();
    for (run, xs) in &r.peers {
        let ours = r.codec.get(run).map(Vec::as_slice).unwrap_or_default();
        for c in ours {
            let Some(rate) = c.requested_bits_per_param else {
                continue;
            };
            let line = |m: &str, bits: f64, loss: f64, gain: f64| {
                vec![
                    run.clone(),
                    format!("{rate}"),
                    m.to_string(),
                    format!("{bits:.3}"),
                    format!("{loss:.3}"),
                    format!("{gain:.3}"),
                ]
            };
            rows.push(line("resid lossy", c.bits_per_param, c.loss, c.gain));
            for x in xs.iter().filter(|x| x.rate == rate) {
                rows.push(line(&x.method, x.bits_per_param, x.loss, x.gain));
            }
        }
    }
    if rows.is_empty() {
        return None;
    }
    Some(section(
        "The published peers at resid's bytes: held-out gain recovered",
        vec![table(
            "Each peer is given the bytes of resid's whole file at that rate (header included) and codes the same residual; start + its rebuilt residual is scored on the same held-out slice. BitDelta's rate is fixed (1 bit/param) and is listed once. Delta-CoMe runs without calibration data (round to nearest in groups of 128).",
            [
                "run",
                "rate asked",
                "method",
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

/// Runs that have a residual, in report order, with their column label.
fn regimes(r: &ReproReport) -> Vec<&RunResult> {
    r.runs.iter().collect()
}

fn mega(x: f64) -> String {
    if x >= 1e6 {
        format!("{:.2}M", x / 1e6)
    } else if x >= 1e3 {
        format!("{:.1}K", x / 1e3)
    } else {
        format!("{x:.0}")
    }
}

/// The fine-tune regime: both corpora's held-out loss before and after.
fn finetune(r: &ReproReport) -> Option<Section> {
    let f = r.finetune.as_ref()?;
    let rows = vec![
        vec![
            format!(
                "first corpus (pretraining's): {}, {} held-out bytes",
                if r.corpus.is_empty() {
                    "n/a"
                } else {
                    &r.corpus
                },
                r.baselines.heldout_bytes
            ),
            format!("{:.3}", f.first_before),
            format!("{:.3}", f.first_after),
            format!("{:+.3} (forgetting)", f.first_after - f.first_before),
            format!("{:.3}", r.baselines.bigram),
        ],
        vec![
            format!(
                "second corpus: {}, {} held-out bytes",
                f.corpus, f.second_heldout_bytes
            ),
            format!("{:.3}", f.second_before),
            format!("{:.3}", f.second_after),
            format!(
                "{:+.3} (gain on the new domain)",
                f.second_after - f.second_before
            ),
            format!("{:.3}", f.second_bigram),
        ],
    ];
    Some(section(
        "The fine-tune regime",
        vec![table(
            &format!(
                "The corpus-base model after pretraining ({} steps at peak lr {}), fine-tuned on the second corpus for {} steps ({} tokens) at peak lr {}: a tenth of the tokens and of the learning rate. Held-out nats per byte; its residual (fine-tuned minus pretrained) is the column \"finetune\" in every table below.",
                f.pretrain_steps, f.pretrain_lr, f.steps, f.tokens, f.lr
            ),
            [
                "held-out text",
                "before fine-tuning",
                "after",
                "change",
                "bigram count model",
            ]
            .map(String::from)
            .to_vec(),
            rows,
        )],
    ))
}

/// The information budget: entropy at the storage step, entries beyond
/// 3 std, and the smallest file per share of the gain.
fn budget(r: &ReproReport) -> Option<Section> {
    let runs: Vec<&RunResult> = regimes(r)
        .into_iter()
        .filter(|x| r.budget.contains_key(&x.name))
        .collect();
    if runs.is_empty() {
        return None;
    }
    let mut header = vec!["measure".to_string(), "study".to_string()];
    header.extend(runs.iter().map(|x| label(&x.name)));
    let col = |f: &dyn Fn(&crate::pipeline::Budget) -> String| -> Vec<String> {
        runs.iter().map(|x| f(&r.budget[&x.name])).collect()
    };
    let row = |name: &str, st: String, cells: Vec<String>| {
        let mut v = vec![name.to_string(), st];
        v.extend(cells);
        v
    };
    let mut rows = vec![
        row(
            "residual entries",
            mega(study::ENTRIES),
            col(&|b| mega(b.entropy.entries as f64)),
        ),
        row(
            "bits per entry at step std/16",
            format!("not measured ({:.2} is a 100-bin figure over [min, max])", study::ENTROPY),
            col(&|b| format!("{:.2}", b.entropy.bits_at_step / b.entropy.entries.max(1) as f64)),
        ),
        row(
            "bits at step std/16 x entries",
            format!(
                "\"~{}\" is {:.2} x {} entries, a count of entries; at {:.2} bits each it would be ~{} bits",
                mega(study::BITS_CLAIMED),
                study::BITS_CLAIMED / study::ENTRIES,
                mega(study::ENTRIES),
                study::ENTROPY,
                mega(study::ENTROPY * study::ENTRIES)
            ),
            col(&|b| format!("{} bits", mega(b.entropy.bits_at_step))),
        ),
        row(
            "entries beyond 3 std (Gaussian: 0.27%)",
            format!(
                "\"~{} non-zero\" ({:.0}%, assumed)",
                mega(study::NONZERO),
                100.0 * study::NONZERO / study::ENTRIES
            ),
            col(&|b| {
                format!(
                    "{} ({:.2}% of the parameters)",
                    mega(b.entropy.beyond_3std),
                    100.0 * b.entropy.beyond_3std / r.n_params.max(1) as f64
                )
            }),
        ),
    ];
    let targets: Vec<f64> = runs
        .first()
        .map(|x| {
            r.budget[&x.name]
                .smallest
                .iter()
                .map(|s| s.target)
                .collect()
        })
        .unwrap_or_default();
    for (i, t) in targets.iter().enumerate() {
        rows.push(row(
            &format!(
                "smallest residual file recovering {:.0}% of the gain",
                t * 100.0
            ),
            "not measured".into(),
            col(&|b| match b.smallest.get(i) {
                Some(s) => match (&s.passing, &s.failing) {
                    (Some(p), f) => format!(
                        "{} bits = {:.1} KB ({:.2} bits/param, gain {:.3}){}",
                        mega(p.file_bytes as f64 * 8.0),
                        p.file_bytes as f64 / 1024.0,
                        p.bits_per_param,
                        p.gain,
                        f.map_or_else(
                            || "; the lowest rate searched".to_string(),
                            |f| format!("; {:.2} bits/param gives {:.3}", f.bits_per_param, f.gain)
                        )
                    ),
                    (None, Some(f)) => format!(
                        "not reached at {:.2} bits/param (gain {:.3}); only a finer file",
                        f.bits_per_param, f.gain
                    ),
                    (None, None) => "n/a".into(),
                },
                None => "n/a".into(),
            }),
        ));
    }
    Some(section(
        "How many bits training adds",
        vec![table(
            "The study's last section, measured. Entropy: the residual's bits per entry when stored at step std/16 of each tensor (the scale-free entropy), times its entries. Files: resid's lossy codec, its rate bisected (geometrically, to 10%) for the smallest file whose base + file recovers each share of the gain on the held-out slice; each cell names the file found and the next smaller one that falls short.",
            header,
            rows,
        )],
    ))
}

/// Additivity: each part's residual alone and left out, per regime.
fn additivity(r: &ReproReport) -> Option<Section> {
    let runs: Vec<&RunResult> = regimes(r)
        .into_iter()
        .filter(|x| r.additivity.contains_key(&x.name))
        .collect();
    let first = runs.first()?;
    let mut header = vec!["part of the residual".to_string(), "parameters".to_string()];
    for x in &runs {
        header.push(format!("alone: {}", x.name));
        header.push(format!("all but it: {}", x.name));
    }
    let mut rows = Vec::new();
    for (i, p) in r.additivity[&first.name].parts.iter().enumerate() {
        let mut row = vec![
            if p.part == "rest" {
                "embeddings, final norm, head".to_string()
            } else {
                p.part.clone()
            },
            p.params.to_string(),
        ];
        for x in &runs {
            let q = r.additivity[&x.name].parts.get(i);
            row.push(
                q.map(|q| format!("{:.3}", q.gain_alone))
                    .unwrap_or_default(),
            );
            row.push(
                q.map(|q| format!("{:.3}", q.gain_without))
                    .unwrap_or_default(),
            );
        }
        rows.push(row);
    }
    let mut sum = vec![
        "sum over parts (1 if they add up)".to_string(),
        String::new(),
    ];
    for x in &runs {
        let a = &r.additivity[&x.name];
        sum.push(format!("{:.3}", a.sum_alone));
        sum.push(format!("{:.3} lost in all", a.sum_dropped));
    }
    rows.push(sum);
    Some(section(
        "Do the layers add up? (additivity)",
        vec![table(
            "Share of the training gain recovered by the start plus one part's residual (alone), and by the start plus the whole residual except that part (all but it). The study says layers are independent: then the parts alone sum to 1, and each part left out loses its own share (the losses, 1 - all-but-it, also sum to 1). The fine-tune is scored on the second corpus.",
            header,
            rows,
        )],
    ))
}

/// Amplitude-only fine-tunes against the full fine-tune.
fn amplitude(r: &ReproReport) -> Option<Section> {
    let f = r.finetune.as_ref()?;
    if r.amplitude.is_empty() {
        return None;
    }
    let mut rows = vec![vec![
        "full fine-tune (every parameter)".to_string(),
        format!("{} (100%)", r.n_params),
        format!("{}", f.lr),
        format!("{:.3}", f.second_after),
        "1.000".into(),
        format!("{:.3}", f.first_after),
    ]];
    for a in &r.amplitude {
        rows.push(vec![
            "amplitudes only: row and column scales, norms, biases".into(),
            format!(
                "{} ({:.2}%)",
                a.trainable,
                100.0 * a.trainable as f64 / a.params as f64
            ),
            format!("{}", a.lr),
            format!("{:.3}", a.second_after),
            format!("{:.3}", a.gain_vs_full),
            format!("{:.3}", a.first_after),
        ]);
    }
    Some(section(
        "Does training amplitudes suffice? (amplitude-only fine-tuning)",
        vec![table(
            &format!(
                "The study leans on a claim that training per-row and per-column amplitudes (2.3% of the parameters) suffices. Fine-tune regime, {} steps each from the same pretrained model; held-out nats per byte (second corpus before: {:.3}); gain as a share of the full fine-tune's on the second corpus.",
                f.steps, f.second_before
            ),
            [
                "fine-tune",
                "trainable numbers",
                "peak lr",
                "second corpus after",
                "gain vs full",
                "first corpus after",
            ]
            .map(String::from)
            .to_vec(),
            rows,
        )],
    ))
}

/// Layer-wise and layer-parallel training against joint training.
fn layers(r: &ReproReport) -> Option<Section> {
    let l = r.layers.as_ref()?;
    let gain = |x: f64| (l.start - x) / (l.start - l.joint);
    let mut rows = vec![
        vec![
            "the corpus base (start)".into(),
            format!("{:.3}", l.start),
            "0.000".into(),
        ],
        vec![
            "joint: every parameter".into(),
            format!("{:.3}", l.joint),
            "1.000".into(),
        ],
        vec![
            "joint: the blocks only (embeddings and head frozen; the control)".into(),
            format!("{:.3}", l.joint_blocks),
            format!("{:.3}", gain(l.joint_blocks)),
        ],
        vec![
            format!(
                "layer-wise: one block at a time, {} steps each",
                l.steps / l.parallel_alone.len().max(1)
            ),
            format!("{:.3}", l.layer_wise),
            format!("{:.3}", gain(l.layer_wise)),
        ],
        vec![
            format!(
                "layer-parallel: each block alone for {} steps, then put together",
                l.steps
            ),
            format!("{:.3}", l.layer_parallel),
            format!("{:.3}", gain(l.layer_parallel)),
        ],
    ];
    for (i, x) in l.parallel_alone.iter().enumerate() {
        rows.push(vec![
            format!("  block {i} trained alone"),
            format!("{x:.3}"),
            format!("{:.3}", gain(*x)),
        ]);
    }
    Some(section(
        "Can the layers be trained independently?",
        vec![table(
            "From the corpus base, held-out nats per byte on the scored slice; gain as a share of joint training's. The study's claim predicts layer-parallel close to joint: blocks only.",
            ["training", "held-out nats/byte", "gain vs joint"]
                .map(String::from)
                .to_vec(),
            rows,
        )],
    ))
}

/// "What we found": each of the study's claims, what resid measured in
/// each regime, and the rule with its margin. Only the figures below.
fn found(r: &ReproReport) -> Section {
    let regs: Vec<(&str, &Report)> = r
        .runs
        .iter()
        .filter_map(|x| r.analysis.get(&x.name).map(|a| (x.name.as_str(), a)))
        .collect();
    let short = |n: &str| match n {
        "csb" => "corpus base".to_string(),
        "random" => "random init".to_string(),
        "finetune" => "fine-tune".to_string(),
        o => o.to_string(),
    };
    let per = |f: &dyn Fn(&str, &Report) -> Option<String>| -> String {
        regs.iter()
            .filter_map(|(n, a)| f(n, a).map(|v| format!("{}: {v}", short(n))))
            .collect::<Vec<_>>()
            .join("; ")
    };
    // "hypothesis X: supported" names what was tested, which may be the
    // study's claim or its negation.
    let verdict = |name: &str, h: fn(&Report) -> &Hypothesis| {
        let v = per(&|_, a| {
            let h = h(a);
            h.measure.map(|_| {
                let word = if h.supported {
                    "supported"
                } else {
                    "not supported"
                };
                format!("{word} ({})", h.rule)
            })
        });
        format!("hypothesis \"{name}\": {v}")
    };
    let f2 = |x: f64| cell(Some(x));
    let mut rows = vec![
        vec![
            format!(
                "Sparse: kurtosis {:.2} (attention {:.2}, MLP {:.2})",
                study::KURTOSIS_ALL,
                study::KURTOSIS_ATTN,
                study::KURTOSIS_MLP
            ),
            per(&|_, a| {
                Some(format!(
                    "{} (attention {}, MLP {})",
                    f2(a.components.all.kurtosis_pooled),
                    cell(a.components.attention.as_ref().map(|c| c.kurtosis_pooled)),
                    cell(a.components.mlp.as_ref().map(|c| c.kurtosis_pooled))
                ))
            }),
            verdict("sparse", |a| &a.verdict.sparse),
        ],
        vec![
            "A few large entries carry the gain (\"sparse needles\")".into(),
            per(&|n, _| {
                let x = r
                    .needle
                    .get(n)?
                    .iter()
                    .find(|x| (x.frac - 0.01).abs() < 1e-9)?;
                Some(format!(
                    "top 1% recovers {:.3} of the gain, a random 1% as is {:.3}",
                    x.top_gain, x.random_plain_gain
                ))
            }),
            "1 would be all of the gain (needle test)".into(),
        ],
        vec![
            format!("Layers uncorrelated: adjacent r = {:.3}", study::ADJ_R),
            per(&|_, a| {
                a.interlayer
                    .matrices
                    .mean_adjacent_r
                    .map(|x| format!("r = {}", f2(x)))
            }),
            verdict("coordinated", |a| &a.verdict.coordinated),
        ],
        vec![
            "Layers independent: each layer's correction stands alone".into(),
            per(&|n, _| {
                let a = r.additivity.get(n)?;
                Some(format!(
                    "parts alone sum to {:.3} of the gain, the losses of leaving each out to {:.3}",
                    a.sum_alone, a.sum_dropped
                ))
            }),
            "both are 1 when the parts add up (additivity test)".into(),
        ],
        vec![
            format!(
                "Not smooth: low-frequency power {:.2}x random",
                study::LOWFREQ
            ),
            per(&|_, a| a.verdict.smooth.measure.map(|x| format!("{}x", f2(x)))),
            verdict("smooth", |a| &a.verdict.smooth),
        ],
        vec![
            format!(
                "Not clustered: k-means explains 0.00-{:.2}% at all K",
                study::KMEANS_VE_MAX * 100.0
            ),
            per(&|_, a| {
                kmeans_at(a, resid::analysis::kmeans::KS[0]).map(|(ve, rp)| {
                    format!("VE {} at K = 2 (a random partition: {})", f2(ve), f2(rp))
                })
            }),
            verdict("clustered", |a| &a.verdict.clustered),
        ],
        vec![
            format!(
                "Entropy 55% of random ({:.2} vs {:.2} bits)",
                study::ENTROPY,
                study::ENTROPY_RANDOM
            ),
            per(&|_, a| {
                let c = &a.components.all;
                Some(format!(
                    "{} bits, {:.0}% of a Gaussian's {}",
                    f2(c.entropy_bits),
                    100.0 * c.entropy_bits / c.entropy_null_bits,
                    f2(c.entropy_null_bits)
                ))
            }),
            format!(
                "the study's {:.2} is the ceiling log2(100) = {:.2}, not a Gaussian's",
                study::ENTROPY_RANDOM,
                uniform_ceiling_bits()
            ),
        ],
        vec![
            format!(
                "About {} bits of information; the signal may be 0.23% of the parameters",
                mega(study::BITS_CLAIMED)
            ),
            per(&|n, _| {
                let b = r.budget.get(n)?;
                let files = b
                    .smallest
                    .iter()
                    .map(|s| match &s.passing {
                        Some(p) => format!(
                            "{:.0}%: {} bits ({:.2}/param)",
                            s.target * 100.0,
                            mega(p.file_bytes as f64 * 8.0),
                            p.bits_per_param
                        ),
                        None => format!("{:.0}%: not reached", s.target * 100.0),
                    })
                    .collect::<Vec<_>>()
                    .join(", ");
                Some(format!(
                    "smallest files {files}; {:.2}% of entries beyond 3 std",
                    100.0 * b.entropy.beyond_3std / r.n_params.max(1) as f64
                ))
            }),
            "the study's 6.5M is a count of entries, not bits (see \"How many bits\")".into(),
        ],
    ];
    if let Some(f) = &r.finetune {
        rows.push(vec![
            "(not in the study) The fine-tune regime".into(),
            format!(
                "{} steps at a tenth of the learning rate: the second corpus's held-out loss {:.3} -> {:.3} ({:+.3}), the first's {:.3} -> {:.3} ({:+.3})",
                f.steps,
                f.second_before,
                f.second_after,
                f.second_after - f.second_before,
                f.first_before,
                f.first_after,
                f.first_after - f.first_before
            ),
            "nats per byte, one seed".into(),
        ]);
    }
    if let Some(a) = r
        .amplitude
        .iter()
        .max_by(|a, b| a.gain_vs_full.total_cmp(&b.gain_vs_full))
    {
        rows.push(vec![
            "Training amplitudes alone (2.3% of parameters) suffices".into(),
            format!(
                "fine-tune regime: {} numbers ({:.2}% of the parameters) recover {:.3} of the full fine-tune's gain (best of {} learning rates)",
                a.trainable,
                100.0 * a.trainable as f64 / a.params as f64,
                a.gain_vs_full,
                r.amplitude.len()
            ),
            "same steps, one seed".into(),
        ]);
    }
    if let Some(l) = &r.layers {
        let g = |x: f64| (l.start - x) / (l.start - l.joint);
        rows.push(vec![
            "Layers can be trained independently (layer-parallel, layer-wise)".into(),
            format!(
                "corpus base: layer-parallel {:.3} and layer-wise {:.3} of joint training's gain; joint training of the blocks only {:.3}",
                g(l.layer_parallel),
                g(l.layer_wise),
                g(l.joint_blocks)
            ),
            "same steps, one seed".into(),
        ]);
    }
    section(
        "What we found",
        vec![table(
            &format!(
                "The study's claims (its figures at 10.2M parameters) beside resid's measurements at {} parameters, one seed, in each regime: from the corpus base (the study's), from a random init (the control), and a fine-tune of the corpus-base model on a second corpus. The rule column gives each verdict's margin.",
                r.n_params
            ),
            ["the study said", "resid measured", "rule and margin"]
                .map(String::from)
                .to_vec(),
            rows,
        )],
    )
}

/// The study's tables beside resid's, as report sections (tables only).
pub fn sections(r: &ReproReport) -> Vec<Section> {
    let mut v = vec![found(r), losses(r)];
    v.extend(finetune(r));
    v.extend([residual(r), needle(r)]);
    v.extend(codec(r));
    v.extend(peers(r));
    v.extend(budget(r));
    v.extend(additivity(r));
    v.extend(layers(r));
    v.extend(amplitude(r));
    v
}

/// The side-by-side tables as Markdown, for the terminal.
pub fn terminal(r: &ReproReport) -> String {
    resid::report::markdown::render_sections(&sections(r)).0
}
