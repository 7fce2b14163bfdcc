//! The writer thread: waits for appended records, writes each batch with one `pwrite` per
//! segment, fsyncs once (or per the fsync policy), completes the batch's waiters, and deletes
//! the segments compaction freed.
//!
//! When a batch fails, what happens depends on whether the log's state is still known:
//! - *Refused*: opening or creating a segment failed for want of a resource (out of file
//!   descriptors, EMFILE/ENFILE; out of memory, inodes or quota), which writes nothing; or a
//!   `write` failed (the disk is full even after the space reserve was given back, see
//!   `reserve`), and the bytes it may have written are cut off again (the segment truncated
//!   back to where the batch began and fdatasynced, or a segment the batch created deleted and
//!   its directory fsynced). The log is a clean prefix again: the batch's records and every
//!   record appended after them are refused ([`StoreError::WriteRefused`]: a nack, or an error
//!   to the client), the next record starts a new segment (so that no refused record's position
//!   is ever reused), and the writer takes the next batch. Records of the batch written whole
//!   to an earlier segment before the failure stay there: refused, they may still come back
//!   after a restart (a nack promises nothing either way).
//! - *Fatal*: any failed `fsync` (after which the page cache's state is unknown, "fsyncgate"),
//!   a cut that did not work, any other failed open. Every waiter fails and the writer stops;
//!   later appends fail with [`StoreError::WriterFailed`] until a restart.
//!
//! Compaction that cannot open the directory to fsync it (out of descriptors) skips its round
//! and tries again after the next batch.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::sync::atomic::Ordering;
use std::sync::{Arc, PoisonError};
use std::time::Instant;

use tokio::sync::oneshot;

use super::{Chunk, Shared, Waiter};
use crate::shutdown::Throttled;
use crate::store::ledger::LogPoint;
use crate::store::segment::{segment_path, segments_dir, sync_dir};
use crate::store::{FsyncPolicy, StoreError};

/// Why a chunk was not written (see the module doc).
enum ChunkError {
    /// Nothing was written: the batch is refused.
    Unwritten(StoreError),
    /// The `write` failed and may have left part of the chunk behind: cut it off, then refuse
    /// the batch.
    Torn(StoreError),
    /// The log's state is unknown: the writer fails for good.
    Fatal(StoreError),
}

/// True for the errors of an `open` that ran short of a resource and created nothing, which a
/// later batch may retry: out of file descriptors (process or system), memory, inodes or quota.
fn is_shortage(err: &io::Error) -> bool {
    use rustix::io::Errno;
    out_of_descriptors(err)
        || Errno::from_io_error(err)
            .is_some_and(|errno| [Errno::NOMEM, Errno::NOSPC, Errno::DQUOT].contains(&errno))
}

/// True for EMFILE and ENFILE, which only an `open` returns (never an `fsync`).
fn out_of_descriptors(err: &io::Error) -> bool {
    use rustix::io::Errno;
    Errno::from_io_error(err).is_some_and(|errno| errno == Errno::MFILE || errno == Errno::NFILE)
}

/// An `open` of `path` failed: the batch is refused on a shortage, else the writer fails.
fn open_failed(path: &std::path::Path, err: io::Error) -> ChunkError {
    if is_shortage(&err) {
        ChunkError::Unwritten(StoreError::io(path, err))
    } else {
        ChunkError::Fatal(StoreError::io(path, err))
    }
}

