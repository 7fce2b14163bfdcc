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
//! - `position`: [`Position`], a record's place in the log (the message's identity and index).
//! - `record`: the log record format (enqueue, remove, purge) and its byte layout.
//! - `segment`: segment files, their header, and the scan that tells a torn tail from
//!   corruption.
//! - `recovery`: rebuilding queues and the compaction ledger from the segments at open.
//! - `ledger`: live counts per segment; which segments compaction may delete.
//! - `writer`: the group-commit writer thread that owns the segment files.
//! - `fsync_policy`: [`FsyncPolicy`].
//! - `definitions`: durable exchanges, queues and bindings ([`Definitions`]) and their snapshot
//!   file.
//! - `durable_queues`: [`DurableQueues`], the store addressed the broker's way (queue names and
//!   queue sequence numbers).
//!
//! # On disk
//! ```text
//! <data dir>/definitions            topology snapshot (layout on `Definitions`)
//! <data dir>/definitions.tmp        the next snapshot while it is being written
//! <data dir>/segments/0000000001.seg  segment log (layout on `Record`, header on `SEGMENT_HEADER`)
//! ```
//!
//! # Integrating (what the broker does)
//! 1. At start, before listening: `Store::open` (blocking; `spawn_blocking` it). An error ends
//!    the start with the error's message; [`StoreError::is_corruption`] tells the operator the
//!    files need a look.
//! 2. Declare what [`Recovered::definitions`] lists (keeping each [`QueueDef::id`] with its
//!    queue), then push each [`RecoveredQueue`]'s positions onto its queue, in order, flagged
//!    `redelivered = true`. Bodies are read with [`Store::read`] when needed.
//! 3. `queue.declare` / `exchange.declare` / `queue.bind` / `exchange.bind` of durable entities
//!    (never exclusive queues): make the matching (synchronous) store call before the `-ok`;
//!    deletes and unbinds likewise.
//! 4. `basic.publish` with `delivery-mode = 2`, per durable queue it is routed to: under that
//!    queue's lock, [`Store::enqueue`] (log order = queue order); keep the [`Position`] with the
//!    message; send the publisher confirm once every [`Commit`] of that publish resolved.
//!    Transient messages and non-durable queues never touch the store.
//! 5. When a persistent message leaves a durable queue for good (ack, no-ack delivery or
//!    `basic.get`, reject/nack without requeue, expiry, length limit): [`Store::remove`]. A
//!    requeue writes nothing. `queue.purge`: [`Store::purge`].
//! 6. Memory budget: past it, drop a committed message's body and keep its 12-byte
//!    [`Position`]; read the body back at delivery.
//! 7. On shutdown: [`Store::close`]. Store errors close the connection with
//!    [`StoreError::reply_code`] (541 INTERNAL_ERROR).
//!
//! Not implemented: rewriting sparse old segments (one long-lived message keeps its whole
//! segment, and the segments holding acks of that segment's other messages, on disk), a lock
//! against two brokers opening one directory, and sharing one body between the queues a
//! message is routed to.

mod definitions;
mod durable_queues;
mod error;
mod fsync_policy;
mod ledger;
mod position;
mod record;
mod recovery;
mod segment;
mod writer;

#[cfg(test)]
mod crash_test;
#[cfg(test)]
mod tests;

use std::collections::HashSet;
use std::fmt;
use std::fs::{self, File};
use std::future::Future;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::task::{Context, Poll};

use bytes::Bytes;
use tokio::sync::oneshot;

pub use definitions::{BindingDef, BindingDestination, Definitions, ExchangeDef, QueueDef};
pub use durable_queues::DurableQueues;
pub use error::StoreError;
pub use fsync_policy::{FsyncPolicy, InvalidFsyncPolicy};
pub use position::Position;
pub use record::MAX_RECORD_LEN;

use record::{checksum, Record, RECORD_HEADER_LEN};
use segment::{segment_path, segments_dir};
use writer::{AppendState, Counters, Shared, Waiter};

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

