//! The report of `resid analyze`: [`analysis_document`] turns a
//! [`resid_analysis::Report`] (plus optional [`FigureData`] gathered by the
//! analysis pass) into a [`Document`]; [`write_analysis_report`] writes
//! `index.html`, `report.md` with its figures, and `report.json`.

use std::collections::BTreeMap;
use std::path::Path;

use resid_analysis::{Moments, Report, TensorRecord};
use resid_io::Component;

use crate::document::{Block, Document, Figure, ReportError, Section, Table, VerdictItem};
use crate::plot::bars::{self, BarSeries, BarsData};
use crate::plot::heatmap::{self, HeatmapData};
use crate::plot::histogram::{self, HistogramData, HistogramLabels};
use crate::plot::lines::{self, LineSeries, LinesData};
use crate::plot::powermap;
use crate::plot::spectrum;
use crate::plot::{fmt_num, DEFAULT_SIZE};

/// The figure data, gathered by the analysis pass itself
/// ([`resid_analysis::analyze_with_figures`]): the report never reads a
/// checkpoint.
pub type FigureData = resid_analysis::Figures;

/// The drawn histogram of one component ("all" for every tensor): the
/// grid counts of the pass, with the records' pooled moments and their
/// count beyond 3 std (each tensor against its own std, as the verdict).
pub fn histogram_of(
    report: &Report,
    name: &str,
    grid: &resid_analysis::figures::ValueHistogram,
) -> HistogramData {
    let rs: Vec<&TensorRecord> = report
        .tensors
        .iter()
        .filter(|r| name == "all" || r.component.name() == name)
        .collect();
    let m = rs
        .iter()
        .fold(Moments::default(), |m, r| m.merge(&r.moments));
    let beyond: f64 = rs
        .iter()
        .map(|r| r.share_above_3std * r.finite as f64)
        .filter(|v| v.is_finite())
        .sum();
    HistogramData::from_grid(
        grid,
        m.mean,
        m.std(),
        (m.min, m.max),
        beyond.round() as u64,
        120,
    )
}

/// "model.layers.3.mlp.up_proj.weight" -> "layers.3.mlp.up_proj".
pub fn short_name(name: &str) -> String {
    let n = name.strip_prefix("model.").unwrap_or(name);
    n.strip_suffix(".weight").unwrap_or(n).to_string()
}

/// Per layer and component: (layer, values) of `f` over the records.
fn per_layer<F>(report: &Report, c: Component, f: F) -> Vec<(usize, Option<f64>)>
where
    F: Fn(&[&TensorRecord]) -> Option<f64>,
{
    report
        .layers
        .iter()
        .map(|l| {
            let rs: Vec<&TensorRecord> = report
                .tensors
                .iter()
                .filter(|r| r.layer == Some(l.layer) && r.component == c)
                .collect();
            (
                l.layer,
                if rs.is_empty() {
                    None
                } else {
                    f(&rs).filter(|v| v.is_finite())
                },
            )
        })
        .collect()
}

/// Pooled excess kurtosis of records (their central moments merged).
pub fn pooled_kurtosis(rs: &[&TensorRecord]) -> Option<f64> {
    let m = rs
        .iter()
        .fold(Moments::default(), |m, r| m.merge(&r.moments));
    (m.n > 0).then(|| m.kurtosis())
}

/// Entry-weighted mean of `f` over records.
pub fn weighted_mean(rs: &[&TensorRecord], f: impl Fn(&TensorRecord) -> f64) -> Option<f64> {
    let (mut s, mut w) = (0.0, 0.0);
    for r in rs {
        let v = f(r);
        if v.is_finite() && r.finite > 0 {
            s += v * r.finite as f64;
            w += r.finite as f64;
        }
    }
    (w > 0.0).then(|| s / w)
}

