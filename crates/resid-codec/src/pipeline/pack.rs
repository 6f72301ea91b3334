//! `pack`: base and trained checkpoints in, a residual file out (atomically).

use std::path::Path;

use rayon::prelude::*;
use serde::Serialize;

use resid_io::{Checkpoint, Dtype};

use super::{batches, release, Mode, PackOptions};
use crate::container::*;
use crate::encode::lossless::code_plain;
use crate::encode::lossless::{code_lossless, has_nonfinite, Lossless};
use crate::encode::lossy::{self, Lossy, TensorPlan};
use crate::encode::{Coded, CodedBlock, Pairing, RowSplit, TensorCoder};
use crate::error::{CodecError, Result, SettingsProblem};
use crate::rate;

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

fn shape_u64(s: &[usize]) -> Vec<u64> {
    s.iter().map(|&x| x as u64).collect()
}

fn tensor_seed(seed: u64, name: &str) -> u64 {
    seed ^ xxh3(name.as_bytes())
}

fn element_type(name: &str) -> ElementType {
    ElementType::parse(name).expect("resid-io validates every checkpoint dtype")
}

/// Checks the settings before any work.
fn check_options(opts: &PackOptions) -> Result<()> {
    let c = opts.chunk as u64;
    if !c.is_power_of_two() || !(MIN_CHUNK..=MAX_CHUNK).contains(&c) {
        return Err(CodecError::Settings(SettingsProblem::Chunk(opts.chunk)));
    }
    let bad = match opts.mode {
        Mode::BitsPerParam(x) if !(x.is_finite() && x > 0.0) => SettingsProblem::BitsPerParam(x),
        Mode::Keep(x) if !(x > 0.0 && x <= 1.0) => SettingsProblem::Keep(x),
        Mode::MaxError(x) if !(x > 0.0 && x < 1.0) => SettingsProblem::MaxError(x),
        _ => return Ok(()),
    };
    Err(CodecError::Settings(bad))
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

/// Pairs each trained tensor with the base tensor of its name and shape, or
/// of its name and a shape with another first dimension (a resized
/// vocabulary, FORMAT.md 2.6) when the dtypes match, or in a lossy pack are
/// both floats.
fn pairings(base: &Checkpoint, trained: &Checkpoint, lossy_mode: bool) -> Vec<Pairing> {
    let is_float = |d: &str| Dtype::parse(d).is_some();
    trained
        .tensors()
        .iter()
        .enumerate()
        .map(|(ti, t)| {
            let found = base.index_of(&t.name).map(|bi| (bi, &base.tensors()[bi]));
            let mut rows = None;
            let bi = found.and_then(|(bi, b)| {
                if b.shape == t.shape {
                    return Some(bi);
                }
                let resizable = !t.shape.is_empty()
                    && b.shape.len() == t.shape.len()
                    && b.shape[1..] == t.shape[1..]
                    && t.shape[0] >= 1
                    && b.shape[0] >= 1
                    && (b.dtype_name == t.dtype_name
                        || (lossy_mode && is_float(&b.dtype_name) && is_float(&t.dtype_name)));
                resizable.then(|| {
                    rows = Some(RowSplit {
                        base_rows: b.shape[0],
                        shared: b.shape[0].min(t.shape[0]),
                        row: t.shape[1..].iter().product(),
                    });
                    bi
                })
            });
            let lossy = lossy_mode
                && t.numel() > 0
                && is_float(&t.dtype_name)
                && bi.is_some_and(|bi| is_float(&base.tensors()[bi].dtype_name));
            Pairing {
                ti,
                bi,
                lossy,
                rows,
            }
        })
        .collect()
}

/// Whether either side of a pairing holds NaN or Inf.
fn nonfinite(base: &Checkpoint, trained: &Checkpoint, it: &Pairing) -> bool {
    let t = &trained.tensors()[it.ti];
    has_nonfinite(&t.dtype_name, trained.bytes(t))
        || it.bi.is_some_and(|bi| {
            let b = &base.tensors()[bi];
            has_nonfinite(&b.dtype_name, base.bytes(b))
        })
}

fn refuse_nonfinite(trained: &Checkpoint, it: &Pairing) -> CodecError {
    let t = &trained.tensors()[it.ti];
    CodecError::NonFinite {
        path: trained.file_of(t).into(),
        tensor: t.name.clone(),
    }
}

/// Lossy pass 1 (plans) and rate control: the step, the ranks, the plans
/// and the residual's squared norm.
struct LossyPlan {
    plans: Vec<Option<TensorPlan>>,
    choice: rate::Choice,
    resid_sumsq: f64,
}

/// What the header holds besides the tensor entries, known before any
/// tensor is coded: a lossy pack's dry runs build the whole header from it
/// and measure it (FORMAT.md 1.3: the compressed header is part of the file).
struct HeaderParts {
    trained: TrainedInfo,
    files: Vec<StoredFile>,
    provenance: Provenance,
}

/// A block as the header will record it, before its offset is known (the
/// offsets are laid out by [`lay_out`]).
fn record(b: &CodedBlock) -> Block {
    Block {
        offset: 0,
        len: b.bytes.len() as u64,
        xxh3: hex(xxh3(&b.bytes)),
        n: b.n,
        bits: b.bits.round(),
    }
}

/// Gives every block of `h` the offset the writer gives it: tensors in
/// order, each tensor's blocks in its numbering, then the stored files.
fn lay_out(h: &mut Header) -> u64 {
    let mut pos = PREAMBLE;
    let mut place = |b: &mut Block| {
        b.offset = pos;
        pos += b.len;
    };
    for t in &mut h.tensors {
        match &mut t.encoding {
            Encoding::Same => {}
            Encoding::Planes { blocks, .. } => blocks.iter_mut().for_each(&mut place),
            Encoding::Lossy {
                factors,
                remainder,
                escapes,
                ..
            } => factors
                .iter_mut()
                .chain(remainder.iter_mut())
                .chain(escapes.iter_mut())
                .for_each(&mut place),
        }
        if let Some(r) = &mut t.resize {
            r.added.iter_mut().for_each(&mut place);
        }
    }
    for f in &mut h.files {
        place(&mut f.block);
    }
    pos
}

/// Bytes of the file the header `h` describes: preamble, blocks, the
/// stored (compressed) header and the footer.
fn measured_file_bytes(h: &mut Header) -> u64 {
    let data_end = lay_out(h);
    let json = serde_json::to_vec(h).expect("header serialises");
    data_end + encode_header(h.version, &json).len() as u64 + FOOTER
}

/// The header entry of one tensor (FORMAT.md 2.3).
fn tensor_header(
    base: &Checkpoint,
    trained: &Checkpoint,
    it: &Pairing,
    hashes: &(Option<String>, String),
    encoding: Encoding,
    resize: Option<Resize>,
) -> TensorHeader {
    let t = &trained.tensors()[it.ti];
    let bit_exact = !matches!(encoding, Encoding::Lossy { .. });
    TensorHeader {
        name: t.name.clone(),
        dtype: element_type(&t.dtype_name),
        shape: shape_u64(&t.shape),
        shard: t.shard as u64,
        base: it.bi.map(|bi| {
            let b = &base.tensors()[bi];
            BaseFingerprint {
                dtype: element_type(&b.dtype_name),
                shape: shape_u64(&b.shape),
                xxh3: hashes.0.clone().expect("hashed with its base"),
            }
        }),
        trained_xxh3: bit_exact.then(|| hashes.1.clone()),
        encoding,
        resize,
    }
}

/// A coded tensor's encoding (FORMAT.md 3), each block placed by `put`
/// (written, or only recorded for a dry run) in the tensor's numbering.
fn encoding_of(
    coded: &Coded,
    shared_shape: &[usize],
    step: Option<f64>,
    put: &mut dyn FnMut(&[CodedBlock]) -> Result<Vec<Block>>,
) -> Result<Encoding> {
    Ok(match coded {
        Coded::Same => Encoding::Same,
        Coded::Planes { xor, blocks } => Encoding::Planes {
            xor: *xor,
            blocks: put(blocks)?,
        },
        Coded::Lossy(lc) => {
            let (rows, cols) = lossy::matrix_dims(shared_shape);
            Encoding::Lossy {
                rows: rows as u64,
                cols: cols as u64,
                rank: lc.rank as u64,
                factor_step: lc.factor_step,
                step: step.expect("lossy tensors come from a lossy plan"),
                // Nothing for a tensor that stores no remainder.
                recon: if lc.remainder.is_empty() {
                    Vec::new()
                } else {
                    lc.recon.clone()
                },
                factors: put(&lc.factors)?,
                remainder: put(&lc.remainder)?,
                escapes: put(lc.escapes.as_slice())?.pop(),
            }
        }
    })
}

fn record_all(bl: &[CodedBlock]) -> Result<Vec<Block>> {
    Ok(bl.iter().map(record).collect())
}

/// Both sides' fingerprints of a pairing (the trained one is recorded for
/// bit-exact tensors).
fn hashes(base: &Checkpoint, trained: &Checkpoint, it: &Pairing) -> (Option<String>, String) {
    let b = it.bi.map(|bi| hex(xxh3(base.bytes(&base.tensors()[bi]))));
    (b, hex(xxh3(trained.bytes(&trained.tensors()[it.ti]))))
}

#[allow(clippy::too_many_arguments)]
fn plan_lossy(
    base: &Checkpoint,
    trained: &Checkpoint,
    items: &[Pairing],
    opts: &PackOptions,
    target: rate::Target,
    parts: &HeaderParts,
) -> Result<LossyPlan> {
    let tt = trained.tensors();
    let lossy_idx: Vec<usize> = (0..items.len()).filter(|&i| items[i].lossy).collect();
    let sizes: Vec<usize> = lossy_idx
        .iter()
        .map(|&i| tt[items[i].ti].nbytes())
        .collect();
    let mut plans: Vec<Option<TensorPlan>> = (0..items.len()).map(|_| None).collect();
    let mut resid_sumsq = 0.0;
    // The SVDs run one per thread, each sequential: seeded and thread-independent.
    let prev = faer::get_global_parallelism();
    faer::set_global_parallelism(faer::Par::Seq);
    for r in batches(&sizes, opts.batch_bytes) {
        let got: Vec<(usize, TensorPlan)> = lossy_idx[r]
            .par_iter()
            .map(|&i| {
                let t = &tt[items[i].ti];
                let res = lossy::residual(base, trained, &items[i]);
                let (rows, cols) = lossy::matrix_dims(&items[i].shared_shape(trained));
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
    // What does not depend on the step: the lossless tensors (coded now, to
    // measure them) and the added rows of resized tensors; the model's
    // estimate of the header (the dry runs measure the real one).
    let hashes: Vec<(Option<String>, String)> = items
        .par_iter()
        .map(|it| {
            let h = hashes(base, trained, it);
            release(base, trained, it);
            h
        })
        .collect();
    let mut fixed: Vec<Option<TensorHeader>> = (0..items.len()).map(|_| None).collect();
    let mut resizes: Vec<Option<Resize>> = (0..items.len()).map(|_| None).collect();
    let mut fixed_bytes = (PREAMBLE + FOOTER) as f64 + rate::HEADER_FIXED_BYTES;
    for (i, it) in items.iter().enumerate() {
        if let Some(rs) = it.rows {
            let bl = code_plain(it.added(trained), &tt[it.ti].dtype_name, opts.chunk);
            fixed_bytes += bl.iter().map(|b| b.bytes.len()).sum::<usize>() as f64
                + rate::BLOCK_ENTRY_BYTES * bl.len() as f64;
            resizes[i] = Some(Resize {
                base_rows: rs.base_rows as u64,
                added: bl.iter().map(record).collect(),
            });
        }
        if it.lossy {
            fixed_bytes += rate::LOSSY_ENTRY_BYTES + tt[it.ti].name.len() as f64;
            continue;
        }
        let c = code_lossless(base, trained, std::slice::from_ref(it), opts.chunk)
            .pop()
            .expect("one tensor in, one out");
        let bl = c.blocks();
        fixed_bytes += bl.iter().map(|b| b.bytes.len()).sum::<usize>() as f64
            + rate::LOSSLESS_ENTRY_BYTES
            + rate::BLOCK_ENTRY_BYTES * bl.len() as f64
            + tt[it.ti].name.len() as f64;
        let enc = encoding_of(&c, &it.shared_shape(trained), None, &mut record_all)?;
        fixed[i] = Some(tensor_header(
            base,
            trained,
            it,
            &hashes[i],
            enc,
            resizes[i].clone(),
        ));
        release(base, trained, it);
    }
    let problem = rate::Problem {
        plans: &plans,
        params: tt.iter().map(|t| t.numel() as u64).sum(),
        resid_sumsq,
        fixed_bits: fixed_bytes * 8.0,
        dead_zone: opts.dead_zone,
        chunk: opts.chunk as u64,
        target,
    };
    // An exact dry run: every lossy tensor coded at `step`, nothing written,
    // and the whole file measured: its blocks and its compressed header.
    let dry = |step: f64, ranks: &[usize]| -> Result<rate::Estimate> {
        let mut e = rate::Estimate::default();
        let mut entries = fixed.clone();
        for r in batches(&sizes, opts.batch_bytes) {
            let got: Vec<Result<(usize, Encoding, f64, f64)>> = lossy_idx[r]
                .par_iter()
                .map(|&i| {
                    let mut res = lossy::residual(base, trained, &items[i]);
                    let lc = lossy::encode_tensor(
                        &mut res,
                        plans[i].as_ref().expect("lossy pairings have plans"),
                        ranks[i],
                        step,
                        opts.dead_zone,
                        opts.chunk,
                    );
                    release(base, trained, &items[i]);
                    let (dist, kept) = (lc.dist, lc.kept as f64);
                    let enc = encoding_of(
                        &Coded::Lossy(Box::new(lc)),
                        &items[i].shared_shape(trained),
                        Some(step),
                        &mut record_all,
                    )?;
                    Ok((i, enc, dist, kept))
                })
                .collect();
            for g in got {
                let (i, enc, d, k) = g?;
                e.dist += d;
                e.kept += k;
                entries[i] = Some(tensor_header(
                    base,
                    trained,
                    &items[i],
                    &hashes[i],
                    enc,
                    resizes[i].clone(),
                ));
            }
        }
        let tensors: Vec<TensorHeader> = entries.into_iter().flatten().collect();
        let mut h = lossy_header(opts, step, parts, tensors);
        e.total_bits = Some(measured_file_bytes(&mut h) as f64 * 8.0);
        Ok(e)
    };
    let choice = rate::control(&problem, &dry)?;
    Ok(LossyPlan {
        plans,
        choice,
        resid_sumsq,
    })
}

/// [`pack`] calling `progress(bytes)` as trained bytes are written.
pub fn pack_with_progress(
    base: &Checkpoint,
    trained: &Checkpoint,
    out: &Path,
    opts: &PackOptions,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<PackReport> {
    check_options(opts)?;
    let target = opts.mode.target();
    let tt = trained.tensors();
    let mut items = pairings(base, trained, target.is_some());
    // Each shard's tensors in data order: a shard kept with its original
    // header is rebuilt by writing them in this order (FORMAT.md 2.2).
    items.sort_by_key(|it| (tt[it.ti].shard, tt[it.ti].start));
    let trained_bytes: u64 = tt.iter().map(|t| t.nbytes() as u64).sum();
    let params: u64 = tt.iter().map(|t| t.numel() as u64).sum();

    // Non-finite values are refused unless allowed; allowed ones go
    // lossless. Lossy mode must know them before planning, so it scans the
    // whole model first; lossless mode scans each batch just before coding
    // it, so the bytes are read from disk once (a 7B pair does not fit the
    // page cache between two whole passes).
    if target.is_some() {
        let flags: Vec<bool> = items
            .par_iter()
            .map(|it| {
                let nf = nonfinite(base, trained, it);
                release(base, trained, it);
                nf
            })
            .collect();
        if let Some(i) = flags.iter().position(|&x| x) {
            if !opts.allow_nonfinite {
                return Err(refuse_nonfinite(trained, &items[i]));
            }
        }
        for (it, nf) in items.iter_mut().zip(flags) {
            it.lossy &= !nf;
        }
    }
    // The model folder's files: coded once here to measure them (lossy rate
    // control counts them), again when written (same bytes: zstd is
    // deterministic), so that no file is held in memory across the pack.
    let folder = if opts.files {
        super::folder::model_folder(trained)
    } else {
        None
    };
    let file_list = match &folder {
        Some(root) => super::folder::collect(root, &trained.shard_paths())?,
        None => Vec::new(),
    };
    let parts = HeaderParts {
        // A folder holding nothing but its shards rebuilds as before: a file.
        trained: trained_info(trained, target.is_none(), !file_list.is_empty())?,
        files: match target {
            Some(_) => file_list
                .iter()
                .map(|(rel, full)| Ok(code_file(rel, full)?.0))
                .collect::<Result<_>>()?,
            None => Vec::new(),
        },
        provenance: Provenance {
            resid_version: env!("CARGO_PKG_VERSION").into(),
            ..opts.provenance.clone()
        },
    };
    let planned = match target {
        Some(t) => Some(plan_lossy(base, trained, &items, opts, t, &parts)?),
        None => None,
    };
    let rate_settings = planned.as_ref().map(|p| rate_settings(opts, p.choice.step));
    let lossless_coder = Lossless { chunk: opts.chunk };

    // Pass 2: code and write, batch by batch.
    let mut w = ResidWriter::create(out)?;
    let mut headers: Vec<TensorHeader> = Vec::with_capacity(items.len());
    let mut reports: Vec<TensorReport> = Vec::with_capacity(items.len());
    let mut err_sumsq = 0.0;
    let mut w_sumsq = 0.0;
    let mut kept_total = 0u64;
    let mut entropy_bits_total = 0.0;
    let sizes: Vec<usize> = items.iter().map(|it| tt[it.ti].nbytes()).collect();
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
            if target.is_none() && !opts.allow_nonfinite {
                // The first bad tensor in file order, whatever the threads.
                if let Some(i) = r
                    .clone()
                    .into_par_iter()
                    .find_first(|&i| nonfinite(base, trained, &items[i]))
                {
                    return Err(refuse_nonfinite(trained, &items[i]));
                }
            }
            let batch = &items[r.clone()];
            let done = match &planned {
                Some(p) => Lossy {
                    plans: &p.plans,
                    ranks: &p.choice.ranks,
                    step: p.choice.step,
                    dead_zone: opts.dead_zone,
                    chunk: opts.chunk,
                    offset: r.start,
                }
                .code_batch(base, trained, batch),
                None => lossless_coder.code_batch(base, trained, batch),
            };
            // Fingerprints of both sides, tensors in parallel; the trained
            // one for every tensor stored bit-exact.
            let hashes: Vec<(Option<String>, String)> = batch
                .par_iter()
                .map(|it| hashes(base, trained, it))
                .collect();
            for ((it, c), hh) in batch.iter().zip(done).zip(hashes) {
                let c = c?;
                let t = &tt[it.ti];
                let mut put = |bl: &[CodedBlock]| -> Result<Vec<Block>> {
                    bl.iter()
                        .map(|b| w.write_block(&b.bytes, b.n, b.bits))
                        .collect()
                };
                let mut bits: f64 = c.coded.blocks().iter().map(|b| b.bits).sum();
                let mut bytes: u64 = c.coded.blocks().iter().map(|b| b.bytes.len() as u64).sum();
                err_sumsq += c.err_sumsq;
                w_sumsq += c.weight_sumsq;
                if let Coded::Lossy(lc) = &c.coded {
                    kept_total += lc.kept;
                }
                let step = planned.as_ref().map(|p| p.choice.step);
                let encoding = encoding_of(&c.coded, &it.shared_shape(trained), step, &mut put)?;
                // FORMAT.md 2.6: the rows beyond the base's, as they are.
                let resize = match it.rows {
                    Some(rs) => {
                        let added = code_plain(it.added(trained), &t.dtype_name, opts.chunk);
                        bytes += added.iter().map(|b| b.bytes.len() as u64).sum::<u64>();
                        bits += added.iter().map(|b| b.bits).sum::<f64>();
                        Some(Resize {
                            base_rows: rs.base_rows as u64,
                            added: put(&added)?,
                        })
                    }
                    None => None,
                };
                entropy_bits_total += bits;
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
                headers.push(tensor_header(base, trained, it, &hh, encoding, resize));
                release(base, trained, it);
                progress(t.nbytes() as u64);
            }
        }
        Ok(())
    })?;
    let coded_bytes = w.position() - PREAMBLE;
    let mut files = Vec::with_capacity(file_list.len());
    for (rel, full) in &file_list {
        let (mut rec, body) = code_file(rel, full)?;
        rec.block = w.write_block(&body, rec.size, 0.0)?;
        files.push(rec);
    }
    let resid_sumsq = planned.as_ref().map_or(0.0, |p| p.resid_sumsq);
    let ratio_or_zero = |a: f64, b: f64| if b > 0.0 { (a / b).sqrt() } else { 0.0 };
    let residual_rel_error = ratio_or_zero(err_sumsq, resid_sumsq);
    let weight_rel_error = ratio_or_zero(err_sumsq, w_sumsq);
    let kept_fraction = if target.is_some() {
        kept_total as f64 / params.max(1) as f64
    } else {
        1.0
    };
    let header = Header {
        format: FormatName::Resid,
        version: VERSION,
        mode: if target.is_some() {
            FileMode::Lossy
        } else {
            FileMode::Lossless
        },
        settings: Settings {
            chunk: opts.chunk as u64,
            seed: opts.seed,
            threads_independent: true,
            rate: rate_settings,
        },
        trained: parts.trained,
        tensors: headers,
        stats: Stats {
            params,
            trained_bytes,
            coded_bytes,
            entropy_bytes: entropy_bits_total / 8.0,
            residual_rel_error,
            weight_rel_error,
        },
        provenance: Some(parts.provenance),
        files,
    };
    let file_bytes = w.finish(&header)?;
    Ok(PackReport {
        mode: header.mode.name().into(),
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
        step: planned.as_ref().map(|p| p.choice.step),
        tensors: reports,
    })
}

/// zstd level of stored files: the small ones (configs, tokenizers) get the
/// strongest; large ones a fast level so that pack stays near read speed.
fn file_level(size: usize) -> i32 {
    if size <= 4 << 20 {
        19
    } else {
        3
    }
}

/// One of the model folder's non-tensor files as a zstd block (FORMAT.md
/// 2.4): its record (the block's offset not yet known) and the block body.
fn code_file(rel: &str, full: &Path) -> Result<(StoredFile, Vec<u8>)> {
    let bytes = std::fs::read(full).map_err(|e| CodecError::io(full, e))?;
    let mut body = vec![crate::rans::KIND_ZSTD];
    body.extend(zstd::bulk::compress(&bytes, file_level(bytes.len())).expect("zstd in memory"));
    let rec = StoredFile {
        path: rel.into(),
        size: bytes.len() as u64,
        sha256: crate::decode::files::sha256_hex(&bytes),
        block: record(&CodedBlock {
            bytes: body.clone(),
            n: bytes.len() as u64,
            bits: 0.0,
        }),
    };
    Ok((rec, body))
}

/// The header of a lossy pack at `step` holding `tensors` (a dry run's; the
/// stats are placeholders of a typical length).
fn lossy_header(
    opts: &PackOptions,
    step: f64,
    parts: &HeaderParts,
    tensors: Vec<TensorHeader>,
) -> Header {
    Header {
        format: FormatName::Resid,
        version: VERSION,
        mode: FileMode::Lossy,
        settings: Settings {
            chunk: opts.chunk as u64,
            seed: opts.seed,
            threads_independent: true,
            rate: Some(rate_settings(opts, step)),
        },
        trained: parts.trained.clone(),
        stats: Stats {
            params: 1 << 30,
            trained_bytes: 1 << 31,
            coded_bytes: 1 << 24,
            entropy_bytes: 12_345_678.901_234_5,
            residual_rel_error: 0.123_456_789_012_345_6,
            weight_rel_error: 0.001_234_567_890_123_4,
        },
        tensors,
        provenance: Some(parts.provenance.clone()),
        files: parts.files.clone(),
    }
}

/// The header's rate settings of a lossy pack (FORMAT.md 2.1).
fn rate_settings(opts: &PackOptions, step: f64) -> RateSettings {
    let (kind, target) = match opts.mode {
        Mode::BitsPerParam(x) => (RateKind::BitsPerParam, x),
        Mode::Keep(x) => (RateKind::Keep, x),
        Mode::MaxError(x) => (RateKind::MaxError, x),
        Mode::Lossless => unreachable!("lossless packs have no rate settings"),
    };
    RateSettings {
        kind,
        target,
        step,
        dead_zone: opts.dead_zone,
    }
}

/// A shard file's own safetensors header text, and (for lossless files) the
/// sha256 of the whole file, so that unpack rebuilds it byte-identically.
fn original_header(path: &Path, with_sha256: bool) -> Result<Option<OriginalHeader>> {
    use std::io::Read;
    let io = |e| CodecError::io(path, e);
    let mut f = std::fs::File::open(path).map_err(io)?;
    let mut len = [0u8; 8];
    f.read_exact(&mut len).map_err(io)?;
    let n = u64::from_le_bytes(len);
    let mut text = Vec::new();
    (&mut f).take(n).read_to_end(&mut text).map_err(io)?;
    let Ok(header) = String::from_utf8(text) else {
        return Ok(None);
    };
    let sha256 = if with_sha256 {
        use sha2::Digest;
        let mut h = sha2::Sha256::new();
        h.update(len);
        h.update(header.as_bytes());
        std::io::copy(&mut f, &mut h).map_err(io)?;
        Some(crate::decode::files::hex_bytes(&h.finalize()))
    } else {
        None
    };
    Ok(Some(OriginalHeader { header, sha256 }))
}

fn trained_info(trained: &Checkpoint, lossless: bool, folder: bool) -> Result<TrainedInfo> {
    let shards = trained
        .shard_paths()
        .iter()
        .enumerate()
        .map(|(i, p)| {
            Ok(ShardInfo {
                file: p
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_else(|| "model.safetensors".into()),
                metadata: trained.metadata(i).clone(),
                original: original_header(p, lossless)?,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(TrainedInfo {
        sharded: trained.is_sharded(),
        shards,
        folder,
    })
}