/// Default segment size: 64 MiB.
pub const DEFAULT_SEGMENT_SIZE: u32 = 64 * 1024 * 1024;

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

/// What the store found at open: the durable topology and, per durable queue, its persistent
/// messages that were not acked, in queue order.
///
/// The broker declares the exchanges, queues and bindings, then puts each queue's messages back
/// in order with **`redelivered = true`**: the store does not record deliveries, so any of them
/// may have reached a consumer before the crash (RabbitMQ does the same for unacked messages).
/// Bodies stay on disk; fetch them with [`Store::read`] when needed.
#[derive(Debug)]
pub struct Recovered {
    /// Durable exchanges, queues and bindings.
    pub definitions: Definitions,
    /// One entry per durable queue in `definitions.queues`, in the same order.
    pub queues: Vec<RecoveredQueue>,
    /// Bytes of a torn tail record cut from the last segment (0 after a clean shutdown).
    pub torn_tail_bytes: u64,
}

/// The recovered messages of one durable queue.
#[derive(Debug)]
pub struct RecoveredQueue {
    /// The queue (see [`QueueDef::id`]).
    pub id: QueueId,
    /// Its unacked persistent messages, oldest first.
    pub messages: Vec<Position>,
}

/// A persistent message read back from the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredMessage {
    /// The queue it was enqueued to.
    pub queue: QueueId,
    /// The AMQP content-header properties, as the broker encoded them.
    pub properties: Bytes,
    /// The body.
    pub body: Bytes,
}

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

/// Resolves when a record is committed (on disk under [`FsyncPolicy::Always`]); the broker
/// sends the publisher confirm after it. Dropping it does not cancel the write.
#[derive(Debug)]
#[must_use = "a record is not durable until its Commit resolves"]
pub struct Commit(oneshot::Receiver<Result<(), StoreError>>);

