//! `resid pack` (being built).

/// Arguments of `resid pack`.
#[derive(clap::Args)]
pub struct Args {}

pub fn run(_args: Args) -> anyhow::Result<()> {
    anyhow::bail!("'resid pack' is not built yet")
}
