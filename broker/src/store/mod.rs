//! The message store: durable topology and persistent messages under the broker's data
//! directory, so that a restart (or a `kill -9`) loses nothing that was confirmed.
//!
//! The store owns the files; the broker owns the queues. The broker tells the store what
//! happened (a durable queue was declared, a persistent message was routed to it, a message was
//! acked) and the store makes it durable, answering with a [`Commit`] that resolves when the
//! record is on disk under the [`FsyncPolicy`]. At start, [`Store::open`] hands back
//! everything to rebuild ([`Recovered`]). Transient messages and non-durable entities never
//! reach the store.
//!
//! # Layout
//! - `error`: [`StoreError`].
//! - `dir_lock`: the `flock` on the `LOCK` file that keeps two brokers off one data directory.
//! - `durable_dir`: creating the data directory so that a power cut cannot take it away.
//! - `commit`: [`Commit`], the future a publisher confirm waits on.
//! - `close`: [`Store::close`] (flush, fsync, release the directory) and what dropping does.
//! - `message`: [`PersistentMessage`] (what the broker hands over) and [`StoredMessage`] (what
//!   it reads back).
//! - `position`: [`Position`], a record's place in the log (the message's identity and index).
//! - `record`: the log record format (enqueue, remove, purge, and the six topology records)
//!   and its byte layout.
//! - `segment`: segment files, their header, and the scan that tells a torn tail from
//!   corruption.
//! - `recovery`: rebuilding queues and the compaction ledger from the segments at open
//!   ([`Recovered`]).
//! - `ledger`: live counts per segment; which segments compaction may delete.
//! - `topology_records`: durable topology changes as records, and commit barriers.
//! - `reads`: reading messages back, one record or runs of adjacent ones.
//! - `stats`, `store_config`: [`StoreStats`] and [`StoreConfig`].
//! - `log_writer/`: what appenders and the group-commit writer share (`mod`), the writer
//!   thread that owns the segment files (`thread`), and topology snapshots (`snapshot`:
//!   folding the log's topology records into a new snapshot, on a thread of its own).
//! - `reserve`: the space reserve given back when the disk fills, so that removes can still be
//!   written and compaction can free space (and the store's low-on-space mode).
//! - `fsync_policy`: [`FsyncPolicy`].
//! - `definitions`: durable exchanges, queues and bindings ([`Definitions`]) and their snapshot
//!   file.
//! - `topology`: the topology as the open store keeps it (indexed; changed only by applying
//!   topology records) and how far the log has run ahead of the snapshot.
//! - `durable_queues`: [`DurableQueues`], the store addressed the broker's way (queue names and
//!   queue sequence numbers).
//!
//! # On disk
//! ```text
//! <data dir>/LOCK                   flock()ed by the open store; holds its pid (informational)
//! <data dir>/definitions            topology snapshot up to a place in the log (layout on
//!                                   `Definitions`); absent until the first snapshot
//! <data dir>/definitions.tmp        the next snapshot while it is being written
//! <data dir>/reserve                zeros, deleted when the disk fills (see `reserve`)
//! <data dir>/segments/0000000001.seg  segment log (layout on `Record`, header on `SEGMENT_HEADER`)
//! ```
//!
//! # How the broker uses it
//! Wired through the broker's `durable_store` (the broker's `persistence::Persistence`, outside
//! this module: the store knows records, not queues), with a data directory only:
//! 1. `BrokerBuilder::start` opens the store before listening (a damaged store stops the start,
//!    see [`StoreError::is_corruption`]), declares the recovered exchanges, queues and bindings,
//!    and puts each durable queue's messages back in log order, `redelivered = true`.
//! 2. Every durable topology change (declare, delete, bind, unbind; auto-delete and `x-expires`
//!    deletions too) is handed over as it is made, under the vhost's topology lock, and appended
//!    as one record ([`Store::declare_queue`], [`Store::bind`], ...); the `-ok` waits for its
//!    [`Commit`], group-committed with everything else. Nothing is rewritten per change: a
//!    snapshot folds the records in now and then (see [`Definitions`]).
//! 3. A persistent message routed to a durable, non-exclusive queue is appended by
//!    [`DurableQueues::enqueue`]; the publisher confirm waits for its group commit.
//!    Transient messages and other queues never touch the store.
//! 4. When such a message leaves its queue for good (ack, no-ack delivery or `basic.get`,
//!    reject/nack without requeue, expiry, length limit, purge), [`DurableQueues::remove`]
//!    appends a remove record (not waited for: a lost remove is a redelivery, never a loss,
//!    except where a reply promises it: `tx.commit-ok` and `purge-ok` wait for a
//!    [`Store::barrier`]). A dead-lettered message is removed only after its copies are
//!    enqueued where it goes, and compaction deletes a segment only once the records that
//!    freed it are committed, so that a crash between the two leaves a duplicate, never a
//!    loss.
//! 5. `BrokerHandle::shutdown` closes the store (flush and fsync).
//! 6. Past the memory budget (`--memory-budget`, see the broker's `memory` module), a queue
//!    drops the body and properties of a newly queued persistent message from memory once its
//!    enqueue is appended; only its index entry stays (sequence number, size, redelivered flag,
//!    expiry: 32 bytes in the queue, plus the (sequence number, [`Position`]) pair of
//!    [`DurableQueues`], 24 bytes, and its offset in the ledger, 4 bytes). Near the head of
//!    the queue it is read back with [`Store::read_many`]: up to 512 messages per batch,
//!    adjacent records in one `pread`, waiting for the writer thread if the record is appended
//!    but not written yet. The page cache, not the broker, holds the hot part of the log.
//!
//! Not implemented: rewriting sparse old segments (one long-lived message keeps its whole
//! segment, and the segments holding acks of that segment's other messages, on disk), and
//! sharing one body between the queues a message is routed to.

