//! Figures as SVG strings. One module per kind of figure; each takes plain
//! data (slices and small structs, never the analysis report) and returns
//! the SVG together with the numbers it drew, so tests can check a figure
//! against its input.
//!
//! Text is laid out with a shipped font (DejaVu Sans, see
//! `assets/DejaVuSans-LICENSE.txt`), registered once with plotters'
//! `ab_glyph` backend: no system fonts or fontconfig are needed.

pub mod bars;
pub mod heatmap;
pub mod histogram;
pub mod lines;
pub mod powermap;
pub mod spectrum;

use std::sync::Once;

use plotters::style::{FontStyle, RGBColor};

/// The font family every figure uses (the shipped DejaVu Sans).
pub const FONT: &str = "sans-serif";

static FONT_INIT: Once = Once::new();
static FONT_BYTES: &[u8] = include_bytes!("../../assets/DejaVuSans.ttf");

/// Registers the shipped font with plotters; cheap after the first call.
pub fn ensure_font() {
    FONT_INIT.call_once(|| {
        for style in [FontStyle::Normal, FontStyle::Bold] {
            if plotters::style::register_font(FONT, style, FONT_BYTES).is_err() {
                panic!("the shipped font assets/DejaVuSans.ttf is not a valid TrueType font");
            }
        }
    });
}

/// A figure that could not be drawn.
#[derive(Debug, thiserror::Error)]
#[error("cannot draw figure '{figure}': {message}")]
pub struct PlotError {
    pub figure: String,
    pub message: String,
}

/// A figure fails on the data it was given (non-finite or empty series).
impl resid_io::Classify for PlotError {
    fn class(&self) -> resid_io::ErrorClass {
        resid_io::ErrorClass::BadInput
    }
}

impl PlotError {
    pub(crate) fn new(figure: &str, e: impl std::fmt::Display) -> Self {
        PlotError {
            figure: figure.to_string(),
            message: e.to_string(),
        }
    }
}

pub type Result<T> = std::result::Result<T, PlotError>;

/// Pixel size of a figure.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Size {
    pub width: u32,
    pub height: u32,
}

impl Size {
    pub const fn new(width: u32, height: u32) -> Self {
        Size { width, height }
    }
}

/// The default size: legible when shown at 100% in a report column.
pub const DEFAULT_SIZE: Size = Size::new(820, 460);

/// Font sizes (plotters units; the SVG gets size / 1.24 px).
pub(crate) const TITLE_PT: u32 = 24;
pub(crate) const LABEL_PT: u32 = 19;
pub(crate) const TICK_PT: u32 = 16;
pub(crate) const LEGEND_PT: u32 = 16;

/// A colour-blind-safe palette (Okabe-Ito), in series order.
pub const PALETTE: [RGBColor; 7] = [
    RGBColor(0, 114, 178),   // blue
    RGBColor(230, 159, 0),   // orange
    RGBColor(0, 158, 115),   // green
    RGBColor(204, 121, 167), // purple
    RGBColor(213, 94, 0),    // vermillion
    RGBColor(86, 180, 233),  // sky blue
    RGBColor(120, 120, 120), // grey
];

/// The colour of series `i`.
pub fn series_color(i: usize) -> RGBColor {
    PALETTE[i % PALETTE.len()]
}

/// The `#RRGGBB` form plotters writes into the SVG.
pub fn hex(c: RGBColor) -> String {
    format!("#{:02X}{:02X}{:02X}", c.0, c.1, c.2)
}

/// Short, readable number for labels.
pub fn fmt_num(v: f64) -> String {
    if !v.is_finite() {
        return format!("{v}");
    }
    let a = v.abs();
    if a == 0.0 {
        "0".into()
    } else if v.fract() == 0.0 && a < 1e5 {
        format!("{v:.0}")
    } else if !(1e-3..1e5).contains(&a) {
        format!("{v:.2e}")
    } else if a >= 100.0 {
        format!("{v:.0}")
    } else if a >= 10.0 {
        format!("{v:.1}")
    } else if a >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    }
}

