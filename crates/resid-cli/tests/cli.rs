//! The command line's conventions, on the real binary: `-o/--out` (alias
//! `--output`) wherever a command writes, `-q/--quiet` everywhere, `--json`
//! where a command measures or writes, one exit code per error class, and
//! shell completions.

use std::path::{Path, PathBuf};

mod common;
use common::{exit, fails_with, ok, run, s, small_pair};

/// The subcommands this build has, read from `resid --help`.
fn subcommands() -> Vec<String> {
    let o = run(&["--help"]);
    ok(&o);
    let text = String::from_utf8(o.stdout).unwrap();
    let body = text
        .split("Commands:")
        .nth(1)
        .expect("a Commands section")
        .split("\n\n")
        .next()
        .unwrap();
    body.lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|c| *c != "help")
        .map(String::from)
        .collect()
}

fn help(cmd: &str) -> String {
    let o = run(&[cmd, "--help"]);
    ok(&o);
    String::from_utf8(o.stdout).unwrap()
}

/// Commands whose product is a file or folder.
const WRITERS: [&str; 9] = [
    "analyze",
    "pack",
    "extract-lora",
    "unpack",
    "bench-codec",
    "synth",
    "base",
    "train",
    "repro",
];
/// Commands that measure or write, hence report figures as JSON.
const MEASURERS: [&str; 11] = [
    "analyze",
    "pack",
    "extract-lora",
    "unpack",
    "inspect",
    "bench-codec",
    "synth",
    "base",
    "train",
    "eval",
    "repro",
];

#[test]
fn every_command_documents_the_shared_flags() {
    let cmds = subcommands();
    assert!(cmds.len() >= 7, "{cmds:?}");
    for c in &cmds {
        let h = help(c);
        assert!(h.contains("-q, --quiet"), "{c}: no -q/--quiet\n{h}");
        if WRITERS.contains(&c.as_str()) {
            assert!(h.contains("-o, --out"), "{c}: no -o/--out\n{h}");
            assert!(h.contains("--output"), "{c}: --output alias not shown\n{h}");
        }
        if MEASURERS.contains(&c.as_str()) {
            assert!(h.contains("--json"), "{c}: no --json\n{h}");
        }
    }
    // Every writer and measurer this build has is a real subcommand.
    for c in WRITERS.iter().chain(&MEASURERS) {
        if !cmds.iter().any(|x| x == c) {
            assert!(
                ["base", "train", "eval", "repro"].contains(c),
                "{c} missing from {cmds:?}"
            );
        }
    }
    let o = run(&["--help"]);
    ok(&o);
    let top = String::from_utf8(o.stdout).unwrap();
    for code in ["2  usage", "3  bad input", "4  wrong base", "5  I/O"] {
        assert!(
            top.contains(code),
            "resid --help lacks exit code '{code}'\n{top}"
        );
    }
}

/// True when two safetensors files hold the same tensors, bit for bit.
fn same_tensors(a: &Path, b: &Path) -> bool {
    let (x, y) = (std::fs::read(a).unwrap(), std::fs::read(b).unwrap());
    let (x, y) = (
        safetensors::SafeTensors::deserialize(&x).unwrap(),
        safetensors::SafeTensors::deserialize(&y).unwrap(),
    );
    let mut names = x.names();
    names.sort();
    let mut other = y.names();
    other.sort();
    names == other
        && names.iter().all(|n| {
            let (p, q) = (x.tensor(n).unwrap(), y.tensor(n).unwrap());
            p.dtype() == q.dtype() && p.shape() == q.shape() && p.data() == q.data()
        })
}

fn pack(b: &Path, t: &Path, out_flag: &str, f: &Path, extra: &[&str]) -> std::process::Output {
    let mut a = vec!["pack", "--base", s(b), "--trained", s(t), out_flag, s(f)];
    a.extend_from_slice(extra);
    run(&a)
}

fn unpack(b: &Path, f: &Path, out_flag: &str, r: &Path, extra: &[&str]) -> std::process::Output {
    let mut a = vec!["unpack", "--base", s(b), s(f), out_flag, s(r)];
    a.extend_from_slice(extra);
    run(&a)
}

/// `resid synth` of a one-layer F32 model into `out`.
fn synth(out: &Path, extra: &[&str]) -> std::process::Output {
    let mut a = vec![
        "synth",
        "--shape",
        "custom:1,16,32,64",
        "--dtype",
        "f32",
        "--out",
        s(out),
    ];
    a.extend_from_slice(extra);
    run(&a)
}

#[test]
fn o_out_and_output_are_one_flag_and_q_silences_stderr() {
    let d = tempfile::tempdir().unwrap();
    let (b, t) = small_pair(d.path(), 1);
    let mut packed = Vec::new();
    for flag in ["-o", "--out", "--output"] {
        let f = d.path().join(format!("x{flag}.resid"));
        let o = pack(&b, &t, flag, &f, &["--lossless", "-q"]);
        ok(&o);
        assert!(
            o.stderr.is_empty(),
            "{flag}: -q left {:?}",
            String::from_utf8_lossy(&o.stderr)
        );
        packed.push(std::fs::read(&f).unwrap());
        let r = d.path().join(format!("r{flag}.safetensors"));
        let o = unpack(&b, &f, flag, &r, &["--quiet"]);
        ok(&o);
        assert!(o.stderr.is_empty());
        assert!(
            same_tensors(&r, &t),
            "{flag}: the rebuild differs from the trained side"
        );
    }
    assert!(
        packed.windows(2).all(|w| w[0] == w[1]),
        "the spelling changed the file"
    );
    // synth writes a folder through the same flag.
    let sd = d.path().join("synth");
    let o = synth(&sd, &["-q"]);
    ok(&o);
    assert!(o.stderr.is_empty());
    assert!(sd.join("base").exists() && sd.join("trained").exists());
    // analyze: -o is the report folder.
    let rep = d.path().join("report");
    let o = run(&[
        "analyze",
        "--base",
        s(&b),
        "--trained",
        s(&t),
        "-o",
        s(&rep),
        "-q",
    ]);
    ok(&o);
    assert!(rep.join("index.html").is_file() && rep.join("report.json").is_file());
}

