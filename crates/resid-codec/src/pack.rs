//! `pack`, `unpack` and `inspect`: checkpoints in, residual files out, and back.
//! Tensors go through in batches (about `batch_bytes` of trained data, or one
//! larger tensor); within a batch, chunks (lossless) or tensors (lossy) are
//! coded in parallel and written in order, so memory stays bounded and the
//! bytes do not depend on the thread count.

use std::collections::BTreeMap;
use std::path::Path;

use rayon::prelude::*;
use serde::Serialize;

use resid_io::write::{SafetensorsWriter, TensorSpec};
use resid_io::{Checkpoint, Dtype, TensorEntry};

use crate::error::{CodecError, Result};
use crate::format::*;
use crate::lossless::{self, CodedBlock};
use crate::lossy::{self, TensorPlan};

/// What to keep.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Mode {
    Lossless,
    BitsPerParam(f64),
    Keep(f64),
    MaxError(f64),
}

#[derive(Clone, Debug)]
pub struct PackOptions {
    pub mode: Mode,
    pub seed: u64,
    /// Elements per chunk (power of two in [2^12, 2^24]).
    pub chunk: usize,
    pub allow_nonfinite: bool,
    /// Trained bytes per batch of tensors coded together.
    pub batch_bytes: usize,
    pub dead_zone: f64,
}

impl Default for PackOptions {
    fn default() -> Self {
        PackOptions {
            mode: Mode::Lossless,
            seed: 0,
            chunk: 1 << 18,
            allow_nonfinite: false,
            batch_bytes: 64 << 20,
            dead_zone: lossy::DEAD_ZONE,
        }
    }
}

/// Per-tensor line of a report.
#[derive(Clone, Debug, Serialize)]
pub struct TensorReport {
    pub name: String,
    pub dtype: String,
    pub shape: Vec<u64>,
    pub encoding: String,
    pub coded_bytes: u64,
    pub entropy_bytes: f64,
    pub bits_per_param: f64,
}

/// What a pack reached.
#[derive(Clone, Debug, Serialize)]
pub struct PackReport {
    pub mode: String,
    pub params: u64,
    pub trained_bytes: u64,
    pub file_bytes: u64,
    pub bits_per_param: f64,
    pub ratio: f64,
    /// Sum over blocks of the Shannon entropy of their symbols (bytes).
    pub entropy_bytes: f64,
    pub coded_bytes: u64,
    pub residual_rel_error: f64,
    pub weight_rel_error: f64,
    pub kept_fraction: f64,
    pub step: Option<f64>,
    pub tensors: Vec<TensorReport>,
}

struct Item {
    ti: usize,
    bi: Option<usize>,
    lossy: bool,
}

fn is_float(dtype: &str) -> bool {
    Dtype::parse(dtype).is_some()
}

fn shape_u64(s: &[usize]) -> Vec<u64> {
    s.iter().map(|&x| x as u64).collect()
}

fn matrix_dims(shape: &[usize]) -> (usize, usize) {
    match shape.len() {
        0 => (1, 1),
        1 => (1, shape[0]),
        _ => (shape[0], shape[1..].iter().product()),
    }
}

fn batches(sizes: &[usize], limit: usize) -> Vec<std::ops::Range<usize>> {
    let mut out = Vec::new();
    let mut s = 0;
    let mut acc = 0;
    for (i, &b) in sizes.iter().enumerate() {
        if i > s && acc + b > limit {
            out.push(s..i);
            s = i;
            acc = 0;
        }
        acc += b;
    }
    if s < sizes.len() {
        out.push(s..sizes.len());
    }
    out
}

/// Drops an item's mapped pages on both sides once read, so resident memory
/// follows the batch in flight rather than the bytes read so far.
fn release(base: &Checkpoint, trained: &Checkpoint, it: &Item) {
    trained.release(&trained.tensors()[it.ti]);
    if let Some(bi) = it.bi {
        base.release(&base.tensors()[bi]);
    }
}

fn tensor_seed(seed: u64, name: &str) -> u64 {
    seed ^ xxh3(name.as_bytes())
}

/// Packs `trained` against `base` into `out` (atomically).
pub fn pack(
    base: &Checkpoint,
    trained: &Checkpoint,
    out: &Path,
    opts: &PackOptions,
) -> Result<PackReport> {
    pack_with_progress(base, trained, out, opts, &|_| {})
}

