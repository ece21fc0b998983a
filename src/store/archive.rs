//! Tarball artifacts, read safely: every entry stays inside the unpacked
//! root (no absolute or `..` paths, symlinks and hard links only to places
//! inside it), and the unpacked size and entry count are bounded, so a
//! small `.tar.gz` cannot fill the disk (a decompression bomb).

use std::io::Read;
use std::path::{Component, Path, PathBuf};

use super::images::ArtifactKind;

/// Bounds on what one artifact may unpack to.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_total_bytes: u64,
    pub max_entry_bytes: u64,
    pub max_entries: u64,
}

pub const DEFAULT_MAX_UNPACKED_BYTES: u64 = 4 << 30;

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_total_bytes: DEFAULT_MAX_UNPACKED_BYTES,
            max_entry_bytes: DEFAULT_MAX_UNPACKED_BYTES,
            max_entries: 100_000,
        }
    }
}

fn human(bytes: u64) -> String {
    if bytes >= 1 << 30 {
        format!("{:.1} GiB", bytes as f64 / (1u64 << 30) as f64)
    } else {
        format!("{} MiB", bytes >> 20)
    }
}

/// `path` with `.` and `..` folded, without touching the disk; `None` if it climbs above its start.
fn normalise(path: &Path) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::Normal(p) => out.push(p),
            Component::CurDir => {}
            Component::ParentDir => {
                if !out.pop() {
                    return None;
                }
            }
            Component::RootDir | Component::Prefix(_) => return None,
        }
    }
    Some(out)
}

/// Why an artifact could not be unpacked: the artifact itself (permanent:
/// the same bytes fail again), or this host (a full disk, too many open
/// files: worth another attempt).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UnpackError {
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Host(String),
}

impl UnpackError {
    /// An IO error while writing: one the system reported (a full disk,
    /// too many open files, an IO error) is this host's; any other (the
    /// archive's data ended or is damaged) is the artifact's.
    fn of_io(e: &std::io::Error, message: String) -> UnpackError {
        // The tar crate wraps the error it met: look at that one.
        let mut cur = e;
        while let Some(inner) = cur.get_ref().and_then(|i| {
            i.downcast_ref::<std::io::Error>().or_else(|| i.source().and_then(|s| s.downcast_ref::<std::io::Error>()))
        }) {
            cur = inner;
        }
        match cur.raw_os_error() {
            Some(_) => UnpackError::Host(message),
            None => UnpackError::Invalid(message),
        }
    }

    pub fn is_retryable(&self) -> bool {
        matches!(self, UnpackError::Host(_))
    }
}

/// Walks the archive, checking every entry; `unpack_to` also writes them.
fn walk(reader: impl Read, unpack_to: Option<&Path>, limits: &Limits) -> Result<(), UnpackError> {
    use UnpackError::Invalid;
    let mut archive = tar::Archive::new(reader);
    archive.set_overwrite(false);
    let (mut total, mut count) = (0u64, 0u64);
    for entry in archive.entries().map_err(|e| Invalid(format!("not a readable tar archive: {e}")))? {
        let mut entry = entry.map_err(|e| Invalid(format!("a damaged tar entry: {e}")))?;
        count += 1;
        if count > limits.max_entries {
            return Err(Invalid(format!("it has more than {} entries", limits.max_entries)));
        }
        let path = entry.path().map_err(|e| Invalid(format!("an entry has a bad path: {e}")))?.into_owned();
        let inside =
            normalise(&path).ok_or_else(|| Invalid(format!("entry {} leaves the artifact's root", path.display())))?;
        let size = entry.header().size().map_err(|e| Invalid(format!("entry {}: {e}", path.display())))?;
        if size > limits.max_entry_bytes {
            return Err(Invalid(format!(
                "entry {} unpacks to {}, more than the {} limit per file",
                path.display(),
                human(size),
                human(limits.max_entry_bytes)
            )));
        }
        total += size;
        if total > limits.max_total_bytes {
            return Err(Invalid(format!("it unpacks to more than {} (the limit)", human(limits.max_total_bytes))));
        }
        let kind = entry.header().entry_type();
        if kind.is_symlink() || kind.is_hard_link() {
            let target = entry
                .link_name()
                .map_err(|e| Invalid(format!("entry {}: {e}", path.display())))?
                .ok_or_else(|| Invalid(format!("link {} has no target", path.display())))?
                .into_owned();
            // A symlink resolves from its own directory; a hard link from the root.
            let from =
                if kind.is_symlink() { inside.parent().unwrap_or(Path::new("")).join(&target) } else { target.clone() };
            if target.is_absolute() || normalise(&from).is_none() {
                return Err(Invalid(format!(
                    "link {} points outside the artifact ({})",
                    path.display(),
                    target.display()
                )));
            }
        }
        if let Some(root) = unpack_to {
            let written = entry
                .unpack_in(root)
                .map_err(|e| UnpackError::of_io(&e, format!("cannot unpack {}: {e}", path.display())))?;
            if !written {
                return Err(Invalid(format!("entry {} leaves the artifact's root", path.display())));
            }
        }
    }
    Ok(())
}