mod close;
mod commit;
mod definitions;
mod dir_lock;
mod durable_dir;
mod durable_queues;
mod error;
mod fsync_policy;
mod ledger;
mod log_writer;
mod message;
mod position;
mod reads;
mod record;
mod recovery;
mod reserve;
mod segment;
mod stats;
mod store_config;
mod topology;
mod topology_records;

#[cfg(test)]
mod crash_test;
#[cfg(test)]
mod tests;

use std::collections::HashSet;
use std::fmt;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Condvar, Mutex, PoisonError};

use bytes::Bytes;
use tokio::sync::oneshot;

pub use commit::Commit;
pub use definitions::{BindingDef, BindingDestination, Definitions, ExchangeDef, QueueDef};
pub use durable_queues::DurableQueues;
pub use error::StoreError;
pub use fsync_policy::{FsyncPolicy, InvalidFsyncPolicy};
pub use message::{PersistentMessage, StoredMessage};
pub use position::Position;
pub use record::MAX_RECORD_LEN;
pub use recovery::{Recovered, RecoveredQueue};
pub use stats::StoreStats;
pub use store_config::StoreConfig;

use dir_lock::DirLock;
pub(crate) use durable_dir::create_dir_durably;
use log_writer::{AppendState, Counters, Shared, Waiter};
use record::{checksum, fits_shortstr, Record, RECORD_HEADER_LEN};
use reserve::Reserve;
use segment::{segment_path, segments_dir};
use topology::{binding_record, TopologyLog};

/// The store's name for a durable queue, used in log records instead of the (vhost, name)
/// pair. Assigned at `queue.declare`, never reused, even after the queue is deleted: records of
/// a deleted queue can linger in old segments and must not be taken for a new queue's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct QueueId(pub u64);

impl fmt::Display for QueueId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "q{}", self.0)
    }
}

/// Longest run of adjacent records [`Store::read_many`] reads with one `pread`: 4 MiB.
pub const READ_RUN_BYTES: u64 = 4 * 1024 * 1024;

/// Default segment size: 64 MiB.
pub const DEFAULT_SEGMENT_SIZE: u32 = 64 * 1024 * 1024;

