//! PEFT LoRA adapters as residuals. [`Adapter`] reads an adapter folder as
//! the ΔW it adds to each module of its base ((alpha/r)·B·A, rsLoRA,
//! fan-in-fan-out, rank/alpha patterns, embeddings, modules_to_save; DoRA and
//! LoRA biases refused by name); [`apply::write_pair`] lays it out as a
//! base/trained pair for the analysis; [`extract()`] writes the best rank-r
//! adapter for a full fine-tune, with each layer's truncation error, its
//! factors oriented for `nn.Linear` or GPT-2's `Conv1D` ([`orientation`]).

pub mod adapter;
pub mod apply;
pub mod config;
pub mod error;
pub mod extract;
pub mod orientation;

pub use adapter::{Adapter, Module, ModuleKind};
pub use config::LoraConfig;
pub use error::{LoraError, Result};
pub use extract::{extract, ExtractOptions, ExtractReport, LayerError, LeftOut};
pub use orientation::WeightLayout;
