//! resid-codec
