//! The calls behind `resid.analyze`, `pack`, `unpack` and `inspect`: the
//! same library functions, options and defaults as the CLI's subcommands,
//! each returning the JSON the CLI's `--json` writes.

use std::path::{Path, PathBuf};

use pyo3::prelude::*;
use resid::analysis::{analyze as analyze_pair, analyze_subspace, Margins, Options, Subspace};
use resid::budget::{batch_bytes, memory_budget};
use resid::codec::{Mode, PackOptions};
use resid::io::{Checkpoint, ErrorClass, Layout};

use crate::blocking::{run, Shared};
use crate::errors::Failure;

/// Opens the checkpoint `arg` names: a path, or a repo id (`org/name[@rev]`)
/// found in the local Hugging Face cache, as the CLI resolves it.
pub fn open_checkpoint(arg: &Path) -> Result<Checkpoint, Failure> {
    Ok(Checkpoint::open(resid::io::hub::locate(arg)?.path())?)
}

/// Runs `f` in a rayon pool of `threads` threads (the global pool when None).
fn in_pool<T: Send>(
    threads: Option<usize>,
    f: impl FnOnce() -> Result<T, Failure> + Send,
) -> Result<T, Failure> {
    match threads {
        None => f(),
        Some(n) => rayon::ThreadPoolBuilder::new()
            .num_threads(n.max(1))
            .build()
            .map_err(|e| Failure::new(ErrorClass::Io, format!("thread pool: {e}")))?
            .install(f),
    }
}

fn to_json<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string_pretty(v).expect("reports serialise")
}

/// `resid analyze --json`: the report of the residual between `base` and
/// `trained`, or of `trained` with the top-`k` embedding subspace of
/// `subspace_of` projected out.
#[pyfunction]
#[pyo3(signature = (base, trained, subspace_of=None, k=8, seed=0, threads=None, max_memory=None, deny_nonfinite=false, progress=None))]
#[allow(clippy::too_many_arguments)]
pub fn analyze(
    py: Python<'_>,
    base: Option<PathBuf>,
    trained: PathBuf,
    subspace_of: Option<PathBuf>,
    k: usize,
    seed: u64,
    threads: Option<usize>,
    max_memory: Option<usize>,
    deny_nonfinite: bool,
    progress: Option<Bound<'_, PyAny>>,
) -> PyResult<String> {
    run(py, progress.as_ref(), move |sh: &Shared| {
        if base.is_some() == subspace_of.is_some() {
            return Err(Failure::new(
                ErrorClass::Usage,
                "give either a base or subspace_of, not both",
            ));
        }
        let layout = Layout::builtin();
        let base = base.as_deref().map(open_checkpoint).transpose()?;
        let trained = open_checkpoint(&trained)?;
        let subspace = match &subspace_of {
            Some(p) => Some(Subspace::from_checkpoint(&open_checkpoint(p)?, &layout, k)?),
            None => None,
        };
        let opts = Options {
            threads: threads.unwrap_or(0),
            seed,
            layout,
            margins: Margins::default(),
            allow_nonfinite: !deny_nonfinite,
            memory_budget: Some(memory_budget(max_memory)),
            ..Options::default()
        };
        let on = |p: &resid::analysis::Progress| sh.set(p.done as u64, p.total as u64, p.name);
        let report = match (&base, &subspace) {
            (Some(b), _) => analyze_pair(b, &trained, &opts, &on),
            (None, Some(s)) => analyze_subspace(&trained, s, &opts, &on),
            (None, None) => unreachable!("checked above"),
        }?;
        Ok(report.to_json())
    })
}

/// `resid analyze --json` with several `--trained`: one report per residual
/// of `base` and, per pair, cosine, sign and TIES agreement (the record
/// `resid::analysis::Several`).
#[pyfunction]
#[pyo3(signature = (base, trained, seed=0, threads=None, max_memory=None, deny_nonfinite=false, progress=None))]
#[allow(clippy::too_many_arguments)]
pub fn analyze_several(
    py: Python<'_>,
    base: PathBuf,
    trained: Vec<PathBuf>,
    seed: u64,
    threads: Option<usize>,
    max_memory: Option<usize>,
    deny_nonfinite: bool,
    progress: Option<Bound<'_, PyAny>>,
) -> PyResult<String> {
    run(py, progress.as_ref(), move |sh: &Shared| {
        let b = open_checkpoint(&base)?;
        let ts = trained
            .iter()
            .map(|t| open_checkpoint(t))
            .collect::<Result<Vec<_>, _>>()?;
        let opts = Options {
            threads: threads.unwrap_or(0),
            seed,
            layout: Layout::builtin(),
            margins: Margins::default(),
            allow_nonfinite: !deny_nonfinite,
            memory_budget: Some(memory_budget(max_memory)),
            ..Options::default()
        };
        let on = |p: &resid::analysis::Progress| sh.set(p.done as u64, p.total as u64, p.name);
        let residuals = ts
            .iter()
            .map(|t| analyze_pair(&b, t, &opts, &on))
            .collect::<Result<Vec<_>, _>>()?;
        let refs: Vec<&Checkpoint> = ts.iter().collect();
        let pairs = resid::analysis::compare::compare(&b, &refs, &opts.layout, &|d, n, name| {
            sh.set(d as u64, n as u64, name)
        })?;
        Ok(resid::analysis::Several {
            schema_version: resid::analysis::SCHEMA_VERSION,
            base: base.display().to_string(),
            residuals,
            pairs,
        }
        .to_json())
    })
}