impl Future for Commit {
    type Output = Result<(), StoreError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.0)
            .poll(cx)
            .map(|result| result.unwrap_or(Err(StoreError::Closed)))
    }
}

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
    /// The topology. Held across a snapshot rewrite, which serializes rewrites so snapshots
    /// land in the order of the changes.
    definitions: Mutex<Definitions>,
    /// Dropped by the writer thread when it exits; [`close`](Self::close) waits for that.
    stopped: Mutex<Option<oneshot::Receiver<()>>>,
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
    /// Opens (or creates) the store in `config.data_dir`: loads the topology, scans the
    /// segment log, cuts a torn tail, deletes fully acknowledged segments, and starts the
    /// writer thread. Blocking (it reads the whole log): call it before serving, or from
    /// `spawn_blocking`.
    ///
    /// Fails with a [`StoreError::is_corruption`] error when the files are damaged anywhere but
    /// in the last record written.
    pub fn open(config: StoreConfig) -> Result<(Self, Recovered), StoreError> {
        let data_dir = config.data_dir;
        let seg_dir = segments_dir(&data_dir);
        fs::create_dir_all(&seg_dir).map_err(|e| StoreError::io(&seg_dir, e))?;
        let mut definitions = Definitions::load(&data_dir)?;
        let known: HashSet<QueueId> = definitions.queues.iter().map(|q| q.id).collect();
        let mut scanned = recovery::recover(&data_dir, &known)?;
        definitions.next_queue_id = definitions
            .next_queue_id
            .max(scanned.max_queue_id + 1)
            .max(1);
        let queues = definitions
            .queues
            .iter()
            .map(|q| RecoveredQueue {
                id: q.id,
                messages: scanned.take_queue(q.id),
            })
            .collect::<Vec<_>>();
        let recovered = Recovered {
            definitions: definitions.clone(),
            queues,
            torn_tail_bytes: scanned.torn_bytes,
        };
        tracing::info!(
            data_dir = %data_dir.display(),
            queues = recovered.queues.len(),
            messages = recovered.queues.iter().map(|q| q.messages.len()).sum::<usize>(),
            segments = scanned.ledger.segment_count(),
            torn_tail_bytes = scanned.torn_bytes,
            "store opened"
        );

        let shared = Arc::new(Shared {
            state: Mutex::new(AppendState::new(
                scanned.last_segment,
                scanned.end_offset,
                scanned.ledger,
                known,
            )),
            wake: Condvar::new(),
            readers: Mutex::default(),
            counters: Counters::default(),
            data_dir,
            policy: config.fsync,
            segment_size: config.segment_size.clamp(4096, 1 << 30),
            #[cfg(test)]
            gate: Mutex::new(()),
        });
        shared.compact()?;
        let (stopped_tx, stopped_rx) = oneshot::channel();
        let thread_shared = shared.clone();
        std::thread::Builder::new()
            .name("lepus-store-writer".into())
            .spawn(move || writer::run(thread_shared, stopped_tx))
            .map_err(|e| StoreError::io(&shared.data_dir, e))?;
        let store = Self {
            shared,
            definitions: Mutex::new(definitions),
            stopped: Mutex::new(Some(stopped_rx)),
        };
        Ok((store, recovered))
    }

    /// The data directory.
    pub fn data_dir(&self) -> &Path {
        &self.shared.data_dir
    }

    /// A copy of the current durable topology.
    pub fn definitions(&self) -> Definitions {
        self.lock_definitions().clone()
    }

    // Topology changes below are synchronous and block for one small file write and three
    // fsyncs (file, then directory after the rename): a few milliseconds, on changes that are
    // rare next to publishes. They fit the broker's synchronous method handlers, which answer
    // `declare-ok` only after the call returns; an async caller with many of them may wrap
    // them in `spawn_blocking`.

    /// Records a durable exchange (replacing one of the same vhost and name). Returns once the
    /// snapshot is on disk.
    pub fn declare_exchange(&self, exchange: ExchangeDef) -> Result<(), StoreError> {
        let mut defs = self.lock_definitions();
        if defs.exchanges.contains(&exchange) {
            return Ok(());
        }
        let mut next = defs.clone();
        next.exchanges
            .retain(|e| !(e.vhost == exchange.vhost && e.name == exchange.name));
        next.exchanges.push(exchange);
        self.save(&mut defs, next)
    }

    /// Forgets a durable exchange and every binding from or to it (`exchange.delete`).
    /// Idempotent.
    pub fn delete_exchange(&self, vhost: &str, name: &str) -> Result<(), StoreError> {
        let mut defs = self.lock_definitions();
        let mut next = defs.clone();
        next.exchanges
            .retain(|e| !(e.vhost == vhost && e.name == name));
        next.bindings.retain(|b| {
            !(b.vhost == vhost
                && (b.source == name
                    || (b.destination_kind == BindingDestination::Exchange
                        && b.destination == name)))
        });
        if next == *defs {
            return Ok(());
        }
        self.save(&mut defs, next)
    }

    /// Records a durable queue and returns its id; a queue of the same vhost and name keeps its
    /// id (its flags and arguments are updated). Returns once the snapshot is on disk.
    pub fn declare_queue(
        &self,
        vhost: &str,
        name: &str,
        auto_delete: bool,
        arguments: Bytes,
    ) -> Result<QueueId, StoreError> {
        let mut defs = self.lock_definitions();
        let mut next = defs.clone();
        let id = match next
            .queues
            .iter_mut()
            .find(|q| q.vhost == vhost && q.name == name)
        {
            Some(queue) => {
                queue.auto_delete = auto_delete;
                queue.arguments = arguments;
                queue.id
            }
            None => {
                let id = QueueId(next.next_queue_id);
                next.next_queue_id += 1;
                next.queues.push(QueueDef {
                    id,
                    vhost: vhost.to_owned(),
                    name: name.to_owned(),
                    auto_delete,
                    arguments,
                });
                id
            }
        };
        if next != *defs {
            self.save(&mut defs, next)?;
        }
        self.shared.lock().queues.insert(id);
        Ok(id)
    }

    /// Forgets a durable queue, its bindings and its messages (`queue.delete`). Its records stay
    /// in the log until compaction, but recovery skips them. Idempotent.
    pub fn delete_queue(&self, queue: QueueId) -> Result<(), StoreError> {
        let mut defs = self.lock_definitions();
        let mut next = defs.clone();
        let Some(index) = next.queues.iter().position(|q| q.id == queue) else {
            return Ok(());
        };
        let removed = next.queues.remove(index);
        next.bindings.retain(|b| {
            !(b.vhost == removed.vhost
                && b.destination_kind == BindingDestination::Queue
                && b.destination == removed.name)
        });
        self.save(&mut defs, next)?;
        // Only once the snapshot no longer names the queue may its segments go.
        let mut state = self.shared.lock();
        state.queues.remove(&queue);
        state.ledger.forget_queue(queue);
        Ok(())
    }

    /// Records a binding between durable entities (`queue.bind`, `exchange.bind`). Idempotent.
    pub fn bind(&self, binding: BindingDef) -> Result<(), StoreError> {
        let mut defs = self.lock_definitions();
        if defs.bindings.contains(&binding) {
            return Ok(());
        }
        let mut next = defs.clone();
        next.bindings.push(binding);
        self.save(&mut defs, next)
    }

    /// Forgets a binding (`queue.unbind`, `exchange.unbind`): the one with the same vhost,
    /// source, destination, routing key and arguments. Idempotent.
    pub fn unbind(&self, binding: &BindingDef) -> Result<(), StoreError> {
        let mut defs = self.lock_definitions();
        if !defs.bindings.contains(binding) {
            return Ok(());
        }
        let mut next = defs.clone();
        next.bindings.retain(|b| b != binding);
        self.save(&mut defs, next)
    }

    /// Writes `next` as the snapshot and, once it is durable, makes it the current topology.
    fn save(&self, current: &mut Definitions, next: Definitions) -> Result<(), StoreError> {
        next.save(&self.shared.data_dir)?;
        *current = next;
        Ok(())
    }

    /// Locks the topology. No code panics while holding it (snapshot writes return errors), so
    /// a poisoned lock still guards a consistent value.
    fn lock_definitions(&self) -> std::sync::MutexGuard<'_, Definitions> {
        self.definitions
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Appends an enqueue record: persistent message (`properties`, `body`) entered durable
    /// `queue`. Returns its position (keep it: it names the message for
    /// [`remove`](Self::remove) and [`read`](Self::read)) and the commit to await before
    /// confirming the publish.
    pub fn enqueue(
        &self,
        queue: QueueId,
        properties: &[u8],
        body: &[u8],
    ) -> Result<(Position, Commit), StoreError> {
        let (tx, rx) = oneshot::channel();
        let position = self.enqueue_waiting(queue, properties, body, Waiter::Outcome(tx))?;
        Ok((position, Commit(rx)))
    }

    /// [`enqueue`](Self::enqueue) for a caller that waits on its own oneshot: `committed` fires
    /// when the record is committed and is dropped unfired if the write fails (a
    /// `oneshot::Receiver<()>` then reports an error).
    pub fn enqueue_signal(
        &self,
        queue: QueueId,
        properties: &[u8],
        body: &[u8],
        committed: oneshot::Sender<()>,
    ) -> Result<Position, StoreError> {
        self.enqueue_waiting(queue, properties, body, Waiter::Signal(committed))
    }

    fn enqueue_waiting(
        &self,
        queue: QueueId,
        properties: &[u8],
        body: &[u8],
        waiter: Waiter,
    ) -> Result<Position, StoreError> {
        let record = Record::Enqueue {
            queue,
            properties,
            body,
        };
        self.append(
            queue,
            &record,
            |_| Ok(()),
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
        let record = Record::Remove {
            queue,
            segment: message.segment,
            offset: message.offset,
        };
        let (tx, rx) = oneshot::channel();
        self.append(
            queue,
            &record,
            |state| {
                if state.ledger.is_live(queue, message.segment, message.offset) {
                    Ok(())
                } else {
                    Err(StoreError::NoMessage {
                        segment: message.segment,
                        offset: message.offset,
                    })
                }
            },
            |state, position| {
                state
                    .ledger
                    .removed(position.segment, queue, message.segment, message.offset);
            },
            Waiter::Outcome(tx),
        )
        .map(|_| Commit(rx))
    }

    /// Appends a purge record: every message enqueued to `queue` so far is gone
    /// (`queue.purge`).
    pub fn purge(&self, queue: QueueId) -> Result<Commit, StoreError> {
        let record = Record::Purge { queue };
        let (tx, rx) = oneshot::channel();
        self.append(
            queue,
            &record,
            |_| Ok(()),
            |state, position| state.ledger.purged(position.segment, queue),
            Waiter::Outcome(tx),
        )
        .map(|_| Commit(rx))
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

    /// Reads the message at `position` back from its segment (one `pread`, checksum verified).
    /// Valid once the enqueue's [`Commit`] resolved and until its remove is committed.
    /// Blocking, but cheap when the segment is in the page cache.
    pub fn read(&self, position: Position) -> Result<StoredMessage, StoreError> {
        let no_message = || StoreError::NoMessage {
            segment: position.segment,
            offset: position.offset,
        };
        if (position.len as usize) < RECORD_HEADER_LEN {
            return Err(no_message());
        }
        let file = self.reader(position.segment)?;
        let mut buf = vec![0; position.len as usize];
        file.read_exact_at(&mut buf, u64::from(position.offset))
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::UnexpectedEof => no_message(),
                _ => StoreError::io(segment_path(&self.shared.data_dir, position.segment), e),
            })?;
        let (header, payload) = buf.split_at(RECORD_HEADER_LEN);
        let len_bytes = [header[0], header[1], header[2], header[3]];
        if u32::from_be_bytes(len_bytes) as usize != payload.len()
            || checksum(len_bytes, payload)
                != u32::from_be_bytes([header[4], header[5], header[6], header[7]])
        {
            return Err(no_message());
        }
        let Ok(Record::Enqueue {
            queue, properties, ..
        }) = Record::decode(payload)
        else {
            return Err(no_message());
        };
        // Slice the one buffer instead of copying: properties start after kind, queue id and
        // properties length (13 bytes) and the body follows them.
        let props_start = RECORD_HEADER_LEN + 13;
        let body_start = props_start + properties.len();
        let buf = Bytes::from(buf);
        Ok(StoredMessage {
            queue,
            properties: buf.slice(props_start..body_start),
            body: buf.slice(body_start..),
        })
    }

    fn reader(&self, segment: u32) -> Result<Arc<File>, StoreError> {
        let mut readers = self
            .shared
            .readers
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(file) = readers.get(&segment) {
            return Ok(file.clone());
        }
        let path = segment_path(&self.shared.data_dir, segment);
        let file = File::open(&path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => StoreError::NoMessage { segment, offset: 0 },
            _ => StoreError::io(&path, e),
        })?;
        let file = Arc::new(file);
        readers.insert(segment, file.clone());
        Ok(file)
    }

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

    /// Stops accepting records, waits until everything appended so far is written and fsynced,
    /// and stops the writer thread. Later appends fail with [`StoreError::Closed`].
    pub async fn close(&self) -> Result<(), StoreError> {
        self.shared.lock().closing = true;
        self.shared.wake.notify_one();
        let stopped = self
            .stopped
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(stopped) = stopped {
            // The sender is only ever dropped (never sent on): `Err` means "thread exited".
            let _ = stopped.await;
        }
        match &self.shared.lock().failed {
            Some(cause) => Err(StoreError::WriterFailed(cause.clone())),
            None => Ok(()),
        }
    }
}

impl Drop for Store {
    /// Tells the writer thread to flush what is pending and exit, without waiting for it: call
    /// [`Store::close`] first when the directory is to be opened again.
    fn drop(&mut self) {
        self.shared.lock().closing = true;
        self.shared.wake.notify_one();
    }
}
