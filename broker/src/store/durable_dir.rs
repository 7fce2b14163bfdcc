//! Creating directories durably: `mkdir` makes a directory entry, which survives a power cut
//! only once the directory holding it is fsynced (as for files, see `fsync(2)`).

use std::fs::{self, File};
use std::io;
use std::path::Path;

/// Creates `dir` and any missing parents (as `fs::create_dir_all`), then fsyncs the parent of
/// every directory created and the parent of `dir` itself, so that the whole path survives a
/// power cut. The last fsync is done even when `dir` already existed: a broker killed between
/// its `mkdir` and that fsync left an entry that a later power cut would still take away.
pub(crate) fn create_dir_durably(dir: &Path) -> io::Result<()> {
    let mut missing = Vec::new();
    let mut at = Some(dir);
    while let Some(path) = at.filter(|p| !p.as_os_str().is_empty() && !p.exists()) {
        missing.push(path);
        at = path.parent();
    }
    fs::create_dir_all(dir)?;
    let parent_of = |p: &Path| match p.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent.to_owned(),
        _ => std::path::PathBuf::from("."),
    };
    let mut synced = Vec::new();
    for path in missing.iter().rev().copied().chain(std::iter::once(dir)) {
        let parent = parent_of(path);
        if !synced.contains(&parent) {
            File::open(&parent)?.sync_all()?;
            synced.push(parent);
        }
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn creates_missing_parents_and_accepts_an_existing_dir() {
        let base = std::env::temp_dir().join(format!("lepus-durable-dir-{}", std::process::id()));
        let _ = fs::remove_dir_all(&base);
        let dir = base.join("a/b/c");
        create_dir_durably(&dir).unwrap();
        assert!(dir.is_dir());
        create_dir_durably(&dir).unwrap();
        fs::remove_dir_all(&base).unwrap();
    }
}
