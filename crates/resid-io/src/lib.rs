//! resid-io (in progress)
