//! The space reserve: a file of zeros under the data directory, given back to the file system
//! when the disk fills, so that the store can still write what frees space.
//!
//! Every way to free space in the log goes through the log: a segment is deleted only once
//! remove (or purge) records for all its messages are committed. On a full disk those records
//! cannot be written, so without a reserve a full disk stays full, across restarts too: the
//! consumers' acks are refused, nothing is ever compacted. With it:
//! 1. the writer's `write` fails with `ENOSPC`: it deletes the reserve and writes the same
//!    bytes again at the same offset (a failed `write` may be retried: unlike a failed
//!    `fsync`, it leaves no page of unknown state behind);
//! 2. the store is *low on space*: it refuses the records that would grow the log (published
//!    messages, declares, binds: [`super::StoreError::NoSpace`], a nack or a channel error for
//!    the client) and accepts those that free it (removes, purges, deletes, unbinds) and
//!    dead-lettered messages (their source's remove follows: refusing them would lose them);
//! 3. once compaction (or the operator) has freed twice the reserve, the reserve is written
//!    again and the store accepts everything again.
//!
//! A store opened on a disk too full to hold its reserve starts low on space. A `write` that
//! still fails with `ENOSPC` (no reserve left, or a batch larger than what the reserve freed)
//! is cut off again and its batch refused; the store stays low on space and the writer goes on
//! (see `log_writer/thread.rs`).
//!
//! ```text
//! <data dir>/reserve   RESERVE bytes of zeros (written, fsynced); absent while low on space
//! ```

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use super::segment::sync_dir;
use super::StoreError;

/// The reserve file of a store; see the module doc.
#[derive(Debug)]
pub(crate) struct Reserve {
    /// `<data dir>/reserve`.
    path: PathBuf,
    /// Its length in bytes.
    len: u64,
}

impl Reserve {
    /// The reserve for a log of `segment_size`-byte segments: a quarter segment (the remove
    /// records that free a segment of 1 KiB messages take about 2.5 % of it; of 16-byte ones,
    /// about 40 %), between 64 KiB and 16 MiB.
    pub(crate) fn new(data_dir: &Path, segment_size: u32) -> Self {
        Self {
            path: data_dir.join("reserve"),
            len: (u64::from(segment_size) / 4).clamp(64 << 10, 16 << 20),
        }
    }

    /// Its length in bytes.
    pub(crate) fn len(&self) -> u64 {
        self.len
    }

    /// Writes the reserve (zeros, fsynced, with its directory entry) unless it is already
    /// whole. On failure, removes what was written and says why.
    pub(crate) fn fill(&self) -> Result<(), StoreError> {
        if fs::metadata(&self.path).is_ok_and(|m| m.len() == self.len) {
            return Ok(());
        }
        let written = (|| {
            let mut file = File::create(&self.path)?;
            let zeros = vec![0u8; 64 << 10];
            let mut left = self.len;
            while left > 0 {
                // `left.min(64 KiB)` fits usize.
                let n = left.min(zeros.len() as u64) as usize;
                file.write_all(&zeros[..n])?;
                left -= n as u64;
            }
            file.sync_all()
        })();
        if let Err(err) = written {
            let _ = fs::remove_file(&self.path);
            return Err(StoreError::io(&self.path, err));
        }
        if let Some(dir) = self.path.parent() {
            sync_dir(dir)?;
        }
        Ok(())
    }

    /// Deletes the reserve, giving its blocks back to the file system. False when there was
    /// none to give.
    pub(crate) fn release(&self) -> bool {
        match fs::remove_file(&self.path) {
            Ok(()) => true,
            Err(e) if e.kind() == io::ErrorKind::NotFound => false,
            Err(e) => {
                tracing::warn!(cause = %e, path = %self.path.display(), "cannot delete the space reserve");
                false
            }
        }
    }

    /// Free bytes (for unprivileged users) on the file system holding the reserve.
    pub(crate) fn free_bytes(&self) -> Option<u64> {
        let dir = self.path.parent()?;
        let stat = rustix::fs::statvfs(dir).ok()?;
        Some(stat.f_bavail.saturating_mul(stat.f_frsize))
    }
}
