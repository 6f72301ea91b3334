//! Library errors as Python exceptions. The class follows
//! `resid_io::ErrorClass`, the one mapping the CLI's exit codes follow too;
//! the message is the one the CLI prints after `resid: error: `.

use pyo3::prelude::*;
use pyo3::types::PyType;
use resid::analysis::AnalysisError;
use resid::codec::CodecError;
use resid::io::hub::HubError;
use resid::io::{Classify, ErrorClass, IoError};

/// Why a call failed, carried from the worker thread back to the caller.
pub enum Failure {
    /// A library error: its class and its message.
    Error { class: ErrorClass, message: String },
    /// A Rust panic (a bug in resid), with its message.
    Panic(String),
}

impl Failure {
    /// A failure of `class` saying `message`.
    pub fn new(class: ErrorClass, message: impl Into<String>) -> Self {
        Failure::Error {
            class,
            message: message.into(),
        }
    }

    /// A library error of `class`, its message followed by its causes.
    pub fn from_error(e: &(dyn std::error::Error + 'static), class: ErrorClass) -> Self {
        Failure::new(class, chain(e))
    }

    /// The CLI's context in front of the message (`packing out.resid: ...`).
    pub fn with_context(self, context: &str) -> Self {
        match self {
            Failure::Error { class, message } => Failure::Error {
                class,
                message: format!("{context}: {message}"),
            },
            p => p,
        }
    }

    /// The Python exception: a class of `resid.errors`.
    pub fn into_pyerr(self, py: Python<'_>) -> PyErr {
        let (name, message) = match self {
            Failure::Error { class, message } => (class_name(class), message),
            Failure::Panic(m) => (
                "InternalError",
                format!("internal error (a bug in resid; please report it): {m}"),
            ),
        };
        match py
            .import("resid.errors")
            .and_then(|m| m.getattr(name))
            .and_then(|c| c.cast_into::<PyType>().map_err(PyErr::from))
        {
            Ok(cls) => PyErr::from_type(cls, message),
            Err(e) => e,
        }
    }
}

/// The exception class of `resid.errors` for an [`ErrorClass`].
pub fn class_name(class: ErrorClass) -> &'static str {
    match class {
        ErrorClass::Usage => "UsageError",
        ErrorClass::BadInput => "BadInputError",
        ErrorClass::Mismatch => "MismatchError",
        ErrorClass::Io => "ResidIOError",
    }
}

/// `e` and its causes on one line, each said once (as the CLI prints them).
fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut msg = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let s = c.to_string();
        if !msg.contains(&s) {
            msg.push_str(": ");
            msg.push_str(&s);
        }
        cause = c.source();
    }
    msg
}

/// Every library error type classifies itself (`resid_io::Classify`).
macro_rules! from_classified {
    ($($t:ty),* $(,)?) => {$(
        impl From<$t> for Failure {
            fn from(e: $t) -> Self {
                let class = e.class();
                Failure::from_error(&e, class)
            }
        }
    )*};
}
from_classified!(IoError, HubError, CodecError, AnalysisError);
