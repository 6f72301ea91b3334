//! The streaming driver: pairs tensors by name, then a few workers each hold
//! one tensor (a reused f32 buffer for R = trained - base, formed chunk by
//! chunk straight from both memory maps with its moments, and a scratch
//! buffer), measure it and send a record back, while a read-ahead thread
//! has the kernel load the next tensors into the page cache. Workers start a tensor only while the estimated working
//! memory of the tensors in flight stays within a budget (by default the
//! largest single tensor's need, at least 64 MiB), so peak memory follows
//! the largest tensor pair, not the model. Inner loops use the same rayon
//! pool of `threads` threads. Nulls depend only on shape, so they are
//! computed once per shape and shared.
//!
//! The subspace mode ([`analyze_subspace`]) runs the same loop with no base
//! (base = 0) and projects each trained tensor right after it is read, so
//! the streaming and memory budget are unchanged.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Condvar, Mutex};

use rayon::prelude::*;
use resid_io::{Checkpoint, IoError, Layout, TensorEntry};

use crate::aggregate::{
    aggregate, KmeansFigure, KmeansSample, Report, Sampling, TensorRecord, Unmatched,
};
use crate::entropy;
use crate::figures::{self, FigureOptions, Figures, PowerMaps};
use crate::interlayer::{self, Tracker};
use crate::kmeans;
use crate::lines;
use crate::lowfreq;
use crate::moments::{count_nonfinite, Moments};
use crate::null::{self, hash_str, mix};
use crate::participation;
use crate::residual;
use crate::scan::Scan;
use crate::subspace::{ProjSide, Subspace};
use crate::timings;
use crate::verdict::Margins;

/// Settings of an analysis.
#[derive(Clone, Debug)]
pub struct Options {
    /// Worker threads (0: all cores).
    pub threads: usize,
    /// Seed of every null and sample.
    pub seed: u64,
    pub layout: Layout,
    pub margins: Margins,
    /// Measure the finite entries of tensors holding NaN/Inf (counted in the
    /// record) instead of failing.
    pub allow_nonfinite: bool,
    /// Working-memory budget in bytes for tensors in flight (None: automatic).
    pub memory_budget: Option<usize>,
    /// Multiply-adds allowed for one exact Gram matrix before PR is sampled
    /// ([`participation::GRAM_BUDGET`]; at most that, as memory is planned for it).
    pub gram_budget: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            threads: 0,
            seed: 0,
            layout: Layout::builtin(),
            margins: Margins::default(),
            allow_nonfinite: false,
            memory_budget: None,
            gram_budget: participation::GRAM_BUDGET,
        }
    }
}

/// Why an analysis failed.
#[derive(Debug, thiserror::Error)]
pub enum AnalysisError {
    #[error(transparent)]
    Io(#[from] IoError),
    #[error("{path}: tensor '{tensor}' holds {nan} NaN and {inf} infinite values (pass --allow-nonfinite to measure its finite entries)")]
    NonFinite {
        path: String,
        tensor: String,
        nan: u64,
        inf: u64,
    },
    #[error("no tensor names in common between {base} and {trained}")]
    NothingInCommon { base: String, trained: String },
    #[error("thread pool: {0}")]
    Pool(String),
    #[error("{path}: no token embedding found (no 2-D float tensor the layout calls the token embedding, e.g. wte, embed_tokens, tok_emb; a --layout rule with role \"tok\" can name it)")]
    NoEmbedding { path: String },
    #[error("subspace: {0}")]
    Subspace(String),
}

impl resid_io::Classify for AnalysisError {
    fn class(&self) -> resid_io::ErrorClass {
        use resid_io::ErrorClass;
        match self {
            AnalysisError::Io(e) => e.class(),
            AnalysisError::Pool(_) => ErrorClass::Io,
            AnalysisError::NonFinite { .. }
            | AnalysisError::NothingInCommon { .. }
            | AnalysisError::NoEmbedding { .. }
            | AnalysisError::Subspace(_) => ErrorClass::BadInput,
        }
    }
}

/// Progress of a run, sent after each tensor.
#[derive(Clone, Debug)]
pub struct Progress<'a> {
    pub done: usize,
    pub total: usize,
    pub name: &'a str,
    pub bytes_done: u64,
    pub bytes_total: u64,
}

