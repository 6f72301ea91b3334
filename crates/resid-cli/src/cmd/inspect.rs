//! `resid inspect` (being built).

/// Arguments of `resid inspect`.
#[derive(clap::Args)]
pub struct Args {}

pub fn run(_args: Args) -> anyhow::Result<()> {
    anyhow::bail!("'resid inspect' is not built yet")
}
