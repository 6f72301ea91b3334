//! Terminal tables of an analysis: the study's tables (residual-structure
//! paper) filled with this pair's figures, then the verdict with its margins.

use comfy_table::presets::UTF8_FULL_CONDENSED;
use comfy_table::{Cell, CellAlignment, Table};
use resid_analysis::Report;

fn f(v: f64, d: usize) -> String {
    if v.is_finite() {
        format!("{v:.d$}")
    } else {
        "n/a".into()
    }
}

fn fo(v: Option<f64>, d: usize) -> String {
    v.map_or("n/a".into(), |v| f(v, d))
}

fn table(header: &[&str]) -> Table {
    let mut t = Table::new();
    t.load_preset(UTF8_FULL_CONDENSED);
    t.set_header(header.iter().map(Cell::new));
    for i in 1..header.len() {
        if let Some(c) = t.column_mut(i) {
            c.set_cell_alignment(CellAlignment::Right);
        }
    }
    t
}

/// Several residuals of one base: each residual's tables under its name,
/// then the pairs table.
pub fn render_several(s: &resid_analysis::Several) -> String {
    let mut out = String::new();
    for (line, r) in crate::several::residual_lines(s).iter().zip(&s.residuals) {
        out.push_str(&format!("== {line} ==\n"));
        out.push_str(&render(r));
        out.push('\n');
    }
    let mut t = table(&crate::several::PAIR_HEADER);
    for row in crate::several::pair_rows(s) {
        t.add_row(row);
    }
    out.push_str(&format!("Pairs of residuals (sign agreement over entries both changed; TIES: both in the top 20%)\n{t}\n"));
    out
}

