//! A self-contained `index.html`: inline CSS and SVG, no scripts, no
//! network. The verdict comes first, in plain words, then the sections.

use crate::document::{Block, Document, Figure, Table, VerdictItem};
use crate::plot::fmt_num;

const CSS: &str = r#"
body { font-family: "DejaVu Sans", Verdana, Arial, sans-serif; color: #1a1a1a; margin: 0 auto;
       max-width: 1100px; padding: 24px 32px 64px; line-height: 1.45; background: #fff; }
h1 { font-size: 28px; margin-bottom: 4px; }
h2 { font-size: 22px; margin-top: 40px; border-bottom: 2px solid #ddd; padding-bottom: 4px; }
.sub { color: #555; margin: 2px 0; font-size: 14px; }
.verdict { border-collapse: collapse; width: 100%; margin-top: 16px; }
.verdict td, .verdict th { padding: 8px 10px; border-bottom: 1px solid #e2e2e2; vertical-align: top; text-align: left; }
.badge { display: inline-block; padding: 2px 10px; border-radius: 12px; font-weight: bold; font-size: 13px; white-space: nowrap; }
.yes { background: #d7f0e0; color: #0b5d2b; }
.no { background: #eee; color: #444; }
.na { background: #fbecd0; color: #6b4a00; }
figure { margin: 24px 0; padding: 0; }
figure svg { display: block; max-width: 100%; height: auto; border: 1px solid #eee; }
figcaption { color: #444; font-size: 14px; margin-top: 6px; }
table.data { border-collapse: collapse; font-size: 14px; margin: 16px 0; }
table.data caption { text-align: left; font-weight: bold; padding-bottom: 6px; }
table.data th, table.data td { border: 1px solid #ddd; padding: 4px 8px; text-align: right; }
table.data th:first-child, table.data td:first-child { text-align: left; }
table.data th { background: #f5f5f5; }
a { color: #0060a8; }
"#;

/// Escapes text for HTML content and attribute values.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for ch in s.chars() {
        match ch {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Renders the whole page.
pub fn render(doc: &Document) -> String {
    let mut h = String::new();
    h.push_str("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n");
    h.push_str("<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n");
    h.push_str(&format!(
        "<title>{}</title>\n<style>{CSS}</style>\n</head>\n<body>\n",
        esc(&doc.title)
    ));
    h.push_str(&format!("<h1>{}</h1>\n", esc(&doc.title)));
    for line in &doc.subtitle {
        h.push_str(&format!("<p class=\"sub\">{}</p>\n", esc(line)));
    }
    if !doc.verdict.is_empty() {
        h.push_str("<h2 id=\"verdict\">Verdict</h2>\n");
        h.push_str(&verdict_table(&doc.verdict));
    }
    for (i, s) in doc.sections.iter().enumerate() {
        h.push_str(&format!(
            "<section id=\"section-{i}\">\n<h2>{}</h2>\n",
            esc(&s.title)
        ));
        for b in &s.blocks {
            match b {
                Block::Figure(f) => h.push_str(&figure(f)),
                Block::Table(t) => h.push_str(&table(t)),
                Block::Text(t) => h.push_str(&format!("<p>{}</p>\n", esc(t))),
            }
        }
        h.push_str("</section>\n");
    }
    h.push_str("</body>\n</html>\n");
    h
}

fn verdict_table(items: &[VerdictItem]) -> String {
    let mut h = String::from(
        "<table class=\"verdict\">\n<tr><th>hypothesis</th><th>verdict</th><th>what was found</th><th>measure</th><th>null</th><th>margin</th></tr>\n",
    );
    for v in items {
        let (class, word) = match v.supported {
            Some(true) => ("yes", "supported"),
            Some(false) => ("no", "not supported"),
            None => ("na", "not measured"),
        };
        let stmt = match &v.figure {
            Some(id) => format!(
                "{} <a href=\"#fig-{}\">(figure)</a>",
                esc(&v.statement),
                esc(id)
            ),
            None => esc(&v.statement),
        };
        let num = |x: Option<f64>| x.map(fmt_num).unwrap_or_else(|| "n/a".into());
        h.push_str(&format!(
            "<tr><td><b>{}</b></td><td><span class=\"badge {class}\">{word}</span></td><td>{stmt}</td><td>{}</td><td>{}</td><td>{}</td></tr>\n",
            esc(&v.hypothesis),
            num(v.measure),
            num(v.null),
            esc(&v.margin)
        ));
    }
    h.push_str("</table>\n");
    h
}

/// The SVG element without any XML prolog, ready to inline.
pub fn inline_svg(svg: &str) -> &str {
    match svg.find("<svg") {
        Some(i) => svg[i..].trim_end(),
        None => svg,
    }
}

fn figure(f: &Figure) -> String {
    format!(
        "<figure id=\"fig-{}\">\n{}\n<figcaption>{}</figcaption>\n</figure>\n",
        esc(&f.id),
        inline_svg(&f.svg),
        esc(&f.caption)
    )
}

fn table(t: &Table) -> String {
    let mut h = String::from("<table class=\"data\">\n");
    if !t.caption.is_empty() {
        h.push_str(&format!("<caption>{}</caption>\n", esc(&t.caption)));
    }
    h.push_str("<tr>");
    for c in &t.header {
        h.push_str(&format!("<th>{}</th>", esc(c)));
    }
    h.push_str("</tr>\n");
    for r in &t.rows {
        h.push_str("<tr>");
        for c in r {
            h.push_str(&format!("<td>{}</td>", esc(c)));
        }
        h.push_str("</tr>\n");
    }
    h.push_str("</table>\n");
    h
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::document::Section;

    #[test]
    fn page_is_self_contained_and_escaped() {
        let doc = Document {
            title: "a <b> & c".into(),
            subtitle: vec!["base: x.safetensors".into()],
            verdict: vec![VerdictItem {
                hypothesis: "sparse".into(),
                supported: Some(true),
                statement: "kurtosis 33 > 3".into(),
                measure: Some(33.0),
                null: Some(0.0),
                margin: "kurtosis > 3".into(),
                figure: Some("hist-all".into()),
            }],
            sections: vec![Section {
                title: "Values".into(),
                blocks: vec![
                    Block::Figure(Figure {
                        id: "hist-all".into(),
                        svg: "<svg width=\"10\" height=\"10\"><rect/></svg>".into(),
                        caption: "c".into(),
                    }),
                    Block::Table(Table {
                        caption: "t".into(),
                        header: vec!["a".into()],
                        rows: vec![vec!["1".into()]],
                    }),
                ],
            }],
        };
        let h = render(&doc);
        assert!(h.contains("<h1>a &lt;b&gt; &amp; c</h1>"));
        assert!(h.contains("<figure id=\"fig-hist-all\">\n<svg"));
        assert!(h.contains("href=\"#fig-hist-all\""));
        assert!(h.find("Verdict").unwrap() < h.find("Values").unwrap());
        for banned in ["<script", "http://", "https://", "<link", "@import"] {
            assert!(!h.contains(banned), "{banned}");
        }
    }
}
