//! Several residuals of one base, and mixture-of-experts names: two
//! fine-tunes that share half their residual compare as the bivariate
//! Gaussian says (cosine 0.5, sign agreement 2/3); a Mixtral-named model
//! sorts its experts and routers into their own components; the record
//! round-trips and its committed JSON Schema is the generated one.

use std::collections::BTreeMap;

use resid_analysis::compare::compare;
use resid_analysis::json::{several_schema, SCHEMA_VERSION};
use resid_analysis::null::gaussian_vec;
use resid_analysis::{analyze, Options, Several};
use resid_io::{Checkpoint, Component, Layout};

const SCHEMA_PATH: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../docs/several.schema.json"
);

type Spec = Vec<(String, Vec<usize>)>;

/// A two-layer Mixtral: attention, 4 experts of w1/w2/w3, a router, norms.
fn mixtral() -> Spec {
    let mut v: Spec = vec![("model.embed_tokens.weight".into(), vec![64, 16])];
    for l in 0..2 {
        let p = format!("model.layers.{l}");
        v.push((format!("{p}.self_attn.q_proj.weight"), vec![16, 16]));
        v.push((format!("{p}.input_layernorm.weight"), vec![16]));
        for e in 0..4 {
            let q = format!("{p}.block_sparse_moe.experts.{e}");
            v.push((format!("{q}.w1.weight"), vec![32, 16]));
            v.push((format!("{q}.w2.weight"), vec![16, 32]));
            v.push((format!("{q}.w3.weight"), vec![32, 16]));
        }
        v.push((format!("{p}.block_sparse_moe.gate.weight"), vec![4, 16]));
    }
    v
}

/// Writes `base + residual(i, n)` for every tensor of `spec`.
fn write(
    path: &std::path::Path,
    spec: &Spec,
    base: &[Vec<f32>],
    residual: impl Fn(usize, usize) -> Vec<f32>,
) -> Checkpoint {
    let tensors: Vec<(String, Vec<usize>, Vec<f32>)> = spec
        .iter()
        .zip(base)
        .enumerate()
        .map(|(i, ((name, shape), b))| {
            let r = residual(i, b.len());
            let t = b.iter().zip(&r).map(|(x, y)| x + y).collect();
            (name.clone(), shape.clone(), t)
        })
        .collect();
    resid_io::write::write_f32_checkpoint(path, &tensors, &BTreeMap::new()).unwrap();
    Checkpoint::open(path).unwrap()
}

fn base_of(spec: &Spec) -> Vec<Vec<f32>> {
    spec.iter()
        .enumerate()
        .map(|(i, (_, s))| gaussian_vec(s.iter().product(), 0.05, 10 + i as u64))
        .collect()
}

