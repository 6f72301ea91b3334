//! The study, end to end: derive the corpus base, train from it and from a
//! random init (the control the study lacked), analyse both residuals, pack
//! them at several rates, run the needle test, and write the report.
//!
//! Every step writes its result under the output folder and a `done` marker
//! last, so an interrupted run resumes where it stopped.

pub mod needle;
pub mod pipeline;
pub mod report;
pub mod steps;
pub mod summary;

pub use pipeline::{run, ReproEvent, ReproOptions};

/// Errors of the reproduction, each naming the step and its cause.
#[derive(Debug, thiserror::Error)]
pub enum ReproError {
    #[error("step '{step}': {msg}")]
    Step { step: String, msg: String },
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