/// [`pack`] calling `progress(bytes)` as trained bytes are written.
pub fn pack_with_progress(
    base: &Checkpoint,
    trained: &Checkpoint,
    out: &Path,
    opts: &PackOptions,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<PackReport> {
    if !opts.chunk.is_power_of_two() || !(1 << 12..=1 << 24).contains(&opts.chunk) {
        return Err(CodecError::Usage(format!(
            "chunk {} is not a power of two in [2^12, 2^24]",
            opts.chunk
        )));
    }
    let lossy_mode = opts.mode != Mode::Lossless;
    match opts.mode {
        Mode::BitsPerParam(x) if !(x.is_finite() && x > 0.0) => {
            return Err(CodecError::Usage(format!(
                "--bits-per-param {x} must be > 0"
            )))
        }
        Mode::Keep(x) if !(x > 0.0 && x <= 1.0) => {
            return Err(CodecError::Usage(format!("--keep {x} must be in (0, 1]")))
        }
        Mode::MaxError(x) if !(x > 0.0 && x < 1.0) => {
            return Err(CodecError::Usage(format!(
                "--max-error {x} must be in (0, 1)"
            )))
        }
        _ => {}
    }
    let tt = trained.tensors();
    let items: Vec<Item> = tt
        .iter()
        .enumerate()
        .map(|(ti, t)| {
            let bi = base
                .index_of(&t.name)
                .filter(|&bi| base.tensors()[bi].shape == t.shape);
            let lossy = lossy_mode
                && t.numel() > 0
                && is_float(&t.dtype_name)
                && bi.is_some_and(|bi| is_float(&base.tensors()[bi].dtype_name));
            Item { ti, bi, lossy }
        })
        .collect();
    let trained_bytes: u64 = tt.iter().map(|t| t.nbytes() as u64).sum();
    let params: u64 = tt.iter().map(|t| t.numel() as u64).sum();

    // Non-finite values are refused unless allowed; allowed ones go lossless.
    // Lossy mode must know them before planning, so it scans the whole
    // model first; lossless mode scans each batch just before coding it,
    // so the bytes are read from disk once (a 7B pair does not fit the
    // page cache between two whole passes).
    let scan = |it: &Item| -> bool {
        let t = &tt[it.ti];
        lossless::has_nonfinite(&t.dtype_name, trained.bytes(t))
            || it.bi.is_some_and(|bi| {
                let b = &base.tensors()[bi];
                lossless::has_nonfinite(&b.dtype_name, base.bytes(b))
            })
    };
    let refuse = |it: &Item| -> CodecError {
        let t = &tt[it.ti];
        CodecError::NonFinite {
            path: trained.file_of(t).to_path_buf(),
            tensor: t.name.clone(),
        }
    };
    let mut nonfinite = vec![false; items.len()];
    if lossy_mode {
        nonfinite.par_iter_mut().enumerate().for_each(|(i, nf)| {
            *nf = scan(&items[i]);
            release(base, trained, &items[i]);
        });
        if let Some(i) = nonfinite.iter().position(|&x| x) {
            if !opts.allow_nonfinite {
                return Err(refuse(&items[i]));
            }
        }
    }
    let items: Vec<Item> = items
        .into_iter()
        .zip(&nonfinite)
        .map(|(mut it, &nf)| {
            if nf {
                it.lossy = false;
            }
            it
        })
        .collect();

    // Lossy: pass 1 (plans) and rate control.
    let mut plans: Vec<Option<TensorPlan>> = (0..items.len()).map(|_| None).collect();
    let mut rate: Option<RateSettings> = None;
    let mut ranks: Vec<usize> = vec![0; items.len()];
    let mut resid_sumsq = 0.0;
    if lossy_mode {
        let lossy_idx: Vec<usize> = (0..items.len()).filter(|&i| items[i].lossy).collect();
        let sizes: Vec<usize> = lossy_idx
            .iter()
            .map(|&i| tt[items[i].ti].nbytes())
            .collect();
        let prev = faer::get_global_parallelism();
        faer::set_global_parallelism(faer::Par::Seq);
        for r in batches(&sizes, opts.batch_bytes) {
            let got: Vec<(usize, TensorPlan)> = lossy_idx[r]
                .par_iter()
                .map(|&i| {
                    let (res, t) = residual(base, trained, &items[i]);
                    let (rows, cols) = matrix_dims(&t.shape);
                    release(base, trained, &items[i]);
                    (
                        i,
                        lossy::plan_tensor(&res, rows, cols, tensor_seed(opts.seed, &t.name)),
                    )
                })
                .collect();
            for (i, p) in got {
                resid_sumsq += p.sumsq;
                plans[i] = Some(p);
            }
        }
        faer::set_global_parallelism(prev);
        let (step, chosen) =
            rate_control(base, trained, &items, &plans, opts, params, resid_sumsq)?;
        ranks = chosen;
        let (kind, target) = match opts.mode {
            Mode::BitsPerParam(x) => ("bits_per_param", x),
            Mode::Keep(x) => ("keep", x),
            Mode::MaxError(x) => ("max_error", x),
            Mode::Lossless => unreachable!(),
        };
        rate = Some(RateSettings {
            kind: kind.into(),
            target,
            step,
            dead_zone: opts.dead_zone,
        });
    }

    // Pass 2: code and write.
    let mut w = ResidWriter::create(out)?;
    let mut headers: Vec<TensorHeader> = Vec::with_capacity(items.len());
    let mut reports: Vec<TensorReport> = Vec::with_capacity(items.len());
    let mut err_sumsq = 0.0;
    let mut w_sumsq = 0.0;
    let mut kept_total = 0u64;
    let mut entropy_bits_total = 0.0;
    let sizes: Vec<usize> = items.iter().map(|it| tt[it.ti].nbytes()).collect();
    let step = rate.as_ref().map(|r| r.step);
    let coded = |i: usize| -> Result<Coded> {
        code_item(
            base,
            trained,
            &items[i],
            plans[i].as_ref(),
            ranks[i],
            step,
            opts,
        )
    };
    let all = batches(&sizes, opts.batch_bytes);
    // The read-ahead thread loads the next batch (both sides) from disk
    // while this one is coded.
    let ahead: Vec<resid_io::Ahead> = all
        .iter()
        .enumerate()
        .flat_map(|(pos, r)| {
            items[r.clone()].iter().flat_map(move |it| {
                let b = it.bi.map(|bi| resid_io::Ahead {
                    pos,
                    ck: base,
                    tensor: &base.tensors()[bi],
                });
                b.into_iter().chain([resid_io::Ahead {
                    pos,
                    ck: trained,
                    tensor: &tt[it.ti],
                }])
            })
        })
        .collect();
    resid_io::with_readahead(&ahead, 4 * opts.batch_bytes, |ra| -> Result<()> {
        for (k, r) in all.iter().cloned().enumerate() {
            ra.reached(k);
            if !lossy_mode && !opts.allow_nonfinite {
                // The first bad tensor in file order, whatever the threads.
                if let Some(i) = r.clone().into_par_iter().find_first(|&i| scan(&items[i])) {
                    return Err(refuse(&items[i]));
                }
            }
            let done: Vec<Result<Coded>> = if lossy_mode {
                r.clone().into_par_iter().map(coded).collect()
            } else {
                // Parallel over chunks of all tensors of the batch.
                lossless_batch(base, trained, &items[r.clone()], opts.chunk)
            };
            // Fingerprints of both sides, tensors in parallel (lossless mode:
            // every tensor is stored bit-exact and carries one).
            let hashes: Vec<(Option<String>, Option<String>)> = if lossy_mode {
                Vec::new()
            } else {
                r.clone()
                    .into_par_iter()
                    .map(|i| {
                        let it = &items[i];
                        let b = it.bi.map(|bi| hex(xxh3(base.bytes(&base.tensors()[bi]))));
                        (b, Some(hex(xxh3(trained.bytes(&tt[it.ti])))))
                    })
                    .collect()
            };
            for (j, (i, c)) in r.clone().zip(done).enumerate() {
                let c = c?;
                let it = &items[i];
                let t = &tt[it.ti];
                let (base_hash, trained_hash) = hashes.get(j).cloned().unwrap_or((None, None));
                let basefp = it.bi.map(|bi| {
                    let b = &base.tensors()[bi];
                    BaseFingerprint {
                        dtype: b.dtype_name.clone(),
                        shape: shape_u64(&b.shape),
                        xxh3: base_hash
                            .clone()
                            .unwrap_or_else(|| hex(xxh3(base.bytes(b)))),
                    }
                });
                let mut put = |bl: &[CodedBlock]| -> Result<Vec<Block>> {
                    bl.iter()
                        .map(|b| w.write_block(&b.bytes, b.n, b.bits))
                        .collect()
                };
                let mut bits = 0.0;
                let mut bytes = 0u64;
                for b in c.all_blocks() {
                    bits += b.bits;
                    bytes += b.bytes.len() as u64;
                }
                let encoding = match c {
                    Coded::Same => Encoding::Same,
                    Coded::Planes { xor, blocks } => Encoding::Planes {
                        xor,
                        blocks: put(&blocks)?,
                    },
                    Coded::Lossy(lc, e, ws) => {
                        err_sumsq += e;
                        w_sumsq += ws;
                        kept_total += lc.kept;
                        let (rows, cols) = matrix_dims(&t.shape);
                        Encoding::Lossy {
                            rows: rows as u64,
                            cols: cols as u64,
                            rank: lc.rank as u64,
                            factor_step: lc.factor_step,
                            step: step.expect("lossy has a step"),
                            recon: lc.recon.clone(),
                            factors: put(&lc.factors)?,
                            remainder: put(&lc.remainder)?,
                            escapes: match &lc.escapes {
                                Some(b) => Some(w.write_block(&b.bytes, b.n, b.bits)?),
                                None => None,
                            },
                        }
                    }
                };
                if !matches!(encoding, Encoding::Lossy { .. }) {
                    if let Some(d) = Dtype::parse(&t.dtype_name) {
                        if lossy_mode {
                            let mut v = Vec::new();
                            d.to_f32(trained.bytes(t), &mut v);
                            w_sumsq += v.iter().map(|&x| (x as f64) * (x as f64)).sum::<f64>();
                        }
                    }
                }
                entropy_bits_total += bits;
                let lossless_tensor = !matches!(encoding, Encoding::Lossy { .. });
                reports.push(TensorReport {
                    name: t.name.clone(),
                    dtype: t.dtype_name.clone(),
                    shape: shape_u64(&t.shape),
                    encoding: encoding.label(),
                    coded_bytes: bytes,
                    entropy_bytes: bits / 8.0,
                    bits_per_param: if t.numel() > 0 {
                        bytes as f64 * 8.0 / t.numel() as f64
                    } else {
                        0.0
                    },
                });
                headers.push(TensorHeader {
                    name: t.name.clone(),
                    dtype: t.dtype_name.clone(),
                    shape: shape_u64(&t.shape),
                    shard: t.shard as u64,
                    base: basefp,
                    trained_xxh3: lossless_tensor
                        .then(|| trained_hash.unwrap_or_else(|| hex(xxh3(trained.bytes(t))))),
                    encoding,
                });
                release(base, trained, it);
                progress(t.nbytes() as u64);
            }
        }
        Ok(())
    })?;
    let coded_bytes = w.position() - PREAMBLE;
    let residual_rel_error = if resid_sumsq > 0.0 {
        (err_sumsq / resid_sumsq).sqrt()
    } else {
        0.0
    };
    let weight_rel_error = if w_sumsq > 0.0 {
        (err_sumsq / w_sumsq).sqrt()
    } else {
        0.0
    };
    let kept_fraction = if lossy_mode {
        kept_total as f64 / params.max(1) as f64
    } else {
        1.0
    };
    let header = Header {
        format: "resid".into(),
        version: VERSION,
        mode: if lossy_mode { "lossy" } else { "lossless" }.into(),
        settings: Settings {
            chunk: opts.chunk as u64,
            seed: opts.seed,
            threads_independent: true,
            rate,
        },
        trained: trained_info(trained),
        tensors: headers,
        stats: Stats {
            params,
            trained_bytes,
            coded_bytes,
            entropy_bytes: entropy_bits_total / 8.0,
            residual_rel_error,
            weight_rel_error,
        },
    };
    let file_bytes = w.finish(&header)?;
    Ok(PackReport {
        mode: header.mode.clone(),
        params,
        trained_bytes,
        file_bytes,
        bits_per_param: file_bytes as f64 * 8.0 / params.max(1) as f64,
        ratio: trained_bytes as f64 / file_bytes as f64,
        entropy_bytes: entropy_bits_total / 8.0,
        coded_bytes,
        residual_rel_error,
        weight_rel_error,
        kept_fraction,
        step,
        tensors: reports,
    })
}

fn trained_info(trained: &Checkpoint) -> TrainedInfo {
    TrainedInfo {
        sharded: trained.is_sharded(),
        shards: trained
            .shard_paths()
            .iter()
            .enumerate()
            .map(|(i, p)| ShardInfo {
                file: p
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_else(|| "model.safetensors".into()),
                metadata: trained.metadata(i).clone(),
            })
            .collect(),
    }
}

/// The residual of a lossy item in f32 (trained - base).
fn residual<'a>(
    base: &Checkpoint,
    trained: &'a Checkpoint,
    it: &Item,
) -> (Vec<f32>, &'a TensorEntry) {
    let t = &trained.tensors()[it.ti];
    let b = &base.tensors()[it.bi.expect("lossy items have a base")];
    let mut tv = Vec::new();
    let mut bv = Vec::new();
    Dtype::parse(&t.dtype_name)
        .unwrap()
        .to_f32(trained.bytes(t), &mut tv);
    Dtype::parse(&b.dtype_name)
        .unwrap()
        .to_f32(base.bytes(b), &mut bv);
    for (x, y) in tv.iter_mut().zip(&bv) {
        *x -= y;
    }
    (tv, t)
}

