//! resid: measure and store what training adds to a model.
//!
//! A facade over the focused crates, so users depend on one library:
//! [`io`] reads and writes checkpoints, [`analysis`] measures a residual's
//! structure, [`codec`] stores it, [`report`] shows it. None of them pulls in
//! an ML framework; the small-LM reproduction lives in `resid-lm`. [`budget`]
//! is the memory budget the front ends (CLI, Python) choose when given none;
//! [`subset`] rebuilds only the tensors a caller names.

pub use resid_analysis as analysis;
pub use resid_codec as codec;
pub use resid_io as io;
pub use resid_report as report;

pub mod budget;
pub mod subset;
