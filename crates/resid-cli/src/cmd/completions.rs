//! `resid completions`: a shell completion script on stdout.

/// Arguments of `resid completions`.
#[derive(clap::Args)]
pub struct Args {
    /// The shell: bash, zsh, fish, elvish or powershell.
    pub shell: clap_complete::Shell,
    /// Accepted for uniformity; the script is the only output.
    #[arg(short, long)]
    pub quiet: bool,
}

/// Writes the script for `args.shell`, e.g.
/// `resid completions bash > ~/.local/share/bash-completion/completions/resid`.
pub fn run(args: Args, cli: &mut clap::Command) -> anyhow::Result<()> {
    clap_complete::generate(args.shell, cli, "resid", &mut std::io::stdout());
    Ok(())
}
