//! Exit codes: the class of the first typed error in an error's chain
//! (`resid_io::ErrorClass`: 2 usage, 3 bad input, 4 wrong base or damaged
//! file, 5 I/O), 1 when nothing in the chain is classified. clap's own usage
//! errors exit 2 before any of this runs.

use resid::io::{Classify, ErrorClass};

/// A problem the CLI itself finds (a value clap cannot check alone).
#[derive(Debug, thiserror::Error)]
#[error("{msg}")]
pub struct CliError {
    pub class: ErrorClass,
    pub msg: String,
}

impl Classify for CliError {
    fn class(&self) -> ErrorClass {
        self.class
    }
}

/// A usage error (exit 2).
pub fn usage(msg: impl Into<String>) -> anyhow::Error {
    CliError {
        class: ErrorClass::Usage,
        msg: msg.into(),
    }
    .into()
}

/// A bad-input error (exit 3).
pub fn bad_input(msg: impl Into<String>) -> anyhow::Error {
    CliError {
        class: ErrorClass::BadInput,
        msg: msg.into(),
    }
    .into()
}

/// Like `anyhow::bail!`, for a usage error (exit 2).
macro_rules! usage_bail {
    ($($t:tt)*) => { return Err($crate::exit::usage(format!($($t)*))) };
}
pub(crate) use usage_bail;

/// The class of one error, when its type is one resid knows.
fn class_of(e: &(dyn std::error::Error + 'static)) -> Option<ErrorClass> {
    macro_rules! try_types {
        ($($t:ty),* $(,)?) => {
            $(if let Some(x) = e.downcast_ref::<$t>() { return Some(x.class()); })*
        };
    }
    try_types!(
        CliError,
        resid::io::IoError,
        resid::io::hub::HubError,
        resid::codec::error::CodecError,
        resid::analysis::AnalysisError,
        resid_lora::LoraError,
        resid::report::document::ReportError,
        resid::report::plot::PlotError,
        resid_corpus::corpus::CorpusError,
        resid_corpus::tokenizer::TokenizerError,
        resid_corpus::base::WriteError,
    );
    #[cfg(feature = "lm")]
    try_types!(resid_lm::LmError);
    if e.downcast_ref::<std::io::Error>().is_some() {
        return Some(ErrorClass::Io);
    }
    None
}

/// The process exit code for a failed command.
pub fn code(e: &anyhow::Error) -> i32 {
    e.chain()
        .find_map(class_of)
        .map_or(1, ErrorClass::exit_code)
}
