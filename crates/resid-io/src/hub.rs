//! Repo ids (`org/name`, `org/name@revision`) resolved offline from the local
//! Hugging Face cache, laid out as huggingface_hub writes it:
//! `<cache>/models--org--name/refs/<revision>` holds a commit hash,
//! `snapshots/<commit>/` holds the files, most of them symlinks into `blobs/`.
//!
//! The cache is `HF_HUB_CACHE` (or the older `HUGGINGFACE_HUB_CACHE`), else
//! `HF_HOME/hub`, else `$XDG_CACHE_HOME/huggingface/hub`, else
//! `~/.cache/huggingface/hub`. Symlinks are followed only while they stay
//! inside the cache root; a link that leaves it, a loop or a dangling link is
//! an error naming the file. Nothing is downloaded.

use std::collections::HashSet;
use std::path::{Component, Path, PathBuf};

/// Everything that can go wrong finding a model in the cache.
#[derive(Debug, thiserror::Error)]
pub enum HubError {
    /// The cache has no folder for this repo id.
    #[error("model '{repo}' is not in the Hugging Face cache {cache} (no folder {searched}); resid reads the cache offline and downloads nothing")]
    NotCached {
        repo: String,
        cache: PathBuf,
        searched: PathBuf,
    },
    /// A checkpoint argument is neither an existing path nor a cached model.
    #[error("{arg}: no such file or folder, and no model '{arg}' in the Hugging Face cache {cache} (no folder {searched}); resid reads the cache offline and downloads nothing")]
    NotFound {
        arg: String,
        cache: PathBuf,
        searched: PathBuf,
    },
    /// The revision is neither a ref (branch or tag) nor a cached commit.
    #[error("model '{repo}': no revision '{revision}' in {folder} (neither refs/{revision} nor snapshots/{revision})")]
    NoRevision {
        repo: String,
        revision: String,
        folder: PathBuf,
    },
    /// A ref file that does not hold a commit, or names a missing snapshot.
    #[error("{path}: not a valid ref: {reason}")]
    BadRef { path: PathBuf, reason: String },
    /// A file of the snapshot resolves to a place outside the cache root.
    #[error("{path}: symlink leads to {target}, outside the cache {cache}")]
    OutsideCache {
        path: PathBuf,
        target: PathBuf,
        cache: PathBuf,
    },
    /// Following the symlinks of a file never ends.
    #[error("{path}: symlink loop")]
    SymlinkLoop { path: PathBuf },
    /// A symlink whose blob is missing.
    #[error("{path}: symlink to a missing file (incomplete download?)")]
    MissingBlob { path: PathBuf },
    /// The operating system failed a read of the cache.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

impl crate::Classify for HubError {
    fn class(&self) -> crate::ErrorClass {
        use crate::ErrorClass;
        match self {
            HubError::NotCached { .. }
            | HubError::NotFound { .. }
            | HubError::NoRevision { .. }
            | HubError::MissingBlob { .. }
            | HubError::Io { .. } => ErrorClass::Io,
            HubError::BadRef { .. }
            | HubError::OutsideCache { .. }
            | HubError::SymlinkLoop { .. } => ErrorClass::BadInput,
        }
    }
}

/// A model's id on the Hub: `name` or `org/name`, and a revision (a branch
/// or tag under `refs/`, or a commit hash under `snapshots/`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RepoId {
    /// `org/name` (or `name`).
    pub repo: String,
    /// The revision asked for; `main` when none.
    pub revision: String,
}

impl RepoId {
    /// Parses `org/name[@revision]`; `None` for anything that is not shaped
    /// like a repo id (a path such as `./x`, `/abs`, `a/b/c` or `dir/`).
    pub fn parse(s: &str) -> Option<RepoId> {
        let (repo, revision) = match s.split_once('@') {
            Some((r, rev)) => (r, Some(rev)),
            None => (s, None),
        };
        let parts: Vec<&str> = repo.split('/').collect();
        if parts.is_empty() || parts.len() > 2 || !parts.iter().all(|p| valid_name(p)) {
            return None;
        }
        let revision = match revision {
            Some(r) if valid_revision(r) => r.to_string(),
            Some(_) => return None,
            None => "main".to_string(),
        };
        Some(RepoId {
            repo: repo.to_string(),
            revision,
        })
    }

