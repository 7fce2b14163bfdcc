//! The writer thread: waits for appended records, writes each batch with one `pwrite` per
//! segment, fsyncs once (or per the fsync policy), completes the batch's waiters, and deletes
//! the segments compaction freed. On an I/O error it fails every waiter and stops, except a
//! `write` that finds the disk full while the space reserve is there (see `reserve`).

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::sync::atomic::Ordering;
use std::sync::{Arc, PoisonError};
use std::time::Instant;

use tokio::sync::oneshot;

use super::{Chunk, Shared, Waiter};
use crate::store::ledger::LogPoint;
use crate::store::segment::{segment_path, segments_dir, sync_dir};
use crate::store::{FsyncPolicy, StoreError};
/// The writer thread's own state: the segment file it appends to.
struct Writer {
    shared: Arc<Shared>,
    /// The segment last written and its open file.
    current: Option<(u32, File)>,
    /// Completions of the batch being written, taken from [`AppendState::waiters`].
    in_flight: Vec<Waiter>,
    /// Bytes written since the last fsync.
    dirty: bool,
    last_sync: Instant,
}

/// Body of the writer thread. Returns when the store closes (after flushing) or after an I/O
/// error (after failing every waiter). `stopped` is dropped on return, which tells
/// [`super::Store::close`] the thread is done.
pub(crate) fn run(shared: Arc<Shared>, stopped: oneshot::Sender<()>) {
    let mut writer = Writer {
        shared,
        current: None,
        in_flight: Vec::new(),
        dirty: false,
        last_sync: Instant::now(),
    };
    if let Err(err) = writer.run() {
        let in_flight = std::mem::take(&mut writer.in_flight);
        tracing::error!(cause = %err, "store writer failed; no more persistent writes");
        let cause = Arc::new(match err {
            StoreError::Io { source, .. } => source,
            other => io::Error::other(other.to_string()),
        });
        let mut state = writer.shared.lock();
        state.failed = Some(cause.clone());
        state.chunks.clear();
        for waiter in in_flight.into_iter().chain(state.waiters.drain(..)) {
            waiter.finish(Err(StoreError::WriterFailed(cause.clone())));
        }
        writer.shared.written_cv.notify_all();
    }
    // This thread's `Arc` (and so possibly the directory's lock) goes before `close` hears.
    drop(writer);
    drop(stopped);
}

impl Writer {
    fn run(&mut self) -> Result<(), StoreError> {
        let shared = self.shared.clone();
        loop {
            // Wait for work: records, a due interval fsync, or close.
            let closing = {
                let mut state = shared.lock();
                loop {
                    if !state.chunks.is_empty() || !state.waiters.is_empty() || state.closing {
                        break;
                    }
                    match shared.policy {
                        FsyncPolicy::Interval(every) if self.dirty => {
                            let elapsed = self.last_sync.elapsed();
                            if elapsed >= every {
                                break;
                            }
                            state = shared
                                .wake
                                .wait_timeout(state, every - elapsed)
                                .unwrap_or_else(PoisonError::into_inner)
                                .0;
                        }
                        _ => {
                            state = shared
                                .wake
                                .wait(state)
                                .unwrap_or_else(PoisonError::into_inner);
                        }
                    }
                }
                state.closing
            };

            #[cfg(test)]
            let gate = shared.gate.lock().unwrap_or_else(PoisonError::into_inner);
            let mut chunks = {
                let mut state = shared.lock();
                self.in_flight = std::mem::take(&mut state.waiters);
                std::mem::take(&mut state.chunks)
            };
            #[cfg(test)]
            drop(gate);

            let mut bytes = 0;
            for chunk in &chunks {
                self.write_chunk(chunk)?;
                bytes += chunk.bytes.len() as u64;
            }
            // Chunks never exceed a segment (at most 1 GiB), so the end fits a u32.
            let batch_end = chunks
                .last()
                .map(|last| (last.segment, last.offset + last.bytes.len() as u32));
            if let Some(end) = batch_end {
                shared.lock().written = end;
                shared.written_cv.notify_all();
            }
            // Counters first, so that whoever sees a completion sees it counted.
            if !chunks.is_empty() {
                let counters = &shared.counters;
                counters.batches.fetch_add(1, Ordering::Relaxed);
                counters
                    .records
                    .fetch_add(self.in_flight.len() as u64, Ordering::Relaxed);
                counters.bytes.fetch_add(bytes, Ordering::Relaxed);
            }
            let sync_due = match shared.policy {
                FsyncPolicy::Always => true,
                FsyncPolicy::Interval(every) => closing || self.last_sync.elapsed() >= every,
                FsyncPolicy::Never => closing,
            };
            // Under `Interval` and `Never`, a record is committed once written.
            if shared.policy != FsyncPolicy::Always {
                self.committed(batch_end);
                self.complete();
            }
            if sync_due {
                self.sync()?;
            }
            self.committed(batch_end);
            // Compaction before completion, so that once a remove is committed its freed
            // segments are gone too (disk use never lags behind what the caller saw).
            shared.compact()?;
            self.complete();

            // Hand the buffers back for reuse: two (the batch being filled and the one being
            // written), and no big ones, since memory kept here counts against the broker's
            // memory budget without growing with the backlog.
            {
                let mut state = shared.lock();
                for mut chunk in chunks.drain(..) {
                    if state.spare.len() < 2 && chunk.bytes.capacity() <= 2 * 1024 * 1024 {
                        chunk.bytes.clear();
                        state.spare.push(chunk.bytes);
                    }
                }
            }

            if closing {
                let state = shared.lock();
                if state.chunks.is_empty() && state.waiters.is_empty() {
                    drop(state);
                    self.sync()?;
                    return Ok(());
                }
            }
        }
    }