fn reader<'a>(raw: impl Read + 'a, kind: ArtifactKind) -> Box<dyn Read + 'a> {
    match kind {
        ArtifactKind::TarGz => Box::new(flate2::read::GzDecoder::new(raw)),
        _ => Box::new(raw),
    }
}

/// Checks a tarball without writing anything (at import).
pub fn check(bytes: &[u8], kind: ArtifactKind, limits: &Limits) -> Result<(), String> {
    walk(reader(bytes, kind), None, limits).map_err(|e| e.to_string())
}

/// The same, reading the tarball from a file (an import being streamed in).
pub fn check_file(path: &Path, kind: ArtifactKind, limits: &Limits) -> Result<(), String> {
    let file = std::fs::File::open(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    walk(reader(std::io::BufReader::new(file), kind), None, limits).map_err(|e| e.to_string())
}

/// Unpacks a tarball under `root`, checking every entry first.
pub fn unpack(bytes: &[u8], kind: ArtifactKind, root: &Path, limits: &Limits) -> Result<(), UnpackError> {
    std::fs::create_dir_all(root).map_err(|e| UnpackError::Host(format!("cannot create {}: {e}", root.display())))?;
    walk(reader(bytes, kind), Some(root), limits)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tarball(build: impl FnOnce(&mut tar::Builder<Vec<u8>>)) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        build(&mut b);
        b.into_inner().unwrap()
    }

    fn file(b: &mut tar::Builder<Vec<u8>>, path: &str, size: u64) {
        let mut h = tar::Header::new_gnu();
        h.set_size(size);
        h.set_mode(0o755);
        h.set_cksum();
        b.append_data(&mut h, path, std::io::repeat(0).take(size)).unwrap();
    }

    fn link(b: &mut tar::Builder<Vec<u8>>, path: &str, target: &str) {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Symlink);
        h.set_size(0);
        b.append_link(&mut h, path, target).unwrap();
    }

    #[test]
    fn a_bad_archive_is_permanent_and_a_host_failure_is_worth_retrying() {
        let ok = tarball(|b| file(b, "bin/server", 4096));
        let dir = tempfile::tempdir().unwrap();
        // Truncated in the middle of its one file: the artifact's fault.
        let cut = &ok[..512 + 1000];
        let err = unpack(cut, ArtifactKind::Tar, &dir.path().join("a"), &Limits::default()).unwrap_err();
        assert!(!err.is_retryable(), "{err}");
        // Where the root should be there is a file: the host's trouble.
        let blocked = dir.path().join("blocked");
        std::fs::write(&blocked, b"x").unwrap();
        let err = unpack(&ok, ArtifactKind::Tar, &blocked.join("root"), &Limits::default()).unwrap_err();
        assert!(err.is_retryable(), "{err}");
    }

    #[test]
    fn links_stay_inside_and_sizes_are_bounded() {
        let ok = tarball(|b| {
            file(b, "bin/server", 10);
            link(b, "bin/current", "server");
            link(b, "lib/up", "../bin/server");
        });
        let dir = tempfile::tempdir().unwrap();
        unpack(&ok, ArtifactKind::Tar, dir.path(), &Limits::default()).unwrap();
        assert!(dir.path().join("bin/current").exists());
        for (what, bad) in [
            ("absolute", tarball(|b| link(b, "bindir", "/bin"))),
            ("climbing", tarball(|b| link(b, "a/b", "../../etc"))),
        ] {
            let err = check(&bad, ArtifactKind::Tar, &Limits::default()).unwrap_err();
            assert!(err.contains("points outside the artifact"), "{what}: {err}");
        }
        let limits = Limits { max_total_bytes: 1 << 20, max_entry_bytes: 1 << 20, max_entries: 3 };
        let big = tarball(|b| file(b, "zeros", 2 << 20));
        assert!(check(&big, ArtifactKind::Tar, &limits).unwrap_err().contains("limit per file"));
        let many = tarball(|b| (0..4).for_each(|i| file(b, &format!("f{i}"), 1)));
        assert!(check(&many, ArtifactKind::Tar, &limits).unwrap_err().contains("more than 3 entries"));
    }
}