/// All tables of a report, as text.
pub fn render(r: &Report) -> String {
    let mut out = String::new();
    let mut section = |title: &str, body: String| {
        out.push_str(title);
        out.push('\n');
        out.push_str(&body);
        out.push_str("\n\n");
    };
    let all = Some(&r.components.all);
    let tensors_2d = r.tensors.iter().filter(|t| t.matrix.is_some()).count();
    section(
        "Residual",
        format!(
            "base    {}\ntrained {}\n{} tensors paired ({} matrices), {} parameters, seed {}{}",
            r.base,
            r.trained,
            r.tensors.len(),
            tensors_2d,
            all.map_or(0, |a| a.numel),
            r.seed,
            if r.unmatched.only_base.is_empty() && r.unmatched.only_trained.is_empty() {
                String::new()
            } else {
                format!(
                    "\nunmatched: {} only in base, {} only in trained (see JSON)",
                    r.unmatched.only_base.len(),
                    r.unmatched.only_trained.len()
                )
            }
        ),
    );

    // Overall kurtosis and entropy vs nulls.
    let mut t = table(&["Metric", "Residual", "Random (null)", "Ratio"]);
    for (label, c) in [
        ("Kurtosis (attention)", r.components.attention.as_ref()),
        ("Kurtosis (MLP)", r.components.mlp.as_ref()),
        ("Kurtosis (experts)", r.components.expert.as_ref()),
        ("Kurtosis (overall)", all),
    ] {
        if let Some(c) = c {
            t.add_row(vec![
                label.to_string(),
                f(c.kurtosis_pooled, 2),
                "0.00".into(),
                String::new(),
            ]);
        }
    }
    if let Some(a) = all {
        t.add_row(vec![
            "Entropy (100 bins, bits)".to_string(),
            f(a.entropy_bits, 2),
            f(a.entropy_null_bits, 2),
            format!(
                "{}% (of ceiling 6.64: {}%)",
                f(100.0 * a.entropy_bits / a.entropy_null_bits, 0),
                f(100.0 * a.entropy_bits / 100f64.log2(), 0)
            ),
        ]);
        t.add_row(vec![
            "Entropy at std/16 step (bits)".to_string(),
            f(a.entropy_step_bits, 2),
            "6.05".into(),
            String::new(),
        ]);
        t.add_row(vec![
            "Top-1% energy share".to_string(),
            format!("{}%", f(100.0 * a.top1pct_energy, 1)),
            "8.4%".into(),
            format!(
                "{}x",
                f(
                    a.top1pct_energy / resid_analysis::sparsity::GAUSSIAN_TOP1PCT_ENERGY,
                    1
                )
            ),
        ]);
        t.add_row(vec![
            "Share beyond 3 std".to_string(),
            format!("{}%", f(100.0 * a.share_above_3std, 3)),
            "0.270%".into(),
            format!(
                "{}x",
                f(
                    a.share_above_3std / resid_analysis::sparsity::GAUSSIAN_ABOVE_3STD,
                    1
                )
            ),
        ]);
    }
    section(
        "Overall (pooled kurtosis; entropy: numel-weighted mean over tensors)",
        t.to_string(),
    );

    // Components.
    let mut t = table(&[
        "Component",
        "Tensors",
        "Params",
        "Mean PR",
        "PR null (MP)",
        "Kurtosis pooled",
        "Kurtosis mean",
        "Entropy bits",
        "Energy share",
    ]);
    for (name, c) in r.components.iter() {
        t.add_row(vec![
            name.to_string(),
            c.tensors.to_string(),
            c.numel.to_string(),
            fo(c.pr_mean, 1),
            fo(c.pr_null_mean, 1),
            f(c.kurtosis_pooled, 2),
            f(c.kurtosis_mean, 2),
            f(c.entropy_bits, 2),
            format!("{}%", f(100.0 * c.energy_share, 1)),
        ]);
    }
    section("Components", t.to_string());

    // Adjacent-layer correlations: mean over tensors of each layer pair.
    let il = &r.interlayer;
    if !il.pairs.is_empty() {
        let mut t = table(&["Layer pair", "Correlation (mean over tensors)", "Tensors"]);
        let mut groups: std::collections::BTreeMap<(usize, usize), Vec<f64>> = Default::default();
        for p in &il.pairs {
            groups.entry((p.a, p.b)).or_default().push(p.r);
        }
        for ((a, b), rs) in &groups {
            t.add_row(vec![
                format!("L{a}-L{b}"),
                f(rs.iter().sum::<f64>() / rs.len() as f64, 4),
                rs.len().to_string(),
            ]);
        }
        if !il.first_last.is_empty() {
            let (a, b) = (il.first_last[0].a, il.first_last[0].b);
            t.add_row(vec![
                format!("L{a}-L{b} (first-last)"),
                fo(il.first_last_r, 4),
                il.first_last.len().to_string(),
            ]);
        }
        let mut k = table(&[
            "Parameters",
            "Pairs",
            "Mean r",
            "Null band",
            "Pairs beyond own band",
            "Subspace overlap",
            "Null",
            "Pairs beyond",
        ]);
        for (name, c) in [
            ("weight matrices (verdict)", &il.matrices),
            ("1-D (norms, biases)", &il.vectors),
        ] {
            if c.pairs > 0 {
                k.add_row(vec![
                    name.to_string(),
                    c.pairs.to_string(),
                    fo(c.mean_adjacent_r, 4),
                    format!("+-{}", fo(c.null_band, 4)),
                    c.pairs_beyond_band.to_string(),
                    fo(c.mean_overlap, 3),
                    fo(c.mean_overlap_null, 3),
                    if c.mean_overlap.is_some() {
                        c.pairs_overlap_beyond_band.to_string()
                    } else {
                        String::new()
                    },
                ]);
            }
        }
        k.add_row(vec![
            "all, pooled (the study's figure)".to_string(),
            il.pairs.len().to_string(),
            fo(il.mean_adjacent_r, 4),
            format!("+-{}", fo(il.null_band, 4)),
            String::new(),
            String::new(),
            String::new(),
            String::new(),
        ]);
        section(
            "Adjacent-layer correlation by kind of parameter",
            k.to_string(),
        );
        section(
            "Adjacent-layer correlation per layer pair (all kinds)",
            t.to_string(),
        );
    }

    // Per layer.
    if !r.layers.is_empty() {
        let mut t = table(&[
            "Layer",
            "Entropy (bits)",
            "Null (bits)",
            "Kurtosis",
            "Mean PR",
            "Norm share",
        ]);
        for l in &r.layers {
            t.add_row(vec![
                format!("L{}", l.layer),
                f(l.entropy_bits, 2),
                f(l.entropy_null_bits, 2),
                f(l.kurtosis_pooled, 2),
                fo(l.pr_mean, 1),
                format!("{}%", f(100.0 * l.norm_share, 1)),
            ]);
        }
        section("Per layer", t.to_string());
    }

    // Rank, rows, decay.
    let lr = rank_rows_decay(r);
    if !lr.is_empty() {
        section(
            "Rank, rows and decay (energy-weighted mean over matrices)",
            lr,
        );
    }

    // Smoothness and clustering.
    let mut t = table(&[
        "Measure",
        "Residual",
        "Null (Gaussian)",
        "Null (shuffled)",
        "Null (same covariance)",
        "Excess over both",
    ]);
    if let Some(a) = all {
        let lf: Vec<(f64, f64)> = r
            .tensors
            .iter()
            .filter_map(|t| Some((t.lowfreq_share?, t.lowfreq_null_share?)))
            .collect();
        if !lf.is_empty() {
            let s = lf.iter().map(|x| x.0).sum::<f64>() / lf.len() as f64;
            let n = lf.iter().map(|x| x.1).sum::<f64>() / lf.len() as f64;
            t.add_row(vec![
                "Low-frequency power share".to_string(),
                format!("{}%", f(100.0 * s, 2)),
                format!("{}%", f(100.0 * n, 2)),
                String::new(),
                String::new(),
                format!("ratio {}x", fo(a.lowfreq_ratio, 2)),
            ]);
        }
    }
    for (i, k) in resid_analysis::kmeans::KS.iter().enumerate() {
        let v: Vec<[f64; 5]> = r
            .tensors
            .iter()
            .filter_map(|t| {
                t.kmeans.as_ref()?.get(i).map(|f| {
                    [
                        f.ve,
                        f.ve_null,
                        f.ve_shuffled,
                        f.ve_same_cov,
                        f.ve_null_max(),
                    ]
                })
            })
            .filter(|x| x.iter().all(|v| v.is_finite()))
            .collect();
        if v.is_empty() {
            continue;
        }
        let mean = |j: usize| v.iter().map(|x| x[j]).sum::<f64>() / v.len() as f64;
        t.add_row(vec![
            format!("k-means VE, K={k}"),
            format!("{}%", f(100.0 * mean(0), 2)),
            format!("{}%", f(100.0 * mean(1), 2)),
            format!("{}%", f(100.0 * mean(2), 2)),
            format!("{}%", f(100.0 * mean(3), 2)),
            format!("{:+.2} pts", 100.0 * (mean(0) - mean(4))),
        ]);
    }
    section(
        "Smoothness and clustering (mean over matrices)",
        t.to_string(),
    );

    // Verdict.
    let v = &r.verdict;
    let mut t = table(&["Hypothesis", "Verdict", "Rule (margin)", "Tensors passing"]);
    for (name, h) in v.all() {
        t.add_row(vec![
            name.to_string(),
            if h.measure.is_none() {
                "n/a".into()
            } else if h.supported {
                "SUPPORTED".into()
            } else {
                "not supported".into()
            },
            h.rule.clone(),
            h.tensors.map_or(String::new(), |t| {
                format!(
                    "{} of {} ({}% of the energy)",
                    t.passing,
                    t.of,
                    f(100.0 * t.energy_share, 1)
                )
            }),
        ]);
    }
    section("Verdict", t.to_string());
    let notes: Vec<String> = r
        .tensors
        .iter()
        .filter_map(|t| t.note.as_ref().map(|n| format!("{}: {n}", t.name)))
        .collect();
    if !notes.is_empty() {
        section("Notes", notes.join("\n"));
    }
    out.trim_end().to_string() + "\n"
}

/// Low rank, row/column concentration and decay, each beside its null
/// (the rows the HTML report prints too).
fn rank_rows_decay(r: &Report) -> String {
    let rows = crate::analysis::structure_rows(r);
    if rows.is_empty() {
        return String::new();
    }
    let mut t = table(&["Measure", "Residual", "Null", "Ratio"]);
    for row in rows {
        t.add_row(row.to_vec());
    }
    t.to_string()
}
