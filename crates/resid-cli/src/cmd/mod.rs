//! One module per subcommand: its arguments and a `run` that calls the libraries.

pub mod analyze;
pub mod base;
pub mod bench_codec;
pub mod completions;
#[cfg(feature = "lm")]
pub mod eval;
pub mod extract_lora;
pub mod inspect;
pub mod pack;
#[cfg(feature = "lm")]
pub mod repro;
pub mod synth;
#[cfg(feature = "lm")]
pub mod train;
pub mod unpack;
pub mod verify;
