//! Checkpoint arguments: a path, or a repo id (`org/name[@revision]`) found
//! in the local Hugging Face cache (see `resid_io::hub`; a path that exists wins).

use std::path::Path;

use resid::io::hub::{locate, Location};
use resid::io::Checkpoint;

/// Opens the checkpoint `arg` names; says which snapshot a repo id found
/// (on stderr, unless `quiet`).
pub fn open(arg: &Path, quiet: bool) -> anyhow::Result<Checkpoint> {
    let loc = locate(arg)?;
    if let (Location::Hub(r), false) = (&loc, quiet) {
        eprintln!("{}: {} (commit {})", r.id, r.snapshot.display(), r.commit);
    }
    Ok(Checkpoint::open(loc.path())?)
}
