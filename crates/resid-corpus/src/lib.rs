#![allow(
    clippy::needless_range_loop,
    clippy::too_many_arguments,
    clippy::type_complexity
)]
// Index loops read more clearly than iterator chains in the numeric code.
//! The reproduction's data side, free of any ML framework: the shipped
//! corpus, tokenizers, count-model baselines, the small GPT's shape and
//! tensor names, and the corpus-derived weight base (CSB).

pub mod base;
pub mod config;
pub mod corpus;
pub mod counts;
pub mod tokenizer;
