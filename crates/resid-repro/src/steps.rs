//! Resumable steps: a step's result is a JSON file written atomically once
//! the step has finished; a later run finds it and skips the work.

use std::path::Path;

use serde::{de::DeserializeOwned, Serialize};

use crate::{ReproError, Result};

/// Runs `work` unless `dir/name.json` holds its result already.
pub fn cached<T: Serialize + DeserializeOwned>(
    dir: &Path,
    name: &str,
    work: impl FnOnce() -> Result<T>,
) -> Result<(T, bool)> {
    let path = dir.join(format!("{name}.json"));
    if let Ok(text) = std::fs::read_to_string(&path) {
        if let Ok(v) = serde_json::from_str(&text) {
            return Ok((v, true));
        }
    }
    let v = work()?;
    let text = serde_json::to_string_pretty(&v).map_err(|e| ReproError::at(name, e))?;
    resid::io::atomic::write_atomic(&path, text.as_bytes()).map_err(|e| ReproError::at(name, e))?;
    Ok((v, false))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_finished_step_is_not_run_again() {
        let d = tempfile::tempdir().unwrap();
        let (a, fresh) = cached(d.path(), "s", || Ok(41u32)).unwrap();
        assert_eq!((a, fresh), (41, false));
        let (b, cached_) =
            cached(d.path(), "s", || -> Result<u32> { panic!("ran twice") }).unwrap();
        assert_eq!((b, cached_), (41, true));
    }
}