/// The broker's durable storage: topology snapshot plus segment log. Share it behind an `Arc`;
/// every method takes `&self`.
///
/// Appends ([`enqueue`](Self::enqueue), [`remove`](Self::remove), [`purge`](Self::purge)) are
/// synchronous and cheap: they reserve the record's position and copy it into the pending
/// batch under a short lock, so the log order is the order of the calls. Call them while
/// holding the queue's own lock to keep the log order equal to the queue order. Durability is
/// the returned [`Commit`].
pub struct Store {
    /// Shared with the writer thread, which holds the other `Arc` and exits when `closing` is
    /// set and nothing is pending (set by [`close`](Self::close) or by dropping the store).
    shared: Arc<Shared>,
    /// Dropped by the writer thread when it exits; [`close`](Self::close) waits for that.
    stopped: Mutex<Option<oneshot::Receiver<()>>>,
    /// The writer thread, joined on drop: once the store is dropped, the directory is free.
    writer_thread: Option<std::thread::JoinHandle<()>>,
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Store")
            .field("data_dir", &self.shared.data_dir)
            .field("fsync", &self.shared.policy)
            .finish_non_exhaustive()
    }
}

impl Store {
    /// Opens (or creates) the store in `config.data_dir`: loads the topology snapshot, scans
    /// the segment log (replaying the topology records the snapshot does not cover), cuts a
    /// torn tail, deletes fully acknowledged segments, and starts the writer thread. Blocking
    /// (it reads the whole log): call it before serving, or from `spawn_blocking`.
    ///
    /// Fails with a [`StoreError::is_corruption`] error when the files are damaged anywhere but
    /// in the last record written, and with [`StoreError::Locked`] when another open store
    /// holds the directory.
    pub fn open(config: StoreConfig) -> Result<(Self, Recovered), StoreError> {
        let data_dir = config.data_dir;
        let seg_dir = segments_dir(&data_dir);
        // Durably: a data directory (or its `segments`) whose entry a power cut takes away
        // takes every confirmed message with it.
        create_dir_durably(&seg_dir).map_err(|e| StoreError::io(&seg_dir, e))?;
        let lock = DirLock::acquire(&data_dir)?;
        let (snapshot, covers) = Definitions::load(&data_dir)?;
        let mut scanned = recovery::recover(&data_dir, snapshot, covers)?;
        scanned.topology.next_queue_id = scanned
            .topology
            .next_queue_id
            .max(scanned.max_queue_id + 1)
            .max(1);
        let definitions = scanned.topology.to_definitions();
        let known: HashSet<QueueId> = definitions.queues.iter().map(|q| q.id).collect();
        let queues = definitions
            .queues
            .iter()
            .map(|q| RecoveredQueue {
                id: q.id,
                messages: scanned.take_queue(q.id),
            })
            .collect::<Vec<_>>();
        let recovered = Recovered {
            definitions,
            queues,
            torn_tail_bytes: scanned.torn_bytes,
        };
        tracing::info!(
            data_dir = %data_dir.display(),
            queues = recovered.queues.len(),
            messages = recovered.queues.iter().map(|q| q.messages.len()).sum::<usize>(),
            segments = scanned.ledger.segment_count(),
            topology_records = scanned.uncovered,
            torn_tail_bytes = scanned.torn_bytes,
            "store opened"
        );

        let topology = TopologyLog {
            topology: scanned.topology,
            uncovered: scanned.uncovered,
            last_record_end: scanned.last_topology_end,
            snapshot_running: false,
        };
        let segment_size = config.segment_size.clamp(4096, 1 << 30);
        let reserve = Reserve::new(&data_dir, segment_size);
        let mut state = AppendState::new(
            scanned.last_segment,
            scanned.end_offset,
            scanned.ledger,
            known,
        );
        if let Err(err) = reserve.fill() {
            // Removes may still fit in what is left; enqueues would only fill it up.
            tracing::warn!(cause = %err, "no room for the space reserve: the store starts low on space");
            state.low_space = true;
        }
        let shared = Arc::new(Shared {
            topology: Mutex::new(topology),
            state: Mutex::new(state),
            wake: Condvar::new(),
            written_cv: Condvar::new(),
            readers: Mutex::default(),
            counters: Counters::default(),
            data_dir,
            policy: config.fsync,
            segment_size,
            reserve,
            snapshot_thread: Mutex::new(None),
            dir_lock: Mutex::new(Some(lock)),
            #[cfg(test)]
            gate: Mutex::new(()),
            #[cfg(test)]
            compaction_gate: Mutex::new(()),
            #[cfg(test)]
            fail_opens: std::sync::atomic::AtomicU64::new(0),
            #[cfg(test)]
            fail_writes: std::sync::atomic::AtomicU64::new(0),
        });
        shared.compact()?;
        let (stopped_tx, stopped_rx) = oneshot::channel();
        let thread_shared = shared.clone();
        let writer_thread = std::thread::Builder::new()
            .name("lepus-store-writer".into())
            .spawn(move || log_writer::run(thread_shared, stopped_tx))
            .map_err(|e| StoreError::io(&shared.data_dir, e))?;
        {
            let mut log = shared.lock_topology();
            if log.snapshot_due() {
                shared.start_snapshot(&mut log);
            }
        }
        let store = Self {
            shared,
            stopped: Mutex::new(Some(stopped_rx)),
            writer_thread: Some(writer_thread),
        };
        Ok((store, recovered))
    }

