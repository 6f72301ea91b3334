//! Adapters written here (with the `safetensors` crate, not resid's writer)
//! read back as the ΔW their factors define, computed here by a plain
//! triple loop; refusals name the file and the feature.

use std::path::Path;

use rand::{Rng, SeedableRng};
use resid_io::{Checkpoint, Classify, ErrorClass};
use resid_lora::{Adapter, LoraError, ModuleKind};
use safetensors::tensor::{Dtype, TensorView};

type T = (String, Vec<usize>, Vec<f32>);

fn t(name: &str, shape: &[usize], v: Vec<f32>) -> T {
    assert_eq!(shape.iter().product::<usize>(), v.len());
    (name.into(), shape.to_vec(), v)
}

fn rand_vec(n: usize, seed: u64) -> Vec<f32> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    (0..n).map(|_| rng.random_range(-1.0f32..1.0)).collect()
}

fn write(path: &Path, tensors: &[T]) {
    let bytes: Vec<Vec<u8>> = tensors
        .iter()
        .map(|(_, _, v)| v.iter().flat_map(|x| x.to_le_bytes()).collect())
        .collect();
    let views: Vec<(String, TensorView)> = tensors
        .iter()
        .zip(&bytes)
        .map(|((n, s, _), b)| {
            (
                n.clone(),
                TensorView::new(Dtype::F32, s.clone(), b).unwrap(),
            )
        })
        .collect();
    safetensors::serialize_to_file(views, None, path).unwrap();
}

fn adapter(dir: &Path, config: &str, tensors: &[T]) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("adapter_config.json"), config).unwrap();
    write(&dir.join("adapter_model.safetensors"), tensors);
}

/// s · B·A (B is m × r, A is r × n), by the definition.
fn ba(b: &[f32], a: &[f32], m: usize, r: usize, n: usize, s: f64) -> Vec<f64> {
    let mut out = vec![0f64; m * n];
    for i in 0..m {
        for j in 0..n {
            for k in 0..r {
                out[i * n + j] += b[i * r + k] as f64 * a[k * n + j] as f64;
            }
            out[i * n + j] *= s;
        }
    }
    out
}

fn transpose(x: &[f64], rows: usize, cols: usize) -> Vec<f64> {
    let mut t = vec![0.0; x.len()];
    for i in 0..rows {
        for j in 0..cols {
            t[j * rows + i] = x[i * cols + j];
        }
    }
    t
}

fn close(got: &[f32], want: &[f64]) {
    assert_eq!(got.len(), want.len());
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            (*g as f64 - w).abs() <= 1e-6 * (1.0 + w.abs()),
            "entry {i}: {g} vs {w}"
        );
    }
}

/// A base with a Llama-style q/v pair, a GPT-2-style Conv1D (in, out)
/// weight, a token embedding and a classifier head.
fn base(dir: &Path) -> Checkpoint {
    let p = dir.join("base.safetensors");
    write(
        &p,
        &[
            t(
                "model.layers.0.self_attn.q_proj.weight",
                &[6, 5],
                rand_vec(30, 1),
            ),
            t(
                "model.layers.0.self_attn.v_proj.weight",
                &[6, 5],
                rand_vec(30, 2),
            ),
            t(
                "model.layers.1.self_attn.q_proj.weight",
                &[6, 5],
                rand_vec(30, 3),
            ),
            t("h.0.attn.c_attn.weight", &[5, 7], rand_vec(35, 4)),
            t("model.embed_tokens.weight", &[10, 4], rand_vec(40, 5)),
            t("score.weight", &[3, 4], rand_vec(12, 6)),
        ],
    );
    Checkpoint::open(&p).unwrap()
}

fn delta_of(a: &Adapter, base: &Checkpoint, tensor: &str) -> Vec<f32> {
    let m = a.modules().iter().find(|m| m.tensor == tensor).unwrap();
    let (shape, d) = a.delta(m, base).unwrap();
    assert_eq!(shape, base.get(tensor).unwrap().shape);
    d
}

