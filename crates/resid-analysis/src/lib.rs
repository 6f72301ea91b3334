//! resid-analysis
