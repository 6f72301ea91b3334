//! `resid bench_codec` (being built).

/// Arguments of `resid bench_codec`.
#[derive(clap::Args)]
pub struct Args {}

pub fn run(_args: Args) -> anyhow::Result<()> {
    anyhow::bail!("'resid bench_codec' is not built yet")
}