/// The 2-D view of a shape: rows = first dimension, cols = the rest.
pub fn matrix_view(shape: &[usize]) -> Option<(usize, usize)> {
    if shape.len() < 2 {
        return None;
    }
    let rows = shape[0];
    let cols: usize = shape[1..].iter().product();
    (rows >= 2 && cols >= 2).then_some((rows, cols))
}

/// Estimated working memory of one tensor's analysis, in bytes.
pub fn working_bytes(shape: &[usize]) -> usize {
    let n: usize = shape.iter().product();
    let mut floats = 2 * n;
    if let Some((rows, cols)) = matrix_view(shape) {
        let m = kmeans::rows_for(rows, cols);
        floats += participation::gram_floats(rows, cols) + 2 * rows * (cols / 8 + 1) + m * cols;
        if lowfreq::columns_first(rows, cols) {
            floats += 2 * cols * (rows / 8 + 1); // its y is cols x (rows/8 + 1)
        }
    }
    floats * 4
}

/// Null figures, computed once per key and shared by all tensors.
///
/// The value is computed with no lock held: a null runs rayon loops, and a
/// pool thread waiting inside one may pick up another tensor's job that asks
/// for the same key; blocking it on a lock (or a `OnceLock`) held further up
/// its own stack would deadlock. Two workers may so compute the same null
/// at once; it depends only on the key and seed, so either copy is the same.
struct NullCache<K, V = f64> {
    map: Mutex<HashMap<K, V>>,
}

impl<K: Eq + Hash + Clone, V: Clone> NullCache<K, V> {
    fn new() -> Self {
        NullCache {
            map: Mutex::new(HashMap::new()),
        }
    }
    fn get(&self, k: &K, f: impl FnOnce() -> V) -> V {
        if let Some(v) = self.map.lock().expect("null cache").get(k) {
            return v.clone();
        }
        let v = f();
        self.map
            .lock()
            .expect("null cache")
            .entry(k.clone())
            .or_insert(v)
            .clone()
    }
}

struct Nulls {
    entropy: NullCache<u64>,
    energy_rank: NullCache<(usize, usize, usize)>,
    lowfreq: NullCache<(usize, usize)>,
    kmeans: NullCache<(usize, usize), Vec<f64>>,
    seed: u64,
}

impl Nulls {
    /// 100-bin entropy of n Gaussian values (scale-free, so std 1), streamed twice.
    fn entropy(&self, n: u64) -> f64 {
        self.entropy.get(&n, || {
            let seed = mix(self.seed, hash_str(&format!("entropy-null:{n}")));
            let n = n as usize;
            let (lo, hi) = null::fold_stream(
                n,
                1.0,
                seed,
                (f64::INFINITY, f64::NEG_INFINITY),
                |(a, b), c| {
                    c.iter()
                        .fold((a, b), |(a, b), &v| (a.min(v as f64), b.max(v as f64)))
                },
                |x, y| (x.0.min(y.0), x.1.max(y.1)),
            );
            let scale = if hi > lo {
                entropy::STUDY_BINS as f64 / (hi - lo)
            } else {
                0.0
            };
            let h = null::fold_stream(
                n,
                1.0,
                seed,
                vec![0u64; entropy::STUDY_BINS],
                |mut acc, c| {
                    entropy::add_chunk(c, lo, scale, &mut acc);
                    acc
                },
                |mut a, b| {
                    a.iter_mut().zip(&b).for_each(|(x, y)| *x += y);
                    a
                },
            );
            entropy::entropy_bits(&h)
        })
    }

    /// Marchenko-Pastur energy rank at 90% (`which` 0) or 99% (1).
    fn energy_rank(&self, rows: usize, cols: usize, which: usize) -> f64 {
        self.energy_rank.get(&(rows, cols, which), || {
            participation::mp_energy_rank(rows, cols, [0.9, 0.99][which])
        })
    }

    fn lowfreq(&self, rows: usize, cols: usize) -> f64 {
        self.lowfreq.get(&(rows, cols), || {
            lowfreq::null_share(rows, cols, lowfreq::null_seed(self.seed, rows, cols))
        })
    }

