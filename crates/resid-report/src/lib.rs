//! resid-report