/// `resid pack --json`: stores the residual of `trained` against `base` in
/// `out`. `mode` is lossless, bits_per_param, keep or max_error; `value`
/// its target (None for lossless).
#[pyfunction]
#[pyo3(signature = (base, trained, out, mode, value=None, seed=0, threads=None, max_memory=None, allow_nonfinite=false, progress=None))]
#[allow(clippy::too_many_arguments)]
pub fn pack(
    py: Python<'_>,
    base: PathBuf,
    trained: PathBuf,
    out: PathBuf,
    mode: &str,
    value: Option<f64>,
    seed: u64,
    threads: Option<usize>,
    max_memory: Option<usize>,
    allow_nonfinite: bool,
    progress: Option<Bound<'_, PyAny>>,
) -> PyResult<String> {
    let mode = match (mode, value) {
        ("lossless", None) => Mode::Lossless,
        ("bits_per_param", Some(x)) => Mode::BitsPerParam(x),
        ("keep", Some(x)) => Mode::Keep(x),
        ("max_error", Some(x)) => Mode::MaxError(x),
        (m, v) => {
            return Err(Failure::new(
                ErrorClass::Usage,
                format!("mode {m:?} with value {v:?}: choose lossless (no value), bits_per_param, keep or max_error (with one)"),
            )
            .into_pyerr(py))
        }
    };
    run(py, progress.as_ref(), move |sh: &Shared| {
        in_pool(threads, || {
            let base = open_checkpoint(&base)?;
            let trained = open_checkpoint(&trained)?;
            base.advise_sequential();
            trained.advise_sequential();
            let opts = PackOptions {
                mode,
                seed,
                allow_nonfinite,
                batch_bytes: batch_bytes(max_memory),
                ..Default::default()
            };
            sh.set_total(trained.data_bytes() as u64);
            let rep =
                resid::codec::pack_with_progress(&base, &trained, &out, &opts, &|n| sh.advance(n))
                    .map_err(|e| {
                        Failure::from(e).with_context(&format!("packing {}", out.display()))
                    })?;
            Ok(to_json(&rep))
        })
    })
}

/// `resid unpack`: rebuilds the trained checkpoint from `base` and the
/// residual `file` into `out`; the JSON of what was written.
#[pyfunction]
#[pyo3(signature = (base, file, out, threads=None, max_memory=None, progress=None))]
pub fn unpack(
    py: Python<'_>,
    base: PathBuf,
    file: PathBuf,
    out: PathBuf,
    threads: Option<usize>,
    max_memory: Option<usize>,
    progress: Option<Bound<'_, PyAny>>,
) -> PyResult<String> {
    run(py, progress.as_ref(), move |sh: &Shared| {
        in_pool(threads, || {
            let context = format!("unpacking {}", file.display());
            let base = open_checkpoint(&base)?;
            base.advise_sequential();
            // The header alone, for the progress total; unpack validates it again.
            let total = resid::codec::inspect(&file)
                .map_err(|e| Failure::from(e).with_context(&context))?
                .tensors
                .iter()
                .map(|t| t.shape.iter().product::<u64>() * t.dtype.size())
                .sum();
            sh.set_total(total);
            let rep = resid::codec::unpack_with_progress(
                &base,
                &file,
                &out,
                batch_bytes(max_memory),
                &|n| sh.advance(n),
            )
            .map_err(|e| Failure::from(e).with_context(&context))?;
            Ok(to_json(&rep))
        })
    })
}

/// `resid inspect --json`: the description of a residual file.
#[pyfunction]
pub fn inspect(py: Python<'_>, file: PathBuf) -> PyResult<String> {
    run(py, None, move |_| {
        Ok(to_json(&resid::codec::inspect(&file)?))
    })
}
