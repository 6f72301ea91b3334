//! Size-aware sampling through the whole driver: a matrix over the Gram and
//! k-means budgets is measured on seeded samples, recorded in the JSON, the
//! same on one and two threads; a small matrix stays exact with no record.

use std::collections::BTreeMap;

use resid_analysis::null::gaussian_vec;
use resid_analysis::{analyze, kmeans, participation, Options};
use resid_io::Checkpoint;
use serde_json::Value;

// 768^2 * 2048 multiply-adds is over a Gram budget of 2^29 (the test's;
// the default is larger).
const BIG: (usize, usize) = (2048, 768);
const GRAM: usize = 1 << 29;
const SMALL: (usize, usize) = (64, 192);

fn report(dir: &std::path::Path, threads: usize) -> Value {
    let b = Checkpoint::open(&dir.join("base.safetensors")).unwrap();
    let t = Checkpoint::open(&dir.join("trained.safetensors")).unwrap();
    let opts = Options {
        threads,
        seed: 3,
        gram_budget: GRAM,
        ..Options::default()
    };
    serde_json::to_value(analyze(&b, &t, &opts, &|_| {}).unwrap()).unwrap()
}

fn tensor<'a>(j: &'a Value, name: &str) -> &'a Value {
    j["tensors"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == name)
        .unwrap()
}

#[test]
fn big_matrix_is_sampled_and_recorded_small_one_is_exact() {
    assert!(participation::sample_size(BIG.0, BIG.1, GRAM).is_some());
    assert!(participation::sample_size(SMALL.0, SMALL.1, GRAM).is_none());
    let dir = tempfile::tempdir().unwrap();
    let mut base = Vec::new();
    let mut trained = Vec::new();
    for (i, (name, (r, c))) in [("big.weight", BIG), ("small.weight", SMALL)]
        .into_iter()
        .enumerate()
    {
        let b = gaussian_vec(r * c, 0.05, 10 + i as u64);
        let d = gaussian_vec(r * c, 0.01, 20 + i as u64);
        let t: Vec<f32> = b.iter().zip(&d).map(|(x, y)| x + y).collect();
        base.push((name.to_string(), vec![r, c], b));
        trained.push((name.to_string(), vec![r, c], t));
    }
    let w = |p: &str, t| {
        resid_io::write::write_f32_checkpoint(&dir.path().join(p), t, &BTreeMap::new()).unwrap()
    };
    w("base.safetensors", &base);
    w("trained.safetensors", &trained);
    let j = report(dir.path(), 2);

    let big = tensor(&j, "big.weight");
    let s = &big["sampling"];
    let used = participation::sample_size(BIG.0, BIG.1, GRAM).unwrap();
    assert_eq!(s["pr"]["side"], "rows");
    assert_eq!(s["pr"]["used"], used as u64);
    assert_eq!(s["pr"]["of"], BIG.0 as u64);
    assert!(used.min(BIG.1).pow(2) * used.max(BIG.1) <= GRAM);
    let rows = s["kmeans"]["rows"].as_u64().unwrap() as usize;
    assert_eq!(rows, kmeans::rows_for(BIG.0, BIG.1));
    assert!(rows * BIG.1 <= kmeans::BUDGET && rows < BIG.0);
    assert_eq!(s["kmeans"]["of"], BIG.0 as u64);
    assert_eq!(
        s["kmeans"]["restarts"],
        kmeans::Config::FAST.restarts as u64
    );
    assert_eq!(big["kmeans_rows"], rows as u64);
    // A Gaussian residual: the sampled PR estimate sits at the full shape's
    // Marchenko-Pastur value.
    let (pr, null) = (
        big["pr"].as_f64().unwrap(),
        big["pr_null"].as_f64().unwrap(),
    );
    assert!((pr / null - 1.0).abs() < 0.03, "{pr} vs {null}");

    // A sampled energy rank is the sample's, so the record's null is that of
    // the sample's shape (the Marchenko-Pastur count of used x 768; the full
    // shape's is 546). A Gaussian's sample still reads about 11% below it:
    // draws with replacement repeat vectors (docs/MEASURES.md).
    for (key, null) in [("energy_rank_90", 0), ("energy_rank_99", 1)] {
        let (got, want) = (
            big[key].as_f64().unwrap(),
            participation::mp_energy_rank(used, BIG.1, [0.9, 0.99][null]),
        );
        assert!((got / want - 1.0).abs() < 0.15, "{key}: {got} vs {want}");
        assert_eq!(big[format!("{key}_null")].as_f64().unwrap(), want, "{key}");
    }

    let small = tensor(&j, "small.weight");
    assert!(small.get("sampling").is_none(), "{small}");
    assert_eq!(small["kmeans_rows"], SMALL.0 as u64);

    // Seeded: the same figures on one thread.
    let j1 = report(dir.path(), 1);
    for key in ["pr", "stable_rank", "kmeans", "sampling", "lowfreq_share"] {
        assert_eq!(tensor(&j1, "big.weight")[key], big[key], "{key}");
    }
}

/// A 30522 x 384 (BERT-embedding-sized) matrix is within the default Gram
/// budget, so its PR is exact: here every row has one non-zero entry, in
/// column `i % 384`, so the columns are orthogonal, the Gram is diagonal
/// with `G_jj = sum of v_i^2 over i = j (mod 384)`, and
/// `PR = (sum G_jj)^2 / sum G_jj^2` in closed form. Length-squared row
/// sampling would only estimate it.
#[test]
fn embedding_sized_matrix_has_exact_pr() {
    let (rows, cols) = (30_522, 384);
    assert!(participation::sample_size(rows, cols, participation::GRAM_BUDGET).is_none());
    let v = gaussian_vec(rows, 1.0, 77);
    let mut x = vec![0.0f32; rows * cols];
    let mut g = vec![0.0f64; cols];
    for i in 0..rows {
        // Uneven column weights: scale by the column index.
        let val = v[i] * (1.0 + (i % cols) as f32 / 64.0);
        x[i * cols + i % cols] = val;
        g[i % cols] += (val as f64).powi(2);
    }
    let fro2: f64 = g.iter().sum();
    let want = fro2 * fro2 / g.iter().map(|a| a * a).sum::<f64>();
    let (s, rec) =
        participation::spectral_budget(&x, rows, cols, fro2, 1, participation::GRAM_BUDGET);
    assert!(rec.is_none());
    assert!((s.pr / want - 1.0).abs() < 1e-5, "{} vs {want}", s.pr);
    // Energy rank from the exact spectrum: the columns' energies themselves.
    let mut e = g.clone();
    assert_eq!(
        s.energy_rank_90,
        resid_analysis::lines::lines_holding(&mut e, 0.9)
    );
}