enum Coded {
    Same,
    Planes {
        xor: bool,
        blocks: Vec<CodedBlock>,
    },
    /// Coded tensor, squared error of the rebuilt weights, squared norm of the trained weights.
    Lossy(Box<lossy::LossyCoded>, f64, f64),
}

impl Coded {
    fn all_blocks(&self) -> Vec<&CodedBlock> {
        match self {
            Coded::Same => vec![],
            Coded::Planes { blocks, .. } => blocks.iter().collect(),
            Coded::Lossy(lc, _, _) => lc
                .factors
                .iter()
                .chain(&lc.remainder)
                .chain(&lc.escapes)
                .collect(),
        }
    }
}

fn same_as_base(base: &Checkpoint, trained: &Checkpoint, it: &Item) -> Option<&'static str> {
    let t = &trained.tensors()[it.ti];
    let b = &base.tensors()[it.bi?];
    (b.dtype_name == t.dtype_name && base.bytes(b) == trained.bytes(t)).then_some("same")
}

fn xor_base<'a>(base: &'a Checkpoint, trained: &Checkpoint, it: &Item) -> Option<&'a [u8]> {
    let t = &trained.tensors()[it.ti];
    let b = &base.tensors()[it.bi?];
    (b.dtype_name == t.dtype_name).then(|| base.bytes(b))
}