/// An axis tick: [`fmt_num`], with float noise around zero (a tick at
/// -5.55e-17 on a 0..1 axis) shown as 0.
pub fn fmt_tick(v: f64, span: f64) -> String {
    if v.abs() <= 1e-9 * span.abs() {
        "0".into()
    } else {
        fmt_num(v)
    }
}

/// Axis range `[lo, hi]` padded by `pad` of its span; never empty.
pub(crate) fn padded(lo: f64, hi: f64, pad: f64) -> (f64, f64) {
    if !(lo.is_finite() && hi.is_finite()) {
        return (0.0, 1.0);
    }
    if hi <= lo {
        let d = if lo == 0.0 { 1.0 } else { lo.abs() * 0.1 };
        return (lo - d, hi + d);
    }
    let d = (hi - lo) * pad;
    (lo - d, hi + d)
}

/// Extracts every `<svg>` text node string (for tests and checks).
pub fn svg_texts(svg: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = svg;
    while let Some(i) = rest.find("<text") {
        rest = &rest[i..];
        let Some(gt) = rest.find('>') else { break };
        let Some(end) = rest.find("</text>") else {
            break;
        };
        if end > gt {
            out.push(unescape(rest[gt + 1..end].trim()));
        }
        rest = &rest[end + 7..];
    }
    out
}

/// Numeric attributes of every `<rect>` whose `fill` is `fill` (for tests).
pub fn svg_rects(svg: &str, fill: &str) -> Vec<SvgRect> {
    let mut out = Vec::new();
    for tag in svg.split("<rect").skip(1) {
        let tag = &tag[..tag.find('>').unwrap_or(tag.len())];
        if attr(tag, "fill").as_deref() != Some(fill) {
            continue;
        }
        let num = |k: &str| attr(tag, k).and_then(|v| v.parse::<f64>().ok());
        if let (Some(x), Some(y), Some(w), Some(h)) =
            (num("x"), num("y"), num("width"), num("height"))
        {
            out.push(SvgRect { x, y, w, h });
        }
    }
    out
}

/// A rectangle read back from an SVG.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SvgRect {
    pub x: f64,
    pub y: f64,
    pub w: f64,
    pub h: f64,
}

fn attr(tag: &str, key: &str) -> Option<String> {
    let pat = format!(" {key}=\"");
    let i = tag.find(&pat)? + pat.len();
    let j = tag[i..].find('"')? + i;
    Some(tag[i..j].to_string())
}

fn unescape(s: &str) -> String {
    s.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&apos;", "'")
        .replace("&amp;", "&")
}

/// Draws a "no data" figure with a title, for inputs with nothing to show.
pub(crate) fn empty_figure(title: &str, note: &str, size: Size) -> Result<String> {
    use plotters::prelude::*;
    ensure_font();
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (size.width, size.height)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| PlotError::new(title, e))?;
        root.draw(&Text::new(
            title.to_string(),
            (20, 20),
            (FONT, TITLE_PT).into_font(),
        ))
        .map_err(|e| PlotError::new(title, e))?;
        root.draw(&Text::new(
            note.to_string(),
            (20, 70),
            (FONT, LABEL_PT).into_font(),
        ))
        .map_err(|e| PlotError::new(title, e))?;
        root.present().map_err(|e| PlotError::new(title, e))?;
    }
    Ok(svg)
}

#[cfg(test)]
mod tick_tests {
    use super::*;

    #[test]
    fn ticks_near_zero_read_zero() {
        assert_eq!(fmt_tick(-5.55e-17, 1.6), "0");
        assert_eq!(fmt_tick(0.2, 1.6), "0.200");
        assert_eq!(fmt_tick(1e-5, 1e-4), "1.00e-5");
    }
}
