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
    let r = run(&o, |_| {}).unwrap();

    let b = &r.baselines;
    assert!(b.bigram < b.unigram && b.unigram < b.uniform, "{b:?}");
    let names: Vec<&str> = r.runs.iter().map(|x| x.name.as_str()).collect();
    assert_eq!(names, ["csb", "random", "mimetic"]);
    for run in &r.runs {
        assert!(run.start_loss.is_finite() && run.trained_loss.is_finite());
        assert!(run.trained_loss > 0.0 && run.trained_loss < 6.0, "{run:?}");
        assert_eq!(run.steps, 12);
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
            assert!(x.top_bits_per_param > 0.0);
        }
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
        "kurtosis, attention",
        "Needle test",
        "Verdict",
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
