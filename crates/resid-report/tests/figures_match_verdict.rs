//! The report's figures and verdict text draw the numbers the analysis
//! measured: the k-means figure's null at the verdict's K is the verdict's
//! null, and every hypothesis of the verdict is in the document with its
//! measure.

use resid_analysis::{analyze, Options};
use resid_io::synth::{write_pair, Arch, ResidualKind, SynthOptions};
use resid_io::{Checkpoint, Dtype};
use resid_report::analysis::{analysis_document, kmeans_curves, structure_rows};

#[test]
fn figure_numbers_equal_the_verdicts() {
    let tmp = tempfile::tempdir().unwrap();
    let pair = tmp.path().join("pair");
    let opts = SynthOptions {
        arch: Arch::named("custom:2,32,64,128").unwrap(),
        dtype: Dtype::F32,
        residual: ResidualKind::Sparse,
        scale: 0.1,
        seed: 3,
        shard_bytes: 1 << 30,
    };
    write_pair(&pair, &opts, |_, _| {}).unwrap();
    let base = Checkpoint::open(&pair.join("base")).unwrap();
    let trained = Checkpoint::open(&pair.join("trained")).unwrap();
    let report = analyze(&base, &trained, &Options::default(), &|_| {}).unwrap();

    let (ve, null) = kmeans_curves(&report);
    let c = &report.verdict.clustered;
    let k = c.rule.split("K=").nth(1).unwrap();
    let k: f64 = k[..k.find(':').unwrap()].parse().unwrap();
    let at = |xs: &[(f64, f64)]| xs.iter().find(|p| p.0 == k).unwrap().1;
    assert!((at(&ve) - c.measure.unwrap()).abs() < 1e-12);
    assert!((at(&null) - c.null.unwrap()).abs() < 1e-12);

    let doc = analysis_document(&report, None).unwrap();
    let all = report.verdict.all();
    assert_eq!(doc.verdict.len(), all.len());
    for (name, h) in all {
        let item = doc
            .verdict
            .iter()
            .find(|i| i.hypothesis == name)
            .unwrap_or_else(|| panic!("{name} missing"));
        assert_eq!(item.measure, h.measure, "{name}");
        assert_eq!(item.supported, h.measure.map(|_| h.supported), "{name}");
    }
    assert!(structure_rows(&report).len() >= 7);
}

/// One pass: the figure data the analysis gathers as it goes equals what
/// the same figure code gives over a second read of both checkpoints, the
/// report is the same with or without figures, and every figure agrees
/// with its record: histogram totals are the entries measured, a spectrum's
/// sum of s^2 and PR are the record's, the power map is of the matrix with
/// the highest low-frequency ratio and its caption quotes that record.
#[test]
fn figures_gathered_in_the_pass_equal_a_second_read_and_the_records() {
    let tmp = tempfile::tempdir().unwrap();
    let pair = tmp.path().join("pair");
    let opts = SynthOptions {
        arch: Arch::named("custom:3,32,64,128").unwrap(),
        dtype: Dtype::BF16,
        residual: ResidualKind::Sparse,
        scale: 0.1,
        seed: 5,
        shard_bytes: 1 << 30,
    };
    write_pair(&pair, &opts, |_, _| {}).unwrap();
    let base = Checkpoint::open(&pair.join("base")).unwrap();
    let trained = Checkpoint::open(&pair.join("trained")).unwrap();
    let o = Options::default();
    let plain = analyze(&base, &trained, &o, &|_| {}).unwrap();
    let (report, figs) = resid_analysis::analyze_with_figures(
        &base,
        &trained,
        &o,
        &resid_analysis::FigureOptions::default(),
        &|_| {},
    )
    .unwrap();
    // NaN (not measured) != NaN: compare the records as written.
    assert!(
        plain.to_json() == report.to_json(),
        "figures changed the report"
    );
    // The second read, through the same figure code, as a cross-check.
    let mut bb = Vec::new();
    let again = resid_analysis::figures::collect(
        &report,
        &resid_analysis::FigureOptions::default(),
        |r, out| {
            let (Some(be), Some(te)) = (base.get(&r.name), trained.get(&r.name)) else {
                return Ok(false);
            };
            base.read_f32(be, &mut bb)?;
            trained.read_f32(te, out)?;
            for (t, b) in out.iter_mut().zip(&bb) {
                *t -= *b;
            }
            Ok::<bool, resid_io::IoError>(true)
        },
    )
    .unwrap();
    assert!(figs.histograms == again.histograms, "histograms differ");
    assert!(figs.powermap == again.powermap, "power maps differ");
    assert_eq!(figs.spectra.len(), again.spectra.len());
    for (a, b) in figs.spectra.iter().zip(&again.spectra) {
        assert_eq!((&a.tensor, a.rows, a.cols), (&b.tensor, b.rows, b.cols));
        // The Gram's f32 sums may be split over threads differently.
        let top = a.singular_values[0];
        for (x, y) in a.singular_values.iter().zip(&b.singular_values) {
            assert!((x - y).abs() <= 1e-3 * top, "{}: {x} vs {y}", a.tensor);
        }
    }

    let finite: u64 = report.tensors.iter().map(|r| r.finite).sum();
    assert_eq!(figs.histograms["all"].n(), finite);
    let h = resid_report::analysis::histogram_of(&report, "all", &figs.histograms["all"]);
    assert_eq!(h.counts.iter().sum::<u64>(), finite);
    let beyond: f64 = report
        .tensors
        .iter()
        .map(|r| r.share_above_3std * r.finite as f64)
        .sum();
    assert_eq!(h.beyond_3std, beyond.round() as u64);

    assert_eq!(figs.spectra.len(), 3);
    for s in &figs.spectra {
        let r = report.tensors.iter().find(|r| r.name == s.tensor).unwrap();
        let e2: f64 = s.singular_values.iter().map(|v| v * v).sum();
        let e4: f64 = s.singular_values.iter().map(|v| v.powi(4)).sum();
        assert!(
            (e2 / r.energy - 1.0).abs() < 1e-3,
            "{}: {e2} vs {}",
            s.tensor,
            r.energy
        );
        let pr = r.energy * r.energy / e4;
        assert!(
            (pr / r.pr.unwrap() - 1.0).abs() < 1e-3,
            "{pr} vs {:?}",
            r.pr
        );
    }

    let pm = figs.powermap.as_ref().unwrap();
    let best = report
        .tensors
        .iter()
        .filter(|r| r.lowfreq_ratio.is_some())
        .max_by(|a, b| resid_analysis::figures::smoother(a, b))
        .unwrap();
    assert_eq!(pm.tensor, best.name);
    let doc = analysis_document(&report, Some(&figs)).unwrap();
    let caption = doc
        .sections
        .iter()
        .flat_map(|s| &s.blocks)
        .find_map(|b| match b {
            resid_report::document::Block::Figure(f) if f.id == "powermap" => {
                Some(f.caption.clone())
            }
            _ => None,
        })
        .unwrap();
    let want = format!("{:.2}%", 100.0 * best.lowfreq_share.unwrap());
    assert!(caption.contains(&want), "{caption} lacks {want}");
}
