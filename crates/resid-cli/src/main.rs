//! `resid`: measure and store what training adds to a model.
//!
//! A thin binary: argument parsing and progress here, all work in the
//! libraries (`resid` for analysis and storage, `resid-lm` for the small GPT).

use clap::{CommandFactory, Parser, Subcommand};

mod cmd;
mod exit;
mod input;
mod output;
mod progress;

/// The conventions every subcommand follows, shown under `resid --help`.
const CONVENTIONS: &str = "\
Every command:
  -o, --out PATH   where a command writes (--output is the same flag)
  -q, --quiet      no progress bars or notes on stderr (results and errors still print)
  --json PATH      figures as JSON, written atomically; '-' puts only JSON on stdout
A checkpoint argument is a .safetensors file, a model folder, or a repo id
org/name[@revision] found offline in the Hugging Face cache (HF_HUB_CACHE,
else HF_HOME/hub, else ~/.cache/huggingface/hub); a path that exists wins.

Exit status:
  0  success
  1  an error resid does not classify (a bug: please report it)
  2  usage: a bad flag or value, or settings that contradict each other
  3  bad input: a malformed checkpoint, NaN where refused, shapes that do not pair
  4  wrong base or damaged file: a residual file that fails its checksums or was made against another base
  5  I/O: a missing file, a folder that cannot be written, a full disk";

/// Measure and store what training adds to a model: the residual W_trained - W_base.
#[derive(Parser)]
#[command(
    name = "resid",
    version,
    about = "Measure and store what training adds to a model: the residual W_trained - W_base.",
    after_help = CONVENTIONS,
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
    /// Write the best rank-r PEFT LoRA adapter for a full fine-tune, with its error per layer.
    ExtractLora(cmd::extract_lora::Args),
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
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions(cmd::completions::Args),
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Analyze(a) => cmd::analyze::run(a),
        Command::Pack(a) => cmd::pack::run(a),
        Command::Unpack(a) => cmd::unpack::run(a),
        Command::Inspect(a) => cmd::inspect::run(a),
        Command::Verify(a) => cmd::verify::run(a),
        Command::ExtractLora(a) => cmd::extract_lora::run(a),
        Command::BenchCodec(a) => cmd::bench_codec::run(a),
        Command::Synth(a) => cmd::synth::run(a),
        Command::Base(a) => cmd::base::run(a),
        #[cfg(feature = "lm")]
        Command::Train(a) => cmd::train::run(a),
        #[cfg(feature = "lm")]
        Command::Eval(a) => cmd::eval::run(a),
        #[cfg(feature = "lm")]
        Command::Repro(a) => cmd::repro::run(a),
        Command::Completions(a) => cmd::completions::run(a, &mut Cli::command()),
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
        std::process::exit(exit::code(&e));
    }
}
