//! The store's error type: every way opening, appending to or reading the message store can fail.
//!
//! The broker maps all of these to AMQP 541 INTERNAL_ERROR (see [`StoreError::reply_code`]); a
//! corrupt store is a refusal to start, never a silent repair.

use std::io;
use std::path::PathBuf;
use std::sync::Arc;

use super::QueueId;

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// A file system call failed.
    #[error("i/o error on {path}: {source}")]
    Io {
        /// The file or directory the call was about.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: io::Error,
    },

    /// A segment holds bytes that are not a torn tail and do not decode: the store refuses to
    /// open rather than drop what follows.
    #[error("corrupt segment {path} at offset {offset}: {reason}")]
    CorruptSegment {
        /// The segment file.
        path: PathBuf,
        /// Byte offset of the first bad record (or of the header).
        offset: u64,
        /// What is wrong there.
        reason: &'static str,
    },

    /// The definitions snapshot does not decode or fails its checksum.
    #[error("corrupt definitions file {path}: {reason}")]
    CorruptDefinitions {
        /// The definitions file.
        path: PathBuf,
        /// What is wrong with it.
        reason: &'static str,
    },

    /// A record (properties + body) is larger than the store accepts.
    #[error("record of {len} bytes exceeds the limit of {max} bytes")]
    RecordTooLarge {
        /// Encoded record length.
        len: u64,
        /// [`super::MAX_RECORD_LEN`].
        max: u64,
    },

    /// Another broker (in another process, or another store in this one) has the data
    /// directory open: it holds the `flock` of `<data dir>/LOCK`.
    #[error(
        "the data directory {} is in use by another process{}",
        .dir.display(),
        .pid.map(|pid| format!(" (pid {pid})")).unwrap_or_default()
    )]
    Locked {
        /// The data directory.
        dir: PathBuf,
        /// The PID the holder wrote into `LOCK`, when it could be read (informational).
        pid: Option<u32>,
    },

    /// A name (vhost, exchange, queue) or routing key is longer than an AMQP shortstr (255
    /// bytes).
    #[error("name or routing key longer than 255 bytes")]
    NameTooLong,

    /// The operation names a durable queue the store does not know.
    #[error("unknown durable queue {0}")]
    UnknownQueue(QueueId),

    /// A position does not point at a readable message record (acked and reclaimed, or never
    /// written).
    #[error("no message at segment {segment} offset {offset}")]
    NoMessage {
        /// Segment number of the position.
        segment: u32,
        /// Byte offset of the position.
        offset: u32,
    },

    /// The writer hit an I/O error after which the log's state is unknown (a failed fsync: the
    /// page cache state is unknown, so retrying would be a lie); the store accepts no more
    /// writes. Failures that leave the log intact are [`StoreError::WriteRefused`] instead.
    #[error("store writer failed: {0}")]
    WriterFailed(#[source] Arc<io::Error>),

    /// The write of the batch holding this record failed without damaging the log (the
    /// process was out of file descriptors, or the disk was full even after the space reserve
    /// was given back): whatever the batch had written was cut off again, the record was
    /// refused, and the writer tries the next batch. See `store/log_writer/thread.rs`.
    #[error("store write refused, log intact: {0}")]
    WriteRefused(#[source] Arc<io::Error>),

    /// A remove that must follow a moved copy's write (dead-lettering: the copy in another
    /// durable queue, then the remove of the original) was not appended because the writer
    /// refused a batch since the copy was appended, so the copy may not be stored: the
    /// original stays in the log (a duplicate after a restart, never a loss).
    #[error("remove withheld: a write was refused after its moved copy was appended")]
    MoveUnconfirmed,

    /// The store was closed (or its writer thread ended) before the write completed.
    #[error("store is closed")]
    Closed,

    /// The data directory's file system is full: until space returns, the store accepts only
    /// records that free space (removes, purges, deletes, unbinds). See `store/reserve.rs`.
    #[error("no space left in the data directory: only removals are accepted until space returns")]
    NoSpace,
}

impl StoreError {
    /// The AMQP reply code a broker sends when a store failure ends a method: 541
    /// INTERNAL_ERROR for every variant (the failure is the server's, never the client's).
    pub fn reply_code(&self) -> u16 {
        541
    }

    /// True when the data on disk is damaged (as opposed to an I/O failure or a closed store):
    /// the operator must look at the files before the broker can start.
    pub fn is_corruption(&self) -> bool {
        matches!(
            self,
            Self::CorruptSegment { .. } | Self::CorruptDefinitions { .. }
        )
    }

    /// Wraps an [`io::Error`] with the path it concerns.
    pub(crate) fn io(path: impl Into<PathBuf>, source: io::Error) -> Self {
        Self::Io {
            path: path.into(),
            source,
        }
    }
}
