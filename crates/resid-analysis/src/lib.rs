//! Structure of a residual `R = W_trained - W_base`: one small module per
//! measure (definitions, nulls and margins in docs/MEASURES.md), each with
//! its null, a verdict on the hypotheses (low-rank, row/column-sparse,
//! decay-like, smooth, coordinated, sparse, clustered), aggregates by
//! component and layer, a streaming driver that holds one tensor pair per
//! worker, and the pairwise comparison of several residuals of one base.

pub mod aggregate;
pub mod compare;
pub mod driver;
pub mod entropy;
pub mod figures;
pub mod interlayer;
pub mod json;
pub mod kmeans;
pub mod lines;
pub mod lowfreq;
pub mod moments;
pub mod null;
pub mod overlap;
pub mod participation;
pub mod residual;
pub mod scan;
pub mod sparsity;
pub mod subspace;
pub mod timings;
pub mod verdict;

pub use aggregate::{
    ComponentSummary, Components, KmeansFigure, LayerSummary, Report, TensorRecord, Unmatched,
};
pub use compare::{PairFigures, PairRecord, PairTensor, Several};
pub use driver::{
    analyze, analyze_subspace, analyze_subspace_with_figures, analyze_with_figures, AnalysisError,
    Options, Progress,
};
pub use figures::{FigureOptions, Figures};
pub use interlayer::{Interlayer, KindCoordination, LayerPair, ParamKind, RoleCoordination};
pub use json::{ReportJsonError, SCHEMA_VERSION};
pub use moments::Moments;
pub use subspace::{ProjSide, Subspace, SubspaceRecord};
pub use verdict::{Hypothesis, Margins, Verdict};
