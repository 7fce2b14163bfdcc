//! `DirLock`: keeps two brokers off one data directory.
//!
//! The lock is the file `<data dir>/LOCK` holding the owner's process id, kept open by the
//! owner. It is created with `create_new`, so of two brokers starting together one wins; a
//! `LOCK` whose process does not hold it open (a broker killed with SIGKILL, or a number left by
//! a power cut: torn, or naming a process of the last boot that a new one reuses) is stale and
//! taken over. The check reads `/proc/<pid>/fd`: on systems without `/proc` every lock looks
//! stale (no protection, no false refusal); where that directory cannot be read (another user's
//! process) the lock is respected. An advisory `flock` would be exact, but needs `unsafe` (libc)
//! or a newer Rust than the workspace's minimum.

use std::fs::{self, OpenOptions};
use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};

use super::StoreError;

/// Held by an open store; removes `LOCK` when dropped.
#[derive(Debug)]
pub(crate) struct DirLock {
    path: PathBuf,
    /// `LOCK` itself, open for as long as the lock is held: what tells a live owner from a
    /// process that merely has the number written in the file.
    _file: std::fs::File,
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
                    return Ok(Self { path, _file: file });
                }
                Err(e) if e.kind() == ErrorKind::AlreadyExists => {
                    let owner = fs::read_to_string(&path)
                        .ok()
                        .and_then(|text| text.trim().parse::<u32>().ok());
                    if let Some(pid) = owner.filter(|&pid| pid != me && holds(pid, &path)) {
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

/// Whether process `pid` has `lock` open (Linux `/proc/<pid>/fd`). True when that cannot be
/// read for lack of permission: another user's live process may well be the owner.
fn holds(pid: u32, lock: &Path) -> bool {
    let fds = match fs::read_dir(Path::new("/proc").join(pid.to_string()).join("fd")) {
        Ok(fds) => fds,
        Err(e) => return e.kind() == ErrorKind::PermissionDenied,
    };
    let lock = fs::canonicalize(lock).unwrap_or_else(|_| lock.to_owned());
    fds.filter_map(Result::ok)
        .any(|fd| fs::read_link(fd.path()).is_ok_and(|target| target == lock))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::super::tests::TestDir;
    use super::*;

    #[test]
    fn a_live_owner_keeps_the_lock_and_a_dead_one_loses_it() {
        let dir = TestDir::new();
        // A live process holding LOCK open (a child that opened it): respected.
        fs::write(dir.0.join("LOCK"), "0").unwrap();
        let mut holder = std::process::Command::new("sh")
            .arg("-c")
            .arg("exec sleep 30 < \"$0\"")
            .arg(dir.0.join("LOCK"))
            .spawn()
            .unwrap();
        let lock = dir.0.join("LOCK");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !holds(holder.id(), &lock) {
            assert!(std::time::Instant::now() < deadline, "the child opens LOCK");
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        // Rewritten in place (same file), as the owner wrote it.
        fs::write(&lock, holder.id().to_string()).unwrap();
        let locked = match DirLock::acquire(&dir.0) {
            Err(StoreError::Locked { pid }) => pid,
            other => panic!("{other:?}"),
        };
        assert_eq!(locked, holder.id());
        holder.kill().unwrap();
        holder.wait().unwrap();
        // PID 1 always runs but does not hold LOCK (a number a power cut left, torn or from
        // the last boot): stale.
        fs::write(dir.0.join("LOCK"), "1").unwrap();
        drop(DirLock::acquire(&dir.0).unwrap());
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