    /// The data directory.
    pub fn data_dir(&self) -> &Path {
        &self.shared.data_dir
    }

    /// A copy of the current durable topology (changes appended, committed or not).
    pub fn definitions(&self) -> Definitions {
        self.shared.lock_topology().topology.to_definitions()
    }

    // Topology changes below append one record to the log, like messages, and apply it to the
    // in-memory topology at once; the returned `Commit` resolves when the record is committed
    // (group commit, as for publisher confirms): a broker sends the `-ok` after it. A change
    // that changes nothing appends nothing and returns a commit that resolves once every
    // topology record appended so far is committed (the topology it reports is then durable).
    // They take the topology lock, then the append lock, briefly: no I/O, no wait on other
    // connections' changes.

    /// Appends an enqueue record: persistent `message` entered durable `queue`. Returns its
    /// position (keep it: it names the message for [`remove`](Self::remove) and
    /// [`read`](Self::read)) and the commit to await before confirming the publish.
    pub fn enqueue(
        &self,
        queue: QueueId,
        message: PersistentMessage<'_>,
    ) -> Result<(Position, Commit), StoreError> {
        let (commit, waiter) = Commit::pending();
        let position = self.enqueue_waiting(queue, message, waiter, false)?;
        Ok((position, commit))
    }

    /// [`enqueue`](Self::enqueue) for a caller that waits on its own oneshot: `committed` fires
    /// when the record is committed and is dropped unfired if the write fails (a
    /// `oneshot::Receiver<()>` then reports an error).
    pub fn enqueue_signal(
        &self,
        queue: QueueId,
        message: PersistentMessage<'_>,
        committed: oneshot::Sender<()>,
    ) -> Result<Position, StoreError> {
        self.enqueue_waiting(queue, message, Waiter::Signal(committed), false)
    }

    /// [`enqueue_signal`](Self::enqueue_signal) for a message that moves from one durable
    /// queue to another (dead-lettering): accepted even while the store is low on space,
    /// because the remove of its source follows and, once committed, nothing else keeps it.
    /// Refusing it would lose a confirmed message, not a publish.
    pub fn enqueue_moved_signal(
        &self,
        queue: QueueId,
        message: PersistentMessage<'_>,
        committed: oneshot::Sender<()>,
    ) -> Result<Position, StoreError> {
        self.enqueue_waiting(queue, message, Waiter::Signal(committed), true)
    }

    /// Appends an enqueue record; `moved`: accepted while low on space too.
    fn enqueue_waiting(
        &self,
        queue: QueueId,
        message: PersistentMessage<'_>,
        waiter: Waiter,
        moved: bool,
    ) -> Result<Position, StoreError> {
        if message.exchange.len() > 255 || message.routing_key.len() > 255 {
            return Err(StoreError::NameTooLong);
        }
        let record = Record::Enqueue {
            queue,
            exchange: message.exchange.as_bytes(),
            routing_key: message.routing_key.as_bytes(),
            properties: message.properties,
            body: message.body,
        };
        self.append(
            queue,
            &record,
            |state| {
                if state.low_space && !moved {
                    Err(StoreError::NoSpace)
                } else {
                    Ok(())
                }
            },
            |state, position| {
                state
                    .ledger
                    .enqueued(position.segment, position.offset, queue)
            },
            waiter,
        )
    }

