//! `resid repro` (being built).

/// Arguments of `resid repro`.
#[derive(clap::Args)]
pub struct Args {}

pub fn run(_args: Args) -> anyhow::Result<()> {
    anyhow::bail!("'resid repro' is not built yet")
}