#[test]
fn linear_delta_is_alpha_over_r_b_a() {
    let tmp = tempfile::tempdir().unwrap();
    let b = base(tmp.path());
    let (a0, b0) = (rand_vec(2 * 5, 10), rand_vec(6 * 2, 11));
    let dir = tmp.path().join("ad");
    adapter(
        &dir,
        r#"{"peft_type":"LORA","r":2,"lora_alpha":6,"target_modules":["q_proj"]}"#,
        &[
            t(
                "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight",
                &[2, 5],
                a0.clone(),
            ),
            t(
                "base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight",
                &[6, 2],
                b0.clone(),
            ),
        ],
    );
    let ad = Adapter::open(&dir).unwrap();
    assert_eq!(ad.modules().len(), 1);
    let m = &ad.modules()[0];
    assert_eq!((m.kind, m.rank, m.scaling), (ModuleKind::Linear, 2, 3.0));
    close(
        &delta_of(&ad, &b, "model.layers.0.self_attn.q_proj.weight"),
        &ba(&b0, &a0, 6, 2, 5, 3.0),
    );

    // rsLoRA: alpha / sqrt(r).
    adapter(
        &dir,
        r#"{"r":2,"lora_alpha":6,"use_rslora":true}"#,
        &[
            t(
                "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight",
                &[2, 5],
                a0.clone(),
            ),
            t(
                "base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight",
                &[6, 2],
                b0.clone(),
            ),
        ],
    );
    let ad = Adapter::open(&dir).unwrap();
    close(
        &delta_of(&ad, &b, "model.layers.0.self_attn.q_proj.weight"),
        &ba(&b0, &a0, 6, 2, 5, 6.0 / 2f64.sqrt()),
    );
}

#[test]
fn rank_and_alpha_patterns_apply_per_module() {
    let tmp = tempfile::tempdir().unwrap();
    let b = base(tmp.path());
    let dir = tmp.path().join("ad");
    let (a0, b0) = (rand_vec(4 * 5, 20), rand_vec(6 * 4, 21));
    let (a1, b1) = (rand_vec(5, 22), rand_vec(6, 23));
    let (a2, b2) = (rand_vec(4 * 5, 24), rand_vec(6 * 4, 25));
    adapter(
        &dir,
        r#"{"r":4,"lora_alpha":8,
            "rank_pattern":{"layers.1.self_attn.q_proj":1},
            "alpha_pattern":{"v_proj":2}}"#,
        &[
            t(
                "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight",
                &[4, 5],
                a0.clone(),
            ),
            t(
                "base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight",
                &[6, 4],
                b0.clone(),
            ),
            t(
                "base_model.model.model.layers.1.self_attn.q_proj.lora_A.weight",
                &[1, 5],
                a1.clone(),
            ),
            t(
                "base_model.model.model.layers.1.self_attn.q_proj.lora_B.weight",
                &[6, 1],
                b1.clone(),
            ),
            t(
                "base_model.model.model.layers.0.self_attn.v_proj.lora_A.weight",
                &[4, 5],
                a2.clone(),
            ),
            t(
                "base_model.model.model.layers.0.self_attn.v_proj.lora_B.weight",
                &[6, 4],
                b2.clone(),
            ),
        ],
    );
    let ad = Adapter::open(&dir).unwrap();
    close(
        &delta_of(&ad, &b, "model.layers.0.self_attn.q_proj.weight"),
        &ba(&b0, &a0, 6, 4, 5, 2.0),
    );
    // rank 1 by rank_pattern, alpha 8: scaling 8.
    close(
        &delta_of(&ad, &b, "model.layers.1.self_attn.q_proj.weight"),
        &ba(&b1, &a1, 6, 1, 5, 8.0),
    );
    // alpha 2 by alpha_pattern, rank 4: scaling 0.5.
    close(
        &delta_of(&ad, &b, "model.layers.0.self_attn.v_proj.weight"),
        &ba(&b2, &a2, 6, 4, 5, 0.5),
    );
}

