//! The study, end to end: derive the corpus base, train from it and from a
//! random init (the control the study lacked), analyse both residuals, pack
//! them at several rates, run the needle test, fine-tune the corpus-base
//! model on a second corpus (the regime users bring), test the study's
//! implications (layer additivity, the information budget; layer-wise and
//! layer-parallel training on request), and write the report.
//!
//! Every step writes its result under the output folder and a `done` marker
//! last, so an interrupted run resumes where it stopped.

pub mod additivity;
pub mod budget;
pub mod needle;
pub mod peers;
pub mod pipeline;
pub mod report;
pub mod steps;
pub mod summary;

pub use pipeline::{run, ReproEvent, ReproOptions};

/// Errors of the reproduction, each naming the step and its cause.
#[derive(Debug, thiserror::Error)]
pub enum ReproError {
    /// A step failed; its cause is carried as text (unclassified, exit 1).
    #[error("step '{step}': {msg}")]
    Step { step: String, msg: String },
    /// An input the user gave (a corpus) cannot serve the run (bad input).
    #[error("step '{step}': {msg}")]
    Input { step: String, msg: String },
}

impl ReproError {
    pub(crate) fn at(step: &str, e: impl std::fmt::Display) -> Self {
        ReproError::Step {
            step: step.to_string(),
            msg: e.to_string(),
        }
    }

    pub(crate) fn input(step: &str, msg: impl std::fmt::Display) -> Self {
        ReproError::Input {
            step: step.to_string(),
            msg: msg.to_string(),
        }
    }

    /// The error's class, where the reproduction knows it.
    pub fn class(&self) -> Option<resid::io::ErrorClass> {
        match self {
            ReproError::Step { .. } => None,
            ReproError::Input { .. } => Some(resid::io::ErrorClass::BadInput),
        }
    }
}

pub type Result<T> = std::result::Result<T, ReproError>;
