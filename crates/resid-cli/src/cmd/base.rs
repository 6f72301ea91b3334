//! `resid base` (being built).

/// Arguments of `resid base`.
#[derive(clap::Args)]
pub struct Args {}

pub fn run(_args: Args) -> anyhow::Result<()> {
    anyhow::bail!("'resid base' is not built yet")
}