    /// VE of an i.i.d. Gaussian m x d sample at every K of [`kmeans::KS`]
    /// (one shared seeding, as the residual's).
    fn kmeans(&self, m: usize, d: usize) -> Vec<f64> {
        self.kmeans.get(&(m, d), || {
            let seed = mix(self.seed, hash_str(&format!("kmeans-null:{m}x{d}")));
            let g = null::gaussian_vec(m * d, 1.0, seed);
            kmeans::variance_explained(&g, m, d, &kmeans::KS, mix(seed, 1))
        })
    }
}

struct Job<'a> {
    /// None in subspace mode (base = 0).
    base: Option<&'a TensorEntry>,
    trained: &'a TensorEntry,
    layer: Option<usize>,
    component: resid_io::Component,
    role: String,
    key: Option<String>,
    cost: usize,
    side: ProjSide,
    /// Keep this matrix's spectrum for the figures.
    spectrum: bool,
    /// The residual-stream side, for the subspace overlap (layered matrices).
    stream: Option<crate::overlap::StreamSide>,
}

/// The figure pass's shared state: the smoothest matrix so far and its maps
/// (computed only when a tensor beats it, so a handful of times a run).
struct FigureState {
    best: Mutex<Option<(f64, String, PowerMaps)>>,
}

impl FigureState {
    /// Whether (ratio, name) beats the best so far (higher ratio, then the
    /// lower name, as [`figures::smoother`]).
    fn beats(&self, ratio: f64, name: &str) -> bool {
        match &*self.best.lock().expect("figures") {
            None => true,
            Some((r, n, _)) => ratio
                .total_cmp(r)
                .then_with(|| n.as_str().cmp(name))
                .is_gt(),
        }
    }

    fn offer(&self, ratio: f64, maps: PowerMaps) {
        let mut b = self.best.lock().expect("figures");
        let better = match &*b {
            None => true,
            Some((r, n, _)) => ratio
                .total_cmp(r)
                .then_with(|| n.as_str().cmp(&maps.tensor))
                .is_gt(),
        };
        if better {
            *b = Some((ratio, maps.tensor.clone(), maps));
        }
    }
}

/// What one tensor gives the figures.
struct TensorFigures {
    counts: Vec<(u16, u64)>,
    spectrum: Option<figures::Spectrum>,
}

type Measured = (
    TensorRecord,
    Option<interlayer::Sample>,
    Option<TensorFigures>,
);

struct Worker {
    a: Vec<f32>,
    b: Vec<f32>,
}

