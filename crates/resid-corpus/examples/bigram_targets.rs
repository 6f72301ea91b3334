//! Held-out loss of the low-rank bigrams a base can start from, beside the
//! bigram count model, on every held-out pair of the shipped corpus: the
//! symmetric eigen-fit (tied heads), the SVD of the log-ratio (untied), one
//! basis with a free core, and the cross-entropy bilinear fit (docs/BASE.md).
//! `cargo run --release -p resid-corpus --example bigram_targets -- paper [steps] [rank]`
use faer::Mat;
use resid_corpus::base::{bigram_fit, embedding, stats};
use resid_corpus::{config::GptConfig, corpus, counts, tokenizer::Tokenizer};
use std::time::Instant;

fn main() {
    let preset = std::env::args().nth(1).unwrap_or_else(|| "paper".into());
    let steps: usize = std::env::args()
        .nth(2)
        .and_then(|s| s.parse().ok())
        .unwrap_or(400);
    let mut cfg = GptConfig::preset(&preset).expect("preset");
    let text = corpus::shakespeare();
    let (train, held) = corpus::split(&text);
    let tok = Tokenizer::for_config(&cfg, train);
    cfg.vocab_size = tok.vocab_size();
    let (tr, he) = (tok.encode(train), tok.encode(held));
    let v = cfg.vocab_size;
    let bytes: usize = he[1..].iter().map(|&t| tok.token_bytes(t).len()).sum();
    let alpha = resid_corpus::base::BaseOptions::for_config(&cfg).alpha;
    let pc = counts::PairCounts::count(&tr, v, 1);
    let big: f64 = -he
        .windows(2)
        .map(|p| pc.ln_cond(p[0], p[1], alpha))
        .sum::<f64>();
    println!(
        "V {v}, train {} tokens, held-out {} pairs, {bytes} bytes",
        tr.len(),
        he.len() - 1
    );
    println!("bigram count      {:.4} nats/byte", big / bytes as f64);
    let st = stats::Stats::collect(&tr, v, 1);
    let m1 = stats::LogRatio::new(&st, 1, alpha);
    let opt = resid_corpus::base::BaseOptions::for_config(&cfg);
    let rank: usize = std::env::args()
        .nth(3)
        .and_then(|s| s.parse().ok())
        .unwrap_or(embedding::Space::paired_rank(cfg.d_model, opt.d_pos));
    let mut symmetric = None;
    for tied in [true, false] {
        let mut c = cfg.clone();
        c.tied_head = tied;
        let t0 = Instant::now();
        let emb = embedding::fit(
            &c,
            &m1,
            &embedding::EmbedOptions {
                stream_rms: opt.stream_rms,
                pos_share: opt.pos_share,
                d_pos: opt.d_pos,
                seed: 0,
            },
        );
        let loss = target_loss(&emb.left, &emb.right, m1.bias(), &he);
        if tied {
            symmetric = Some(emb.symmetric_bilinear(m1.bias(), rank));
        }
        println!(
            "low-rank target tied={tied} rank {}: {:.4} nats/byte ({:.1}s)",
            emb.left.ncols(),
            loss / bytes as f64,
            t0.elapsed().as_secs_f64()
        );
    }
    // One basis for both sides: top eigenvectors of M M^T + M^T M, core Q^T M Q.
    let t0 = Instant::now();
    let r = 256 - (opt.d_pos + 1 + 2 + 1 + 1);
    let op = |x: faer::MatRef<'_, f64>| {
        let a = m1.apply(m1.apply_t(x).as_ref());
        let b = m1.apply_t(m1.apply(x).as_ref());
        a + b
    };
    let (q, _, _) = resid_corpus::base::linalg::svd_randomized(v, v, r, 2, 0, &op, &op);
    let core = q.transpose() * m1.apply(q.as_ref());
    let left = &q * &core;
    let loss = target_loss(&left, &q, m1.bias(), &he);
    println!(
        "shared basis, full core, rank {r}: {:.4} nats/byte ({:.1}s)",
        loss / bytes as f64,
        t0.elapsed().as_secs_f64()
    );
    let t0 = Instant::now();
    let ce = bigram_fit::CeOptions {
        steps,
        ..Default::default()
    };
    let fit = bigram_fit::fit(&st.pairs[0], symmetric.expect("tied pass"), &ce);
    println!(
        "train cross-entropy {:.4} nats/token",
        fit.train_loss(&st.pairs[0])
    );
    let r = fit.rank;
    let e = Mat::from_fn(v, r, |a, j| fit.e[a * r + j] as f64);
    let w = Mat::from_fn(r, r, |i, j| fit.w[i * r + j] as f64);
    let bias: Vec<f64> = fit.bias.iter().map(|&x| x as f64).collect();
    let loss = target_loss(&(&e * &w), &e, &bias, &he);
    println!(
        "cross-entropy bilinear, {steps} steps, rank {r}: {:.4} nats/byte ({:.1}s)",
        loss / bytes as f64,
        t0.elapsed().as_secs_f64()
    );
}

/// Sum over held-out pairs of -log softmax(bias + left_a right^T)_b.
fn target_loss(left: &Mat<f64>, right: &Mat<f64>, bias: &[f64], he: &[u32]) -> f64 {
    let v = bias.len();
    let mut rows: Vec<u32> = he[..he.len() - 1].to_vec();
    rows.sort_unstable();
    rows.dedup();
    let mut lse = vec![0f64; v];
    for chunk in rows.chunks(1024) {
        let l = Mat::from_fn(chunk.len(), left.ncols(), |i, j| {
            left[(chunk[i] as usize, j)]
        });
        let z = &l * right.transpose();
        for (i, &a) in chunk.iter().enumerate() {
            let m = (0..v).map(|b| z[(i, b)] + bias[b]).fold(f64::MIN, f64::max);
            let s: f64 = (0..v).map(|b| (z[(i, b)] + bias[b] - m).exp()).sum();
            lse[a as usize] = m + s.ln();
        }
    }
    he.windows(2)
        .map(|p| {
            let (a, b) = (p[0] as usize, p[1] as usize);
            let z: f64 = (0..left.ncols())
                .map(|j| left[(a, j)] * right[(b, j)])
                .sum();
            lse[a] - (z + bias[b])
        })
        .sum()
}
