//! [`StoreConfig`]: where the store lives and how it writes (fsync policy, segment size).

use super::*;

/// How to open a [`Store`].
#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// The data directory (`--data-dir`); created if missing.
    pub data_dir: PathBuf,
    /// When appends count as committed (`--fsync`).
    pub fsync: FsyncPolicy,
    /// Size at which a segment is closed and the next one started, between 4 KiB and 1 GiB
    /// (clamped). Smaller segments are reclaimed sooner; larger ones mean fewer files.
    pub segment_size: u32,
}

impl StoreConfig {
    /// The defaults for `data_dir`: [`FsyncPolicy::Always`], 64 MiB segments.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        Self {
            data_dir: data_dir.into(),
            fsync: FsyncPolicy::Always,
            segment_size: DEFAULT_SEGMENT_SIZE,
        }
    }
}