#[allow(clippy::too_many_arguments)]
fn measure(
    job: &Job,
    base: Option<&Checkpoint>,
    trained: &Checkpoint,
    subspace: Option<&Subspace>,
    opts: &Options,
    nulls: &Nulls,
    want_sample: bool,
    figs: Option<&FigureState>,
    w: &mut Worker,
) -> Result<Measured, AnalysisError> {
    let base = base.zip(job.base);
    let formed = timings::time(0, || -> Result<Moments, AnalysisError> {
        let m = residual::form(base, (trained, job.trained), &mut w.a, &mut w.b)?;
        if let Some((bc, be)) = base {
            bc.release(be);
        }
        trained.release(job.trained);
        Ok(m)
    })?;
    let name = &job.trained.name;
    let view = matrix_view(&job.trained.shape);
    let tseed = mix(opts.seed, hash_str(name));
    // R against the base, while the decoded base is at hand (w.b is
    // scratch from here on).
    let decay = (!w.b.is_empty()).then(|| {
        let cols = view.map_or(w.a.len().max(1), |v| v.1);
        lines::decay(
            &lines::row_products(&w.a, &w.b, cols),
            view.map(|v| v.1),
            mix(tseed, 41),
        )
    });
    let mut notes: Vec<String> = Vec::new();
    let mut trained_finite = true;
    if formed.n < w.a.len() as u64 {
        // Rare: R holds NaN/Inf. Decode each side again to say which input
        // holds them (or that finite inputs overflowed in the subtraction).
        let inputs = base.into_iter().chain([(trained, job.trained)]);
        for (ck, e) in inputs {
            ck.read_f32(e, &mut w.b)?;
            ck.release(e);
            let (nan, inf) = count_nonfinite(&w.b);
            if std::ptr::eq(e, job.trained) {
                trained_finite = nan + inf == 0;
            }
            if nan + inf > 0 {
                if !opts.allow_nonfinite {
                    return Err(AnalysisError::NonFinite {
                        path: ck.file_of(e).display().to_string(),
                        tensor: name.clone(),
                        nan,
                        inf,
                    });
                }
                notes.push(format!(
                    "{} has {nan} NaN and {inf} Inf",
                    ck.file_of(e).display()
                ));
            }
        }
    }
    let a = &mut w.a;
    let b = &mut w.b;
    let mut projected = false;
    if let Some(s) = subspace.filter(|_| job.side != ProjSide::None) {
        if trained_finite {
            s.project(a, &job.trained.shape);
            projected = true;
        } else {
            // A NaN would spread along every row or column it touches.
            notes.push("not projected: the tensor holds NaN/Inf".into());
        }
    }
    let x: &[f32] = a;
    let (nan, inf) = if formed.n == x.len() as u64 && !projected {
        (0, 0)
    } else {
        count_nonfinite(x)
    };
    if nan + inf > 0 {
        notes.push(format!(
            "residual has {nan} NaN and {inf} Inf entries; measured over the {} finite ones, matrix measures skipped",
            x.len() as u64 - nan - inf
        ));
    }
    let m = if projected { Moments::of(x) } else { formed };
    let (mean, std) = (m.mean, m.std());
    let (entropy_bits, entropy_step_bits, sp) = timings::time(1, || {
        let scan = Scan::of(x, &m);
        let study = if m.n > 0 {
            scan.study_entropy()
        } else {
            f64::NAN
        };
        (study, scan.step_entropy(std), scan.sparsity(x, b))
    });
    let entropy_null_bits = if m.n > 0 {
        timings::time(2, || nulls.entropy(m.n))
    } else {
        f64::NAN
    };
    let mut sample = timings::time(8, || {
        want_sample.then(|| interlayer::Sample {
            values: interlayer::take_sample(x, opts.seed),
            basis: None,
        })
    });
    if let (Some(s), Some(side), Some((rows, cols))) = (sample.as_mut(), job.stream, view) {
        if m.n == x.len() as u64 && std > 0.0 {
            s.basis = Some(timings::time(8, || {
                // Each tensor its own start: on a flat spectrum the sketch
                // keeps a trace of it, which one shared start would turn
                // into overlap between independent layers.
                crate::overlap::top_basis(x, rows, cols, side, mix(tseed, 53))
            }));
        }
    }
    let mut tfig = figs.map(|_| TensorFigures {
        counts: timings::time(9, || figures::grid_counts(x)),
        spectrum: None,
    });
    let mut eigs = None;
    let mut rec = TensorRecord {
        name: name.clone(),
        layer: job.layer,
        component: job.component,
        role: job.role.clone(),
        shape: job.trained.shape.clone(),
        numel: x.len() as u64,
        finite: m.n,
        nan,
        inf,
        mean,
        std,
        min: m.min,
        max: m.max,
        kurtosis: m.kurtosis(),
        energy: m.energy(),
        entropy_bits,
        entropy_null_bits,
        entropy_step_bits,
        share_above_3std: sp.share_above_3std,
        top1pct_energy: sp.top1pct_energy,
        top10pct_energy: sp.top10pct_energy,
        hoyer: sp.hoyer,
        gini: sp.gini,
        matrix: view,
        pr: None,
        pr_null: None,
        stable_rank: None,
        stable_rank_null: None,
        energy_rank_90: None,
        energy_rank_99: None,
        energy_rank_90_null: None,
        energy_rank_99_null: None,
        row_shares: None,
        col_shares: None,
        decay: decay.filter(|_| !projected),
        lowfreq_share: None,
        lowfreq_null_share: None,
        lowfreq_ratio: None,
        kmeans_rows: None,
        kmeans: None,
        sampling: None,
        note: None,
        moments: m,
    };
    if let Some((rows, cols)) = view {
        if nan + inf > 0 {
            // noted above
        } else if std == 0.0 {
            notes.push("residual is constant (unchanged tensor); matrix measures skipped".into());
        } else {
            let (s, pr_sample) = timings::time(3, || {
                participation::spectral_budget(
                    x,
                    rows,
                    cols,
                    m.energy(),
                    tseed,
                    opts.gram_budget.min(participation::GRAM_BUDGET),
                )
            });
            if job.spectrum {
                eigs = s.eigenvalues;
            }
            rec.pr = Some(s.pr);
            rec.pr_null = Some(participation::mp_null(rows, cols));
            rec.stable_rank = Some(s.stable_rank);
            rec.stable_rank_null = Some(participation::stable_rank_null(rows, cols));
            rec.energy_rank_90 = Some(s.energy_rank_90);
            rec.energy_rank_99 = Some(s.energy_rank_99);
            // A sampled rank is the sample's (s vectors of the short side's
            // length), so its null is that of the sample's shape.
            let (nr, nc) = pr_sample.map_or((rows, cols), |ps| (ps.used, rows.min(cols)));
            rec.energy_rank_90_null = Some(nulls.energy_rank(nr, nc, 0));
            rec.energy_rank_99_null = Some(nulls.energy_rank(nr, nc, 1));
            let row_e: Vec<f64> = x
                .par_chunks(cols)
                .map(|r| r.iter().map(|&v| (v as f64) * (v as f64)).sum())
                .collect();
            rec.row_shares = Some(lines::shares(row_e, cols, mix(tseed, 43)));
            rec.col_shares = Some(lines::shares(
                lines::col_energies(x, cols),
                rows,
                mix(tseed, 47),
            ));
            let (share, null_share) = timings::time(4, || {
                (
                    lowfreq::share_of(x, rows, cols, mean, b),
                    nulls.lowfreq(rows, cols),
                )
            });
            rec.lowfreq_share = Some(share);
            rec.lowfreq_null_share = Some(null_share);
            rec.lowfreq_ratio = Some(share / null_share);
            if let Some(f) = figs {
                let ratio = share / null_share;
                if ratio.is_finite() && f.beats(ratio, name) {
                    let maps =
                        timings::time(9, || figures::power_maps(x, rows, cols, name, opts.seed));
                    f.offer(ratio, maps);
                }
            }
            let idx = kmeans::sample_rows(rows, kmeans::rows_for(rows, cols), mix(tseed, 17));
            let mrows = idx.len();
            let data: &[f32] = if mrows == rows {
                x
            } else {
                b.clear();
                for &r in &idx {
                    b.extend_from_slice(&x[r * cols..(r + 1) * cols]);
                }
                b
            };
            let ves = timings::time(5, || {
                kmeans::variance_explained(data, mrows, cols, &kmeans::KS, mix(tseed, 23))
            });
            // Same-covariance Gaussian null: the rows' spectrum, no types.
            let same_cov = timings::time(10, || {
                let g = kmeans::same_covariance_gaussian(data, mrows, cols, mix(tseed, 37));
                kmeans::variance_explained(&g, mrows, cols, &kmeans::KS, mix(tseed, 39))
            });
            // Shuffled null: the same entries at permuted positions.
            if mrows == rows {
                b.clear();
                b.extend_from_slice(x);
            }
            let shuf = timings::time(6, || {
                kmeans::shuffle(&mut b[..mrows * cols], mix(tseed, 29));
                kmeans::variance_explained(
                    &b[..mrows * cols],
                    mrows,
                    cols,
                    &kmeans::KS,
                    mix(tseed, 31),
                )
            });
            rec.kmeans_rows = Some(mrows);
            let restarts = kmeans::restarts_for(mrows, cols);
            let km_sample = (mrows < rows).then_some(KmeansSample {
                rows: mrows,
                of: rows,
                restarts,
            });
            if pr_sample.is_some() || km_sample.is_some() {
                rec.sampling = Some(Sampling {
                    pr: pr_sample,
                    kmeans: km_sample,
                });
            }
            let gauss = timings::time(7, || nulls.kmeans(mrows, cols));
            rec.kmeans = Some(
                kmeans::KS
                    .iter()
                    .enumerate()
                    .map(|(i, &k)| KmeansFigure {
                        k,
                        ve: ves[i],
                        ve_null: gauss[i],
                        ve_shuffled: shuf[i],
                        ve_same_cov: same_cov[i],
                    })
                    .collect(),
            );
        }
    }
    if !notes.is_empty() {
        rec.note = Some(notes.join("; "));
    }
    if let (Some(t), Some(e)) = (tfig.as_mut(), eigs) {
        t.spectrum = figures::spectrum_of(&rec, &e);
    }
    Ok((rec, sample, tfig))
}

