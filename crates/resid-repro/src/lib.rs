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
    /// A corpus the user gave cannot serve the run; the cause keeps its own
    /// class (bad input).
    #[error("step '{step}'")]
    Corpus {
        step: String,
        #[source]
        source: resid_corpus::corpus::CorpusError,
    },
}

impl ReproError {
    pub(crate) fn at(step: &str, e: impl std::fmt::Display) -> Self {
        ReproError::Step {
            step: step.to_string(),
            msg: e.to_string(),
        }
    }
}

pub type Result<T> = std::result::Result<T, ReproError>;