    /// The cache folder's name: `models--org--name`.
    pub fn folder_name(&self) -> String {
        format!("models--{}", self.repo.replace('/', "--"))
    }
}

impl std::fmt::Display for RepoId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}@{}", self.repo, self.revision)
    }
}

/// A name part of a repo id, as the Hub allows them: letters, digits, `-`,
/// `_`, `.`; not starting or ending with `-` or `.`, no `--` or `..`.
fn valid_name(p: &str) -> bool {
    !p.is_empty()
        && p.len() <= 96
        && p.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && !p.starts_with(['-', '.'])
        && !p.ends_with(['-', '.'])
        && !p.contains("--")
        && !p.contains("..")
}

/// A revision is a relative path of plain components (`main`, `v1.0`,
/// `refs/pr/1` is written `pr/1`), never `..` or absolute.
fn valid_revision(r: &str) -> bool {
    !r.is_empty()
        && Path::new(r)
            .components()
            .all(|c| matches!(c, Component::Normal(_)))
        && !r.contains('\\')
}

/// The cache folder the environment names (see the module doc).
pub fn cache_dir() -> Option<PathBuf> {
    let var = |k: &str| {
        std::env::var_os(k)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    if let Some(p) = var("HF_HUB_CACHE").or_else(|| var("HUGGINGFACE_HUB_CACHE")) {
        return Some(p);
    }
    if let Some(h) = var("HF_HOME") {
        return Some(h.join("hub"));
    }
    if let Some(x) = var("XDG_CACHE_HOME") {
        return Some(x.join("huggingface").join("hub"));
    }
    var("HOME").map(|h| h.join(".cache").join("huggingface").join("hub"))
}

/// A model found in the cache.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resolved {
    pub id: RepoId,
    /// The commit the revision points at (the snapshot's folder name).
    pub commit: String,
    /// `<cache>/models--org--name/snapshots/<commit>`.
    pub snapshot: PathBuf,
}

/// Finds `id` in the cache at `cache` and checks that every file of the
/// snapshot stays inside `cache` (following the snapshot's symlinks).
pub fn resolve_in(cache: &Path, id: &RepoId) -> Result<Resolved, HubError> {
    let folder = cache.join(id.folder_name());
    if !folder.is_dir() {
        return Err(HubError::NotCached {
            repo: id.repo.clone(),
            cache: cache.to_path_buf(),
            searched: folder,
        });
    }
    let ref_path = folder.join("refs").join(&id.revision);
    let commit = if ref_path.is_file() {
        let text = std::fs::read_to_string(&ref_path).map_err(|source| HubError::Io {
            path: ref_path.clone(),
            source,
        })?;
        let c = text.trim();
        if c.is_empty() || !c.chars().all(|ch| ch.is_ascii_alphanumeric()) {
            return Err(HubError::BadRef {
                path: ref_path,
                reason: format!("expected a commit hash, found {:?}", truncate(c)),
            });
        }
        c.to_string()
    } else if folder.join("snapshots").join(&id.revision).is_dir() && !id.revision.contains('/') {
        id.revision.clone()
    } else {
        return Err(HubError::NoRevision {
            repo: id.repo.clone(),
            revision: id.revision.clone(),
            folder,
        });
    };
    let snapshot = folder.join("snapshots").join(&commit);
    if !snapshot.is_dir() {
        return Err(HubError::BadRef {
            path: ref_path,
            reason: format!(
                "names commit {commit}, but {} is missing",
                snapshot.display()
            ),
        });
    }
    check_inside(cache, &snapshot)?;
    Ok(Resolved {
        id: id.clone(),
        commit,
        snapshot,
    })
}

fn truncate(s: &str) -> String {
    s.chars().take(60).collect()
}

/// Walks `dir` and fails on the first entry whose real path leaves `root`,
/// loops, or dangles.
fn check_inside(root: &Path, dir: &Path) -> Result<(), HubError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| HubError::Io { path, source }
    };
    let root_real = std::fs::canonicalize(root).map_err(io(root))?;
    let mut seen = HashSet::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let real = real_path(&d, &root_real)?;
        if !seen.insert(real) {
            continue;
        }
        for e in std::fs::read_dir(&d).map_err(io(&d))? {
            let p = e.map_err(io(&d))?.path();
            let real = real_path(&p, &root_real)?;
            if real.is_dir() {
                stack.push(p);
            }
        }
    }
    Ok(())
}

