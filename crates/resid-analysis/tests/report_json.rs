//! The report as a record others read: it round-trips through JSON, the
//! committed JSON Schema is the one the types generate, the JSON the
//! analysis writes validates against it, and a record with a renamed or
//! missing field, or of another schema version, is refused by name.

use std::collections::BTreeMap;

use resid_analysis::json::{schema, SCHEMA_VERSION};
use resid_analysis::null::gaussian_vec;
use resid_analysis::{analyze, Options, Report, ReportJsonError};
use resid_io::Checkpoint;
use serde_json::Value;

const SCHEMA_PATH: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/report.schema.json");

/// A small model (two layers of a matrix and a norm, an embedding) with a
/// Gaussian residual; one tensor unchanged so some measures are absent.
fn report() -> Report {
    let dir = tempfile::tempdir().unwrap();
    let mut base = Vec::new();
    let mut trained = Vec::new();
    let specs: Vec<(String, Vec<usize>)> = vec![
        ("wte.weight".into(), vec![96, 32]),
        ("h.0.attn.c_attn.weight".into(), vec![32, 96]),
        ("h.0.ln_1.weight".into(), vec![32]),
        ("h.1.attn.c_attn.weight".into(), vec![32, 96]),
        ("h.1.ln_1.weight".into(), vec![32]),
        ("h.1.mlp.c_fc.weight".into(), vec![64, 32]),
    ];
    for (i, (name, shape)) in specs.into_iter().enumerate() {
        let n: usize = shape.iter().product();
        let b = gaussian_vec(n, 0.05, 10 + i as u64);
        let r = gaussian_vec(n, 0.01, 100 + i as u64);
        let unchanged = name == "h.1.mlp.c_fc.weight";
        let t: Vec<f32> = if unchanged {
            b.clone()
        } else {
            b.iter().zip(&r).map(|(x, y)| x + y).collect()
        };
        base.push((name.clone(), shape.clone(), b));
        trained.push((name, shape, t));
    }
    let (bp, tp) = (
        dir.path().join("b.safetensors"),
        dir.path().join("t.safetensors"),
    );
    resid_io::write::write_f32_checkpoint(&bp, &base, &BTreeMap::new()).unwrap();
    resid_io::write::write_f32_checkpoint(&tp, &trained, &BTreeMap::new()).unwrap();
    let (b, t) = (
        Checkpoint::open(&bp).unwrap(),
        Checkpoint::open(&tp).unwrap(),
    );
    let opts = Options {
        threads: 2,
        seed: 3,
        ..Options::default()
    };
    analyze(&b, &t, &opts, &|_| {}).unwrap()
}

/// Equality that reads NaN as equal to NaN (a measure not taken reads back
/// as NaN): compare the two records' JSON values.
fn same(a: &Report, b: &Report) -> bool {
    serde_json::to_value(a).unwrap() == serde_json::to_value(b).unwrap()
}

#[test]
fn round_trip_serialize_deserialize_equal() {
    let r = report();
    assert_eq!(r.schema_version, SCHEMA_VERSION);
    let text = r.to_json();
    let back = Report::from_json(&text).unwrap();
    assert!(same(&r, &back));
    assert_eq!(back.to_json(), text);
    // Where no figure is NaN the typed values are equal as they are.
    let finite: Vec<_> = r
        .tensors
        .iter()
        .zip(&back.tensors)
        .filter(|(a, _)| a.kurtosis.is_finite() && a.pr.is_some())
        .collect();
    assert!(!finite.is_empty());
    for (a, b) in finite {
        assert_eq!(a.kurtosis, b.kurtosis);
        assert_eq!(a.pr, b.pr);
        assert_eq!(a.moments, b.moments);
        assert_eq!(a.kmeans, b.kmeans);
    }
    assert_eq!(r.verdict, back.verdict);
    assert_eq!(r.components.all, back.components.all);
    assert_eq!(r.interlayer, back.interlayer);
}

#[test]
fn renamed_missing_or_old_records_are_refused() {
    let r = report();
    let mut v = serde_json::to_value(&r).unwrap();
    // An old field name: the record is refused, naming the field.
    let all = v["components"]["all"].as_object_mut().unwrap();
    let k = all.remove("kurtosis_pooled").unwrap();
    all.insert("kurtosis_all".into(), k);
    let e = Report::from_json(&v.to_string()).unwrap_err();
    assert!(e.to_string().contains("kurtosis_pooled"), "{e}");
    // A record without a version is version 1: refused with the version.
    let mut v = serde_json::to_value(&r).unwrap();
    v.as_object_mut().unwrap().remove("schema_version");
    match Report::from_json(&v.to_string()) {
        Err(ReportJsonError::Version { found: 1, expected }) => {
            assert_eq!(expected, SCHEMA_VERSION)
        }
        other => panic!("{other:?}"),
    }
    assert!(Report::from_json("{not json").is_err());
}

