//! Writes the HTML/Markdown/JSON report of a checkpoint pair:
//! `cargo run -p resid-report --example analysis_report -- BASE TRAINED OUT_DIR`
//! (what `resid analyze --report DIR` does, for trying the report alone).
//! `-- --synth SHAPE OUT_DIR` first generates a sparse pair of that shape in
//! `OUT_DIR/pair` (the code and defaults of `resid synth --residual sparse`: bf16,
//! scale 0.01, seed 0).

use std::path::Path;

use resid_analysis::{analyze_with_figures, FigureOptions, Options};
use resid_io::Checkpoint;
use resid_report::analysis::write_analysis_report;

fn main() {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() == 3 && args[0] == "--synth" {
        let out = Path::new(&args[2]).to_path_buf();
        let pair = out.join("pair");
        let opts = resid_io::synth::SynthOptions {
            arch: resid_io::synth::Arch::named(&args[1]).expect("known shape"),
            dtype: resid_io::Dtype::BF16,
            residual: resid_io::synth::ResidualKind::Sparse,
            scale: 0.01,
            seed: 0,
            shard_bytes: 5 << 30,
        };
        resid_io::synth::write_pair(&pair, &opts, |_, _| {}).expect("write pair");
        args = vec![
            pair.join("base").display().to_string(),
            pair.join("trained").display().to_string(),
            out.join("report").display().to_string(),
        ];
    }
    if args.len() != 3 {
        eprintln!("usage: analysis_report BASE TRAINED OUT_DIR");
        std::process::exit(2);
    }
    let run = || -> Result<(), Box<dyn std::error::Error>> {
        let base = Checkpoint::open(Path::new(&args[0]))?;
        let trained = Checkpoint::open(Path::new(&args[1]))?;
        let t = std::time::Instant::now();
        let (report, figs) = analyze_with_figures(
            &base,
            &trained,
            &Options::default(),
            &FigureOptions::default(),
            &|_| {},
        )?;
        eprintln!("analysis and figures: {:.1} s", t.elapsed().as_secs_f64());
        let t = std::time::Instant::now();
        write_analysis_report(Path::new(&args[2]), &report, Some(&figs))?;
        eprintln!("report: {:.1} s", t.elapsed().as_secs_f64());
        Ok(())
    };
    if let Err(e) = run() {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}
