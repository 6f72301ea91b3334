//! The study's tables with three columns: the study's figure, resid on the
//! corpus base, resid on the random-init control. Markdown, so the same text
//! reads in a terminal and in `REPORT.md`.

use serde_json::Value;

use crate::pipeline::ReproReport;

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

fn at(v: Option<&Value>, ptr: &str) -> Option<f64> {
    v?.pointer(ptr)?.as_f64()
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

/// The side-by-side tables.
pub fn terminal(r: &ReproReport) -> String {
    let a = r.analysis.get("csb");
    let b = r.analysis.get("random");
    let mut s = String::new();
    let mut row = |name: &str, study: String, ptr: &str| {
        s.push_str(&format!(
            "| {name} | {study} | {} | {} |\n",
            cell(at(a, ptr)),
            cell(at(b, ptr))
        ));
    };
    let head = "| measure | study | resid (corpus base) | resid (random-init control) |\n|---|---|---|---|\n";
    let mut out = String::new();
    out.push_str(&format!(
        "## Losses (held-out nats per byte, {} preset, {} parameters)\n\n",
        r.preset, r.n_params
    ));
    out.push_str("| model | start | trained |\n|---|---|---|\n");
    out.push_str(&format!(
        "| uniform / unigram / bigram count models | {:.3} / {:.3} / {:.3} | |\n",
        r.baselines.uniform, r.baselines.unigram, r.baselines.bigram
    ));
    for run in &r.runs {
        out.push_str(&format!(
            "| {} ({} steps, {:.0} s) | {:.3} | {:.3} |\n",
            run.name, run.steps, run.seconds, run.start_loss, run.trained_loss
        ));
    }
    out.push_str("\n## The residual (trained minus its own start)\n\n");
    out.push_str(head);
    row(
        "kurtosis, all (pooled)",
        format!("{:.2}", study::KURTOSIS_ALL),
        "/components/all/kurtosis_pooled",
    );
    row(
        "kurtosis, attention",
        format!("{:.2}", study::KURTOSIS_ATTN),
        "/components/attention/kurtosis_pooled",
    );
    row(
        "kurtosis, MLP",
        format!("{:.2}", study::KURTOSIS_MLP),
        "/components/mlp/kurtosis_pooled",
    );
    row(
        "100-bin entropy, bits",
        format!("{:.2}", study::ENTROPY),
        "/components/all/entropy_bits",
    );
    row(
        "  same for the Gaussian null",
        format!("{:.2}", study::ENTROPY_RANDOM),
        "/components/all/entropy_null_bits",
    );
    row(
        "mean PR, attention",
        format!("{:.1}", study::PR_ATTN),
        "/components/attention/pr_mean",
    );
    row(
        "mean PR, MLP",
        format!("{:.1}", study::PR_MLP),
        "/components/mlp/pr_mean",
    );
    row(
        "mean adjacent-layer r",
        format!("{:.3}", study::ADJ_R),
        "/interlayer/mean_adjacent_r",
    );
    row(
        "low-frequency power vs null",
        format!("{:.2}", study::LOWFREQ),
        "/verdict/smooth/measure",
    );
    row(
        "k-means excess VE (max over K)",
        format!("<= {:.4}", study::KMEANS_VE_MAX),
        "/verdict/clustered/measure",
    );
    out.push_str(&s);
    out.push_str("\n## Verdict\n\n| hypothesis | study | resid (corpus base) | resid (random-init control) |\n|---|---|---|---|\n");
    for (h, study) in [
        ("sparse", "yes"),
        ("smooth", "no"),
        ("coordinated", "no"),
        ("clustered", "no"),
    ] {
        let v = |x: Option<&Value>| match x
            .and_then(|x| x.pointer(&format!("/verdict/{h}/supported")))
        {
            Some(Value::Bool(true)) => "supported",
            Some(Value::Bool(false)) => "not supported",
            _ => "n/a",
        };
        out.push_str(&format!("| {h} | {study} | {} | {} |\n", v(a), v(b)));
    }
    out.push_str("\n## Needle test: share of the training gain recovered\n\n");
    out.push_str("| entries added back | top-p by abs(r): corpus base | random p: corpus base | top-p: random init | random p: random init | top-p bits/param |\n|---|---|---|---|---|---|\n");
    let empty = Vec::new();
    let c = r.needle.get("csb").unwrap_or(&empty);
    let d = r.needle.get("random").unwrap_or(&empty);
    for (i, x) in c.iter().enumerate() {
        let y = d.get(i);
        out.push_str(&format!(
            "| {:.1}% | {:.3} | {:.3} | {} | {} | {:.3} |\n",
            x.frac * 100.0,
            x.top_gain,
            x.random_gain,
            y.map(|y| format!("{:.3}", y.top_gain)).unwrap_or_default(),
            y.map(|y| format!("{:.3}", y.random_gain))
                .unwrap_or_default(),
            x.top_bits_per_param
        ));
    }
    if !r.codec.is_empty() {
        out.push_str("\n## Residual files: held-out loss after base + file\n\n| run | mode | bits/param | held-out nats/byte | gain recovered |\n|---|---|---|---|---|\n");
        for (run, rows) in &r.codec {
            for x in rows {
                out.push_str(&format!(
                    "| {run} | {} | {:.3} | {:.3} | {:.3} |\n",
                    x.mode, x.bits_per_param, x.loss, x.gain
                ));
            }
        }
    }
    out
}