/// Plain mean of the defined values of `f`.
pub fn mean_of(rs: &[&TensorRecord], f: impl Fn(&TensorRecord) -> Option<f64>) -> Option<f64> {
    let v: Vec<f64> = rs
        .iter()
        .filter_map(|r| f(r))
        .filter(|x| x.is_finite())
        .collect();
    (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
}

/// Per-layer bars of one measure, attention vs MLP, with their nulls.
pub fn layer_bars(
    report: &Report,
    title: &str,
    y_label: &str,
    value: &dyn Fn(&[&TensorRecord]) -> Option<f64>,
    null: &dyn Fn(&[&TensorRecord]) -> Option<f64>,
) -> BarsData {
    let comps = [(Component::Attention, "attention"), (Component::Mlp, "MLP")];
    let series = comps
        .iter()
        .filter(|(c, _)| {
            report
                .tensors
                .iter()
                .any(|r| r.component == *c && r.layer.is_some())
        })
        .map(|&(c, name)| BarSeries {
            name: name.to_string(),
            values: per_layer(report, c, value)
                .into_iter()
                .map(|x| x.1)
                .collect(),
            null: Some(
                per_layer(report, c, null)
                    .into_iter()
                    .map(|x| x.1)
                    .collect(),
            ),
        })
        .collect();
    BarsData {
        title: title.to_string(),
        x_label: "layer".into(),
        y_label: y_label.to_string(),
        categories: report.layers.iter().map(|l| l.layer.to_string()).collect(),
        series,
        null_label: "Gaussian null (same shape and std)".into(),
    }
}

/// The adjacent-layer correlations as a heatmap: one row per tensor
/// pattern, one column per layer pair, and a last column first-last.
pub fn interlayer_heatmap(report: &Report) -> HeatmapData {
    let il = &report.interlayer;
    let mut rows: Vec<String> = Vec::new();
    for p in il.pairs.iter().chain(&il.first_last) {
        if !rows.contains(&p.tensor) {
            rows.push(p.tensor.clone());
        }
    }
    let mut cols: Vec<(usize, usize)> = il.pairs.iter().map(|p| (p.a, p.b)).collect();
    cols.sort();
    cols.dedup();
    let ncols = cols.len() + usize::from(!il.first_last.is_empty());
    let mut cells = vec![vec![None; ncols]; rows.len()];
    for p in &il.pairs {
        let r = rows.iter().position(|t| *t == p.tensor).expect("row");
        let c = cols.iter().position(|&x| x == (p.a, p.b)).expect("col");
        cells[r][c] = Some(p.r);
    }
    for p in &il.first_last {
        let r = rows.iter().position(|t| *t == p.tensor).expect("row");
        cells[r][ncols - 1] = Some(p.r);
    }
    let mut col_labels: Vec<String> = cols.iter().map(|(a, b)| format!("{a}-{b}")).collect();
    if !il.first_last.is_empty() {
        col_labels.push("first-last".into());
    }
    let band = il
        .null_band
        .map(|b| format!(" (null band ±{})", fmt_num(b)))
        .unwrap_or_default();
    HeatmapData {
        title: format!("Correlation of residuals between layers{band}"),
        x_label: "layer pair".into(),
        y_label: String::new(),
        row_labels: rows.iter().map(|t| pattern_label(t)).collect(),
        col_labels,
        cells,
        value_label: "Pearson r".into(),
        limit: il.null_band.map(|b| {
            let m = il
                .pairs
                .iter()
                .chain(&il.first_last)
                .map(|p| p.r.abs())
                .filter(|v| v.is_finite())
                .fold(0.0f64, f64::max);
            m.max(2.0 * b)
        }),
        decimals: 3,
    }
}

/// "model.layers.*.self_attn.q_proj.weight" -> "self_attn.q_proj".
fn pattern_label(p: &str) -> String {
    let tail = p.split_once("*.").map(|x| x.1).unwrap_or(p);
    tail.strip_suffix(".weight").unwrap_or(tail).to_string()
}

/// (x, y) points of a curve.
pub type Curve = Vec<(f64, f64)>;

/// Mean VE and mean null VE per K over the clustered tensors.
pub fn kmeans_curves(report: &Report) -> (Curve, Curve) {
    let mut by_k: BTreeMap<usize, (f64, f64, usize)> = BTreeMap::new();
    for f in report
        .tensors
        .iter()
        .filter_map(|r| r.kmeans.as_ref())
        .flatten()
    {
        // The verdict's null: the larger of the shuffled and same-covariance VE.
        let null = f.ve_null_max();
        if f.ve.is_finite() && null.is_finite() {
            let e = by_k.entry(f.k).or_insert((0.0, 0.0, 0));
            e.0 += f.ve;
            e.1 += null;
            e.2 += 1;
        }
    }
    let ve = by_k
        .iter()
        .map(|(&k, e)| (k as f64, e.0 / e.2 as f64))
        .collect();
    let null = by_k
        .iter()
        .map(|(&k, e)| (k as f64, e.1 / e.2 as f64))
        .collect();
    (ve, null)
}

fn pct(v: Option<f64>) -> String {
    v.filter(|x| x.is_finite())
        .map_or_else(|| "n/a".into(), |x| format!("{:.1}%", 100.0 * x))
}

/// Rows of the low-rank / row-sparsity / decay table: (measure, residual,
/// null, ratio), energy-weighted means over the tensors that have the
/// measure, as the verdict weighs them. Terminal and HTML print these.
pub fn structure_rows(r: &Report) -> Vec<[String; 4]> {
    type Pick = fn(&TensorRecord) -> Option<(f64, f64)>;
    let specs: [(&str, Pick, bool); 9] = [
        ("Participation ratio", |t| Some((t.pr?, t.pr_null?)), false),
        (
            "Stable rank",
            |t| Some((t.stable_rank?, t.stable_rank_null?)),
            false,
        ),
        (
            "Rank holding 90% of energy",
            |t| Some((t.energy_rank_90? as f64, t.energy_rank_90_null?)),
            false,
        ),
        (
            "Rank holding 99% of energy",
            |t| Some((t.energy_rank_99? as f64, t.energy_rank_99_null?)),
            false,
        ),
        (
            "Energy in top 1% of rows",
            |t| t.row_shares.map(|s| (s.top1pct, s.top1pct_null)),
            true,
        ),
        (
            "Energy in top 10% of rows",
            |t| t.row_shares.map(|s| (s.top10pct, s.top10pct_null)),
            true,
        ),
        (
            "Energy in top 10% of columns",
            |t| t.col_shares.map(|s| (s.top10pct, s.top10pct_null)),
            true,
        ),
        (
            "Rows changed beyond decay",
            |t| {
                let d = t.decay?;
                Some((
                    d.rows_beyond_decay? as f64,
                    d.rows_beyond_decay_null? as f64,
                ))
            },
            false,
        ),
        (
            "Energy along -W_base",
            |t| t.decay.map(|d| (d.share, 1.0 / t.finite.max(1) as f64)),
            true,
        ),
    ];
    let mut rows = Vec::new();
    for (name, pick, as_pct) in specs {
        let (mut a, mut b, mut w) = (0.0, 0.0, 0.0);
        for t in &r.tensors {
            if let Some((x, n)) = pick(t).filter(|(x, n)| x.is_finite() && n.is_finite()) {
                if t.energy > 0.0 {
                    a += x * t.energy;
                    b += n * t.energy;
                    w += t.energy;
                }
            }
        }
        if w > 0.0 {
            let (x, n) = (a / w, b / w);
            let show = |v: f64| {
                if as_pct {
                    format!("{:.1}%", 100.0 * v)
                } else {
                    fmt_num(v)
                }
            };
            rows.push([
                name.to_string(),
                show(x),
                show(n),
                if n > 0.0 {
                    format!("{:.2}x", x / n)
                } else {
                    String::new()
                },
            ]);
        }
    }
    rows
}

fn opt(v: Option<f64>) -> String {
    v.map(fmt_num).unwrap_or_else(|| "n/a".into())
}

fn fig(id: &str, svg: String, caption: impl Into<String>) -> Block {
    Block::Figure(Figure {
        id: id.into(),
        svg,
        caption: caption.into(),
    })
}

/// The whole analysis report as a document.
pub fn analysis_document(
    report: &Report,
    figs: Option<&FigureData>,
) -> Result<Document, ReportError> {
    let mut doc = Document {
        title: "What training added: residual structure".into(),
        ..Default::default()
    };
    let n: u64 = report.tensors.iter().map(|r| r.numel).sum();
    doc.subtitle = vec![
        format!("base: {}", report.base),
        format!("trained: {}", report.trained),
        format!(
            "{} tensors, {} entries compared; nulls: i.i.d. Gaussian of the same shape and std, seed {}",
            report.tensors.len(),
            n,
            report.seed
        ),
    ];
    let has_hist = figs.is_some_and(|f| f.histograms.contains_key("all"));
    let has_power = figs.is_some_and(|f| f.powermap.is_some());
    let has_spectrum = figs.is_some_and(|f| !f.spectra.is_empty());
    let v = &report.verdict;
    let item = |name: &str,
                h: &resid_analysis::Hypothesis,
                yes: String,
                no: String,
                figure: Option<&str>| VerdictItem {
        hypothesis: name.into(),
        supported: h.measure.map(|_| h.supported),
        statement: if h.measure.is_none() {
            "Not measured: no tensor qualified.".into()
        } else if h.supported {
            yes
        } else {
            no
        },
        measure: h.measure,
        null: h.null,
        margin: h.rule.clone(),
        figure: figure.map(str::to_string),
    };
    let all = Some(&report.components.all);
    let share = all
        .map(|a| format!("{:.2}%", 100.0 * a.share_above_3std))
        .unwrap_or_default();
    let tally = |h: &resid_analysis::Hypothesis| {
        h.tensors.map_or(String::new(), |t| {
            format!(
                " {} of {} matrices ({:.0}% of the energy) pass on their own.",
                t.passing,
                t.of,
                100.0 * t.energy_share
            )
        })
    };
    doc.verdict = vec![
        item(
            "low-rank",
            &v.low_rank,
            format!("Yes: the matrices' participation ratio is {} of the Marchenko-Pastur value of a random matrix (energy-weighted).{}", opt(v.low_rank.measure), tally(&v.low_rank)),
            format!("No: the matrices' participation ratio is {} of the Marchenko-Pastur value (1 = random).{}", opt(v.low_rank.measure), tally(&v.low_rank)),
            has_spectrum.then_some("spectrum"),
        ),
        item(
            "row-sparse",
            &v.row_sparse,
            format!("Yes: the top 10% of rows hold {} of the energy (null {}).{}", pct(v.row_sparse.measure), pct(v.row_sparse.null), tally(&v.row_sparse)),
            format!("No: the top 10% of rows hold {} of the energy (null {}).{}", pct(v.row_sparse.measure), pct(v.row_sparse.null), tally(&v.row_sparse)),
            None,
        ),
        item(
            "column-sparse",
            &v.column_sparse,
            format!("Yes: the top 10% of columns hold {} of the energy (null {}).{}", pct(v.column_sparse.measure), pct(v.column_sparse.null), tally(&v.column_sparse)),
            format!("No: the top 10% of columns hold {} of the energy (null {}).{}", pct(v.column_sparse.measure), pct(v.column_sparse.null), tally(&v.column_sparse)),
            None,
        ),
        item(
            "decay-like",
            &v.decay_like,
            format!("Yes: {} of the residual's energy lies along -W_base: training mostly shrank the weights (R = -lambda W).{}", pct(v.decay_like.measure), tally(&v.decay_like)),
            format!("No: {} of the residual's energy lies along -W_base; the rest is what training added.{}", pct(v.decay_like.measure), tally(&v.decay_like)),
            None,
        ),
        item(
            "sparse",
            &v.sparse,
            format!("Yes: the residual is heavy-tailed. Pooled excess kurtosis {} (Gaussian 0), {share} of entries beyond 3 std (Gaussian 0.27%).", opt(v.sparse.measure)),
            format!("No: the tails are close to a Gaussian's. Pooled excess kurtosis {}, {share} of entries beyond 3 std (Gaussian 0.27%).", opt(v.sparse.measure)),
            if has_hist { Some("hist-all") } else { Some("bars-kurtosis") },
        ),
        item(
            "smooth",
            &v.smooth,
            format!("Yes: low spatial frequencies hold {} times the power they hold in white noise.", opt(v.smooth.measure)),
            format!("No: low spatial frequencies hold {} times the white-noise power (1 = noise).", opt(v.smooth.measure)),
            has_power.then_some("powermap"),
        ),
        item(
            "coordinated",
            &v.coordinated,
            format!("Yes: adjacent layers' weight matrices correlate, mean r = {} (null band ±{}).", opt(v.coordinated.measure), opt(report.interlayer.matrices.null_band)),
            format!("No: adjacent layers' weight matrices are unrelated, mean r = {} (null band ±{}); 1-D parameters (norms, biases): mean r = {}.", opt(v.coordinated.measure), opt(report.interlayer.matrices.null_band), opt(report.interlayer.vectors.mean_adjacent_r)),
            (!report.interlayer.pairs.is_empty()).then_some("interlayer"),
        ),
        item(
            "clustered",
            &v.clustered,
            format!("Yes: rows fall into clusters; k-means explains {} of the variance against {} for the null.", opt(v.clustered.measure), opt(v.clustered.null)),
            format!("No: k-means explains {} of the variance, the null {}: no more than chance.", opt(v.clustered.measure), opt(v.clustered.null)),
            report.tensors.iter().any(|r| r.kmeans.is_some()).then_some("kmeans"),
        ),
    ];

    // Values.
    let mut blocks = Vec::new();
    match figs.map(|f| &f.histograms) {
        Some(h) if !h.is_empty() => {
            let order = std::iter::once("all").chain(Component::ALL.iter().map(|c| c.name()));
            for name in order.filter(|n| h.contains_key(*n)) {
                let d = &histogram_of(report, name, &h[name]);
                let label = component_label(name);
                let svg = histogram::render(
                    d,
                    &HistogramLabels {
                        title: format!("{label} residual values vs a Gaussian of the same std"),
                        x_label: "residual value (weight units)".into(),
                        series: format!("{label} residual"),
                    },
                    DEFAULT_SIZE,
                )?;
                blocks.push(fig(
                    &format!("hist-{name}"),
                    svg,
                    format!(
                        "{label}: {} entries in {} bins of {}; mean {}, std {}; {:.3}% beyond 3 std of their own tensor against 0.27% for a Gaussian. Counts on a log axis: a Gaussian is a parabola, heavy tails lie above it.",
                        d.n,
                        d.counts.len(),
                        fmt_num(d.bin_width()),
                        fmt_num(d.mean),
                        fmt_num(d.std),
                        100.0 * d.share_beyond_3std()
                    ),
                ));
            }
        }
        _ => blocks.push(Block::Text(
            "Value histograms need the checkpoints themselves; this report was made from the measurements only.".into(),
        )),
    }
    blocks.push(Block::Table(components_table(report)));
    doc.sections.push(Section {
        title: "Values: how heavy are the tails?".into(),
        blocks,
    });

    // Per layer.
    let mut blocks = Vec::new();
    if !report.layers.is_empty() {
        let k = layer_bars(
            report,
            "Excess kurtosis per layer: attention vs MLP",
            "pooled excess kurtosis (Gaussian = 0)",
            &pooled_kurtosis,
            &|_| Some(0.0),
        );
        blocks.push(fig("bars-kurtosis", bars::render(&k, DEFAULT_SIZE)?, "Pooled excess kurtosis of each layer's attention and MLP residuals; the null (a Gaussian) has 0."));
        let e = layer_bars(
            report,
            "Histogram entropy per layer: attention vs MLP",
            "entropy, 100 bins over [min, max] (bits)",
            &|rs| weighted_mean(rs, |r| r.entropy_bits),
            &|rs| weighted_mean(rs, |r| r.entropy_null_bits),
        );
        blocks.push(fig("bars-entropy", bars::render(&e, DEFAULT_SIZE)?, "Entry-weighted mean of the tensors' 100-bin entropy (uniform ceiling 6.64 bits); dashed: the same on Gaussian nulls. Heavy tails stretch [min, max] and lower the entropy."));
        let p = layer_bars(
            report,
            "Participation ratio per layer: attention vs MLP",
            "participation ratio (effective rank)",
            &|rs| mean_of(rs, |r| r.pr),
            &|rs| mean_of(rs, |r| r.pr_null),
        );
        blocks.push(fig("bars-pr", bars::render(&p, DEFAULT_SIZE)?, "Mean participation ratio of each layer's matrices; dashed: the Marchenko-Pastur null for the same shapes. Far below the null: low-rank."));
        blocks.push(Block::Table(layers_table(report)));
    } else {
        blocks.push(Block::Text("No tensor was assigned to a layer.".into()));
    }
    doc.sections.push(Section {
        title: "Layer by layer".into(),
        blocks,
    });

    // Interlayer.
    let mut blocks = Vec::new();
    if report.interlayer.pairs.is_empty() {
        blocks.push(Block::Text(
            "No role appears in two layers with equal shapes: no correlation to measure.".into(),
        ));
    } else {
        let h = interlayer_heatmap(report);
        blocks.push(fig(
            "interlayer",
            heatmap::render(&h, DEFAULT_SIZE)?,
            format!(
                "Pearson r between the flattened residuals of layers l and l+1 (and the first and last layer), per tensor; mean adjacent r = {}, first-last r = {}, null band ±{}.",
                opt(report.interlayer.mean_adjacent_r),
                opt(report.interlayer.first_last_r),
                opt(report.interlayer.null_band)
            ),
        ));
    }
    if !report.interlayer.pairs.is_empty() {
        let il = &report.interlayer;
        let mut rows = Vec::new();
        for (name, c) in [
            ("weight matrices (the verdict)", &il.matrices),
            ("1-D parameters (norms, biases)", &il.vectors),
        ] {
            if c.pairs > 0 {
                rows.push(vec![
                    name.to_string(),
                    c.pairs.to_string(),
                    opt(c.mean_adjacent_r),
                    format!("±{}", opt(c.null_band)),
                    c.pairs_beyond_band.to_string(),
                    opt(c.mean_overlap),
                    opt(c.mean_overlap_null),
                    if c.mean_overlap.is_some() {
                        c.pairs_overlap_beyond_band.to_string()
                    } else {
                        String::new()
                    },
                ]);
            }
        }
        rows.push(vec![
            "every pair, pooled (the study's figure)".to_string(),
            il.pairs.len().to_string(),
            opt(il.mean_adjacent_r),
            format!("±{}", opt(il.null_band)),
            String::new(),
            String::new(),
            String::new(),
            String::new(),
        ]);
        blocks.push(Block::Table(Table {
            caption: "Adjacent-layer r by kind of parameter: each kind against the null band of its own sizes; a pair is beyond its band when |r| > 2/sqrt(n) (about 5% of pairs by chance). Subspace overlap: mean cos² of the principal angles between the top-8 singular subspaces of R_l and R_l+1 on the residual-stream side (a reordering of hidden units cannot hide it); null: random subspaces of the same dimension, k/d; a pair is beyond when it exceeds the null by 2 null std".into(),
            header: ["parameters", "pairs", "mean r", "null band", "pairs beyond own band", "subspace overlap", "null", "pairs beyond"].map(String::from).to_vec(),
            rows,
        }));
    }
    doc.sections.push(Section {
        title: "Are layers coordinated?".into(),
        blocks,
    });

    // Spectra and smoothness.
    let mut blocks = Vec::new();
    if let Some(f) = figs.filter(|f| !f.spectra.is_empty()) {
        let svg = spectrum::render(
            "Singular values of residual matrices vs Marchenko-Pastur",
            &f.spectra,
            DEFAULT_SIZE,
        )?;
        blocks.push(fig("spectrum", svg, "Singular values, largest first, scaled by std·√(larger side); dashed: what a Gaussian matrix of the same shape and std gives. A few values far above the null: low-rank structure."));
    }
    let maps = figs.and_then(|f| f.powermap.as_ref()).and_then(|m| {
        let r = report.tensors.iter().find(|r| r.name == m.tensor)?;
        Some((m, r.lowfreq_share?, r.lowfreq_null_share?))
    });
    if let Some((m, share, null_share)) = maps {
        let svg = powermap::render(
            &format!(
                "Spatial-frequency power of {} vs Gaussian null",
                short_name(&m.tensor)
            ),
            &m.residual,
            &m.null,
            (share, null_share),
            DEFAULT_SIZE,
        )?;
        blocks.push(fig("powermap", svg, format!(
            "2-D FFT power of the mean-removed residual (the matrix with the highest low-frequency ratio) and of the verdict's Gaussian null for its shape, averaged in blocks, log scale. Red box: |f| <= 1/8 cycle per entry; white noise puts about 1/16 of its power there. Low-frequency share of the whole matrix {:.2}% vs {:.2}% for the null (the verdict's figures).",
            100.0 * share,
            100.0 * null_share
        )));
    }
    let rows = structure_rows(report);
    if !rows.is_empty() {
        blocks.push(Block::Table(Table {
            caption: "Rank, rows and decay: energy-weighted means over the tensors (as the verdict weighs them); nulls: Marchenko-Pastur, chi-square row energies, 1/n for the share along -W_base".into(),
            header: ["measure", "residual", "null", "ratio"].map(String::from).to_vec(),
            rows: rows.into_iter().map(|r| r.to_vec()).collect(),
        }));
    }
    if blocks.is_empty() {
        blocks.push(Block::Text("Spectra and power maps need the checkpoints themselves; this report was made from the measurements only.".into()));
    }
    doc.sections.push(Section {
        title: "Rank and smoothness".into(),
        blocks,
    });

    // Clustering.
    let (ve, null) = kmeans_curves(report);
    let mut blocks = Vec::new();
    if ve.is_empty() {
        blocks.push(Block::Text("No 2-D tensor was clustered.".into()));
    } else {
        let d = LinesData {
            title: "k-means variance explained vs K: residual rows vs null".into(),
            x_label: "K, number of clusters".into(),
            y_label: "variance explained (1 - SSW/SST)".into(),
            log_x: false,
            log_y: false,
            y_range: None,
            legend: lines::Legend::UpperLeft,
            series: vec![
                LineSeries {
                    name: "residual (mean over tensors)".into(),
                    points: ve,
                    dashed: false,
                    markers: true,
                    color: Some(0),
                },
                LineSeries {
                    name: "null: max(shuffled, same covariance)".into(),
                    points: null,
                    dashed: true,
                    markers: true,
                    color: Some(6),
                },
            ],
        };
        blocks.push(fig("kmeans", lines::render(&d, DEFAULT_SIZE)?, "k-means++ on the rows of each matrix (best of 3 seeded restarts), mean over tensors; a clustered residual rises well above the null, the larger of the entry-shuffled rows (same values) and Gaussian rows with the residual's own covariance (same spectrum, no types)."));
    }
    doc.sections.push(Section {
        title: "Are rows clustered?".into(),
        blocks,
    });

    // Tensors.
    let mut blocks = vec![Block::Table(tensors_table(report))];
    let u = &report.unmatched;
    if !u.only_base.is_empty() || !u.only_trained.is_empty() {
        blocks.push(Block::Text(format!(
            "Unmatched, skipped: only in base: [{}]; only in trained: [{}].",
            u.only_base.join(", "),
            u.only_trained.join(", ")
        )));
    }
    doc.sections.push(Section {
        title: "Every tensor".into(),
        blocks,
    });
    Ok(doc)
}

fn component_label(name: &str) -> String {
    match name {
        "all" => "All".into(),
        "mlp" => "MLP".into(),
        "attention" => "Attention".into(),
        o => {
            let mut c = o.chars();
            c.next()
                .map(|f| f.to_uppercase().collect::<String>() + c.as_str())
                .unwrap_or_default()
        }
    }
}

fn components_table(report: &Report) -> Table {
    Table {
        caption: "Per component (kurtosis pooled over entries; entropies entry-weighted means over tensors)".into(),
        header: ["component", "tensors", "entries", "kurtosis (pooled)", "kurtosis (mean)", "entropy bits", "null bits", "bits at std/16", "> 3 std", "PR mean", "PR null", "low-freq ratio", "energy share"]
            .map(String::from)
            .to_vec(),
        rows: report
            .components
            .iter()
            .map(|(name, c)| {
                vec![
                    name.to_string(),
                    c.tensors.to_string(),
                    c.numel.to_string(),
                    fmt_num(c.kurtosis_pooled),
                    fmt_num(c.kurtosis_mean),
                    fmt_num(c.entropy_bits),
                    fmt_num(c.entropy_null_bits),
                    fmt_num(c.entropy_step_bits),
                    format!("{:.3}%", 100.0 * c.share_above_3std),
                    opt(c.pr_mean),
                    opt(c.pr_null_mean),
                    opt(c.lowfreq_ratio),
                    format!("{:.1}%", 100.0 * c.energy_share),
                ]
            })
            .collect(),
    }
}

fn layers_table(report: &Report) -> Table {
    Table {
        caption: "Per layer (the study's table)".into(),
        header: [
            "layer",
            "tensors",
            "entropy bits",
            "null bits",
            "kurtosis (pooled)",
            "PR mean",
            "norm share",
        ]
        .map(String::from)
        .to_vec(),
        rows: report
            .layers
            .iter()
            .map(|l| {
                vec![
                    l.layer.to_string(),
                    l.tensors.to_string(),
                    fmt_num(l.entropy_bits),
                    fmt_num(l.entropy_null_bits),
                    fmt_num(l.kurtosis_pooled),
                    opt(l.pr_mean),
                    format!("{:.1}%", 100.0 * l.norm_share),
                ]
            })
            .collect(),
    }
}

fn tensors_table(report: &Report) -> Table {
    Table {
        caption: "Per tensor".into(),
        header: [
            "tensor",
            "layer",
            "component",
            "shape",
            "std",
            "kurtosis",
            "entropy bits",
            "> 3 std",
            "PR",
            "PR null",
            "low-freq ratio",
            "best VE excess",
        ]
        .map(String::from)
        .to_vec(),
        rows: report
            .tensors
            .iter()
            .map(|r| {
                let excess = r.kmeans.as_ref().and_then(|v| {
                    v.iter()
                        .map(|f| f.ve - f.ve_null)
                        .filter(|x| x.is_finite())
                        .max_by(f64::total_cmp)
                });
                vec![
                    r.name.clone(),
                    r.layer.map(|l| l.to_string()).unwrap_or_default(),
                    r.component.name().to_string(),
                    format!("{:?}", r.shape),
                    fmt_num(r.std),
                    fmt_num(r.kurtosis),
                    fmt_num(r.entropy_bits),
                    format!("{:.3}%", 100.0 * r.share_above_3std),
                    opt(r.pr),
                    opt(r.pr_null),
                    opt(r.lowfreq_ratio),
                    opt(excess),
                ]
            })
            .collect(),
    }
}

/// Writes `dir/index.html`, `dir/report.md` (with `dir/fig-*.svg`) and
/// `dir/report.json` (the report's JSON, as `--json` writes it).
pub fn write_analysis_report(
    dir: &Path,
    report: &Report,
    figs: Option<&FigureData>,
) -> Result<(), ReportError> {
    let doc = analysis_document(report, figs)?;
    crate::document::write_document(dir, &doc, Some(&report.to_json()))
}