/// The canonical path of `p`, which must lie under `root_real`.
fn real_path(p: &Path, root_real: &Path) -> Result<PathBuf, HubError> {
    match std::fs::canonicalize(p) {
        Ok(r) if r.starts_with(root_real) => Ok(r),
        Ok(r) => Err(HubError::OutsideCache {
            path: p.to_path_buf(),
            target: r,
            cache: root_real.to_path_buf(),
        }),
        Err(e) if is_loop(&e) => Err(HubError::SymlinkLoop {
            path: p.to_path_buf(),
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && p.is_symlink() => {
            Err(HubError::MissingBlob {
                path: p.to_path_buf(),
            })
        }
        Err(source) => Err(HubError::Io {
            path: p.to_path_buf(),
            source,
        }),
    }
}

/// ELOOP ("too many levels of symbolic links"); `io::ErrorKind` has no
/// stable variant for it yet.
fn is_loop(e: &std::io::Error) -> bool {
    #[cfg(target_os = "linux")]
    const ELOOP: i32 = 40;
    #[cfg(not(target_os = "linux"))]
    const ELOOP: i32 = 62;
    e.raw_os_error() == Some(ELOOP)
}

/// Where a checkpoint argument points: a path as given, or a cached model.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Location {
    Path(PathBuf),
    Hub(Resolved),
}

impl Location {
    /// The file or folder to open.
    pub fn path(&self) -> &Path {
        match self {
            Location::Path(p) => p,
            Location::Hub(r) => &r.snapshot,
        }
    }

    /// The repo id and the commit it resolved to, as a residual file's
    /// provenance records them; `None` for a plain path.
    pub fn provenance(&self) -> Option<(&str, &str)> {
        match self {
            Location::Path(_) => None,
            Location::Hub(r) => Some((&r.id.repo, &r.commit)),
        }
    }
}

/// Reads a checkpoint argument: a path that exists wins; otherwise
/// something shaped like a repo id is looked up in the cache
/// ([`cache_dir`]); anything else is returned as a path (opening it then
/// reports the missing file).
pub fn locate(arg: &Path) -> Result<Location, HubError> {
    locate_in(arg, cache_dir().as_deref())
}

/// [`locate`] with the cache given (`None`: no cache known).
pub fn locate_in(arg: &Path, cache: Option<&Path>) -> Result<Location, HubError> {
    if std::fs::symlink_metadata(arg).is_ok() {
        return Ok(Location::Path(arg.to_path_buf()));
    }
    let id = arg.to_str().and_then(RepoId::parse);
    match (id, cache) {
        (Some(id), Some(cache)) => match resolve_in(cache, &id) {
            // A typo in a path reads as a repo id: say both were tried.
            Err(HubError::NotCached {
                cache, searched, ..
            }) => Err(HubError::NotFound {
                arg: arg.display().to_string(),
                cache,
                searched,
            }),
            r => r.map(Location::Hub),
        },
        _ => Ok(Location::Path(arg.to_path_buf())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repo_ids_parse_and_paths_do_not() {
        let r = RepoId::parse("org/name@v1.0").unwrap();
        assert_eq!((r.repo.as_str(), r.revision.as_str()), ("org/name", "v1.0"));
        assert_eq!(r.folder_name(), "models--org--name");
        assert_eq!(RepoId::parse("gpt2").unwrap().revision, "main");
        assert_eq!(RepoId::parse("gpt2").unwrap().folder_name(), "models--gpt2");
        assert_eq!(RepoId::parse("a/b@pr/1").unwrap().revision, "pr/1");
        for not in [
            "./x",
            "/abs/x",
            "a/b/c",
            "dir/",
            "a/../b",
            "a/b@../x",
            "a/b@",
            "-x/y",
            "a--b/c",
            "x.safetensors/",
            "",
            "a b/c",
        ] {
            assert!(RepoId::parse(not).is_none(), "{not}");
        }
    }

    #[cfg(unix)]
    fn fake_cache() -> (tempfile::TempDir, PathBuf) {
        use std::os::unix::fs::symlink;
        let d = tempfile::tempdir().unwrap();
        let m = d.path().join("models--org--name");
        let commit = "0123456789abcdef0123456789abcdef01234567";
        std::fs::create_dir_all(m.join("blobs")).unwrap();
        std::fs::create_dir_all(m.join("refs")).unwrap();
        std::fs::create_dir_all(m.join("snapshots").join(commit)).unwrap();
        std::fs::write(m.join("blobs/aaaa"), b"{}").unwrap();
        std::fs::write(m.join("refs/main"), commit).unwrap();
        symlink(
            "../../blobs/aaaa",
            m.join("snapshots").join(commit).join("config.json"),
        )
        .unwrap();
        (d, m.join("snapshots").join(commit))
    }

    #[cfg(unix)]
    #[test]
    fn refs_commits_and_refusals() {
        use std::os::unix::fs::symlink;
        let (d, snap) = fake_cache();
        let c = d.path();
        let id = RepoId::parse("org/name").unwrap();
        let r = resolve_in(c, &id).unwrap();
        assert_eq!(r.snapshot, snap);
        let by_commit = RepoId::parse(&format!("org/name@{}", r.commit)).unwrap();
        assert_eq!(resolve_in(c, &by_commit).unwrap().snapshot, snap);
        let e = resolve_in(c, &RepoId::parse("org/other").unwrap()).unwrap_err();
        assert!(matches!(e, HubError::NotCached { .. }));
        assert!(e.to_string().contains("models--org--other"), "{e}");
        let e = resolve_in(c, &RepoId::parse("org/name@dev").unwrap()).unwrap_err();
        assert!(matches!(e, HubError::NoRevision { .. }), "{e}");
        // A symlink out of the cache.
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("secret"), b"x").unwrap();
        symlink(outside.path().join("secret"), snap.join("leak")).unwrap();
        let e = resolve_in(c, &id).unwrap_err();
        assert!(matches!(e, HubError::OutsideCache { .. }), "{e}");
        std::fs::remove_file(snap.join("leak")).unwrap();
        // A loop.
        symlink(snap.join("b"), snap.join("a")).unwrap();
        symlink(snap.join("a"), snap.join("b")).unwrap();
        let e = resolve_in(c, &id).unwrap_err();
        assert!(matches!(e, HubError::SymlinkLoop { .. }), "{e}");
        std::fs::remove_file(snap.join("a")).unwrap();
        std::fs::remove_file(snap.join("b")).unwrap();
        // A dangling blob link.
        symlink("../../blobs/missing", snap.join("model.safetensors")).unwrap();
        let e = resolve_in(c, &id).unwrap_err();
        assert!(matches!(e, HubError::MissingBlob { .. }), "{e}");
    }

    #[cfg(unix)]
    #[test]
    fn provenance_is_the_repo_and_its_commit() {
        let (d, _) = fake_cache();
        let loc = locate_in(Path::new("org/name@main"), Some(d.path())).unwrap();
        let commit = resolve_in(d.path(), &RepoId::parse("org/name").unwrap())
            .unwrap()
            .commit;
        assert_eq!(loc.provenance(), Some(("org/name", commit.as_str())));
        let here = tempfile::tempdir().unwrap();
        let loc = locate_in(here.path(), Some(d.path())).unwrap();
        assert_eq!(loc.provenance(), None);
    }

    #[cfg(unix)]
    #[test]
    fn an_existing_path_wins_over_a_repo_id() {
        let (d, snap) = fake_cache();
        let here = tempfile::tempdir().unwrap();
        let local = here.path().join("org");
        std::fs::create_dir_all(local.join("name")).unwrap();
        let arg = local.join("name");
        assert_eq!(
            locate_in(&arg, Some(d.path())).unwrap(),
            Location::Path(arg.clone())
        );
        let l = locate_in(Path::new("org/name"), Some(d.path())).unwrap();
        assert_eq!(l.path(), snap);
        // No cache known: the argument stays a path.
        assert_eq!(
            locate_in(Path::new("org/name"), None).unwrap(),
            Location::Path("org/name".into())
        );
    }
}
