//! Forms `R = trained - base` in f32 in one pass over memory: each chunk is
//! decoded from both memory maps, subtracted, and its moments taken while it
//! is in cache, instead of converting both sides whole and walking R again
//! (reading and converting alone was 31% of analyze's time at 7B).

use rayon::prelude::*;
use resid_io::{Checkpoint, Dtype, IoError, TensorEntry};

use crate::moments::{Moments, CHUNK};

/// Decodes `trained - base` (or `trained` alone) into `out` (resized) and
/// returns the moments of its finite entries, merged chunk by chunk in order.
/// With a base, `base_out` receives the decoded base (the decay measures
/// compare R with it); without one it is emptied.
pub fn form(
    base: Option<(&Checkpoint, &TensorEntry)>,
    trained: (&Checkpoint, &TensorEntry),
    out: &mut Vec<f32>,
    base_out: &mut Vec<f32>,
) -> Result<Moments, IoError> {
    let (tc, te) = trained;
    let td = dtype_of(tc, te)?;
    let bd = match base {
        Some((bc, be)) => Some((dtype_of(bc, be)?, bc.bytes(be))),
        None => None,
    };
    let tb = tc.bytes(te);
    let n = te.numel();
    out.clear();
    out.resize(n, 0.0);
    base_out.clear();
    let Some((bdt, bytes)) = bd else {
        let parts: Vec<Moments> = out
            .par_chunks_mut(CHUNK)
            .enumerate()
            .map(|(ci, o)| {
                td.decode_into(&tb[ci * CHUNK * td.size()..], o);
                Moments::of_chunk(o)
            })
            .collect();
        return Ok(parts.iter().fold(Moments::default(), |a, b| a.merge(b)));
    };
    base_out.resize(n, 0.0);
    let parts: Vec<Moments> = out
        .par_chunks_mut(CHUNK)
        .zip(base_out.par_chunks_mut(CHUNK))
        .enumerate()
        .map(|(ci, (o, w))| {
            let s = ci * CHUNK;
            if bdt == Dtype::BF16 && td == Dtype::BF16 {
                // bf16 on both sides (the common case at scale): one fused
                // loop of shifts and subtractions, which vectorises.
                let bf = |c: &[u8]| f32::from_bits((u16::from_le_bytes([c[0], c[1]]) as u32) << 16);
                let (t, b) = (
                    &tb[2 * s..2 * (s + o.len())],
                    &bytes[2 * s..2 * (s + o.len())],
                );
                for (((r, w), t), b) in o
                    .iter_mut()
                    .zip(w.iter_mut())
                    .zip(t.chunks_exact(2))
                    .zip(b.chunks_exact(2))
                {
                    *w = bf(b);
                    *r = bf(t) - *w;
                }
            } else {
                td.decode_into(&tb[s * td.size()..], o);
                bdt.decode_into(&bytes[s * bdt.size()..], w);
                o.iter_mut().zip(w.iter()).for_each(|(r, b)| *r -= b);
            }
            Moments::of_chunk(o)
        })
        .collect();
    Ok(parts.iter().fold(Moments::default(), |a, b| a.merge(b)))
}

fn dtype_of(ck: &Checkpoint, t: &TensorEntry) -> Result<resid_io::Dtype, IoError> {
    t.dtype.ok_or_else(|| IoError::UnsupportedDtype {
        path: ck.file_of(t).to_path_buf(),
        tensor: t.name.clone(),
        dtype: t.dtype_name.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use resid_io::write::{SafetensorsWriter, TensorSpec};

    fn write(path: &std::path::Path, dtype: Dtype, v: &[f32]) -> Checkpoint {
        let spec = TensorSpec {
            name: "w".into(),
            dtype_name: dtype.name().into(),
            shape: vec![v.len()],
        };
        let mut w = SafetensorsWriter::create(path, vec![spec], &Default::default()).unwrap();
        let mut bytes = Vec::new();
        dtype.from_f32(v, &mut bytes);
        w.write_tensor("w", &bytes).unwrap();
        w.finish().unwrap();
        Checkpoint::open(path).unwrap()
    }

    #[test]
    fn matches_converting_both_sides_then_subtracting() {
        let dir = tempfile::tempdir().unwrap();
        // Several chunks and a ragged tail; base in bf16, trained in f32.
        let n = 3 * CHUNK + 123;
        let b: Vec<f32> = (0..n).map(|i| ((i * 7919) % 1000) as f32 / 997.0).collect();
        let t: Vec<f32> = (0..n)
            .map(|i| b[i] + ((i * 104729) % 313) as f32 / 1e4)
            .collect();
        let bc = write(&dir.path().join("b.safetensors"), Dtype::BF16, &b);
        let tc = write(&dir.path().join("t.safetensors"), Dtype::F32, &t);
        let (be, te) = (&bc.tensors()[0], &tc.tensors()[0]);
        let mut r = Vec::new();
        let mut w = Vec::new();
        let m = form(Some((&bc, be)), (&tc, te), &mut r, &mut w).unwrap();
        let (mut bf, mut tf) = (Vec::new(), Vec::new());
        bc.read_f32(be, &mut bf).unwrap();
        tc.read_f32(te, &mut tf).unwrap();
        let want: Vec<f32> = tf.iter().zip(&bf).map(|(t, b)| t - b).collect();
        assert_eq!(r, want);
        assert_eq!(w, bf);
        let wm = Moments::of(&want);
        assert_eq!(m.n, wm.n);
        assert_eq!((m.min, m.max), (wm.min, wm.max));
        assert!((m.mean - wm.mean).abs() < 1e-12 * wm.mean.abs().max(1e-3));
        assert!((m.m2 / wm.m2 - 1.0).abs() < 1e-12 && (m.m4 / wm.m4 - 1.0).abs() < 1e-12);
        // bf16 on both sides takes the fused path: the same values.
        let tc2 = write(&dir.path().join("t2.safetensors"), Dtype::BF16, &t);
        let te2 = &tc2.tensors()[0];
        let m2 = form(Some((&bc, be)), (&tc2, te2), &mut r, &mut w).unwrap();
        tc2.read_f32(te2, &mut tf).unwrap();
        let want: Vec<f32> = tf.iter().zip(&bf).map(|(t, b)| t - b).collect();
        assert_eq!(r, want);
        assert_eq!(w, bf);
        assert_eq!(m2.n, n as u64);
        tc.read_f32(te, &mut tf).unwrap();
        // Without a base it is the trained tensor itself.
        let m = form(None, (&tc, te), &mut r, &mut w).unwrap();
        assert_eq!(r, tf);
        assert!(w.is_empty());
        assert_eq!(m.n, n as u64);
    }
}
