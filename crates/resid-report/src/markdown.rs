//! `report.md`: the verdict and the tables as Markdown, each figure
//! referenced as an SVG file written beside it (`fig-{id}.svg`).

use crate::document::{Block, Document, Section};
use crate::plot::fmt_num;

/// The Markdown text and the figure files it references (name, SVG).
pub fn render(doc: &Document) -> (String, Vec<(String, String)>) {
    let mut m = String::new();
    m.push_str(&format!("# {}\n\n", doc.title));
    for l in &doc.subtitle {
        m.push_str(&format!("{l}  \n"));
    }
    m.push('\n');
    if !doc.verdict.is_empty() {
        m.push_str("## Verdict\n\n| hypothesis | verdict | what was found | measure | null | margin |\n|---|---|---|---:|---:|---|\n");
        for v in &doc.verdict {
            let word = match v.supported {
                Some(true) => "**supported**",
                Some(false) => "not supported",
                None => "not measured",
            };
            let num = |x: Option<f64>| x.map(fmt_num).unwrap_or_else(|| "n/a".into());
            m.push_str(&format!(
                "| {} | {} | {} | {} | {} | {} |\n",
                cell(&v.hypothesis),
                word,
                cell(&v.statement),
                num(v.measure),
                num(v.null),
                cell(&v.margin)
            ));
        }
        m.push('\n');
    }
    let (body, files) = render_sections(&doc.sections);
    m.push_str(&body);
    (m, files)
}

/// Sections alone (no title or verdict), for text that embeds them, such
/// as the terminal summary of `resid repro`.
pub fn render_sections(sections: &[Section]) -> (String, Vec<(String, String)>) {
    let mut m = String::new();
    let mut files = Vec::new();
    for s in sections {
        m.push_str(&format!("## {}\n\n", s.title));
        for b in &s.blocks {
            match b {
                Block::Figure(f) => {
                    let name = format!("fig-{}.svg", f.id);
                    m.push_str(&format!(
                        "![{}]({name})\n\n*{}*\n\n",
                        cell(&f.caption),
                        f.caption
                    ));
                    files.push((name, f.svg.clone()));
                }
                Block::Table(t) => {
                    if !t.caption.is_empty() {
                        m.push_str(&format!("**{}**\n\n", t.caption));
                    }
                    m.push_str(&format!(
                        "| {} |\n|{}\n",
                        t.header
                            .iter()
                            .map(|c| cell(c))
                            .collect::<Vec<_>>()
                            .join(" | "),
                        t.header
                            .iter()
                            .enumerate()
                            .map(|(i, _)| if i == 0 { "---|" } else { "---:|" })
                            .collect::<String>()
                    ));
                    for r in &t.rows {
                        m.push_str(&format!(
                            "| {} |\n",
                            r.iter().map(|c| cell(c)).collect::<Vec<_>>().join(" | ")
                        ));
                    }
                    m.push('\n');
                }
                Block::Text(t) => m.push_str(&format!("{t}\n\n")),
            }
        }
    }
    (m, files)
}

fn cell(s: &str) -> String {
    s.replace('|', "\\|").replace('\n', " ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::document::{Figure, Table};

    #[test]
    fn figures_become_files_and_tables_keep_their_cells() {
        let doc = Document {
            title: "t".into(),
            sections: vec![Section {
                title: "s".into(),
                blocks: vec![
                    Block::Figure(Figure {
                        id: "a-b".into(),
                        svg: "<svg/>".into(),
                        caption: "cap".into(),
                    }),
                    Block::Table(Table {
                        caption: "tab".into(),
                        header: vec!["x".into(), "y".into()],
                        rows: vec![vec!["1|2".into(), "3".into()]],
                    }),
                ],
            }],
            ..Default::default()
        };
        let (md, files) = render(&doc);
        assert_eq!(
            files,
            vec![("fig-a-b.svg".to_string(), "<svg/>".to_string())]
        );
        assert!(md.contains("![cap](fig-a-b.svg)"));
        assert!(md.contains("| x | y |\n|---|---:|\n| 1\\|2 | 3 |"));
    }
}
