//! `resid unpack` (being built).

/// Arguments of `resid unpack`.
#[derive(clap::Args)]
pub struct Args {}

pub fn run(_args: Args) -> anyhow::Result<()> {
    anyhow::bail!("'resid unpack' is not built yet")
}
