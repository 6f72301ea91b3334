//! `resid analyze` (being built).

/// Arguments of `resid analyze`.
#[derive(clap::Args)]
pub struct Args {}

pub fn run(_args: Args) -> anyhow::Result<()> {
    anyhow::bail!("'resid analyze' is not built yet")
}
