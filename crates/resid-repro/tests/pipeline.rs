//! The whole reproduction at a minute-sized setting: every step runs, the
//! report has its structure, every figure is finite and in range, and a second
//! run resumes from the finished steps instead of redoing them.

use resid_repro::{run, ReproEvent, ReproOptions};

#[test]
fn minute_sized_reproduction_runs_end_to_end_and_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let mut o = ReproOptions::new(dir.path());
    o.corpus_bytes = Some(120_000);
    o.steps = Some(12);
    o.eval_tokens = 2048;
    o.rates = vec![1.0, 0.25];
    o.needle_fracs = vec![0.01, 0.25];
    o.mimetic = true;
    o.full = true;
    o.budget_targets = vec![0.5, 0.9];
    let r = run(&o, |_| {}).unwrap();

    let b = &r.baselines;
    assert!(b.bigram < b.unigram && b.unigram < b.uniform, "{b:?}");
    let names: Vec<&str> = r.runs.iter().map(|x| x.name.as_str()).collect();
    assert_eq!(names, ["csb", "random", "mimetic", "finetune"]);
    for run in &r.runs {
        assert!(run.start_loss.is_finite() && run.trained_loss.is_finite());
        assert!(run.trained_loss > 0.0 && run.trained_loss < 6.0, "{run:?}");
        // The fine-tune: a tenth of the steps.
        let steps = if run.name == "finetune" { 1 } else { 12 };
        assert_eq!(run.steps, steps, "{}", run.name);
    }
    // Random init starts near ln 256 nats/byte; the corpus base far below it.
    let csb = &r.runs[0];
    let rnd = &r.runs[1];
    assert!(
        (rnd.start_loss - 256f64.ln()).abs() < 0.1,
        "{}",
        rnd.start_loss
    );
    assert!(
        csb.start_loss < rnd.start_loss - 1.0,
        "{} vs {}",
        csb.start_loss,
        rnd.start_loss
    );

    // The mimetic init is structured but not fitted to the corpus: it
    // starts finite, and training lowers its loss.
    let mim = &r.runs[2];
    assert!(mim.trained_loss < mim.start_loss, "{mim:?}");
    // The subspace residual of the CSB-trained model: 8 directions of its
    // own embedding, a share of the variance between 0 and 1.
    let sub = r.analysis["csb-subspace"].subspace.as_ref().unwrap();
    assert_eq!(sub.k, 8);
    let share = sub.eigenvalue_share;
    assert!(share > 0.0 && share <= 1.0 + 1e-4, "{share}");

    for (name, rows) in &r.needle {
        assert_eq!(rows.len(), 2, "{name}");
        for x in rows {
            assert!(x.top_gain.is_finite() && x.random_gain.is_finite(), "{x:?}");
            assert!(x.random_plain_gain.is_finite(), "{x:?}");
            assert!(x.top_bits_per_param > 0.0);
        }
    }

    // The fine-tune starts where the corpus-base run ended: its start on
    // the first corpus is that run's end, and both corpora are scored.
    let ft = r.finetune.as_ref().unwrap();
    let rel = (ft.first_before - r.runs[0].trained_loss).abs() / ft.first_before;
    assert!(
        rel < 1e-4,
        "{} vs {}",
        ft.first_before,
        r.runs[0].trained_loss
    );
    assert!(ft.lr <= r.config.lr / 10.0 + 1e-12 && ft.steps * 10 <= r.config.steps);
    let ft_run = &r.runs[3];
    let ft_start =
        resid_lm::checkpoint::load_weights_for(&ft_run.dir.join("step-0"), &r.config).unwrap();
    let csb_end = resid_lm::checkpoint::load_weights_for(&r.runs[0].dir, &r.config).unwrap();
    assert_eq!(
        ft_start, csb_end,
        "the fine-tune starts from the pretrained model"
    );
    for x in [
        ft.first_after,
        ft.second_before,
        ft.second_after,
        ft.second_bigram,
    ] {
        assert!(x.is_finite() && x > 0.0 && x < 6.0, "{ft:?}");
    }
    for name in ["csb", "random", "mimetic", "finetune"] {
        assert!(
            r.analysis.contains_key(name) && r.codec.contains_key(name),
            "{name}"
        );
        assert!(r.needle.contains_key(name), "{name}");
    }

    // Additivity: one row per block and one for the rest, covering every
    // parameter; start + all parts = trained, so leaving out nothing would
    // recover 1, and each part's two figures are finite.
    for (name, a) in &r.additivity {
        assert_eq!(a.parts.len(), r.config.n_layer + 1, "{name}");
        assert_eq!(a.parts.iter().map(|p| p.params).sum::<usize>(), r.n_params);
        let s: f64 = a.parts.iter().map(|p| p.gain_alone).sum();
        assert!((s - a.sum_alone).abs() < 1e-12 && s.is_finite(), "{name}");
    }

    // The information budget: the per-tensor sums agree with the analysis'
    // own entry-weighted means over all tensors.
    for (name, b) in &r.budget {
        let all = &r.analysis[name].components.all;
        let e = &b.entropy;
        assert_eq!(e.entries, r.n_params as u64, "{name}");
        let per_entry = e.bits_at_step / e.entries as f64;
        assert!(
            (per_entry - all.entropy_step_bits).abs() < 1e-6,
            "{name}: {per_entry} vs {}",
            all.entropy_step_bits
        );
        assert!((0.0..=1.0).contains(&(e.beyond_3std / e.entries as f64)));
        assert_eq!(b.smallest.len(), 2, "{name}");
        for s in &b.smallest {
            if let Some(p) = s.passing {
                assert!(p.gain >= s.target && p.file_bytes > 0, "{name}: {s:?}");
            }
            if let Some(f) = s.failing {
                assert!(f.gain < s.target, "{name}: {s:?}");
            }
            if let (Some(p), Some(f)) = (s.passing, s.failing) {
                assert!(f.requested < p.requested, "{name}: {s:?}");
            }
        }
    }

    // Amplitude-only fine-tunes: two learning rates, scored on both corpora.
    assert_eq!(r.amplitude.len(), 2);
    for a in &r.amplitude {
        assert!(
            a.trainable * 10 < a.params && a.second_after.is_finite(),
            "{a:?}"
        );
        assert!(
            a.gain_vs_full.is_finite() && a.first_after.is_finite(),
            "{a:?}"
        );
    }

    // Layer-wise and layer-parallel training: every block's own run froze
    // everything else, so its weights outside that block are the base's.
    let l = r.layers.as_ref().unwrap();
    assert_eq!(l.parallel_alone.len(), r.config.n_layer);
    for x in [l.joint_blocks, l.layer_wise, l.layer_parallel] {
        assert!(x.is_finite() && x < l.start + 1.0, "{l:?}");
    }
    let base = resid_lm::checkpoint::load_weights_for(&dir.path().join("base"), &r.config).unwrap();
    let p0 =
        resid_lm::checkpoint::load_weights_for(&dir.path().join("train-parallel-0"), &r.config)
            .unwrap();
    for ((n, _, a), (_, _, b)) in base.iter().zip(&p0) {
        assert_eq!(a == b, !n.starts_with("blocks.0."), "{n}");
    }
    for (name, a) in &r.analysis {
        let all = &a.components.all;
        assert!(all.kurtosis_pooled.is_finite(), "{name}: {all:?}");
        let h = all.entropy_bits;
        assert!((0.0..=100f64.log2()).contains(&h), "{name}: {h}");
    }
    for (name, rows) in &r.codec {
        assert_eq!(rows.len(), 3, "{name}");
        let lossless = &rows[0];
        assert_eq!(lossless.residual_rel_error, 0.0, "{name}");
        // Bit-exact rebuild: same loss as the trained model on the same slice.
        assert!((lossless.gain - 1.0).abs() < 1e-9, "{lossless:?}");
        let lossy_at_1 = &rows[1];
        assert!(
            (lossy_at_1.bits_per_param - 1.0).abs() < 0.1,
            "{lossy_at_1:?}"
        );
        for x in rows {
            assert!(x.loss.is_finite() && x.gain.is_finite(), "{x:?}");
        }
    }
    let md = std::fs::read_to_string(dir.path().join("REPORT.md")).unwrap();
    for needle in [
        "What we found",
        "kurtosis, attention",
        "uniform ceiling log2(100)",
        "a random partition of the same rows",
        "Needle test",
        "random p, as is",
        "Verdict",
        "The fine-tune regime",
        "How many bits training adds",
        "Do the layers add up?",
        "Can the layers be trained independently?",
        "Does training amplitudes suffice?",
        "fig-needle.svg",
    ] {
        assert!(md.contains(needle), "REPORT.md lacks {needle}");
    }
    for f in [
        "fig-training.svg",
        "fig-needle.svg",
        "fig-codec.svg",
        "report.json",
        "index.html",
    ] {
        assert!(dir.path().join(f).metadata().unwrap().len() > 100, "{f}");
    }
    // The HTML carries the same figures inline and the same tables.
    let html = std::fs::read_to_string(dir.path().join("index.html")).unwrap();
    assert_eq!(html.matches("<svg").count(), 3, "three inline figures");
    assert!(html.contains("Needle test") && html.contains("steps to bigram level"));
    // Each residual has its own analysis report, with its figures.
    for run in &r.runs {
        let d = dir.path().join(format!("analysis-{}", run.name));
        let h = std::fs::read_to_string(d.join("index.html")).unwrap();
        assert!(h.matches("<svg").count() >= 5, "{}: few figures", run.name);
        let j: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(d.join("report.json")).unwrap()).unwrap();
        let typed = serde_json::to_value(&r.analysis[&run.name]).unwrap();
        assert_eq!(j, typed, "{}: report.json", run.name);
    }
    // Every needle point is in the table the terminal prints: the share of
    // the gain, rounded as printed.
    let term = resid_repro::summary::terminal(&r);
    for x in &r.needle["csb"] {
        assert!(term.contains(&format!("{:.3}", x.top_gain)), "{x:?}");
    }

    // A second run finds every step finished.
    let mut trained_again = false;
    let r2 = run(&o, |e| {
        if let ReproEvent::Train { .. } = e {
            trained_again = true;
        }
    })
    .unwrap();
    assert!(!trained_again, "resume retrained a finished run");
    assert_eq!(r2.runs[0].trained_loss, r.runs[0].trained_loss);
}