/// Analyses the residual `trained - base`, calling `progress` after each tensor.
pub fn analyze(
    base: &Checkpoint,
    trained: &Checkpoint,
    opts: &Options,
    progress: &(dyn Fn(&Progress) + Sync),
) -> Result<Report, AnalysisError> {
    run(Some(base), trained, None, opts, None, progress).map(|r| r.0)
}

/// [`analyze`], also gathering the report's figure data in the same pass
/// (docs/MEASURES.md, "Figures"): no checkpoint is read twice.
pub fn analyze_with_figures(
    base: &Checkpoint,
    trained: &Checkpoint,
    opts: &Options,
    figs: &FigureOptions,
    progress: &(dyn Fn(&Progress) + Sync),
) -> Result<(Report, Figures), AnalysisError> {
    run(Some(base), trained, None, opts, Some(figs), progress)
        .map(|(r, f)| (r, f.unwrap_or_default()))
}

/// Analyses `trained` with span(U) of `subspace` projected out of every
/// matrix with a side of length d (base = 0: the "residual" is what the
/// embedding's top-K subspace does not explain). The report carries a
/// `subspace` record naming the side projected for each tensor.
pub fn analyze_subspace(
    trained: &Checkpoint,
    subspace: &Subspace,
    opts: &Options,
    progress: &(dyn Fn(&Progress) + Sync),
) -> Result<Report, AnalysisError> {
    run(None, trained, Some(subspace), opts, None, progress).map(|r| r.0)
}