#[test]
fn fine_tunes_sharing_half_their_residual() {
    let dir = tempfile::tempdir().unwrap();
    let spec = mixtral();
    let base = base_of(&spec);
    let b = write(&dir.path().join("b.safetensors"), &spec, &base, |_, n| {
        vec![0.0; n]
    });
    // R_a = S + U, R_b = S + V, S, U, V independent of equal variance; a
    // third residual independent of both.
    let shared = |i: usize, n: usize| gaussian_vec(n, 0.01, 100 + i as u64);
    let own = |seed: u64| {
        move |i: usize, n: usize| -> Vec<f32> {
            let s = shared(i, n);
            let u = gaussian_vec(n, 0.01, seed * 1000 + i as u64);
            s.iter().zip(&u).map(|(x, y)| x + y).collect()
        }
    };
    let ta = write(&dir.path().join("a.safetensors"), &spec, &base, own(1));
    let tb = write(&dir.path().join("bb.safetensors"), &spec, &base, own(2));
    let tc = write(&dir.path().join("c.safetensors"), &spec, &base, |i, n| {
        gaussian_vec(n, 0.01, 7000 + i as u64)
    });
    let pairs = compare(&b, &[&ta, &tb, &tc], &Layout::builtin(), &|_, _, _| {}).unwrap();
    assert_eq!(
        pairs.iter().map(|p| (p.a, p.b)).collect::<Vec<_>>(),
        [(0, 1), (0, 2), (1, 2)]
    );
    let total: u64 = spec
        .iter()
        .map(|(_, s)| s.iter().product::<usize>() as u64)
        .sum();
    let sheppard = 0.5 + 0.5f64.asin() / std::f64::consts::PI;
    // 13,984 entries: the standard errors are about 0.008 (cosine) and
    // 0.004 (sign agreement); the bounds are 4-5 of them.
    let ab = &pairs[0];
    assert_eq!(ab.all.numel, total);
    assert_eq!(ab.tensors.len(), spec.len());
    assert!((ab.all.cosine.unwrap() - 0.5).abs() < 0.04, "{:?}", ab.all);
    assert!(
        (ab.all.sign_agreement.unwrap() - sheppard).abs() < 0.02,
        "{:?}",
        ab.all
    );
    assert!(ab.all.ties_agreement.unwrap() > sheppard);
    for p in &pairs[1..] {
        assert!(p.all.cosine.unwrap().abs() < 0.04, "{:?}", p.all);
        assert!((p.all.sign_agreement.unwrap() - 0.5).abs() < 0.02);
    }
    // The per-component figures cover the experts and routers.
    let experts = &ab.components["expert"];
    assert_eq!(experts.numel, 2 * 4 * 3 * 32 * 16);
    assert_eq!(ab.components["router"].numel, 2 * 4 * 16);

    // The whole record: one report per residual, round trip, schema.
    let o = Options::default();
    let rec = Several {
        schema_version: SCHEMA_VERSION,
        base: "b".into(),
        residuals: vec![
            analyze(&b, &ta, &o, &|_| {}).unwrap(),
            analyze(&b, &tb, &o, &|_| {}).unwrap(),
        ],
        pairs: pairs[..1].to_vec(),
    };
    let text = rec.to_json();
    let back = Several::from_json(&text).unwrap();
    assert_eq!(back.to_json(), text);
    let (x, y) = (&back.pairs[0].all, &rec.pairs[0].all);
    assert_eq!(
        (x.cosine, x.sign_agreement, x.ties_agreement),
        (y.cosine, y.sign_agreement, y.ties_agreement)
    );
    assert_eq!(back.pairs[0].tensors.len(), spec.len());
}

#[test]
fn mixtral_experts_and_router_are_their_own_components() {
    let dir = tempfile::tempdir().unwrap();
    let spec = mixtral();
    let base = base_of(&spec);
    let b = write(&dir.path().join("b.safetensors"), &spec, &base, |_, n| {
        vec![0.0; n]
    });
    let t = write(&dir.path().join("t.safetensors"), &spec, &base, |i, n| {
        gaussian_vec(n, 0.01, 50 + i as u64)
    });
    let r = analyze(&b, &t, &Options::default(), &|_| {}).unwrap();
    let count = |c: Component| r.tensors.iter().filter(|x| x.component == c).count();
    assert_eq!(count(Component::Expert), 2 * 4 * 3);
    assert_eq!(count(Component::Router), 2);
    assert_eq!(count(Component::Mlp), 0);
    let ex = r.components.expert.as_ref().unwrap();
    assert_eq!(ex.tensors, 24);
    assert_eq!(ex.numel, 24 * 512);
    assert_eq!(r.components.router.as_ref().unwrap().tensors, 2);
    assert!(r.components.mlp.is_none());
    // The record reads back with the new components.
    let back = resid_analysis::Report::from_json(&r.to_json()).unwrap();
    assert_eq!(back.components.expert.unwrap().tensors, 24);
}

#[test]
fn committed_several_schema_is_the_generated_one() {
    let generated = several_schema();
    if std::env::var_os("RESID_BLESS").is_some() {
        std::fs::write(SCHEMA_PATH, &generated).unwrap();
    }
    let committed = std::fs::read_to_string(SCHEMA_PATH).unwrap_or_default();
    assert!(
        committed == generated,
        "docs/several.schema.json is stale: regenerate with RESID_BLESS=1 cargo test -p resid-analysis --test several"
    );
}
