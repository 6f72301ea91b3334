//! The report of several residuals of one base: the pairs table (cosine,
//! sign agreement, TIES agreement per component) for the terminal and the
//! HTML/Markdown page, and one ordinary analysis report per residual in
//! `residual-<i>/` beside it.

use std::path::Path;

use resid_analysis::{PairFigures, Several};

use crate::analysis::{write_analysis_report, FigureData};
use crate::document::{Block, Document, ReportError, Section, Table};
use crate::plot::fmt_num;

/// The pairs table's header.
pub const PAIR_HEADER: [&str; 7] = [
    "pair",
    "component",
    "entries",
    "cosine",
    "sign agreement",
    "TIES kept both",
    "TIES agreement",
];

fn opt(v: Option<f64>) -> String {
    v.map_or_else(|| "n/a".into(), fmt_num)
}

/// One row per pair and component ("all" first): the cells of
/// [`PAIR_HEADER`], shared by the terminal and the page.
pub fn pair_rows(s: &Several) -> Vec<Vec<String>> {
    let mut rows = Vec::new();
    for p in &s.pairs {
        let label = format!("{} vs {}", p.a, p.b);
        let all = std::iter::once(("all", &p.all));
        let comps = p.components.iter().map(|(k, v)| (k.as_str(), v));
        for (name, f) in all.chain(comps) {
            rows.push(row(&label, name, f));
        }
    }
    rows
}

fn row(pair: &str, component: &str, f: &PairFigures) -> Vec<String> {
    let share = |x: u64| {
        if f.numel > 0 {
            format!("{:.1}%", 100.0 * x as f64 / f.numel as f64)
        } else {
            "n/a".into()
        }
    };
    vec![
        pair.into(),
        component.into(),
        f.numel.to_string(),
        opt(f.cosine),
        opt(f.sign_agreement),
        share(f.ties_kept_both),
        opt(f.ties_agreement),
    ]
}

/// The residuals, numbered as in the pairs table.
pub fn residual_lines(s: &Several) -> Vec<String> {
    s.residuals
        .iter()
        .enumerate()
        .map(|(i, r)| format!("residual {i}: {} - {}", r.trained, s.base))
        .collect()
}

/// The page: the residuals (linking their reports) and the pairs table.
pub fn several_document(s: &Several) -> Document {
    let links = s
        .residuals
        .iter()
        .enumerate()
        .map(|(i, r)| format!("- residual {i} ({}): residual-{i}/index.html", r.trained))
        .collect::<Vec<_>>()
        .join("\n");
    Document {
        title: format!("{} residuals of one base", s.residuals.len()),
        subtitle: vec![format!("base: {}", s.base)],
        verdict: Vec::new(),
        sections: vec![
            Section {
                title: "Residuals".into(),
                blocks: vec![Block::Text(links)],
            },
            Section {
                title: "Pairs".into(),
                blocks: vec![
                    Block::Text(
                        "Sign agreement is over the entries both residuals changed (0.5 for \
                         independent residuals); TIES agreement over those in both residuals' \
                         top 20% by magnitude, per tensor (docs/MEASURES.md, \"Several residuals\")."
                            .into(),
                    ),
                    Block::Table(Table {
                        caption: "Per pair of residuals and component".into(),
                        header: PAIR_HEADER.map(String::from).to_vec(),
                        rows: pair_rows(s),
                    }),
                ],
            },
        ],
    }
}

/// Writes `dir/index.html`, `report.md` and `report.json` (the whole
/// record) for the pairs, and each residual's report in `dir/residual-<i>/`.
pub fn write_several_report(
    dir: &Path,
    s: &Several,
    figs: &[Option<FigureData>],
) -> Result<(), ReportError> {
    for (i, r) in s.residuals.iter().enumerate() {
        let f = figs.get(i).and_then(Option::as_ref);
        write_analysis_report(&dir.join(format!("residual-{i}")), r, f)?;
    }
    crate::document::write_document(dir, &several_document(s), Some(&s.to_json()))
}