    /// The batch ending at `end` (if it wrote anything) is committed.
    fn committed(&self, end: Option<LogPoint>) {
        if let Some(end) = end {
            let mut state = self.shared.lock();
            state.committed = state.committed.max(end);
        }
    }

    /// Reports the in-flight batch committed.
    fn complete(&mut self) {
        for waiter in self.in_flight.drain(..) {
            waiter.finish(Ok(()));
        }
    }

    /// Writes one chunk, switching (and creating) the segment file as needed.
    fn write_chunk(&mut self, chunk: &Chunk) -> Result<(), StoreError> {
        let path = segment_path(&self.shared.data_dir, chunk.segment);
        if self.current.as_ref().map(|(n, _)| *n) != Some(chunk.segment) {
            // The old segment must be complete on disk before a newer one exists, so that a
            // crash can tear only the last segment.
            if self.shared.policy != FsyncPolicy::Never {
                self.sync()?;
            }
            let file = OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(false)
                .open(&path)
                .map_err(|e| StoreError::io(&path, e))?;
            if chunk.offset == 0 && self.shared.policy != FsyncPolicy::Never {
                sync_dir(&segments_dir(&self.shared.data_dir))?;
            }
            self.current = Some((chunk.segment, file));
        }
        if let Some((_, file)) = &self.current {
            let offset = u64::from(chunk.offset);
            let mut written = file.write_all_at(&chunk.bytes, offset);
            // The disk is full: give the reserve back and write the same bytes at the same
            // place again (a failed write, unlike a failed fsync, may be retried). From now on
            // the store accepts only what frees space (see `reserve`).
            if matches!(&written, Err(e) if e.kind() == io::ErrorKind::StorageFull)
                && self.shared.reserve.release()
            {
                self.shared.lock().low_space = true;
                tracing::warn!(
                    reserve = self.shared.reserve.len(),
                    "disk full: space reserve released; refusing persistent messages until space returns"
                );
                written = file.write_all_at(&chunk.bytes, offset);
            }
            written.map_err(|e| StoreError::io(&path, e))?;
            self.dirty = true;
        }
        Ok(())
    }

    /// fdatasyncs the current segment if anything was written since the last sync.
    fn sync(&mut self) -> Result<(), StoreError> {
        if let (true, Some((segment, file))) = (self.dirty, &self.current) {
            file.sync_data()
                .map_err(|e| StoreError::io(segment_path(&self.shared.data_dir, *segment), e))?;
            self.shared.counters.fsyncs.fetch_add(1, Ordering::Relaxed);
        }
        self.dirty = false;
        self.last_sync = Instant::now();
        Ok(())
    }
}
