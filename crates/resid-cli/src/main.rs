//! `resid`: measure and store what training adds to a model.
//!
//! A thin binary: argument parsing and progress here, all work in the
//! libraries (`resid` for analysis and storage, `resid-lm` for the small GPT).

use clap::{Parser, Subcommand};

mod cmd;
mod output;
mod progress;

/// Measure and store what training adds to a model: the residual W_trained - W_base.
#[derive(Parser)]
#[command(
    name = "resid",
    version,
    about = "Measure and store what training adds to a model: the residual W_trained - W_base.",
    arg_required_else_help = true
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

// Parsed once per run: the size of the largest Args does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum Command {
    /// Measure the structure of the residual between two checkpoints.
    Analyze(cmd::analyze::Args),
    /// Store the residual compactly (lossless, or at a chosen rate).
    Pack(cmd::pack::Args),
    /// Rebuild the trained checkpoint from the base and a residual file.
    Unpack(cmd::unpack::Args),
    /// Describe a residual file: format, settings, per-tensor encodings, sizes.
    Inspect(cmd::inspect::Args),
    /// Check a residual file (checksums, base fingerprints, rebuilt tensors) without writing.
    Verify(cmd::verify::Args),
    /// Rate-distortion table of resid's codec beside published delta methods.
    BenchCodec(cmd::bench_codec::Args),
    /// Generate a base/trained checkpoint pair with a real model's shapes.
    Synth(cmd::synth::Args),
    /// Derive a weight base for the small GPT from corpus statistics.
    Base(cmd::base::Args),
    /// Train the small GPT on a corpus.
    #[cfg(feature = "lm")]
    Train(cmd::train::Args),
    /// Held-out loss of a trained small GPT, beside count-model baselines.
    #[cfg(feature = "lm")]
    Eval(cmd::eval::Args),
    /// Reproduce the study end to end on the shipped corpus.
    #[cfg(feature = "lm")]
    Repro(cmd::repro::Args),
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Analyze(a) => cmd::analyze::run(a),
        Command::Pack(a) => cmd::pack::run(a),
        Command::Unpack(a) => cmd::unpack::run(a),
        Command::Inspect(a) => cmd::inspect::run(a),
        Command::Verify(a) => cmd::verify::run(a),
        Command::BenchCodec(a) => cmd::bench_codec::run(a),
        Command::Synth(a) => cmd::synth::run(a),
        Command::Base(a) => cmd::base::run(a),
        #[cfg(feature = "lm")]
        Command::Train(a) => cmd::train::run(a),
        #[cfg(feature = "lm")]
        Command::Eval(a) => cmd::eval::run(a),
        #[cfg(feature = "lm")]
        Command::Repro(a) => cmd::repro::run(a),
    };
    if let Err(e) = result {
        // One line: the file and the problem, then the chain of causes.
        let mut msg = format!("resid: error: {e}");
        for cause in e.chain().skip(1) {
            // Typed errors often include their source already: say it once.
            let c = cause.to_string();
            if !msg.contains(&c) {
                msg.push_str(&format!(": {c}"));
            }
        }
        eprintln!("{msg}");
        std::process::exit(1);
    }
}
