//! The group-commit writer: appenders copy records into a shared pending buffer; one writer
//! thread owns the segment files, writes everything pending with one `pwrite` per segment,
//! fsyncs once, completes every waiter of the batch, then deletes segments compaction freed.
//!
//! The writer is an OS thread, not a tokio task: `write` and `fdatasync` block, and a blocked
//! runtime worker would stall unrelated connections (the machine has two cores).
//!
//! Here: what appenders and the writer share ([`Shared`], [`AppendState`], [`Waiter`]); the
//! writer thread in `thread`; topology snapshots, started from the append path, in `snapshot`.

mod snapshot;
mod thread;

pub(crate) use thread::run;

use std::collections::HashMap;
use std::fs::{self, File};
use std::io;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};

use tokio::sync::oneshot;

use super::dir_lock::DirLock;
use super::ledger::{Ledger, LogPoint};
use super::record::{Record, MAX_RECORD_LEN};
use super::reserve::Reserve;
use super::segment::{segment_path, segments_dir, sync_dir, SEGMENT_HEADER};
use super::topology::TopologyLog;
use super::{FsyncPolicy, Position, QueueId, StoreError};

/// Completion of one appended record, resolved by the writer thread once the record is
/// committed under the store's [`FsyncPolicy`] (or failed).
#[derive(Debug)]
pub(crate) enum Waiter {
    /// Receives the outcome (behind a [`super::Commit`]).
    Outcome(oneshot::Sender<Result<(), StoreError>>),
    /// Fires on commit; dropped unfired when the write fails.
    Signal(oneshot::Sender<()>),
}

impl Waiter {
    /// Reports the outcome. A dropped receiver means the appender stopped waiting: nothing to
    /// report to, so send errors are ignored.
    pub(crate) fn finish(self, outcome: Result<(), StoreError>) {
        match self {
            Self::Outcome(tx) => {
                let _ = tx.send(outcome);
            }
            Self::Signal(tx) => {
                if outcome.is_ok() {
                    let _ = tx.send(());
                }
            }
        }
    }
}

/// Bytes bound for one segment, starting at a file offset.
#[derive(Debug)]
pub(crate) struct Chunk {
    segment: u32,
    offset: u32,
    bytes: Vec<u8>,
}

/// Everything appenders and the writer share, behind [`Shared::state`].
#[derive(Debug)]
pub(crate) struct AppendState {
    /// The segment new records go to.
    segment: u32,
    /// Where the next record in `segment` starts.
    offset: u32,
    /// Encoded records not yet taken by the writer, in log order; usually one chunk, two when
    /// the batch crosses into a new segment.
    chunks: Vec<Chunk>,
    /// One completion per record in `chunks`.
    waiters: Vec<Waiter>,
    /// Emptied buffers handed back by the writer, so steady-state appends do not allocate.
    spare: Vec<Vec<u8>>,
    /// Live counts and pins per segment (compaction).
    pub(crate) ledger: Ledger,
    /// Durable queues that accept records.
    pub(crate) queues: std::collections::HashSet<QueueId>,
    /// Set once the writer hit an I/O error; every later append fails with it.
    pub(crate) failed: Option<Arc<io::Error>>,
    /// Set by close (or drop of the store): the writer flushes what is pending and exits.
    pub(crate) closing: bool,
    /// The disk filled and the space reserve is spent (see `reserve`): publishes and topology
    /// records that grow the log are refused (checked by their appenders), removes, purges,
    /// deletes and moved messages are accepted. Set by the writer (or at open), cleared by
    /// compaction once the reserve is whole again.
    pub(crate) low_space: bool,
    /// (segment, offset) up to which records are written to their files, so readable with
    /// `pread` (committed or not). Advanced by the writer after each batch, which then
    /// notifies [`Shared::written_cv`].
    pub(crate) written: (u32, u32),
    /// (segment, offset) up to which records are committed under the [`FsyncPolicy`] (written
    /// and fsynced under `Always`, written under the others). Advanced by the writer before it
    /// completes a batch's waiters; compaction deletes only what committed records freed.
    pub(crate) committed: LogPoint,
    /// The append point when the writer last refused a batch (see
    /// [`refuse_pending`](Self::refuse_pending)): a record before it that is not written was
    /// refused and never will be, so readers stop waiting for it.
    pub(crate) refused_upto: LogPoint,
    /// How many times the writer has refused a batch (see
    /// [`refuse_pending`](Self::refuse_pending)). A remove that must follow a moved copy reads
    /// it before the copy is appended and is appended only if it has not changed (see
    /// `Store::remove_moved`).
    pub(crate) refusals: u64,
}