#[test]
fn fan_in_fan_out_embeddings_and_modules_to_save() {
    let tmp = tempfile::tempdir().unwrap();
    let b = base(tmp.path());
    let dir = tmp.path().join("ad");
    // Conv1D weight is (in 5, out 7): A is (r, in), B is (out, r), ΔW = (B·A)^T.
    let (ca, cb) = (rand_vec(2 * 5, 30), rand_vec(7 * 2, 31));
    // Embedding (10 tokens, dim 4): A is (r, 10), B is (4, r), ΔW = (B·A)^T.
    let (ea, eb) = (rand_vec(2 * 10, 32), rand_vec(4 * 2, 33));
    let score = rand_vec(12, 34);
    adapter(
        &dir,
        r#"{"r":2,"lora_alpha":2,"fan_in_fan_out":true,"modules_to_save":["score"]}"#,
        &[
            t(
                "base_model.model.h.0.attn.c_attn.lora_A.weight",
                &[2, 5],
                ca.clone(),
            ),
            t(
                "base_model.model.h.0.attn.c_attn.lora_B.weight",
                &[7, 2],
                cb.clone(),
            ),
            t(
                "base_model.model.model.embed_tokens.lora_embedding_A",
                &[2, 10],
                ea.clone(),
            ),
            t(
                "base_model.model.model.embed_tokens.lora_embedding_B",
                &[4, 2],
                eb.clone(),
            ),
            t("base_model.model.score.weight", &[3, 4], score.clone()),
        ],
    );
    let ad = Adapter::open(&dir).unwrap();
    let kinds: Vec<_> = ad
        .modules()
        .iter()
        .map(|m| (m.tensor.as_str(), m.kind))
        .collect();
    assert_eq!(
        kinds,
        [
            ("h.0.attn.c_attn.weight", ModuleKind::Linear),
            ("model.embed_tokens.weight", ModuleKind::Embedding),
            ("score.weight", ModuleKind::Whole),
        ]
    );
    close(
        &delta_of(&ad, &b, "h.0.attn.c_attn.weight"),
        &transpose(&ba(&cb, &ca, 7, 2, 5, 1.0), 7, 5),
    );
    close(
        &delta_of(&ad, &b, "model.embed_tokens.weight"),
        &transpose(&ba(&eb, &ea, 4, 2, 10, 1.0), 4, 10),
    );
    let mut w = Vec::new();
    b.read_f32(b.get("score.weight").unwrap(), &mut w).unwrap();
    let want: Vec<f64> = score.iter().zip(&w).map(|(s, w)| (s - w) as f64).collect();
    close(&delta_of(&ad, &b, "score.weight"), &want);
}

fn open_err(config: &str, tensors: &[T]) -> LoraError {
    let tmp = tempfile::tempdir().unwrap();
    adapter(tmp.path(), config, tensors);
    match Adapter::open(tmp.path()) {
        Ok(_) => panic!("opened"),
        Err(e) => e,
    }
}

