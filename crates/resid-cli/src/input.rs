//! Checkpoint arguments: a path, or a repo id (`org/name[@revision]`) found
//! in the local Hugging Face cache (see `resid_io::hub`; a path that exists wins).

use std::path::Path;

use resid::io::hub::{locate, Location};
use resid::io::Checkpoint;

/// Opens the checkpoint `arg` names; says which snapshot a repo id found
/// (on stderr, unless `quiet`).
pub fn open(arg: &Path, quiet: bool) -> anyhow::Result<Checkpoint> {
    Ok(open_located(arg, quiet)?.0)
}

/// [`open`], with the repo id and commit a repo-id argument resolved to
/// (`None` for a path): what a residual file records as provenance.
pub fn open_located(
    arg: &Path,
    quiet: bool,
) -> anyhow::Result<(Checkpoint, Option<(String, String)>)> {
    let loc = locate(arg)?;
    if let (Location::Hub(r), false) = (&loc, quiet) {
        eprintln!("{}: {} (commit {})", r.id, r.snapshot.display(), r.commit);
    }
    let from = loc
        .provenance()
        .map(|(r, c)| (r.to_string(), c.to_string()));
    Ok((Checkpoint::open(loc.path())?, from))
}