fn lossless_batch(
    base: &Checkpoint,
    trained: &Checkpoint,
    items: &[Item],
    chunk: usize,
) -> Vec<Result<Coded>> {
    let tt = trained.tensors();
    let mut jobs: Vec<(usize, usize)> = Vec::new();
    for (k, it) in items.iter().enumerate() {
        let t = &tt[it.ti];
        for c in 0..t.numel().div_ceil(chunk) {
            jobs.push((k, c));
        }
    }
    let coded: Vec<Vec<CodedBlock>> = jobs
        .par_iter()
        .map(|&(k, c)| {
            let it = &items[k];
            let t = &tt[it.ti];
            let size = element_size(&t.dtype_name).unwrap_or(1) as usize;
            lossless::encode_chunk(
                trained.bytes(t),
                xor_base(base, trained, it),
                size,
                chunk,
                c,
            )
        })
        .collect();
    let mut out: Vec<Coded> = items
        .iter()
        .map(|it| Coded::Planes {
            xor: xor_base(base, trained, it).is_some(),
            blocks: Vec::new(),
        })
        .collect();
    for ((k, _), blocks) in jobs.into_iter().zip(coded) {
        if let Coded::Planes { blocks: b, .. } = &mut out[k] {
            b.extend(blocks);
        }
    }
    // A tensor whose XOR with its same-dtype base is zero in every plane
    // equals its base: stored as "same". Read off the coded blocks rather
    // than by comparing the bytes first, which cost a pass over both sides.
    for c in out.iter_mut() {
        if let Coded::Planes { xor: true, blocks } = c {
            if blocks
                .iter()
                .all(|b| b.bytes == [crate::rans::KIND_CONST, 0])
            {
                *c = Coded::Same;
            }
        }
    }
    out.into_iter().map(Ok).collect()
}

fn code_item(
    base: &Checkpoint,
    trained: &Checkpoint,
    it: &Item,
    plan: Option<&TensorPlan>,
    rank: usize,
    step: Option<f64>,
    opts: &PackOptions,
) -> Result<Coded> {
    if !it.lossy {
        let mut v = lossless_batch(base, trained, std::slice::from_ref(it), opts.chunk);
        return v.pop().expect("one item");
    }
    if same_as_base(base, trained, it).is_some() {
        return Ok(Coded::Same);
    }
    let plan = plan.expect("lossy items have plans");
    let (mut r, t) = residual(base, trained, it);
    let lc = lossy::encode_tensor(
        &mut r,
        plan,
        rank,
        step.unwrap(),
        opts.dead_zone,
        opts.chunk,
    );
    let (e, ws) = weight_error(base, trained, it, &r);
    let _ = t;
    Ok(Coded::Lossy(Box::new(lc), e, ws))
}

/// Squared error of the rebuilt weights (rounded to the trained dtype) and
/// squared norm of the trained weights.
fn weight_error(base: &Checkpoint, trained: &Checkpoint, it: &Item, rhat: &[f32]) -> (f64, f64) {
    let t = &trained.tensors()[it.ti];
    let b = &base.tensors()[it.bi.unwrap()];
    let d = Dtype::parse(&t.dtype_name).unwrap();
    let mut tv = Vec::new();
    let mut bv = Vec::new();
    d.to_f32(trained.bytes(t), &mut tv);
    Dtype::parse(&b.dtype_name)
        .unwrap()
        .to_f32(base.bytes(b), &mut bv);
    for (x, r) in bv.iter_mut().zip(rhat) {
        *x += r;
    }
    let mut bytes = Vec::new();
    d.from_f32(&bv, &mut bytes);
    d.to_f32(&bytes, &mut bv);
    let mut e = 0.0;
    let mut s = 0.0;
    for (x, y) in bv.iter().zip(&tv) {
        let dd = (*x - *y) as f64;
        e += dd * dd;
        s += (*y as f64) * (*y as f64);
    }
    (e, s)
}

type Metric = Box<dyn Fn(f64, f64, f64) -> f64>;
type Prepared<'a> = Result<(Option<&'a [u8]>, Vec<u8>)>;
type ChunkJob<'a> = (usize, usize, &'a mut [u8], Option<&'a [u8]>);