/// A temporary folder with a small pair, its lossless file `x.resid`, and
/// the path `r.safetensors` for a rebuild: (folder, base, trained, file, rebuild).
fn packed(seed: u32) -> (tempfile::TempDir, PathBuf, PathBuf, PathBuf, PathBuf) {
    let d = tempfile::tempdir().unwrap();
    let (b, t) = small_pair(d.path(), seed);
    let f = d.path().join("x.resid");
    ok(&pack(&b, &t, "-o", &f, &["--lossless", "-q"]));
    let r = d.path().join("r.safetensors");
    (d, b, t, f, r)
}

#[test]
fn unpack_json_dash_is_the_only_thing_on_stdout() {
    let (d, b, _, f, r) = packed(2);
    let o = unpack(&b, &f, "-o", &r, &["--json", "-", "-q"]);
    ok(&o);
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).expect("stdout is one JSON");
    assert_eq!(j["tensors"], 2);
    assert_eq!(j["bytes"], 4 * (32 * 24 + 24));
    assert_eq!(j["outputs"][0], s(&r));
    assert!(!d.path().join("-").exists());
    // To a file: the same object, written whole.
    let jp = d.path().join("u.json");
    ok(&unpack(
        &b,
        &f,
        "-o",
        &r,
        &["--json", s(&jp), "-q", "--force"],
    ));
    let k: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&jp).unwrap()).unwrap();
    assert_eq!(k["tensors"], j["tensors"]);
    assert_eq!(k["bytes"], j["bytes"]);
    // synth too.
    let o = synth(&d.path().join("sy"), &["--json", "-", "-q"]);
    ok(&o);
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).expect("stdout is one JSON");
    assert_eq!(j["dtype"], "F32");
}

#[test]
fn each_error_class_has_its_exit_code() {
    let (d, b, t, f, r) = packed(3);

    // 2: flags clap refuses, and values resid refuses.
    fails_with(&run(&["pack", "--no-such-flag"]), exit::USAGE);
    fails_with(
        &pack(&b, &t, "-o", &f, &["--lossless", "--keep", "0.5"]),
        exit::USAGE,
    );
    let e = fails_with(
        &pack(&b, &t, "-o", &d.path().join("y.resid"), &["--keep", "2"]),
        exit::USAGE,
    );
    assert!(e.contains("resid: error:"), "{e}");
    fails_with(
        &run(&["synth", "--dtype", "q8", "-o", s(&d.path().join("s"))]),
        exit::USAGE,
    );

    // 3: a malformed checkpoint.
    let bad = d.path().join("bad.safetensors");
    std::fs::write(&bad, b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all}").unwrap();
    let e = fails_with(
        &pack(&b, &bad, "-o", &d.path().join("z.resid"), &["--lossless"]),
        exit::BAD_INPUT,
    );
    assert!(e.contains(s(&bad)), "{e}");
    fails_with(
        &run(&["analyze", "--base", s(&bad), "--trained", s(&t), "-q"]),
        exit::BAD_INPUT,
    );

    // 4: another base, and a flipped bit.
    let other = tempfile::tempdir().unwrap();
    let (b2, _) = small_pair(other.path(), 9);
    let e = fails_with(&unpack(&b2, &f, "-o", &r, &["-q"]), exit::MISMATCH);
    assert!(e.contains("another base"), "{e}");
    let mut flipped = std::fs::read(&f).unwrap();
    flipped[20] ^= 0x04;
    let g = d.path().join("flip.resid");
    std::fs::write(&g, &flipped).unwrap();
    fails_with(&unpack(&b, &g, "-o", &r, &["-q"]), exit::MISMATCH);
    // 3, not 4: a checkpoint given where a residual file belongs.
    fails_with(&run(&["inspect", s(&b)]), exit::BAD_INPUT);
    assert!(!r.exists(), "no output after a refusal");

    // 5: a missing file, and an output folder that does not exist.
    let missing = d.path().join("missing.safetensors");
    let e = fails_with(
        &pack(
            &missing,
            &t,
            "-o",
            &d.path().join("m.resid"),
            &["--lossless"],
        ),
        exit::IO,
    );
    assert!(e.contains(s(&missing)), "{e}");
    fails_with(
        &run(&["inspect", s(&d.path().join("none.resid"))]),
        exit::IO,
    );
    fails_with(
        &pack(
            &b,
            &t,
            "-o",
            &d.path().join("no/such/dir/x.resid"),
            &["--lossless"],
        ),
        exit::IO,
    );
}

#[test]
fn completions_name_every_subcommand() {
    let cmds = subcommands();
    for shell in ["bash", "zsh", "fish", "elvish", "powershell"] {
        let o = run(&["completions", shell]);
        ok(&o);
        let script = String::from_utf8(o.stdout).unwrap();
        for c in &cmds {
            assert!(script.contains(c.as_str()), "{shell}: no '{c}'");
        }
        let flag = if shell == "fish" { "-l out" } else { "--out" };
        assert!(script.contains(flag), "{shell}: flags missing");
    }
    fails_with(&run(&["completions", "tcsh"]), exit::USAGE);
}