#[test]
fn committed_schema_is_the_generated_one() {
    let generated = schema();
    if std::env::var_os("RESID_BLESS").is_some() {
        std::fs::write(SCHEMA_PATH, &generated).unwrap();
    }
    let committed = std::fs::read_to_string(SCHEMA_PATH)
        .expect("docs/report.schema.json (regenerate: RESID_BLESS=1 cargo test -p resid-analysis --test report_json)");
    assert!(
        committed == generated,
        "docs/report.schema.json is stale: regenerate with RESID_BLESS=1 cargo test -p resid-analysis --test report_json"
    );
}

#[test]
fn written_json_validates_against_the_schema() {
    let schema: Value = serde_json::from_str(&schema()).unwrap();
    let inst = serde_json::to_value(report()).unwrap();
    let mut errors = Vec::new();
    validate(&inst, &schema, &schema, "", &mut errors);
    assert!(errors.is_empty(), "{errors:#?}");
    // The validator is not vacuous: a wrong type and an undeclared field fail.
    let mut bad = inst.clone();
    bad["seed"] = Value::String("five".into());
    bad["components"]["all"]["new_figure"] = Value::from(1.0);
    let mut errors = Vec::new();
    validate(&bad, &schema, &schema, "", &mut errors);
    assert_eq!(errors.len(), 2, "{errors:#?}");
}

/// The subset of JSON Schema (2020-12) that schemars emits for these types:
/// `$ref` into `$defs`, `type` (one or several), `enum`, `const`, `anyOf` /
/// `oneOf`, `properties` + `required` (every key of an instance must be
/// declared), `additionalProperties` as a schema, `items`, `prefixItems`,
/// `minimum`.
fn validate(v: &Value, s: &Value, root: &Value, at: &str, errors: &mut Vec<String>) {
    let Some(s) = s.as_object() else {
        return; // `true`: anything
    };
    if let Some(r) = s.get("$ref").and_then(Value::as_str) {
        let name = r.strip_prefix("#/$defs/").expect("local ref");
        validate(v, &root["$defs"][name], root, at, errors);
    }
    for key in ["anyOf", "oneOf"] {
        if let Some(alts) = s.get(key).and_then(Value::as_array) {
            let ok = alts.iter().any(|a| {
                let mut e = Vec::new();
                validate(v, a, root, at, &mut e);
                e.is_empty()
            });
            if !ok {
                errors.push(format!("{at}: matches no alternative of {key}"));
            }
        }
    }
    if let Some(t) = s.get("type") {
        let types: Vec<&str> = match t {
            Value::String(x) => vec![x.as_str()],
            Value::Array(xs) => xs.iter().filter_map(Value::as_str).collect(),
            _ => vec![],
        };
        let fits = |t: &str| match t {
            "null" => v.is_null(),
            "boolean" => v.is_boolean(),
            "integer" => v.is_i64() || v.is_u64(),
            "number" => v.is_number(),
            "string" => v.is_string(),
            "array" => v.is_array(),
            "object" => v.is_object(),
            _ => false,
        };
        if !types.iter().any(|t| fits(t)) {
            errors.push(format!("{at}: {v} is not of type {types:?}"));
            return;
        }
    }
    if let Some(e) = s.get("enum").and_then(Value::as_array) {
        if !e.contains(v) {
            errors.push(format!("{at}: {v} not in {e:?}"));
        }
    }
    if let Some(c) = s.get("const") {
        if c != v {
            errors.push(format!("{at}: {v} is not {c}"));
        }
    }
    if let (Some(min), Some(x)) = (s.get("minimum").and_then(Value::as_f64), v.as_f64()) {
        if x < min {
            errors.push(format!("{at}: {x} < {min}"));
        }
    }
    if let Some(o) = v.as_object() {
        let props = s.get("properties").and_then(Value::as_object);
        for req in s
            .get("required")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if !o.contains_key(req.as_str().unwrap()) {
                errors.push(format!("{at}: lacks required {req}"));
            }
        }
        for (k, x) in o {
            let here = format!("{at}/{k}");
            match (props.and_then(|p| p.get(k)), s.get("additionalProperties")) {
                (Some(ps), _) => validate(x, ps, root, &here, errors),
                (None, Some(ap)) if ap.is_object() => validate(x, ap, root, &here, errors),
                _ if s.contains_key("$ref")
                    || s.contains_key("anyOf")
                    || s.contains_key("oneOf") => {}
                _ => errors.push(format!("{here}: not declared in the schema")),
            }
        }
    }
    if let Some(a) = v.as_array() {
        let prefix = s.get("prefixItems").and_then(Value::as_array);
        for (i, x) in a.iter().enumerate() {
            let here = format!("{at}/{i}");
            match prefix.and_then(|p| p.get(i)) {
                Some(ps) => validate(x, ps, root, &here, errors),
                None => {
                    if let Some(is) = s.get("items") {
                        validate(x, is, root, &here, errors)
                    }
                }
            }
        }
    }
}
