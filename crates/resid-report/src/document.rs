//! A report as plain content (verdict, sections of figures, tables and
//! text), rendered by [`crate::html`] and [`crate::markdown`] and written to
//! a folder by [`write_document`].

use std::path::Path;

/// One hypothesis of the verdict, in plain words.
#[derive(Clone, Debug, PartialEq)]
pub struct VerdictItem {
    /// "sparse", "smooth", "coordinated", "clustered".
    pub hypothesis: String,
    /// None: not measured (for example no 2-D tensors).
    pub supported: Option<bool>,
    /// One sentence saying what was found, e.g. "The residual is sparse:
    /// pooled kurtosis 33.1 against 0.0 for a Gaussian".
    pub statement: String,
    /// The measure, its null and the margin that decides.
    pub measure: Option<f64>,
    pub null: Option<f64>,
    pub margin: String,
    /// Id of the figure that shows it.
    pub figure: Option<String>,
}

/// An SVG figure with a caption.
#[derive(Clone, Debug, PartialEq)]
pub struct Figure {
    /// Unique, file-name safe: `[a-z0-9-]`; the Markdown file is `fig-{id}.svg`.
    pub id: String,
    pub svg: String,
    pub caption: String,
}

/// A table of text cells.
#[derive(Clone, Debug, PartialEq)]
pub struct Table {
    pub caption: String,
    pub header: Vec<String>,
    pub rows: Vec<Vec<String>>,
}

/// A piece of a section.
#[derive(Clone, Debug, PartialEq)]
pub enum Block {
    Figure(Figure),
    Table(Table),
    Text(String),
}

/// A titled section.
#[derive(Clone, Debug, PartialEq)]
pub struct Section {
    pub title: String,
    pub blocks: Vec<Block>,
}

/// A whole report.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct Document {
    pub title: String,
    /// Lines under the title (inputs, date-free facts).
    pub subtitle: Vec<String>,
    pub verdict: Vec<VerdictItem>,
    pub sections: Vec<Section>,
}

impl Document {
    /// Every figure, in order.
    pub fn figures(&self) -> impl Iterator<Item = &Figure> {
        self.sections.iter().flat_map(|s| {
            s.blocks.iter().filter_map(|b| match b {
                Block::Figure(f) => Some(f),
                _ => None,
            })
        })
    }
}

/// Normalises `s` into a figure id: lowercase ASCII letters, digits, '-'.
pub fn slug(s: &str) -> String {
    let mut out = String::new();
    for ch in s.chars() {
        if ch.is_ascii_alphanumeric() {
            out.push(ch.to_ascii_lowercase());
        } else if !out.ends_with('-') {
            out.push('-');
        }
    }
    out.trim_matches('-').to_string()
}

/// Errors writing a report.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("{0}")]
    Io(#[from] resid_io::IoError),
    #[error("cannot create report folder {path}: {source}")]
    Folder {
        path: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Plot(#[from] crate::plot::PlotError),
    #[error("cannot serialise the report JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("duplicate figure id '{0}'")]
    DuplicateFigure(String),
}

impl resid_io::Classify for ReportError {
    fn class(&self) -> resid_io::ErrorClass {
        use resid_io::ErrorClass;
        match self {
            ReportError::Io(e) => e.class(),
            ReportError::Folder { .. } => ErrorClass::Io,
            ReportError::Plot(e) => e.class(),
            ReportError::Json(_) => ErrorClass::BadInput,
            ReportError::DuplicateFigure(_) => ErrorClass::Usage,
        }
    }
}

/// Writes `dir/index.html`, `dir/report.md` with its `dir/fig-*.svg`, and
/// `dir/report.json` when `json` is given. The folder is created if
/// missing; each file appears whole or not at all.
pub fn write_document(dir: &Path, doc: &Document, json: Option<&str>) -> Result<(), ReportError> {
    let mut seen = std::collections::HashSet::new();
    for f in doc.figures() {
        if !seen.insert(f.id.as_str()) {
            return Err(ReportError::DuplicateFigure(f.id.clone()));
        }
    }
    std::fs::create_dir_all(dir).map_err(|source| ReportError::Folder {
        path: dir.display().to_string(),
        source,
    })?;
    let (md, files) = crate::markdown::render(doc);
    for (name, svg) in &files {
        resid_io::atomic::write_atomic(&dir.join(name), svg.as_bytes())?;
    }
    if let Some(j) = json {
        resid_io::atomic::write_atomic(&dir.join("report.json"), j.as_bytes())?;
    }
    resid_io::atomic::write_atomic(&dir.join("report.md"), md.as_bytes())?;
    resid_io::atomic::write_atomic(&dir.join("index.html"), crate::html::render(doc).as_bytes())?;
    Ok(())
}
