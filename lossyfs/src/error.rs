//! [`Error`]: what can go wrong mounting, cutting and unmounting.

use std::path::PathBuf;

/// An error of [`crate::LossyFs`] or [`crate::Mounted`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Mounting failed (no `/dev/fuse`, not root, mount point missing or busy...).
    #[error("cannot mount {mountpoint}: {source}")]
    Mount {
        /// The mount point.
        mountpoint: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// Unmounting failed (a process still uses the mount).
    #[error("cannot unmount {mountpoint}: {source}")]
    Unmount {
        /// The mount point.
        mountpoint: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// Rolling the backing directory back failed; it is in an unknown state.
    #[error("power cut failed in {backing}: {source}")]
    Cut {
        /// The backing directory.
        backing: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// Any other I/O error (preparing the backing directory).
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

impl Error {
    /// True when the machine cannot mount FUSE file systems at all (no `/dev/fuse`, or not
    /// permitted): a test may skip rather than fail.
    pub fn is_unsupported(&self) -> bool {
        match self {
            Self::Mount { source, .. } => matches!(
                source.raw_os_error(),
                Some(libc::EPERM | libc::EACCES | libc::ENODEV)
            ),
            _ => false,
        }
    }
}