/// The `io::Error` behind a store error, shared by the waiters it fails.
fn io_cause(err: StoreError) -> Arc<io::Error> {
    Arc::new(match err {
        StoreError::Io { source, .. } => source,
        other => io::Error::other(other.to_string()),
    })
}

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
    /// Refused batches, logged at the first and then every 10 s while they go on.
    refusals: Throttled,
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
        refusals: Throttled::default(),
    };
    if let Err(err) = writer.run() {
        let in_flight = std::mem::take(&mut writer.in_flight);
        tracing::error!(cause = %err, "store writer failed; no more persistent writes");
        let cause = io_cause(err);
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
            let mut refused = None;
            for (index, chunk) in chunks.iter().enumerate() {
                match self.write_chunk(chunk) {
                    Ok(()) => bytes += chunk.bytes.len() as u64,
                    Err(ChunkError::Unwritten(err)) => {
                        self.cut_all(&chunks[..index])?;
                        refused = Some(err);
                        break;
                    }
                    Err(ChunkError::Torn(err)) => {
                        self.cut_all(&chunks[..=index])?;
                        refused = Some(err);
                        break;
                    }
                    Err(ChunkError::Fatal(err)) => return Err(err),
                }
            }
            if let Some(err) = refused {
                self.refuse(err);
                continue;
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
            // segments are gone too (disk use never lags behind what the caller saw). Out of
            // descriptors, it could not fsync the directory: the next batch tries again.
            match shared.compact() {
                Err(StoreError::Io { path, source }) if out_of_descriptors(&source) => {
                    tracing::warn!(cause = %source, path = %path.display(), "compaction postponed");
                }
                other => other?,
            }
            self.complete();
            if let Some(batches) = self.refusals.end_run() {
                tracing::info!(refused_batches = batches, "store writes work again");
            }

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

    /// Refuses the in-flight batch, whose write failed without damaging the log (it was cut
    /// off, or never written), and every record appended after it (see
    /// [`super::AppendState::refuse_pending`]).
    fn refuse(&mut self, err: StoreError) {
        let pending = self.shared.lock().refuse_pending(self.shared.segment_size);
        // Readers waiting for a refused record stop waiting.
        self.shared.written_cv.notify_all();
        let records = self.in_flight.len() + pending.len();
        if let Some(batches) = self.refusals.hit() {
            tracing::warn!(
                cause = %err,
                records,
                batches,
                "store write failed, log intact: records refused, the next batch tries again \
                 (logged every 10 s while it lasts)"
            );
        }
        let cause = io_cause(err);
        for waiter in self.in_flight.drain(..).chain(pending) {
            waiter.finish(Err(StoreError::WriteRefused(cause.clone())));
        }
    }

    /// Takes back the chunks of a refused batch that reached their segments (`written`, in
    /// log order; the last may be torn), newest first: a batch that crossed into a new segment
    /// and failed there leaves nothing in the segment before either, so none of its refused
    /// records comes back after a restart.
    fn cut_all(&mut self, written: &[Chunk]) -> Result<(), StoreError> {
        for chunk in written.iter().rev() {
            if self.current.as_ref().map(|(n, _)| *n) != Some(chunk.segment) {
                // The segment the batch left for the next one (it is complete on disk, see
                // `write_chunk`): reopen it to cut it.
                let path = segment_path(&self.shared.data_dir, chunk.segment);
                let file = OpenOptions::new()
                    .write(true)
                    .open(&path)
                    .map_err(|e| StoreError::io(&path, e))?;
                self.current = Some((chunk.segment, file));
            }
            self.cut(chunk)?;
        }
        Ok(())
    }

    /// Takes back whatever the failed write of `chunk` (the current segment's) left on disk:
    /// truncates the segment to where the chunk began, or deletes the segment when the chunk
    /// created it (an empty segment followed by later ones would read as corruption), and
    /// makes that durable before anything is written after it, so that recovery never finds a
    /// torn record followed by good ones. Fails (for good) when that does not work.
    fn cut(&mut self, chunk: &Chunk) -> Result<(), StoreError> {
        let path = segment_path(&self.shared.data_dir, chunk.segment);
        let durable = self.shared.policy != FsyncPolicy::Never;
        if chunk.offset == 0 {
            self.current = None;
            self.dirty = false;
            match fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(StoreError::io(&path, e)),
            }
            if durable {
                sync_dir(&segments_dir(&self.shared.data_dir))?;
            }
        } else if let Some((_, file)) = &self.current {
            file.set_len(u64::from(chunk.offset))
                .map_err(|e| StoreError::io(&path, e))?;
            self.dirty = true;
            if durable {
                self.sync()?;
            }
        }
        Ok(())
    }

    /// Reports the in-flight batch committed.
    fn complete(&mut self) {
        for waiter in self.in_flight.drain(..) {
            waiter.finish(Ok(()));
        }
    }

    /// Writes one chunk, switching (and creating) the segment file as needed.
    fn write_chunk(&mut self, chunk: &Chunk) -> Result<(), ChunkError> {
        let path = segment_path(&self.shared.data_dir, chunk.segment);
        if self.current.as_ref().map(|(n, _)| *n) != Some(chunk.segment) {
            // The old segment must be complete on disk before a newer one exists, so that a
            // crash can tear only the last segment.
            if self.shared.policy != FsyncPolicy::Never {
                self.sync().map_err(ChunkError::Fatal)?;
            }
            let file = self.open_segment(chunk, &path)?;
            self.current = Some((chunk.segment, file));
        }
        if let Some((_, file)) = &self.current {
            let offset = u64::from(chunk.offset);
            let mut written = self.write_at(file, &chunk.bytes, offset);
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
                written = self.write_at(file, &chunk.bytes, offset);
            }
            written.map_err(|e| ChunkError::Torn(StoreError::io(&path, e)))?;
            self.dirty = true;
        }
        Ok(())
    }

    /// Opens the segment `chunk` goes to, creating it (and fsyncing its directory) when the
    /// chunk starts it. The directory is opened first, so that running out of descriptors
    /// there leaves no segment file behind whose directory entry is not durable.
    fn open_segment(&self, chunk: &Chunk, path: &std::path::Path) -> Result<File, ChunkError> {
        let dir_path = segments_dir(&self.shared.data_dir);
        let dir = if chunk.offset == 0 && self.shared.policy != FsyncPolicy::Never {
            Some(File::open(&dir_path).map_err(|e| open_failed(&dir_path, e))?)
        } else {
            None
        };
        #[cfg(test)]
        if take_fault(&self.shared.fail_opens) {
            return Err(open_failed(path, io::Error::from_raw_os_error(24)));
        }
        let file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(|e| open_failed(path, e))?;
        if let Some(dir) = dir {
            dir.sync_all()
                .map_err(|e| ChunkError::Fatal(StoreError::io(&dir_path, e)))?;
        }
        Ok(file)
    }

    /// `pwrite`s all of `bytes` at `offset`.
    fn write_at(&self, file: &File, bytes: &[u8], offset: u64) -> io::Result<()> {
        #[cfg(test)]
        if take_fault(&self.shared.fail_writes) {
            file.write_all_at(&bytes[..bytes.len() / 2], offset)?;
            return Err(io::ErrorKind::StorageFull.into());
        }
        file.write_all_at(bytes, offset)
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

/// Counts one injected fault down; true when there was one to inject.
#[cfg(test)]
fn take_fault(faults: &std::sync::atomic::AtomicU64) -> bool {
    faults
        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
        .is_ok()
}