impl AppendState {
    /// State for appending at (`segment`, `offset`), the end of the recovered log.
    pub(crate) fn new(
        segment: u32,
        offset: u32,
        ledger: Ledger,
        queues: std::collections::HashSet<QueueId>,
    ) -> Self {
        Self {
            segment,
            offset,
            chunks: Vec::new(),
            waiters: Vec::new(),
            spare: Vec::new(),
            ledger,
            queues,
            failed: None,
            closing: false,
            low_space: false,
            written: (segment, offset),
            committed: (segment, offset),
            refused_upto: (0, 0),
            refusals: 0,
        }
    }

    /// Reserves the record's position and copies it into the pending buffer; the writer will
    /// complete `waiter` once it is committed. Rolls to a new segment when the record would
    /// cross `segment_size` (a record bigger than that gets a segment of its own).
    pub(crate) fn append(
        &mut self,
        record: &Record<'_>,
        segment_size: u32,
    ) -> Result<Position, StoreError> {
        if let Some(err) = &self.failed {
            return Err(StoreError::WriterFailed(err.clone()));
        }
        if self.closing {
            return Err(StoreError::Closed);
        }
        let len = record.encoded_len();
        if len > MAX_RECORD_LEN {
            return Err(StoreError::RecordTooLarge {
                len,
                max: MAX_RECORD_LEN,
            });
        }
        let header_len = SEGMENT_HEADER.len() as u32;
        if u64::from(self.offset) + len > u64::from(segment_size) && self.offset > header_len {
            self.segment += 1;
            self.offset = header_len;
            self.ledger.add_segment(self.segment);
            let mut bytes = self.spare.pop().unwrap_or_default();
            bytes.extend_from_slice(&SEGMENT_HEADER);
            self.chunks.push(Chunk {
                segment: self.segment,
                offset: 0,
                bytes,
            });
        }
        let chunk = match self.chunks.last_mut() {
            Some(chunk) if chunk.segment == self.segment => chunk,
            _ => {
                let bytes = self.spare.pop().unwrap_or_default();
                self.chunks.push(Chunk {
                    segment: self.segment,
                    offset: self.offset,
                    bytes,
                });
                let last = self.chunks.len() - 1;
                &mut self.chunks[last]
            }
        };
        record.encode_into(&mut chunk.bytes);
        // `len <= MAX_RECORD_LEN` (512 MiB) and `offset < segment_size <= 1 GiB`: both fit u32.
        let position = Position {
            segment: self.segment,
            offset: self.offset,
            len: len as u32,
        };
        self.offset += len as u32;
        Ok(position)
    }

    /// Registers the completion of the record just appended. Returns true when it is the first
    /// of a new batch, i.e. when the writer may be asleep and must be woken.
    pub(crate) fn push_waiter(&mut self, waiter: Waiter) -> bool {
        self.waiters.push(waiter);
        self.waiters.len() == 1
    }

