//! Hugging Face model folders through the real binary (issue 16 part 1):
//! a BERT-style folder, a Llama-style folder in three shards with its
//! index, and a sentence-transformers folder (module subfolders
//! `1_Pooling/`, `2_Dense/` with its own weights, `modules.json`, ...),
//! each written here. `pack --lossless` then `unpack` must give back the
//! trained folder's every file, byte for byte, and nothing else; a lossy
//! pack must give back every file but the rebuilt weights byte for byte.

mod common;

use std::path::{Path, PathBuf};

use common::{ok, run, s, write_f32, Lcg};

/// Every file under `d`, relative (`/`-separated), sorted.
fn files(d: &Path) -> Vec<String> {
    fn walk(root: &Path, d: &Path, out: &mut Vec<String>) {
        for e in std::fs::read_dir(d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(root, &p, out);
            } else {
                let rel = p.strip_prefix(root).unwrap();
                out.push(rel.to_string_lossy().replace('\\', "/"));
            }
        }
    }
    let mut v = Vec::new();
    walk(d, d, &mut v);
    v.sort();
    v
}

/// `n` values in [-0.05, 0.05).
fn values(g: &mut Lcg, n: usize) -> Vec<f32> {
    (0..n).map(|_| (g.next() * 0.05) as f32).collect()
}