/// [`analyze_subspace`] with the figure data, in the same pass.
pub fn analyze_subspace_with_figures(
    trained: &Checkpoint,
    subspace: &Subspace,
    opts: &Options,
    figs: &FigureOptions,
    progress: &(dyn Fn(&Progress) + Sync),
) -> Result<(Report, Figures), AnalysisError> {
    run(None, trained, Some(subspace), opts, Some(figs), progress)
        .map(|(r, f)| (r, f.unwrap_or_default()))
}

fn run(
    base: Option<&Checkpoint>,
    trained: &Checkpoint,
    subspace: Option<&Subspace>,
    opts: &Options,
    fig_opts: Option<&FigureOptions>,
    progress: &(dyn Fn(&Progress) + Sync),
) -> Result<(Report, Option<Figures>), AnalysisError> {
    let pairing = match base {
        Some(b) => resid_io::pair(b, trained)?,
        None => resid_io::Pairing::default(),
    };
    let pairs: Vec<(Option<usize>, usize)> = match base {
        Some(_) => pairing.pairs.iter().map(|&(b, t)| (Some(b), t)).collect(),
        None => (0..trained.tensors().len()).map(|t| (None, t)).collect(),
    };
    let mut jobs: Vec<Job> = Vec::new();
    let mut skipped: Vec<String> = Vec::new();
    for &(bi, ti) in &pairs {
        let t = &trained.tensors()[ti];
        let b = base.zip(bi).map(|(bc, bi)| (bc, &bc.tensors()[bi]));
        if t.dtype.is_none() || b.is_some_and(|(_, b)| b.dtype.is_none()) {
            let (ck, e) = match b {
                Some((bc, be)) if t.dtype.is_some() => (bc, be),
                _ => (trained, t),
            };
            // Integer and boolean buffers (position ids, masks) are not
            // weights: skipped and listed. Float formats resid cannot read
            // (FP8) are an error naming the dtype.
            let d = e.dtype_name.as_str();
            if d == "BOOL" || d.starts_with('I') || d.starts_with('U') {
                skipped.push(format!("{} ({d}: not a float tensor)", e.name));
                continue;
            }
            return Err(AnalysisError::Io(IoError::UnsupportedDtype {
                path: ck.file_of(e).to_path_buf(),
                tensor: e.name.clone(),
                dtype: e.dtype_name.clone(),
            }));
        }
        let meta = opts.layout.classify(&t.name, &t.shape);
        let key = meta
            .layer
            .map(|l| format!("{}|{:?}", interlayer::pattern(&t.name, l), t.shape));
        let side = subspace.map_or(ProjSide::None, |s| s.side(&t.shape));
        jobs.push(Job {
            base: b.map(|(_, e)| e),
            trained: t,
            layer: meta.layer,
            component: meta.component,
            role: meta.role,
            key,
            cost: working_bytes(&t.shape) + subspace.map_or(0, |s| s.working_bytes(&t.shape)),
            side,
            spectrum: false,
            stream: None,
        });
    }
    // The model width, and each layered matrix's residual-stream side.
    let layered = || jobs.iter().filter(|j| j.layer.is_some());
    let width = crate::overlap::model_width(
        layered()
            .filter(|j| j.component == resid_io::Component::Norm && j.trained.shape.len() == 1)
            .map(|j| j.trained.shape[0]),
        layered().filter_map(|j| matrix_view(&j.trained.shape)),
    );
    for j in &mut jobs {
        if let (Some(w), Some(_), Some((r, c))) = (width, j.layer, matrix_view(&j.trained.shape)) {
            j.stream = crate::overlap::stream_side(r, c, w, &j.role);
        }
    }
    let gram_budget = opts.gram_budget.min(participation::GRAM_BUDGET);
    let spectra = fig_opts.map_or_else(Vec::new, |f| {
        let cands: Vec<figures::Candidate> = jobs
            .iter()
            .map(|j| figures::Candidate {
                name: &j.trained.name,
                layer: j.layer,
                component: j.component,
                exact_matrix: matrix_view(&j.trained.shape)
                    .filter(|&(r, c)| participation::sample_size(r, c, gram_budget).is_none()),
            })
            .collect();
        figures::spectrum_choice(&cands, f.spectra)
    });
    for j in &mut jobs {
        j.spectrum = spectra.contains(&j.trained.name);
    }
    let fig_state = fig_opts.map(|_| FigureState {
        best: Mutex::new(None),
    });
    let mut figs = fig_opts.map(|_| Figures::default());
    if jobs.is_empty() {
        return Err(AnalysisError::NothingInCommon {
            base: base.map_or_else(
                || "(subspace mode)".to_string(),
                |b| b.path().display().to_string(),
            ),
            trained: trained.path().display().to_string(),
        });
    }
    let tracker = Tracker::new(jobs.iter().filter_map(|j| {
        j.key.clone().map(|k| {
            let kind = interlayer::ParamKind::of(&j.trained.shape);
            (k, j.role.clone(), kind, j.layer.expect("keyed"))
        })
    }));
    let threads = if opts.threads == 0 {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    } else {
        opts.threads
    };
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .map_err(|e| AnalysisError::Pool(e.to_string()))?;
    let max_cost = jobs.iter().map(|j| j.cost).max().unwrap_or(0);
    let budget = opts.memory_budget.unwrap_or(max_cost.max(64 << 20));
    let nulls = Nulls {
        entropy: NullCache::new(),
        energy_rank: NullCache::new(),
        lowfreq: NullCache::new(),
        kmeans: NullCache::new(),
        seed: opts.seed,
    };
    let bytes_total: u64 = jobs.iter().map(|j| j.trained.numel() as u64 * 4).sum();
    if let Some(b) = base {
        b.advise_sequential();
    }
    trained.advise_sequential();

    // Admission: (next job index, bytes in flight).
    let state = Mutex::new((0usize, 0usize));
    let cv = Condvar::new();
    let abort = AtomicBool::new(false);
    let (tx, rx) = mpsc::channel();
    let wants: Vec<bool> = jobs
        .iter()
        .map(|j| j.key.as_deref().is_some_and(|k| tracker.wants(k)))
        .collect();
    let mut records = Vec::with_capacity(jobs.len());
    let mut tracker = tracker;
    let mut first_err: Option<AnalysisError> = None;
    let ahead: Vec<resid_io::Ahead> = jobs
        .iter()
        .enumerate()
        .flat_map(|(pos, j)| {
            let b = base
                .zip(j.base)
                .map(|(ck, tensor)| resid_io::Ahead { pos, ck, tensor });
            b.into_iter().chain([resid_io::Ahead {
                pos,
                ck: trained,
                tensor: j.trained,
            }])
        })
        .collect();
    resid_io::with_readahead(&ahead, resid_io::readahead::DEFAULT_AHEAD, |ra| {
        std::thread::scope(|s| {
            for _ in 0..threads.min(jobs.len()) {
                let tx = tx.clone();
                let (jobs, state, cv, abort, pool, nulls, wants) =
                    (&jobs, &state, &cv, &abort, &pool, &nulls, &wants);
                let fig_state = fig_state.as_ref();
                s.spawn(move || {
                    let mut w = Worker {
                        a: Vec::new(),
                        b: Vec::new(),
                    };
                    loop {
                        let i = {
                            let mut st = state.lock().expect("state");
                            loop {
                                if abort.load(Ordering::Relaxed) || st.0 >= jobs.len() {
                                    return;
                                }
                                let c = jobs[st.0].cost;
                                if st.1 == 0 || st.1 + c <= budget {
                                    st.1 += c;
                                    st.0 += 1;
                                    ra.reached(st.0 - 1);
                                    break st.0 - 1;
                                }
                                st = cv.wait(st).expect("state");
                            }
                        };
                        let r = pool.install(|| {
                            measure(
                                &jobs[i], base, trained, subspace, opts, nulls, wants[i],
                                fig_state, &mut w,
                            )
                        });
                        // Buffers are reused (fresh pages cost a zeroing
                        // fault each), except after a tensor large enough
                        // that holding its buffer would crowd the budget.
                        if w.a.capacity() > (1 << 26) || w.b.capacity() > (1 << 26) {
                            w = Worker {
                                a: Vec::new(),
                                b: Vec::new(),
                            };
                        }
                        state.lock().expect("state").1 -= jobs[i].cost;
                        cv.notify_all();
                        if r.is_err() {
                            abort.store(true, Ordering::Relaxed);
                        }
                        if tx.send((i, r)).is_err() {
                            return;
                        }
                    }
                });
            }
            drop(tx);
            let mut done = 0;
            let mut bytes_done = 0u64;
            for (i, r) in rx {
                match r {
                    Ok((rec, sample, tfig)) => {
                        if let (Some(f), Some(t)) = (figs.as_mut(), tfig) {
                            f.add_values(jobs[i].component, &t.counts);
                            f.spectra.extend(t.spectrum);
                        }
                        if let (Some(s), Some(k), Some(l)) = (sample, &jobs[i].key, jobs[i].layer) {
                            timings::time(8, || tracker.add_sample(k, l, s));
                        }
                        done += 1;
                        bytes_done += jobs[i].trained.numel() as u64 * 4;
                        progress(&Progress {
                            done,
                            total: jobs.len(),
                            name: &rec.name,
                            bytes_done,
                            bytes_total,
                        });
                        records.push(rec);
                    }
                    Err(e) => {
                        abort.store(true, Ordering::Relaxed);
                        cv.notify_all();
                        first_err.get_or_insert(e);
                    }
                }
            }
        });
    });
    if let Some(e) = first_err {
        return Err(e);
    }
    let mut inter = timings::time(8, || tracker.finish());
    timings::report();
    // Report roles as the layout names them.
    for p in inter.pairs.iter_mut().chain(inter.first_last.iter_mut()) {
        if let Some((pat, _)) = p.tensor.split_once('|') {
            p.tensor = pat.to_string();
        }
    }
    inter.summarize();
    let base_name = match (base, subspace) {
        (Some(b), _) => b.path().display().to_string(),
        (None, Some(s)) => format!(
            "0 (subspace mode: top-{} directions of '{}' in {} projected out)",
            s.k, s.embedding, s.source
        ),
        (None, None) => "0".to_string(),
    };
    let projection = subspace.map(|s| {
        s.record(
            jobs.iter()
                .map(|j| (j.trained.name.clone(), j.side))
                .collect(),
        )
    });
    let mut report = aggregate(
        base_name,
        trained.path().display().to_string(),
        opts.seed,
        records,
        inter,
        opts.margins.clone(),
        Unmatched {
            only_base: pairing.only_base,
            only_trained: pairing.only_trained,
            skipped,
        },
    );
    report.subspace = projection;
    if let Some(f) = figs.as_mut() {
        f.order_spectra(&spectra);
        f.powermap = fig_state
            .and_then(|s| s.best.into_inner().expect("figures"))
            .map(|b| b.2);
    }
    Ok((report, figs))
}