    /// The writer refused the batch it took (its write failed and was cut off, see
    /// `thread`): refuses every record appended since too, since they would follow the cut with
    /// a gap, and makes the next record start a new segment, so that no position handed out for
    /// a refused record (the broker's queues keep them, and later remove records name them) is
    /// ever given to another record. Returns the waiters to fail.
    pub(crate) fn refuse_pending(&mut self, segment_size: u32) -> Vec<Waiter> {
        self.chunks.clear();
        self.refused_upto = self.append_point();
        self.refusals += 1;
        // No record fits past the segment size: the next append rolls to a new segment.
        self.offset = self.offset.max(segment_size);
        std::mem::take(&mut self.waiters)
    }

    /// Where the next record will go: (segment, offset). Everything before it is appended.
    pub(crate) fn append_point(&self) -> (u32, u32) {
        (self.segment, self.offset)
    }

    /// The oldest segment that may still receive bytes: compaction stays below it.
    fn write_horizon(&self) -> u32 {
        self.chunks
            .first()
            .map_or(self.segment, |chunk| chunk.segment.min(self.segment))
    }
}

/// Counters readable while the store runs (see [`super::StoreStats`]).
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) fsyncs: AtomicU64,
    pub(crate) batches: AtomicU64,
    pub(crate) records: AtomicU64,
    pub(crate) bytes: AtomicU64,
    pub(crate) segments_deleted: AtomicU64,
}

/// The state shared by the [`super::Store`] (appenders, readers) and the writer thread; each
/// holds one `Arc` of it. The writer thread exits when `closing` is set and nothing is
/// pending.
#[derive(Debug)]
pub(crate) struct Shared {
    /// The durable topology and its log state. Taken before `state` when both are needed
    /// (never the other way round); held briefly, never across I/O.
    pub(crate) topology: Mutex<TopologyLog>,
    /// Held briefly: by appenders to reserve a position and copy a record in, by the writer to
    /// take a batch. Never held across I/O.
    pub(crate) state: Mutex<AppendState>,
    /// Notified by appenders when a batch starts and by close; the writer waits on it.
    pub(crate) wake: Condvar,
    /// Notified by the writer when [`AppendState::written`] advances or the writer fails;
    /// readers of records not yet written wait on it.
    pub(crate) written_cv: Condvar,
    /// Read handles per segment for [`super::Store::read`]; the writer drops a segment's handle
    /// when it deletes the segment.
    pub(crate) readers: Mutex<HashMap<u32, Arc<File>>>,
    pub(crate) counters: Counters,
    pub(crate) data_dir: PathBuf,
    pub(crate) policy: FsyncPolicy,
    pub(crate) segment_size: u32,
    /// Space given back when the disk fills (see `reserve`); the writer releases it,
    /// compaction writes it again.
    pub(crate) reserve: Reserve,
    /// The thread writing a topology snapshot, if one runs (see `snapshot`); it holds an `Arc`
    /// of this too. [`super::Store::close`] joins it.
    pub(crate) snapshot_thread: Mutex<Option<std::thread::JoinHandle<()>>>,
    /// The data directory's lock: released by [`super::Store::close`] once the writer and
    /// snapshot threads are done, else when the last holder of `Shared` (the store, the writer
    /// thread or a snapshot thread) drops it.
    pub(crate) dir_lock: Mutex<Option<DirLock>>,
    /// Test seam: the writer takes this lock before taking each batch, so a test holding it
    /// can queue many records and then release them as one batch.
    #[cfg(test)]
    pub(crate) gate: Mutex<()>,
    /// Test seam: compaction takes this lock before it decides what to delete, so a test
    /// holding it can append records while the writer is between a batch and its compaction.
    #[cfg(test)]
    pub(crate) compaction_gate: Mutex<()>,
    /// Test seam: while positive, the writer's next segment opens fail with EMFILE (one per
    /// open, counting down), as when the process is out of file descriptors.
    #[cfg(test)]
    pub(crate) fail_opens: AtomicU64,
    /// Test seam: while positive, the writer's next chunk writes write half their bytes and
    /// then fail with ENOSPC (one per write, counting down), as on a full disk.
    #[cfg(test)]
    pub(crate) fail_writes: AtomicU64,
}

