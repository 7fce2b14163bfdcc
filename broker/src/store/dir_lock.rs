//! `DirLock`: keeps two brokers off one data directory.
//!
//! The lock is an advisory exclusive `flock` on `<data dir>/LOCK` (std's `File::try_lock`),
//! held through the open file for as long as the store is open. The kernel releases it when
//! that file is closed: when the store closes, or when the process dies, however it dies
//! (SIGKILL included, before the dead process is reaped). So nothing about the file is trusted:
//! a `LOCK` file left behind is just a file, whatever PID it names, and two brokers that share
//! a volume from different PID namespaces (two containers, both PID 1) still exclude each
//! other. A `flock` belongs to the open file, not the process: a second store opened on the
//! same directory by the same process is refused too.
//!
//! The holder writes its PID into the file, for the operator and for the refusal's message;
//! the PID is never read to decide anything. The file is never deleted: deleting a locked file
//! would let a third broker lock a new file under the same name while the second still holds
//! the old one.
//!
//! A process that forks while holding the lock shares it with the child until the child execs
//! (std opens files close-on-exec): for that moment, closing the store does not release it.
//! The broker spawns no processes, but a program embedding it may (test harnesses do), so a
//! busy lock is retried for [`RETRY_FOR`] before the start is refused.
//!
//! Not covered: file systems that do not enforce `flock` between hosts (some NFS setups).

use std::fs::{self, File, OpenOptions, TryLockError};
use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use super::StoreError;

/// How long a lock held by someone else is retried before [`StoreError::Locked`]: long enough
/// for a forked child to exec (see the module doc), short next to a broker's start.
const RETRY_FOR: Duration = Duration::from_secs(2);

/// Held by an open store; the lock is released when it is dropped (the file is closed).
#[derive(Debug)]
pub(crate) struct DirLock {
    _file: File,
}

impl DirLock {
    /// Takes the lock of `data_dir`, or fails with [`StoreError::Locked`] when another open
    /// file (another broker, in this process or another one) holds it.
    pub(crate) fn acquire(data_dir: &Path) -> Result<Self, StoreError> {
        let path = data_dir.join("LOCK");
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| StoreError::io(&path, e))?;
        let started = Instant::now();
        loop {
            match file.try_lock() {
                Ok(()) => break,
                Err(TryLockError::WouldBlock) if started.elapsed() < RETRY_FOR => {
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(TryLockError::WouldBlock) => {
                    // Informational only: the holder may not have written it yet.
                    let pid = fs::read_to_string(&path)
                        .ok()
                        .and_then(|text| text.trim().parse::<u32>().ok());
                    return Err(StoreError::Locked {
                        dir: data_dir.to_owned(),
                        pid,
                    });
                }
                Err(TryLockError::Error(e)) => return Err(StoreError::io(&path, e)),
            }
        }
        file.set_len(0)
            .and_then(|()| file.write_all(std::process::id().to_string().as_bytes()))
            .map_err(|e| StoreError::io(&path, e))?;
        Ok(Self { _file: file })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::super::tests::TestDir;
    use super::*;

    #[test]
    fn one_holder_at_a_time_and_the_file_content_is_never_trusted() {
        let dir = TestDir::new();
        // A lock file naming a running process (PID 1), left by a broker that is gone.
        fs::write(dir.0.join("LOCK"), "1").unwrap();
        let lock = DirLock::acquire(&dir.0).unwrap();
        assert_eq!(
            fs::read_to_string(dir.0.join("LOCK")).unwrap(),
            std::process::id().to_string()
        );
        // Held by an open file of this very process: refused all the same.
        let err = DirLock::acquire(&dir.0).unwrap_err();
        assert!(
            matches!(&err, StoreError::Locked { pid: Some(pid), .. } if *pid == std::process::id()),
            "{err:?}"
        );
        assert!(
            err.to_string().contains("in use by another process"),
            "{err}"
        );
        drop(lock);
        // Released with the file; the file itself stays.
        assert!(dir.0.join("LOCK").exists());
        drop(DirLock::acquire(&dir.0).unwrap());
    }
}
