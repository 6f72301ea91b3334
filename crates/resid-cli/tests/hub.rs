//! Repo ids from a Hugging Face cache the test builds as huggingface_hub
//! lays it out (refs/main, snapshots/<commit>/ with symlinks into blobs/),
//! used by the real binary through HF_HUB_CACHE and HF_HOME.
#![cfg(unix)]

use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::Output;

mod common;
use common::{exit, fails_with, ok, run_env, s, small_pair};

const COMMIT: &str = "4f1e3c2b1a0987654321fedcba9876543210abcd";

/// Caches `file` as `model.safetensors` of `repo` (org/name) under `cache`:
/// the bytes in blobs/, a relative symlink in snapshots/COMMIT/, refs/main.
/// Returns the snapshot folder.
fn cache_model(cache: &Path, repo: &str, file: &Path) -> PathBuf {
    let m = cache.join(format!("models--{}", repo.replace('/', "--")));
    let snap = m.join("snapshots").join(COMMIT);
    std::fs::create_dir_all(m.join("blobs")).unwrap();
    std::fs::create_dir_all(m.join("refs")).unwrap();
    std::fs::create_dir_all(&snap).unwrap();
    let blob = format!("{:016x}", std::fs::metadata(file).unwrap().len());
    std::fs::copy(file, m.join("blobs").join(&blob)).unwrap();
    symlink(
        Path::new("../../blobs").join(&blob),
        snap.join("model.safetensors"),
    )
    .unwrap();
    std::fs::write(m.join("refs/main"), COMMIT).unwrap();
    snap
}

/// A work folder holding a small pair, and a cache holding the same pair as
/// org/base and org/tuned.
struct Fixture {
    work: tempfile::TempDir,
    cache: tempfile::TempDir,
    base: PathBuf,
    trained: PathBuf,
    /// org/base's snapshot folder.
    snap: PathBuf,
}

impl Fixture {
    fn new() -> Fixture {
        let work = tempfile::tempdir().unwrap();
        let cache = tempfile::tempdir().unwrap();
        let (base, trained) = small_pair(work.path(), 5);
        let snap = cache_model(cache.path(), "org/base", &base);
        cache_model(cache.path(), "org/tuned", &trained);
        Fixture {
            work,
            cache,
            base,
            trained,
            snap,
        }
    }

    fn w(&self) -> &Path {
        self.work.path()
    }

    /// resid in the work folder with HF_HUB_CACHE set to the cache.
    fn resid(&self, args: &[&str]) -> Output {
        run_env(self.w(), &[("HF_HUB_CACHE", self.cache.path())], args)
    }

    /// A lossless pack of `base` and `trained` (paths or ids) into `out`.
    fn pack(&self, base: &str, trained: &str, out: &Path, extra: &[&str]) -> Output {
        let mut a = vec![
            "pack",
            "--base",
            base,
            "--trained",
            trained,
            "-o",
            s(out),
            "--lossless",
        ];
        a.extend_from_slice(extra);
        self.resid(&a)
    }
}