impl Shared {
    /// Locks the append state. No code panics while holding it, so a poisoned lock still
    /// guards consistent state and is used as is.
    pub(crate) fn lock(&self) -> MutexGuard<'_, AppendState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The snapshot thread's handle, if one was started and not yet joined.
    pub(crate) fn take_snapshot_thread(&self) -> Option<std::thread::JoinHandle<()>> {
        self.snapshot_thread
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
    }

    /// Locks the topology. No code panics while holding it, so a poisoned lock still guards a
    /// consistent value.
    pub(crate) fn lock_topology(&self) -> MutexGuard<'_, TopologyLog> {
        self.topology.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Completes `waiter` once the log is committed up to `upto` (`None`: up to everything
    /// appended so far): at once if it already is, else with the writer's next batch (which
    /// is woken for it if idle). Fails it when the writer failed or the store is closing.
    pub(crate) fn commit_upto(&self, upto: Option<LogPoint>, waiter: Waiter) {
        let wake_writer = {
            let mut state = self.lock();
            let upto = upto.unwrap_or(state.append_point());
            if state.committed >= upto {
                drop(state);
                waiter.finish(Ok(()));
                return;
            }
            if let Some(cause) = &state.failed {
                let err = StoreError::WriterFailed(cause.clone());
                drop(state);
                waiter.finish(Err(err));
                return;
            }
            if state.closing {
                // The writer may be gone: it would never complete this waiter.
                drop(state);
                waiter.finish(Err(StoreError::Closed));
                return;
            }
            state.push_waiter(waiter)
        };
        if wake_writer {
            self.wake.notify_one();
        }
    }

    /// While low on space: writes the reserve again once twice its size is free, and accepts
    /// every record again. A `statvfs` per call, and only while low on space.
    pub(crate) fn refill_reserve(&self) {
        if !self.lock().low_space {
            return;
        }
        let needed = self.reserve.len().saturating_mul(2);
        if self.reserve.free_bytes().is_none_or(|free| free < needed) {
            return;
        }
        match self.reserve.fill() {
            Ok(()) => {
                self.lock().low_space = false;
                tracing::info!("space reserve written again: the store accepts every record");
            }
            Err(err) => tracing::warn!(cause = %err, "space reserve not written"),
        }
    }

    /// Deletes every segment compaction allows, in rounds: a round's deletions are made
    /// durable (directory fsync) before the next round deletes segments whose removal records
    /// referred to them. Starts a topology snapshot when only topology records keep a segment.
    /// Blocking; called by the writer thread, at open, and after a snapshot.
    pub(crate) fn compact(self: &Arc<Self>) -> Result<(), StoreError> {
        #[cfg(test)]
        drop(
            self.compaction_gate
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
        );
        loop {
            let (deletable, held_by_topology) = {
                let state = self.lock();
                let limit = state.write_horizon();
                (
                    state.ledger.deletable(limit, state.committed),
                    state.ledger.held_by_topology(limit, state.committed),
                )
            };
            if deletable.is_empty() {
                if held_by_topology {
                    let mut log = self.lock_topology();
                    if !log.snapshot_running {
                        self.start_snapshot(&mut log);
                    }
                }
                self.refill_reserve();
                return Ok(());
            }
            for &segment in &deletable {
                let path = segment_path(&self.data_dir, segment);
                match fs::remove_file(&path) {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => return Err(StoreError::io(path, e)),
                }
                self.readers
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .remove(&segment);
                tracing::debug!(segment, "deleted fully acknowledged segment");
            }
            sync_dir(&segments_dir(&self.data_dir))?;
            let mut state = self.lock();
            for &segment in &deletable {
                state.ledger.deleted(segment);
            }
            self.counters
                .segments_deleted
                .fetch_add(deletable.len() as u64, Ordering::Relaxed);
        }
    }
}
