//! `DirLock`: keeps two brokers off one data directory.
//!
//! The lock is the file `<data dir>/LOCK` holding the owner's process id. It is created with
//! `create_new`, so of two brokers starting together one wins; a `LOCK` left by a process that
//! no longer runs (a broker killed with SIGKILL) is stale and taken over. Liveness is read from
//! `/proc/<pid>`: on systems without `/proc` every lock looks stale (no protection, no false
//! refusal). An advisory `flock` would be exact, but needs `unsafe` (libc) or a newer Rust than
//! the workspace's minimum.

use std::fs::{self, OpenOptions};
use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};

use super::StoreError;

/// Held by an open store; removes `LOCK` when dropped.
#[derive(Debug)]
pub(crate) struct DirLock {
    path: PathBuf,
}

impl DirLock {
    /// Takes the lock of `data_dir`, or fails with [`StoreError::Locked`] when a live process
    /// other than this one holds it.
    pub(crate) fn acquire(data_dir: &Path) -> Result<Self, StoreError> {
        let path = data_dir.join("LOCK");
        let me = std::process::id();
        loop {
            match OpenOptions::new().write(true).create_new(true).open(&path) {
                Ok(mut file) => {
                    file.write_all(me.to_string().as_bytes())
                        .map_err(|e| StoreError::io(&path, e))?;
                    return Ok(Self { path });
                }
                Err(e) if e.kind() == ErrorKind::AlreadyExists => {
                    let owner = fs::read_to_string(&path)
                        .ok()
                        .and_then(|text| text.trim().parse::<u32>().ok());
                    if let Some(pid) = owner.filter(|&pid| pid != me && alive(pid)) {
                        return Err(StoreError::Locked { pid });
                    }
                    tracing::warn!(path = %path.display(), ?owner, "taking over a stale lock");
                    match fs::remove_file(&path) {
                        Ok(()) => {}
                        Err(e) if e.kind() == ErrorKind::NotFound => {}
                        Err(e) => return Err(StoreError::io(&path, e)),
                    }
                }
                Err(e) => return Err(StoreError::io(&path, e)),
            }
        }
    }
}

impl Drop for DirLock {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.path);
    }
}

/// Whether process `pid` exists (Linux `/proc`).
fn alive(pid: u32) -> bool {
    Path::new("/proc").join(pid.to_string()).exists()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::super::tests::TestDir;
    use super::*;

    #[test]
    fn a_live_owner_keeps_the_lock_and_a_dead_one_loses_it() {
        let dir = TestDir::new();
        // PID 1 always runs: its lock is respected.
        fs::write(dir.0.join("LOCK"), "1").unwrap();
        assert!(matches!(
            DirLock::acquire(&dir.0),
            Err(StoreError::Locked { pid: 1 })
        ));
        // A pid beyond the kernel's maximum cannot run: the lock is stale.
        fs::write(dir.0.join("LOCK"), "4194305").unwrap();
        let lock = DirLock::acquire(&dir.0).unwrap();
        assert_eq!(
            fs::read_to_string(dir.0.join("LOCK")).unwrap(),
            std::process::id().to_string()
        );
        drop(lock);
        assert!(!dir.0.join("LOCK").exists());
    }
}
