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