type Tensor = (&'static str, Vec<usize>, Vec<f32>);

/// `(name, shape)` with base values from `seed`; trained = base + a small
/// change on every other tensor (the rest unchanged).
fn weights(spec: &[(&'static str, &[usize])], seed: u64) -> (Vec<Tensor>, Vec<Tensor>) {
    let mut g = Lcg(seed);
    let mut base = Vec::new();
    let mut trained = Vec::new();
    for (i, (name, shape)) in spec.iter().enumerate() {
        let n = shape.iter().product();
        let b = values(&mut g, n);
        let t = if i % 2 == 0 {
            b.iter().map(|x| x + (g.next() * 5e-4) as f32).collect()
        } else {
            b.clone()
        };
        base.push((*name, shape.to_vec(), b));
        trained.push((*name, shape.to_vec(), t));
    }
    (base, trained)
}

/// Writes `text` files (relative names, subfolders made) into `dir`.
fn write_files(dir: &Path, text: &[(&str, String)]) {
    for (rel, body) in text {
        let p = dir.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, body).unwrap();
    }
}

/// The tokenizer files every folder carries (a WordLevel tokenizer.json,
/// its config with a chat template, the special tokens).
fn tokenizer_files(vocab: usize) -> Vec<(&'static str, String)> {
    let words: Vec<String> = (0..vocab).map(|i| format!("\"w{i}\": {i}")).collect();
    vec![
        (
            "tokenizer.json",
            format!(
                "{{\"version\": \"1.0\", \"model\": {{\"type\": \"WordLevel\", \"vocab\": {{{}}}, \"unk_token\": \"w0\"}}}}\n",
                words.join(", ")
            ),
        ),
        (
            "tokenizer_config.json",
            "{\"tokenizer_class\": \"PreTrainedTokenizerFast\", \"chat_template\": \"{% for m in messages %}{{ m['content'] }}\\n{% endfor %}\"}\n".into(),
        ),
        (
            "special_tokens_map.json",
            "{\"unk_token\": \"w0\", \"pad_token\": \"w1\"}\n".into(),
        ),
        (
            "vocab.txt",
            (0..vocab).map(|i| format!("w{i}\n")).collect(),
        ),
    ]
}

const BERT: &[(&str, &[usize])] = &[
    ("embeddings.word_embeddings.weight", &[40, 16]),
    ("embeddings.position_embeddings.weight", &[24, 16]),
    ("embeddings.LayerNorm.weight", &[16]),
    ("encoder.layer.0.attention.self.query.weight", &[16, 16]),
    ("encoder.layer.0.attention.self.query.bias", &[16]),
    ("encoder.layer.0.intermediate.dense.weight", &[32, 16]),
    ("encoder.layer.0.output.dense.weight", &[16, 32]),
    ("pooler.dense.weight", &[16, 16]),
];

/// A base and a trained folder of one layout, written into `dir`.
struct Pair {
    base: PathBuf,
    trained: PathBuf,
}

fn bert_like(dir: &Path, extra: &[(&str, String)]) -> Pair {
    let (b, t) = weights(BERT, 3);
    let pair = Pair {
        base: dir.join("base"),
        trained: dir.join("trained"),
    };
    for (d, w) in [(&pair.base, &b), (&pair.trained, &t)] {
        std::fs::create_dir_all(d).unwrap();
        write_f32(&d.join("model.safetensors"), w);
        let mut text = tokenizer_files(40);
        text.push((
            "config.json",
            "{\"model_type\": \"bert\", \"architectures\": [\"BertModel\"], \"hidden_size\": 16}\n"
                .into(),
        ));
        text.extend(extra.iter().map(|(n, b)| (*n, b.clone())));
        write_files(d, &text);
    }
    pair
}

fn llama_sharded(dir: &Path) -> Pair {
    let spec: &[(&str, &[usize])] = &[
        ("model.embed_tokens.weight", &[48, 16]),
        ("model.layers.0.self_attn.q_proj.weight", &[16, 16]),
        ("model.layers.0.self_attn.k_proj.weight", &[8, 16]),
        ("model.layers.0.mlp.down_proj.weight", &[16, 40]),
        ("model.layers.0.input_layernorm.weight", &[16]),
        ("model.norm.weight", &[16]),
        ("lm_head.weight", &[48, 16]),
    ];
    let (b, t) = weights(spec, 5);
    let pair = Pair {
        base: dir.join("base"),
        trained: dir.join("trained"),
    };
    // Shards of 2, 3 and 2 tensors, as save_pretrained(max_shard_size=...) cuts them.
    let cuts = [0..2, 2..5, 5..7];
    for (d, w) in [(&pair.base, &b), (&pair.trained, &t)] {
        std::fs::create_dir_all(d).unwrap();
        let mut map = serde_json::Map::new();
        let mut total = 0usize;
        for (k, r) in cuts.iter().enumerate() {
            let name = format!("model-{:05}-of-00003.safetensors", k + 1);
            write_f32(&d.join(&name), &w[r.clone()]);
            for (n, _, v) in &w[r.clone()] {
                map.insert(n.to_string(), serde_json::Value::from(name.clone()));
                total += v.len() * 4;
            }
        }
        let index = serde_json::json!({"metadata": {"total_size": total}, "weight_map": map});
        let mut text = tokenizer_files(48);
        text.push((
            "model.safetensors.index.json",
            serde_json::to_string_pretty(&index).unwrap() + "\n",
        ));
        text.push(("config.json", "{\"model_type\": \"llama\", \"architectures\": [\"LlamaForCausalLM\"], \"tie_word_embeddings\": false}\n".into()));
        text.push((
            "generation_config.json",
            "{\"bos_token_id\": 1, \"eos_token_id\": 2}\n".into(),
        ));
        write_files(d, &text);
    }
    pair
}

/// What `SentenceTransformer.save()` writes around a BERT: the module list,
/// one subfolder per module after the first (Dense with its own weights).
fn sentence_transformers(dir: &Path) -> Pair {
    let modules = r#"[
  {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
  {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
  {"idx": 2, "name": "2", "path": "2_Dense", "type": "sentence_transformers.models.Dense"},
  {"idx": 3, "name": "3", "path": "3_Normalize", "type": "sentence_transformers.models.Normalize"}
]
"#;
    let extra = [
        ("modules.json", modules.to_string()),
        (
            "config_sentence_transformers.json",
            "{\"__version__\": {\"sentence_transformers\": \"6.2.0\"}, \"similarity_fn_name\": \"cosine\"}\n".into(),
        ),
        (
            "sentence_bert_config.json",
            "{\"max_seq_length\": 32, \"do_lower_case\": false}\n".into(),
        ),
        (
            "1_Pooling/config.json",
            "{\"word_embedding_dimension\": 16, \"pooling_mode_mean_tokens\": true}\n".into(),
        ),
        (
            "2_Dense/config.json",
            "{\"in_features\": 16, \"out_features\": 8, \"bias\": true}\n".into(),
        ),
        ("3_Normalize/config.json", "{}\n".into()),
        ("README.md", "---\nlibrary_name: sentence-transformers\n---\n# tiny\n".into()),
    ];
    let pair = bert_like(dir, &extra);
    // The Dense module's weights: a second safetensors file, in a subfolder.
    for (d, seed) in [(&pair.base, 7), (&pair.trained, 8)] {
        let mut g = Lcg(seed);
        write_f32(
            &d.join("2_Dense/model.safetensors"),
            &[
                ("linear.weight", vec![8, 16], values(&mut g, 128)),
                ("linear.bias", vec![8], values(&mut g, 8)),
            ],
        );
    }
    pair
}

/// Packs `p` with `mode`, unpacks into a fresh folder, returns it.
fn round_trip(dir: &Path, p: &Pair, mode: &[&str], tag: &str) -> PathBuf {
    let f = dir.join(format!("{tag}.resid"));
    let mut a = vec![
        "pack",
        "--base",
        s(&p.base),
        "--trained",
        s(&p.trained),
        "-o",
        s(&f),
        "-q",
    ];
    a.extend(mode);
    ok(&run(&a));
    let out = dir.join(format!("unpacked-{tag}"));
    ok(&run(&[
        "unpack",
        "--base",
        s(&p.base),
        s(&f),
        "-o",
        s(&out),
        "-q",
    ]));
    out
}

fn check_layout(name: &str, make: fn(&Path) -> Pair, weights: &[&str]) {
    let d = tempfile::tempdir().unwrap();
    let p = make(d.path());
    let want = files(&p.trained);
    let out = round_trip(d.path(), &p, &["--lossless"], "lossless");
    assert_eq!(files(&out), want, "{name}: the unpacked folder's files");
    for rel in &want {
        assert!(
            std::fs::read(out.join(rel)).unwrap() == std::fs::read(p.trained.join(rel)).unwrap(),
            "{name}: {rel} differs after a lossless round trip"
        );
    }
    let out = round_trip(d.path(), &p, &["--bits-per-param", "2"], "lossy");
    assert_eq!(files(&out), want, "{name}: the lossy folder's files");
    for rel in &want {
        let same =
            std::fs::read(out.join(rel)).unwrap() == std::fs::read(p.trained.join(rel)).unwrap();
        // The rebuilt weights differ (2 bits per parameter); every other file is stored whole.
        assert_eq!(
            same,
            !weights.contains(&rel.as_str()),
            "{name} lossy: {rel}"
        );
    }
}

#[test]
fn bert_style_folder_round_trips_every_file() {
    check_layout("bert", |d| bert_like(d, &[]), &["model.safetensors"]);
}

#[test]
fn sharded_llama_style_folder_round_trips_every_file() {
    check_layout(
        "llama",
        llama_sharded,
        &[
            "model-00001-of-00003.safetensors",
            "model-00002-of-00003.safetensors",
            "model-00003-of-00003.safetensors",
        ],
    );
}

#[test]
fn sentence_transformers_folder_round_trips_every_file() {
    let d = tempfile::tempdir().unwrap();
    let want = files(&sentence_transformers(d.path()).trained);
    for sub in [
        "1_Pooling/config.json",
        "2_Dense/model.safetensors",
        "modules.json",
    ] {
        assert!(want.iter().any(|f| f == sub), "{sub} in {want:?}");
    }
    // 2_Dense/model.safetensors is one of the folder's files, stored whole.
    check_layout(
        "sentence-transformers",
        sentence_transformers,
        &["model.safetensors"],
    );
}
