//! resid-report

pub mod analysis;
pub mod document;
pub mod html;
pub mod markdown;
pub mod plot;
pub mod rate;
pub mod several;
pub mod terminal;