    /// Appends a remove record: the message at `message` left `queue` for good (acked, got
    /// with no-ack, rejected without requeue, expired, dropped by a length limit). The commit
    /// need not be awaited: a remove lost in a crash only means a redelivery.
    ///
    /// Fails with [`StoreError::NoMessage`] (writing nothing) when the message is not live in
    /// `queue`: already removed, purged, or never enqueued there.
    pub fn remove(&self, queue: QueueId, message: Position) -> Result<Commit, StoreError> {
        self.remove_unless_refused(queue, message, None)
    }

    /// How many batches the writer has refused so far (a failed write that left the log
    /// intact, see [`StoreError::WriteRefused`]). Read it before appending a moved copy and
    /// hand it to [`remove_moved`](Self::remove_moved).
    pub fn refusals(&self) -> u64 {
        self.shared.lock().refusals
    }

    /// [`remove`](Self::remove) of a message whose copy was just appended to another queue
    /// (dead-lettering), `refusals` being [`refusals`](Self::refusals) as read before the
    /// copy was appended. Fails with [`StoreError::MoveUnconfirmed`] (writing nothing) when
    /// the writer has refused a batch since: that batch may have held the copy, and a remove
    /// committed after it would lose the message. When the count is unchanged the remove goes
    /// into the log after the copy, and a refusal still to come refuses both (it refuses
    /// everything pending), so the remove never commits without the copy.
    pub fn remove_moved(
        &self,
        queue: QueueId,
        message: Position,
        refusals: u64,
    ) -> Result<Commit, StoreError> {
        self.remove_unless_refused(queue, message, Some(refusals))
    }

    /// A remove record, refused when `refusals` is given and the writer's count differs.
    fn remove_unless_refused(
        &self,
        queue: QueueId,
        message: Position,
        refusals: Option<u64>,
    ) -> Result<Commit, StoreError> {
        let record = Record::Remove {
            queue,
            segment: message.segment,
            offset: message.offset,
        };
        let (commit, waiter) = Commit::pending();
        self.append(
            queue,
            &record,
            |state| {
                if refusals.is_some_and(|before| before != state.refusals) {
                    Err(StoreError::MoveUnconfirmed)
                } else if state.ledger.is_live(queue, message.segment, message.offset) {
                    Ok(())
                } else {
                    Err(StoreError::NoMessage {
                        segment: message.segment,
                        offset: message.offset,
                    })
                }
            },
            |state, position| {
                state.ledger.removed(
                    position.segment,
                    position.offset + position.len,
                    queue,
                    message.segment,
                    message.offset,
                );
            },
            waiter,
        )
        .map(|_| commit)
    }

    /// Appends a purge record: every message enqueued to `queue` so far is gone
    /// (`queue.purge`).
    pub fn purge(&self, queue: QueueId) -> Result<Commit, StoreError> {
        let record = Record::Purge { queue };
        let (commit, waiter) = Commit::pending();
        self.append(
            queue,
            &record,
            |_| Ok(()),
            |state, position| {
                state
                    .ledger
                    .purged(position.segment, position.offset + position.len, queue)
            },
            waiter,
        )
        .map(|_| commit)
    }

    /// Appends `record` under the append lock: `check` may refuse it first, `account`
    /// updates the ledger with its position.
    fn append(
        &self,
        queue: QueueId,
        record: &Record<'_>,
        check: impl FnOnce(&AppendState) -> Result<(), StoreError>,
        account: impl FnOnce(&mut AppendState, Position),
        waiter: Waiter,
    ) -> Result<Position, StoreError> {
        let (position, wake_writer) = {
            let mut state = self.shared.lock();
            if !state.queues.contains(&queue) {
                return Err(StoreError::UnknownQueue(queue));
            }
            check(&state)?;
            let position = state.append(record, self.shared.segment_size)?;
            account(&mut state, position);
            (position, state.push_waiter(waiter))
        };
        if wake_writer {
            self.shared.wake.notify_one();
        }
        Ok(position)
    }
}