#[test]
fn pack_and_unpack_by_repo_id_match_the_same_by_path() {
    let f = Fixture::new();
    let w = f.w();
    let by_path = w.join("p.resid");
    ok(&f.pack(s(&f.base), s(&f.trained), &by_path, &["-q"]));
    let by_id = w.join("i.resid");
    let o = f.pack("org/base", "org/tuned@main", &by_id, &[]);
    ok(&o);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("org/base@main") && err.contains(COMMIT),
        "{err}"
    );
    // What unpack rebuilds from either file, the base named by commit or by path.
    let rebuild = |base: &str, file: &Path, name: &str| {
        let r = w.join(name);
        ok(&f.resid(&["unpack", "--base", base, s(file), "-o", s(&r), "-q"]));
        std::fs::read(&r).unwrap()
    };
    assert!(
        rebuild(&format!("org/base@{COMMIT}"), &by_id, "r1.safetensors")
            == rebuild(s(&f.base), &by_path, "r2.safetensors"),
        "the rebuilds differ"
    );
    // The file made from repo ids records them with their commits; the one
    // made from paths records none; verify takes the base by id.
    let shown =
        |file: &Path| String::from_utf8_lossy(&f.resid(&["inspect", s(file)]).stdout).into_owned();
    let by_id_shown = shown(&by_id);
    assert!(
        by_id_shown.contains(&format!(
            "base org/base@{COMMIT} and trained org/tuned@{COMMIT}"
        )),
        "{by_id_shown}"
    );
    assert!(shown(&by_path).contains("base a local path and trained a local path"));
    let j = w.join("i.json");
    ok(&f.resid(&["inspect", s(&by_id), "--json", s(&j)]));
    let doc: serde_json::Value = serde_json::from_slice(&std::fs::read(&j).unwrap()).unwrap();
    assert_eq!(doc["provenance"]["trained_repo"], "org/tuned");
    assert_eq!(doc["provenance"]["base_revision"], COMMIT);
    ok(&f.resid(&[
        "verify",
        s(&by_id),
        "--base",
        "org/base",
        "--against",
        "org/tuned",
        "-q",
    ]));
    // HF_HOME/hub finds the same cache when HF_HUB_CACHE is unset.
    let home = tempfile::tempdir().unwrap();
    symlink(f.cache.path(), home.path().join("hub")).unwrap();
    let j = w.join("a.json");
    let args = [
        "analyze",
        "--base",
        "org/base",
        "--trained",
        "org/tuned",
        "--json",
        s(&j),
        "-q",
    ];
    ok(&run_env(w, &[("HF_HOME", home.path())], &args));
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&j).unwrap()).unwrap();
    assert!(v.is_object());
}

#[test]
fn a_missing_model_or_revision_names_the_cache_folder() {
    let f = Fixture::new();
    let out = f.w().join("x.resid");
    let e = fails_with(&f.pack("org/nope", "org/tuned", &out, &[]), exit::IO);
    let folder = f.cache.path().join("models--org--nope");
    assert!(e.contains("org/nope") && e.contains(s(&folder)), "{e}");
    let e = fails_with(&f.pack("org/base@v9", "org/tuned", &out, &[]), exit::IO);
    assert!(e.contains("revision 'v9'"), "{e}");
    assert!(!out.exists());
}

#[test]
fn symlinks_out_of_the_cache_and_loops_are_refused() {
    let f = Fixture::new();
    let out = f.w().join("x.resid");
    let model = f.snap.join("model.safetensors");
    // model.safetensors pointing outside the cache (at a real checkpoint).
    std::fs::remove_file(&model).unwrap();
    symlink(&f.trained, &model).unwrap();
    let e = fails_with(
        &f.pack("org/base", "org/tuned", &out, &["-q"]),
        exit::BAD_INPUT,
    );
    assert!(
        e.contains("outside the cache") && e.contains("model.safetensors"),
        "{e}"
    );
    // A loop.
    std::fs::remove_file(&model).unwrap();
    symlink(f.snap.join("loop-b"), &model).unwrap();
    symlink(&model, f.snap.join("loop-b")).unwrap();
    let e = fails_with(
        &f.pack("org/base", "org/tuned", &out, &["-q"]),
        exit::BAD_INPUT,
    );
    assert!(e.contains("symlink loop"), "{e}");
    assert!(!out.exists());
}

#[test]
fn a_path_that_exists_wins_over_a_repo_id() {
    let f = Fixture::new();
    // ./org/base exists (an empty folder): it is read as the path, and
    // refused as a folder without a checkpoint, not taken from the cache.
    std::fs::create_dir_all(f.w().join("org/base")).unwrap();
    let o = f.pack("org/base", "org/tuned", Path::new("x.resid"), &["-q"]);
    let e = fails_with(&o, exit::BAD_INPUT);
    assert!(e.contains("org/base: no model.safetensors"), "{e}");
}