/// Finds the global step meeting the rate target: bisection on the
/// histogram estimate, corrected by exact dry runs. Returns the step and
/// each item's rank.
fn rate_control(
    base: &Checkpoint,
    trained: &Checkpoint,
    items: &[Item],
    plans: &[Option<TensorPlan>],
    opts: &PackOptions,
    params: u64,
    resid_sumsq: f64,
) -> Result<(f64, Vec<usize>)> {
    let z = opts.dead_zone;
    let chunk = opts.chunk as u64;
    let tt = trained.tensors();
    // Fixed cost: lossless tensors and the header.
    let fixed_items: Vec<usize> = (0..items.len()).filter(|&i| !items[i].lossy).collect();
    let mut fixed_bytes = (PREAMBLE + FOOTER) as f64 + 2048.0;
    for &i in &fixed_items {
        let c = code_item(base, trained, &items[i], None, 0, None, opts)?;
        let nb = c.all_blocks().len();
        fixed_bytes += c.all_blocks().iter().map(|b| b.bytes.len()).sum::<usize>() as f64;
        fixed_bytes += 400.0 + 120.0 * nb as f64 + tt[items[i].ti].name.len() as f64;
    }
    let lossy_idx: Vec<usize> = (0..items.len()).filter(|&i| items[i].lossy).collect();
    let mut per_tensor_header = 0.0;
    for &i in &lossy_idx {
        per_tensor_header += 700.0 + tt[items[i].ti].name.len() as f64;
    }
    // Estimate at `step`; with `fixed` candidate indices, or choosing them.
    let est_with = |step: f64, fixed: Option<&[usize]>| -> (f64, f64, f64, Vec<usize>) {
        let mut bits = 0.0;
        let mut dist = 0.0;
        let mut kept = 0.0;
        let mut cis = vec![0; items.len()];
        for &i in &lossy_idx {
            let p = plans[i].as_ref().unwrap();
            let (ci, b, d, kp) = match fixed {
                Some(f) => {
                    let (b, d, kp) = lossy::cost(p, f[i], step, z, chunk);
                    (f[i], b, d, kp)
                }
                None => lossy::choose(p, step, z, chunk),
            };
            cis[i] = ci;
            let k = p.cands[ci].0;
            let blocks = ((p.rows * p.cols) as u64).div_ceil(chunk) as f64
                + if k > 0 {
                    ((p.rows * k) as u64).div_ceil(chunk) as f64
                        + ((k * p.cols) as u64).div_ceil(chunk) as f64
                } else {
                    0.0
                };
            bits += b + blocks * 120.0 * 8.0;
            dist += d;
            kept += kp;
        }
        (bits, dist, kept, cis)
    };
    let est = |step: f64| est_with(step, None);
    // The metric to hit, larger = more bits; and the target.
    let n = params.max(1) as f64;
    let (target, metric): (f64, Metric) = match opts.mode {
        Mode::BitsPerParam(x) => (x, Box::new(move |bits: f64, _d: f64, _k: f64| bits / n)),
        Mode::Keep(x) => (x, Box::new(move |_b: f64, _d: f64, k: f64| k / n)),
        Mode::MaxError(e) => (
            // Larger error = fewer bits: use 1/error so the metric grows with bits.
            1.0 / e,
            Box::new(move |_b: f64, d: f64, _k: f64| {
                if resid_sumsq > 0.0 {
                    (resid_sumsq / d.max(1e-300)).sqrt()
                } else {
                    f64::INFINITY
                }
            }),
        ),
        Mode::Lossless => unreachable!(),
    };
    let fixed_bits = (fixed_bytes + per_tensor_header) * 8.0;
    let est_metric = |step: f64| {
        let (b, d, k, _) = est(step);
        metric(b + fixed_bits, d, k)
    };
    let amax = plans
        .iter()
        .flatten()
        .map(|p| p.sumsq / (p.rows * p.cols) as f64)
        .fold(0.0f64, f64::max)
        .sqrt()
        .max(1e-30);
    let solve = |t: f64| -> f64 {
        // metric decreases with the step; bisect log(step).
        let (mut lo, mut hi) = ((amax * 1e-7).ln(), (amax * 1e4).ln());
        for _ in 0..60 {
            let mid = 0.5 * (lo + hi);
            if est_metric(mid.exp()) > t {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        (0.5 * (lo + hi)).exp()
    };
    let dry = |step: f64, ranks: &[usize]| -> Result<(f64, f64, f64)> {
        let mut bytes = 0.0;
        let mut dist = 0.0;
        let mut kept = 0.0;
        let sizes: Vec<usize> = lossy_idx
            .iter()
            .map(|&i| tt[items[i].ti].nbytes())
            .collect();
        for r in batches(&sizes, opts.batch_bytes) {
            let got: Vec<(f64, f64, f64, usize)> = lossy_idx[r]
                .par_iter()
                .map(|&i| {
                    let (mut res, _) = residual(base, trained, &items[i]);
                    let lc = lossy::encode_tensor(
                        &mut res,
                        plans[i].as_ref().unwrap(),
                        ranks[i],
                        step,
                        z,
                        opts.chunk,
                    );
                    release(base, trained, &items[i]);
                    let nb = lc.factors.len() + lc.remainder.len() + lc.escapes.iter().count();
                    (lc.coded_bytes() as f64, lc.dist, lc.kept as f64, nb)
                })
                .collect();
            for (b, d, k, nb) in got {
                bytes += b + 120.0 * nb as f64;
                dist += d;
                kept += k;
            }
        }
        Ok((bytes * 8.0, dist, kept))
    };
    // Candidates chosen once, at the estimate's step; then the step alone is
    // corrected by exact dry runs (bits fall monotonically as it grows).
    let step0 = solve(target);
    let cis = est(step0).3;
    let to_ranks = |cis: &[usize]| -> Vec<usize> {
        (0..items.len())
            .map(|i| plans[i].as_ref().map_or(0, |p| p.cands[cis[i]].0))
            .collect()
    };
    let ranks = to_ranks(&cis);
    let est_fixed = |step: f64| {
        let (b, d, k, _) = est_with(step, Some(&cis));
        metric(b + fixed_bits, d, k)
    };
    let solve_fixed = |t: f64| -> f64 {
        let (mut lo, mut hi) = ((amax * 1e-7).ln(), (amax * 1e4).ln());
        for _ in 0..60 {
            let mid = 0.5 * (lo + hi);
            if est_fixed(mid.exp()) > t {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        (0.5 * (lo + hi)).exp()
    };
    let mut step = step0;
    let mut t_est = target;
    // Bracket: (step giving a metric above target, step giving one below).
    let mut above: Option<f64> = None;
    let mut below: Option<f64> = None;
    let mut best: Option<(f64, f64)> = None; // (|rel miss|, step)
    for it in 0..8 {
        let (b, d, k) = dry(step, &ranks)?;
        let actual = metric(b + fixed_bits, d, k);
        let miss = (actual - target) / target;
        if std::env::var_os("RESID_DEBUG_RATE").is_some() {
            eprintln!(
                "rate: step {step:.4e} est {:.4} actual {actual:.4} target {target}",
                est_fixed(step)
            );
        }
        let ok_side = !matches!(opts.mode, Mode::MaxError(_)) || actual >= target;
        if ok_side && best.is_none_or(|x| miss.abs() < x.0) {
            best = Some((miss.abs(), step));
        }
        if ok_side && miss.abs() < 0.015 {
            break;
        }
        if actual > target {
            above = Some(above.map_or(step, |a: f64| a.max(step)));
        } else {
            below = Some(below.map_or(step, |b: f64| b.min(step)));
        }
        step = match (above, below) {
            (Some(a), Some(b)) if it >= 1 => (a * b).sqrt(),
            _ => {
                if actual.is_finite() && actual > 0.0 {
                    t_est *= target / actual;
                } else {
                    t_est *= 2.0;
                }
                solve_fixed(t_est)
            }
        };
    }
    match best {
        Some((_, step)) => Ok((step, ranks)),
        None => Ok((step * 0.5, ranks)),
    }
}

/// What an unpack did.
#[derive(Clone, Debug, Serialize)]
pub struct UnpackReport {
    pub tensors: usize,
    pub bytes: u64,
    pub outputs: Vec<String>,
}

/// Rebuilds the trained checkpoint from `base` and the residual file at
/// `resid` into `out` (a file, or a folder when the trained side was sharded).
pub fn unpack(base: &Checkpoint, resid: &Path, out: &Path) -> Result<UnpackReport> {
    unpack_with_progress(base, resid, out, 64 << 20, &|_| {})
}

/// [`unpack`] with a batch size and a progress callback (bytes written).
pub fn unpack_with_progress(
    base: &Checkpoint,
    resid: &Path,
    out: &Path,
    batch_bytes: usize,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<UnpackReport> {
    let rf = ResidFile::open(resid)?;
    let h = &rf.header;
    let shards = &h.trained.shards;
    let mut paths = Vec::new();
    let mut created_dir = false;
    if h.trained.sharded {
        if !out.exists() {
            std::fs::create_dir_all(out).map_err(|e| CodecError::io(out, e))?;
            created_dir = true;
        }
        for s in shards {
            paths.push(out.join(&s.file));
        }
    } else {
        paths.push(out.to_path_buf());
    }
    let result = (|| -> Result<UnpackReport> {
        let mut writers: Vec<SafetensorsWriter> = Vec::new();
        for (si, s) in shards.iter().enumerate() {
            let specs = h
                .tensors
                .iter()
                .filter(|t| t.shard == si as u64)
                .map(|t| TensorSpec {
                    name: t.name.clone(),
                    dtype_name: t.dtype.clone(),
                    shape: t.shape.iter().map(|&x| x as usize).collect(),
                })
                .collect();
            let p = if h.trained.sharded {
                &paths[si]
            } else {
                &paths[0]
            };
            if !h.trained.sharded && si > 0 {
                return Err(CodecError::file(
                    resid,
                    "several shards in an unsharded file",
                ));
            }
            writers.push(SafetensorsWriter::create(p, specs, &s.metadata)?);
        }
        let sizes: Vec<usize> = h
            .tensors
            .iter()
            .map(|t| (t.numel() * element_size(&t.dtype).unwrap()) as usize)
            .collect();
        // Decoding batch k+1 (and reading its base from disk) overlaps
        // writing batch k on a writer thread; at most one decoded batch
        // waits between them.
        let all = batches(&sizes, batch_bytes);
        let (total, writers) = std::thread::scope(|s| -> Result<(u64, Vec<SafetensorsWriter>)> {
            let (tx, rx) =
                std::sync::mpsc::sync_channel::<(std::ops::Range<usize>, Vec<Result<Vec<u8>>>)>(1);
            let writer = s.spawn(move || -> Result<(u64, Vec<SafetensorsWriter>)> {
                let mut writers = writers;
                let mut total = 0u64;
                for (r, outs) in rx {
                    for (ti, o) in r.zip(outs) {
                        let bytes = o?;
                        let t = &h.tensors[ti];
                        writers[t.shard as usize].write_tensor(&t.name, &bytes)?;
                        if let Some(b) = base.get(&t.name) {
                            base.release(b);
                        }
                        total += bytes.len() as u64;
                        progress(bytes.len() as u64);
                    }
                }
                Ok((total, writers))
            });
            // The read-ahead thread loads the next batch's base tensors.
            let ahead: Vec<resid_io::Ahead> = all
                .iter()
                .enumerate()
                .flat_map(|(pos, r)| {
                    h.tensors[r.clone()].iter().filter_map(move |t| {
                        base.get(&t.name).map(|tensor| resid_io::Ahead {
                            pos,
                            ck: base,
                            tensor,
                        })
                    })
                })
                .collect();
            resid_io::with_readahead(&ahead, 2 * batch_bytes, |ra| {
                for (k, r) in all.iter().enumerate() {
                    ra.reached(k);
                    let outs = decode_batch(&rf, base, r.clone());
                    if tx.send((r.clone(), outs)).is_err() {
                        break; // the writer stopped on an error; join reports it
                    }
                }
            });
            drop(tx);
            writer.join().expect("writer thread")
        })?;
        for w in writers {
            w.finish()?;
        }
        if h.trained.sharded {
            let map: Vec<(String, String)> = h
                .tensors
                .iter()
                .map(|t| (t.name.clone(), shards[t.shard as usize].file.clone()))
                .collect();
            resid_io::write::write_index(
                &out.join("model.safetensors.index.json"),
                &map,
                total as usize,
            )?;
        }
        Ok(UnpackReport {
            tensors: h.tensors.len(),
            bytes: total,
            outputs: paths.iter().map(|p| p.display().to_string()).collect(),
        })
    })();
    if result.is_err() && created_dir {
        let _ = std::fs::remove_dir(out);
    }
    result
}

/// The base tensor a residual tensor was made against, fingerprint checked.
fn checked_base<'a>(
    rf: &ResidFile,
    base: &'a Checkpoint,
    t: &TensorHeader,
) -> Result<Option<&'a [u8]>> {
    let Some(fp) = &t.base else { return Ok(None) };
    let bad = |what: String| CodecError::tensor(&rf.path, &t.name, what);
    let Some(b) = base.get(&t.name) else {
        return Err(bad(format!(
            "the base {} has no such tensor; this residual was made against another base",
            base.path().display()
        )));
    };
    if b.dtype_name != fp.dtype || shape_u64(&b.shape) != fp.shape {
        return Err(bad(format!(
            "base tensor is {} {:?} but the residual was made against {} {:?} (another base)",
            b.dtype_name, b.shape, fp.dtype, fp.shape
        )));
    }
    let bytes = base.bytes(b);
    if hex(xxh3(bytes)) != fp.xxh3 {
        return Err(bad(format!(
            "fingerprint mismatch: the base tensor in {} differs from the one this residual was made against (another base?)",
            base.file_of(b).display()
        )));
    }
    Ok(Some(bytes))
}

/// Decodes one tensor to its raw bytes (checks included). For `resid repro`
/// and tests; unpack uses the batched path.
pub fn decode_tensor(rf: &ResidFile, base: &Checkpoint, ti: usize) -> Result<Vec<u8>> {
    decode_batch(rf, base, ti..ti + 1).pop().unwrap()
}

fn decode_batch(
    rf: &ResidFile,
    base: &Checkpoint,
    r: std::ops::Range<usize>,
) -> Vec<Result<Vec<u8>>> {
    let h = &rf.header;
    let chunk = h.settings.chunk as usize;
    // Per tensor: fingerprint, and the output buffer.
    let prep: Vec<Prepared> = h.tensors[r.clone()]
        .par_iter()
        .map(|t| {
            let b = checked_base(rf, base, t)?;
            let size = element_size(&t.dtype).unwrap() as usize;
            Ok((b, vec![0u8; t.numel() as usize * size]))
        })
        .collect();
    let mut bufs: Vec<Prepared> = prep;
    // Lossless chunks in parallel across the batch.
    let mut jobs: Vec<ChunkJob> = Vec::new();
    for (k, b) in bufs.iter_mut().enumerate() {
        let t = &h.tensors[r.start + k];
        if let (Ok((bb, buf)), Encoding::Planes { xor, .. }) = (b, &t.encoding) {
            let size = element_size(&t.dtype).unwrap() as usize;
            let bb = if *xor { *bb } else { None };
            for (c, sl) in buf.chunks_mut(chunk * size).enumerate() {
                let bs = bb.map(|x| &x[c * chunk * size..c * chunk * size + sl.len()]);
                jobs.push((k, c, sl, bs));
            }
        }
    }
    let errs: Vec<Option<(usize, CodecError)>> = jobs
        .into_par_iter()
        .map_init(Vec::new, |planes, (k, c, sl, bs)| {
            let t = &h.tensors[r.start + k];
            let Encoding::Planes { blocks, .. } = &t.encoding else {
                unreachable!()
            };
            let size = element_size(&t.dtype).unwrap() as usize;
            let mut raw = Vec::with_capacity(size);
            for p in 0..size {
                let bi = c * size + p;
                match rf.block(&t.name, &format!("block {bi}"), &blocks[bi]) {
                    Ok(x) => raw.push(x),
                    Err(e) => return Some((k, e)),
                }
            }
            lossless::decode_chunk(&raw, bs, size, sl, planes)
                .err()
                .map(|(p, e)| {
                    (
                        k,
                        CodecError::tensor(
                            &rf.path,
                            &t.name,
                            format!("block {}: {e}", c * size + p),
                        ),
                    )
                })
        })
        .collect();
    for (k, e) in errs.into_iter().flatten() {
        if bufs[k].is_ok() {
            bufs[k] = Err(e);
        }
    }
    bufs.into_par_iter()
        .enumerate()
        .map(|(k, b)| {
            let t = &h.tensors[r.start + k];
            let (bb, mut buf) = b?;
            match &t.encoding {
                Encoding::Same => buf.copy_from_slice(bb.expect("validated")),
                Encoding::Planes { .. } => {}
                Encoding::Lossy { .. } => {
                    buf = decode_lossy(rf, base, t)?;
                }
            }
            if let Some(want) = &t.trained_xxh3 {
                if &hex(xxh3(&buf)) != want {
                    return Err(CodecError::tensor(
                        &rf.path,
                        &t.name,
                        "rebuilt bytes fail the trained checksum (file altered, or another base)",
                    ));
                }
            }
            Ok(buf)
        })
        .collect()
}

fn decode_stream(
    rf: &ResidFile,
    t: &TensorHeader,
    blocks: &[Block],
    first: usize,
    esc: &[i64],
    next: &mut usize,
) -> Result<Vec<i32>> {
    let mut levels = Vec::new();
    let mut sym = Vec::new();
    let mut part = Vec::new();
    for (i, b) in blocks.iter().enumerate() {
        let what = format!("block {}", first + i);
        let bytes = rf.block(&t.name, &what, b)?;
        sym.clear();
        sym.resize(b.n as usize, 0);
        crate::rans::decode_block(bytes, &mut sym)
            .map_err(|e| CodecError::tensor(&rf.path, &t.name, format!("{what}: {e}")))?;
        lossy::symbols_to_levels(&sym, esc, next, &mut part)
            .map_err(|e| CodecError::tensor(&rf.path, &t.name, format!("{what}: {e}")))?;
        levels.extend_from_slice(&part);
    }
    Ok(levels)
}

fn decode_lossy(rf: &ResidFile, base: &Checkpoint, t: &TensorHeader) -> Result<Vec<u8>> {
    let Encoding::Lossy {
        rows,
        cols,
        rank,
        factor_step,
        step,
        recon,
        factors,
        remainder,
        escapes,
    } = &t.encoding
    else {
        unreachable!()
    };
    let z = rf
        .header
        .settings
        .rate
        .as_ref()
        .map(|r| r.dead_zone)
        .ok_or_else(|| CodecError::file(&rf.path, "lossy file without rate settings"))?;
    let (rows, cols, rank) = (*rows as usize, *cols as usize, *rank as usize);
    let esc = match escapes {
        Some(b) => {
            let nb = factors.len() + remainder.len();
            let bytes = rf.block(&t.name, &format!("block {nb} (escapes)"), b)?;
            lossy::decode_escapes(bytes, b.n)
                .map_err(|e| CodecError::tensor(&rf.path, &t.name, e))?
        }
        None => Vec::new(),
    };
    let mut next = 0;
    let fa = (rows * rank).div_ceil(rf.header.settings.chunk as usize);
    let qa = decode_stream(rf, t, &factors[..fa], 0, &esc, &mut next)?;
    let qb = decode_stream(rf, t, &factors[fa..], fa, &esc, &mut next)?;
    let rem = if remainder.is_empty() {
        None
    } else {
        Some(decode_stream(
            rf,
            t,
            remainder,
            factors.len(),
            &esc,
            &mut next,
        )?)
    };
    if next != esc.len() {
        return Err(CodecError::tensor(
            &rf.path,
            &t.name,
            "unused escaped values (corrupt)",
        ));
    }
    let r = lossy::rebuild(
        rows,
        cols,
        rank,
        *factor_step,
        &qa,
        &qb,
        rem.as_deref(),
        recon,
        *step,
        z,
    );
    let b = base.get(&t.name).expect("fingerprint checked");
    let mut bv = Vec::new();
    base.read_f32(b, &mut bv)?;
    for (x, y) in bv.iter_mut().zip(&r) {
        *x += y;
    }
    let mut out = Vec::new();
    Dtype::parse(&t.dtype)
        .expect("validated")
        .from_f32(&bv, &mut out);
    Ok(out)
}

/// `inspect`: the header plus per-tensor figures.
#[derive(Clone, Debug, Serialize)]
pub struct InspectReport {
    pub file: String,
    pub version: u32,
    pub mode: String,
    pub file_bytes: u64,
    pub settings: Settings,
    pub params: u64,
    pub bits_per_param: f64,
    pub entropy_bytes: f64,
    pub coded_bytes: u64,
    pub entropy_overhead: f64,
    pub residual_rel_error: f64,
    pub weight_rel_error: f64,
    pub sharded: bool,
    pub shards: Vec<String>,
    pub tensors: Vec<InspectTensor>,
}

#[derive(Clone, Debug, Serialize)]
pub struct InspectTensor {
    pub name: String,
    pub dtype: String,
    pub shape: Vec<u64>,
    pub encoding: String,
    pub blocks: usize,
    pub coded_bytes: u64,
    pub entropy_bytes: f64,
    pub bits_per_param: f64,
    pub base_xxh3: Option<String>,
    pub trained_xxh3: Option<String>,
}

/// Describes a residual file (header validated; block checksums not read).
pub fn inspect(path: &Path) -> Result<InspectReport> {
    let rf = ResidFile::open(path)?;
    let h = &rf.header;
    let mut tensors = Vec::new();
    let mut coded = 0u64;
    let mut ent = 0.0;
    for t in &h.tensors {
        let bl = t.encoding.blocks();
        let c: u64 = bl.iter().map(|b| b.len).sum();
        let e: f64 = bl.iter().map(|b| b.bits / 8.0).sum();
        coded += c;
        ent += e;
        tensors.push(InspectTensor {
            name: t.name.clone(),
            dtype: t.dtype.clone(),
            shape: t.shape.clone(),
            encoding: t.encoding.label(),
            blocks: bl.len(),
            coded_bytes: c,
            entropy_bytes: e,
            bits_per_param: if t.numel() > 0 {
                c as f64 * 8.0 / t.numel() as f64
            } else {
                0.0
            },
            base_xxh3: t.base.as_ref().map(|b| b.xxh3.clone()),
            trained_xxh3: t.trained_xxh3.clone(),
        });
    }
    let params: u64 = h.tensors.iter().map(|t| t.numel()).sum();
    Ok(InspectReport {
        file: path.display().to_string(),
        version: h.version,
        mode: h.mode.clone(),
        file_bytes: rf.file_len,
        settings: h.settings.clone(),
        params,
        bits_per_param: rf.file_len as f64 * 8.0 / params.max(1) as f64,
        entropy_bytes: ent,
        coded_bytes: coded,
        entropy_overhead: if ent > 0.0 {
            coded as f64 / ent - 1.0
        } else {
            0.0
        },
        residual_rel_error: h.stats.residual_rel_error,
        weight_rel_error: h.stats.weight_rel_error,
        sharded: h.trained.sharded,
        shards: h.trained.shards.iter().map(|s| s.file.clone()).collect(),
        tensors,
    })
}

/// Metadata of every shard, for callers that rebuild in memory.
pub fn shard_metadata(rf: &ResidFile) -> Vec<BTreeMap<String, String>> {
    rf.header
        .trained
        .shards
        .iter()
        .map(|s| s.metadata.clone())
        .collect()
}
