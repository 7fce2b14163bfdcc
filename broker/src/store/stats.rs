//! [`StoreStats`]: what the store reports about itself (segments, bytes, records, commits).

use super::*;

/// Counters of the store's activity since open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreStats {
    /// `fdatasync` calls on segment files.
    pub fsyncs: u64,
    /// Batches written (each one `pwrite` per segment touched).
    pub batches: u64,
    /// Records written.
    pub records: u64,
    /// Bytes written to segments.
    pub bytes: u64,
    /// Segments on disk.
    pub segments: usize,
    /// Segments deleted by compaction.
    pub segments_deleted: u64,
    /// Persistent messages enqueued and not yet removed.
    pub live_messages: u64,
}

impl Store {
    /// Activity counters.
    pub fn stats(&self) -> StoreStats {
        let counters = &self.shared.counters;
        let state = self.shared.lock();
        StoreStats {
            fsyncs: counters.fsyncs.load(Ordering::Relaxed),
            batches: counters.batches.load(Ordering::Relaxed),
            records: counters.records.load(Ordering::Relaxed),
            bytes: counters.bytes.load(Ordering::Relaxed),
            segments: state.ledger.segment_count(),
            segments_deleted: counters.segments_deleted.load(Ordering::Relaxed),
            live_messages: state.ledger.live_messages(),
        }
    }
}
