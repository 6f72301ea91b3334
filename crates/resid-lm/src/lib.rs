//! resid-lm