#[test]
fn refuses_what_it_cannot_read_by_name() {
    let qa = || t("base_model.model.q.lora_A.weight", &[2, 5], rand_vec(10, 1));
    let qb = || t("base_model.model.q.lora_B.weight", &[6, 2], rand_vec(12, 2));
    let e = open_err(
        r#"{"r":2,"lora_alpha":2}"#,
        &[
            qa(),
            qb(),
            t(
                "base_model.model.q.lora_magnitude_vector",
                &[6],
                rand_vec(6, 3),
            ),
        ],
    );
    assert!(e.to_string().contains("DoRA is not supported"), "{e}");
    assert!(e.to_string().contains("adapter_model.safetensors"), "{e}");
    assert_eq!(e.class(), ErrorClass::BadInput);

    let e = open_err(r#"{"r":2,"lora_alpha":2,"use_dora":true}"#, &[qa(), qb()]);
    assert!(
        e.to_string()
            .contains("adapter_config.json: DoRA is not supported"),
        "{e}"
    );

    let e = open_err(r#"{"r":2}"#, &[qa()]);
    assert!(e.to_string().contains("has no B factor"), "{e}");

    let e = open_err(r#"{"r":4,"lora_alpha":2}"#, &[qa(), qb()]);
    assert!(
        e.to_string()
            .contains("has rank 2 but the config gives module 'q' rank 4"),
        "{e}"
    );

    let e = open_err(
        r#"{"r":2}"#,
        &[
            qa(),
            t("base_model.model.q.lora_B.weight", &[6, 3], rand_vec(18, 2)),
        ],
    );
    assert!(e.to_string().contains("the ranks differ"), "{e}");

    let e = open_err(
        r#"{"r":2}"#,
        &[
            qa(),
            qb(),
            t("base_model.model.q.lora_B.bias", &[6], rand_vec(6, 2)),
        ],
    );
    assert!(e.to_string().contains("LoRA bias"), "{e}");

    let e = open_err(
        r#"{"r":2}"#,
        &[
            qa(),
            qb(),
            t("base_model.model.head.weight", &[2, 2], rand_vec(4, 2)),
        ],
    );
    assert!(e.to_string().contains("not in modules_to_save"), "{e}");

    let e = open_err(
        r#"{"r":2}"#,
        &[
            t(
                "base_model.model.c.lora_A.weight",
                &[2, 3, 1, 1],
                rand_vec(6, 1),
            ),
            t(
                "base_model.model.c.lora_B.weight",
                &[4, 2, 1, 1],
                rand_vec(8, 1),
            ),
        ],
    );
    assert!(e.to_string().contains("not convolutions"), "{e}");

    // A pickled adapter is refused, naming the conversion.
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("adapter_config.json"), r#"{"r":2}"#).unwrap();
    std::fs::write(tmp.path().join("adapter_model.bin"), b"PK\x03\x04").unwrap();
    let e = Adapter::open(tmp.path()).err().unwrap();
    assert!(e.to_string().contains("adapter_model.bin"), "{e}");
    assert!(e.to_string().contains("safe_serialization=True"), "{e}");

    // No config: an I/O error naming it.
    let e = Adapter::open(&tmp.path().join("nope")).err().unwrap();
    assert!(e.to_string().contains("nope/adapter_config.json"), "{e}");
    assert_eq!(e.class(), ErrorClass::Io);
}

#[test]
fn another_base_is_a_mismatch_naming_the_module() {
    let tmp = tempfile::tempdir().unwrap();
    let b = base(tmp.path());
    let dir = tmp.path().join("ad");
    adapter(
        &dir,
        r#"{"r":2}"#,
        &[
            t(
                "base_model.model.model.layers.9.mlp.up_proj.lora_A.weight",
                &[2, 5],
                rand_vec(10, 1),
            ),
            t(
                "base_model.model.model.layers.9.mlp.up_proj.lora_B.weight",
                &[6, 2],
                rand_vec(12, 1),
            ),
        ],
    );
    let ad = Adapter::open(&dir).unwrap();
    let e = ad.delta(&ad.modules()[0], &b).unwrap_err();
    assert_eq!(e.class(), ErrorClass::Mismatch);
    assert!(
        e.to_string()
            .contains("module 'model.layers.9.mlp.up_proj' has no tensor"),
        "{e}"
    );

    adapter(
        &dir,
        r#"{"r":2}"#,
        &[
            t(
                "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight",
                &[2, 4],
                rand_vec(8, 1),
            ),
            t(
                "base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight",
                &[6, 2],
                rand_vec(12, 1),
            ),
        ],
    );
    let ad = Adapter::open(&dir).unwrap();
    let e = ad.delta(&ad.modules()[0], &b).unwrap_err();
    assert!(e.to_string().contains("gets a ΔW of shape [6, 4]"), "{e}");
}

#[test]
fn a_stored_base_layer_replaces_the_base_weight() {
    // PEFT saves a targeted embedding's base layer whole
    // (`<module>.base_layer.weight`); ΔW = stored - base + (B·A)^T.
    let tmp = tempfile::tempdir().unwrap();
    let b = base(tmp.path());
    let mut w = Vec::new();
    b.read_f32(b.get("model.embed_tokens.weight").unwrap(), &mut w)
        .unwrap();
    let stored: Vec<f32> = w.iter().map(|x| x + 0.25).collect();
    let (ea, eb) = (rand_vec(2 * 10, 40), rand_vec(4 * 2, 41));
    let dir = tmp.path().join("ad");
    adapter(
        &dir,
        r#"{"r":2,"lora_alpha":4}"#,
        &[
            t(
                "base_model.model.model.embed_tokens.base_layer.weight",
                &[10, 4],
                stored,
            ),
            t(
                "base_model.model.model.embed_tokens.lora_embedding_A",
                &[2, 10],
                ea.clone(),
            ),
            t(
                "base_model.model.model.embed_tokens.lora_embedding_B",
                &[4, 2],
                eb.clone(),
            ),
        ],
    );
    let ad = Adapter::open(&dir).unwrap();
    assert_eq!(ad.modules().len(), 1);
    let want: Vec<f64> = transpose(&ba(&eb, &ea, 4, 2, 10, 2.0), 4, 10)
        .iter()
        .map(|d| d + 0.25)
        .collect();
    let got = delta_of(&ad, &b, "model.embed_tokens.weight");
    for (g, w) in got.iter().zip(&want) {
        assert!((*g as f64 - w).abs() < 1e-5, "{g} vs {w}");
    }
}
