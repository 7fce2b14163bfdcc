//! `DurableQueues`: the store as the broker's queues see it — durable queues named by (vhost,
//! name), persistent messages named by the queue's own sequence number — mapped onto the
//! store's [`QueueId`]s and [`Position`]s.
//!
//! The broker puts a message in its in-memory queue first and hands it to the store after, with
//! no lock held; meanwhile a consumer (a no-ack one, typically) may already have taken it and
//! reported the removal. So a removal can arrive before its enqueue: it is remembered, and the
//! enqueue then writes nothing (the message is gone; there is nothing to make durable).

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use bytes::Bytes;
use tokio::sync::oneshot;

use super::{
    Commit, PersistentMessage, Position, QueueId, Recovered, Store, StoreError, StoredMessage,
};
use crate::shutdown::Throttled;

/// One durable queue's messages in the store.
#[derive(Debug)]
struct Slot {
    id: QueueId,
    /// (queue sequence number, position), ascending by sequence number. Removed entries become
    /// tombstones (`len == 0`) until they reach the front or make up half the deque: 20 bytes
    /// per message.
    messages: VecDeque<(u64, Position)>,
    tombstones: usize,
    /// Sequence numbers removed before their enqueue reached the store.
    removed_early: HashSet<u64>,
}

impl Slot {
    fn new(id: QueueId) -> Self {
        Self {
            id,
            messages: VecDeque::new(),
            tombstones: 0,
            removed_early: HashSet::new(),
        }
    }

    fn insert(&mut self, seq: u64, position: Position) {
        // Enqueues arrive in sequence order but for races between publishers: search from the
        // back, where they almost always land.
        let at = self.messages.partition_point(|&(s, _)| s < seq);
        self.messages.insert(at, (seq, position));
    }

    /// Takes the position of message `seq` out, if the store holds it.
    fn take(&mut self, seq: u64) -> Option<Position> {
        let index = self.messages.binary_search_by_key(&seq, |&(s, _)| s).ok()?;
        let entry = &mut self.messages[index];
        if entry.1.len == 0 {
            return None;
        }
        let position = entry.1;
        entry.1.len = 0;
        self.tombstones += 1;
        while self.messages.front().is_some_and(|(_, p)| p.len == 0) {
            self.messages.pop_front();
            self.tombstones -= 1;
        }
        if self.tombstones > 64 && self.tombstones * 2 > self.messages.len() {
            self.messages.retain(|(_, p)| p.len != 0);
            self.tombstones = 0;
        }
        Some(position)
    }
}

/// The broker-facing registry of durable queues over a [`Store`]. Shared behind an `Arc` by
/// every vhost; all methods take `&self`.
#[derive(Debug)]
pub struct DurableQueues {
    /// The store; the broker also calls it directly for topology other than queues.
    store: Arc<Store>,
    /// Durable queues by vhost, then name (nested so that a lookup by `&str` allocates
    /// nothing). The map's lock is taken briefly (read on every message, write on topology
    /// changes); each queue's own lock orders its messages, so publishers to different queues
    /// do not contend here.
    queues: RwLock<SlotMap>,
    /// Removes the store refused (after the writer failed, every ack is one): logged at the
    /// first, then with a count every 10 s. Locked only when a remove fails.
    remove_failures: Mutex<Throttled>,
}

/// Slots by vhost, then queue name.
type SlotMap = HashMap<String, HashMap<String, Arc<Mutex<Slot>>>>;

impl DurableQueues {
    /// Wraps `store`, registering the durable queues of `recovered` (with no messages: the
    /// broker registers each recovered message with [`restore`](Self::restore) as it puts it
    /// back in its queue).
    pub fn new(store: Arc<Store>, recovered: &Recovered) -> Self {
        let mut queues = SlotMap::new();
        for q in &recovered.definitions.queues {
            queues
                .entry(q.vhost.clone())
                .or_default()
                .insert(q.name.clone(), Arc::new(Mutex::new(Slot::new(q.id))));
        }
        Self {
            store,
            queues: RwLock::new(queues),
            remove_failures: Mutex::default(),
        }
    }

    /// The underlying store.
    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    fn slot(&self, vhost: &str, queue: &str) -> Option<Arc<Mutex<Slot>>> {
        let queues = self.queues.read().unwrap_or_else(PoisonError::into_inner);
        queues.get(vhost)?.get(queue).cloned()
    }

    /// Records the durable queue (`queue.declare` with durable=true, not exclusive) and
    /// returns the commit its `declare-ok` waits for (see [`Store::declare_queue`]).
    pub fn declare_queue(
        &self,
        vhost: &str,
        name: &str,
        auto_delete: bool,
        arguments: Bytes,
    ) -> Result<Commit, StoreError> {
        let (id, commit) = self
            .store
            .declare_queue(vhost, name, auto_delete, arguments)?;
        self.queues
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(vhost.to_owned())
            .or_default()
            .entry(name.to_owned())
            .or_insert_with(|| Arc::new(Mutex::new(Slot::new(id))));
        Ok(commit)
    }

    /// Forgets the durable queue and its messages (`queue.delete`) and returns the commit its
    /// `delete-ok` waits for. Idempotent.
    pub fn delete_queue(&self, vhost: &str, name: &str) -> Result<Commit, StoreError> {
        let slot = self
            .queues
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .get_mut(vhost)
            .and_then(|queues| queues.remove(name));
        match slot {
            Some(slot) => {
                let id = lock(&slot).id;
                self.store.delete_queue(id)
            }
            None => Ok(self.store.barrier()),
        }
    }

    /// Writes persistent message `seq` of durable queue `queue`. Returns what the publisher
    /// confirm waits for: `None` when there is nothing to wait for (the message was already
    /// removed), else a receiver that fires once the record is committed and fails if it could
    /// not be (the publish is then nacked).
    pub fn enqueue(
        &self,
        vhost: &str,
        queue: &str,
        seq: u64,
        message: PersistentMessage<'_>,
    ) -> Option<oneshot::Receiver<()>> {
        self.enqueue_as(vhost, queue, seq, message, false)
    }

    /// [`enqueue`](Self::enqueue) for a message dead-lettered from another durable queue:
    /// accepted while the store is low on space too (see [`Store::enqueue_moved_signal`]).
    pub fn enqueue_moved(
        &self,
        vhost: &str,
        queue: &str,
        seq: u64,
        message: PersistentMessage<'_>,
    ) -> Option<oneshot::Receiver<()>> {
        self.enqueue_as(vhost, queue, seq, message, true)
    }

    fn enqueue_as(
        &self,
        vhost: &str,
        queue: &str,
        seq: u64,
        message: PersistentMessage<'_>,
        moved: bool,
    ) -> Option<oneshot::Receiver<()>> {
        let (tx, rx) = oneshot::channel();
        let Some(slot) = self.slot(vhost, queue) else {
            tracing::error!(
                vhost,
                queue,
                "persistent message for a queue the store does not know"
            );
            return Some(rx); // `tx` dropped: the confirm becomes a nack
        };
        let mut slot = lock(&slot);
        if slot.removed_early.remove(&seq) {
            return None;
        }
        let appended = if moved {
            self.store.enqueue_moved_signal(slot.id, message, tx)
        } else {
            self.store.enqueue_signal(slot.id, message, tx)
        };
        match appended {
            Ok(position) => slot.insert(seq, position),
            // Expected while the disk is full, once per publish: the nack says it.
            Err(StoreError::NoSpace) => {
                tracing::debug!(
                    vhost,
                    queue,
                    "persistent enqueue refused: low on disk space"
                );
            }
            Err(err) => {
                tracing::error!(vhost, queue, cause = %err, "persistent enqueue failed");
            }
        }
        Some(rx)
    }

    /// Registers a recovered message the broker put back in `queue` as `seq`.
    pub fn restore(&self, vhost: &str, queue: &str, seq: u64, position: Position) {
        if let Some(slot) = self.slot(vhost, queue) {
            lock(&slot).insert(seq, position);
        }
    }

    /// Message `seq` left durable queue `queue` for good (ack, no-ack delivery, reject without
    /// requeue, expiry, length limit). Writes a remove record without waiting for it: a lost
    /// remove only means a redelivery after a crash.
    pub fn remove(&self, vhost: &str, queue: &str, seq: u64) {
        let Some(slot) = self.slot(vhost, queue) else {
            return;
        };
        let mut slot = lock(&slot);
        match slot.take(seq) {
            Some(position) => {
                if let Err(err) = self.store.remove(slot.id, position) {
                    let due = self
                        .remove_failures
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .hit();
                    if let Some(failed) = due {
                        tracing::error!(
                            vhost,
                            queue,
                            seq,
                            failed,
                            cause = %err,
                            "persistent remove failed (logged every 10 s while removes fail)"
                        );
                    }
                }
            }
            // Not (yet) in the store: transient, or its enqueue is still on the way.
            None => {
                slot.removed_early.insert(seq);
            }
        }
    }

    /// Every message of durable queue `queue` is gone (`queue.purge`).
    pub fn purge(&self, vhost: &str, queue: &str) -> Result<(), StoreError> {
        let Some(slot) = self.slot(vhost, queue) else {
            return Ok(());
        };
        let mut slot = lock(&slot);
        slot.messages.clear();
        slot.tombstones = 0;
        let _not_awaited = self.store.purge(slot.id)?;
        Ok(())
    }

    /// Reads messages `seqs` (ascending) of `queue` back from the log, for a queue that paged
    /// their bodies out: one result per sequence number, `None` where the store does not hold
    /// it. Adjacent records are read in one go ([`Store::read_many`]).
    pub fn read_many(&self, vhost: &str, queue: &str, seqs: &[u64]) -> Vec<Option<StoredMessage>> {
        let Some(slot) = self.slot(vhost, queue) else {
            return vec![None; seqs.len()];
        };
        let positions: Vec<Option<Position>> = {
            let slot = lock(&slot);
            seqs.iter()
                .map(|&seq| {
                    let index = slot.messages.binary_search_by_key(&seq, |&(s, _)| s).ok()?;
                    let position = slot.messages[index].1;
                    (position.len != 0).then_some(position)
                })
                .collect()
        };
        let found: Vec<Position> = positions.iter().flatten().copied().collect();
        let mut read = self.store.read_many(&found).into_iter();
        positions
            .iter()
            .map(|position| {
                let result = position.and_then(|_| read.next())?;
                result
                    .map_err(|err| {
                        tracing::error!(vhost, queue, cause = %err, "cannot read a message back");
                    })
                    .ok()
            })
            .collect()
    }

    /// Reads message `seq` of `queue` back from the log (for a broker that dropped its body
    /// from memory).
    pub fn read(&self, vhost: &str, queue: &str, seq: u64) -> Option<Bytes> {
        let slot = self.slot(vhost, queue)?;
        let position = {
            let slot = lock(&slot);
            let index = slot.messages.binary_search_by_key(&seq, |&(s, _)| s).ok()?;
            slot.messages[index].1
        };
        self.store.read(position).ok().map(|message| message.body)
    }
}

/// Locks a slot. No code panics while holding it, so a poisoned lock still guards a consistent
/// slot.
fn lock(slot: &Mutex<Slot>) -> std::sync::MutexGuard<'_, Slot> {
    slot.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::super::tests::TestDir;
    use super::super::{BindingDef, ExchangeDef, StoreConfig};
    use super::*;

    fn msg<'a>(properties: &'a [u8], body: &'a [u8]) -> PersistentMessage<'a> {
        PersistentMessage {
            exchange: "",
            routing_key: "jobs",
            properties,
            body,
        }
    }

    fn open(dir: &TestDir) -> (DurableQueues, Recovered) {
        let (store, recovered) = Store::open(StoreConfig::new(&dir.0)).unwrap();
        (DurableQueues::new(Arc::new(store), &recovered), recovered)
    }

    /// Declares the durable queue `name` in `/` (no arguments) and waits for its commit.
    async fn declare(queues: &DurableQueues, name: &str) {
        queues
            .declare_queue("/", name, false, Bytes::new())
            .unwrap()
            .await
            .unwrap();
    }

    /// Enqueues `message` as number `seq` on queue `queue` of `/` and waits for its commit.
    async fn enqueue_committed(
        queues: &DurableQueues,
        queue: &str,
        seq: u64,
        message: PersistentMessage<'_>,
    ) {
        queues
            .enqueue("/", queue, seq, message)
            .unwrap()
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn messages_named_by_sequence_number_survive_reopen() {
        let dir = TestDir::new();
        let (queues, _) = open(&dir);
        declare(&queues, "jobs").await;
        // Sequence numbers may reach the store out of order (concurrent publishers).
        for seq in [0u64, 2, 1, 3, 4] {
            enqueue_committed(&queues, "jobs", seq, msg(b"p", &[seq as u8])).await;
        }
        queues.remove("/", "jobs", 1);
        queues.remove("/", "jobs", 3);
        assert_eq!(queues.read("/", "jobs", 2), Some(Bytes::from_static(&[2])));
        assert_eq!(queues.read("/", "jobs", 1), None);
        queues.store().close().await.unwrap();
        drop(queues);

        let (queues, recovered) = open(&dir);
        let store = queues.store().clone();
        let bodies: Vec<u8> = recovered.queues[0]
            .messages
            .iter()
            .map(|&p| store.read(p).unwrap().body[0])
            .collect();
        assert_eq!(bodies, vec![0, 2, 4]);
        // The broker puts them back under new sequence numbers and acks one.
        for (seq, &position) in recovered.queues[0].messages.iter().enumerate() {
            queues.restore("/", "jobs", 100 + seq as u64, position);
        }
        queues.remove("/", "jobs", 101);
        assert_eq!(store.stats().live_messages, 2);
    }

    #[tokio::test]
    async fn removes_failing_after_the_writer_failed_are_logged_once_a_period() {
        let dir = TestDir::new();
        let mut config = StoreConfig::new(&dir.0);
        config.segment_size = 4096;
        let (store, recovered) = Store::open(config).unwrap();
        let queues = DurableQueues::new(Arc::new(store), &recovered);
        declare(&queues, "q").await;
        for seq in 0..100 {
            enqueue_committed(&queues, "q", seq, msg(b"", &[1; 100])).await;
        }
        // Pull the directory away: the next segment cannot be created, the writer fails for
        // good, and every ack's remove fails after it.
        std::fs::remove_dir_all(dir.0.join("segments")).unwrap();
        let failed = queues.enqueue("/", "q", 100, msg(b"", &[2; 4000])).unwrap();
        assert!(failed.await.is_err());
        for seq in 0..100 {
            queues.remove("/", "q", seq);
        }
        let counts = queues.remove_failures.lock().unwrap().counts();
        assert_eq!(counts, (100, 99), "100 failed removes, one line logged");
    }

    #[tokio::test]
    async fn a_removal_that_overtakes_its_enqueue_cancels_it() {
        let dir = TestDir::new();
        let (queues, _) = open(&dir);
        declare(&queues, "q").await;
        queues.remove("/", "q", 7); // a no-ack consumer took it before the store saw it
        assert!(queues.enqueue("/", "q", 7, msg(b"", b"gone")).is_none());
        assert_eq!(queues.store().stats().live_messages, 0);
        enqueue_committed(&queues, "q", 8, msg(b"", b"kept")).await;
        assert_eq!(queues.store().stats().live_messages, 1);
    }

    #[tokio::test]
    async fn unknown_queues_nack_and_deleted_queues_forget() {
        let dir = TestDir::new();
        let (queues, _) = open(&dir);
        let rx = queues.enqueue("/", "nope", 0, msg(b"", b"x")).unwrap();
        assert!(
            rx.await.is_err(),
            "no store behind it: the confirm must be a nack"
        );

        declare(&queues, "q").await;
        enqueue_committed(&queues, "q", 0, msg(b"", b"a")).await;
        queues.purge("/", "q").unwrap();
        assert_eq!(queues.store().stats().live_messages, 0);
        enqueue_committed(&queues, "q", 1, msg(b"", b"b")).await;
        queues.delete_queue("/", "q").unwrap().await.unwrap();
        assert_eq!(queues.store().stats().live_messages, 0);
        assert!(queues.store().definitions().queues.is_empty());
        queues.delete_queue("/", "q").unwrap().await.unwrap();
    }

    #[tokio::test]
    async fn redeclaring_keeps_ids_and_a_deleted_queue_loses_its_messages() {
        let dir = TestDir::new();
        let (queues, _) = open(&dir);
        let exchange = ExchangeDef {
            vhost: "/".into(),
            name: "x".into(),
            kind: "fanout".into(),
            auto_delete: false,
            internal: false,
            arguments: Bytes::new(),
        };
        let binding = BindingDef {
            vhost: "/".into(),
            source: "x".into(),
            destination_kind: super::super::BindingDestination::Queue,
            destination: "a".into(),
            routing_key: String::new(),
            arguments: Bytes::new(),
        };
        let store = queues.store().clone();
        store
            .declare_exchange(exchange.clone())
            .unwrap()
            .await
            .unwrap();
        for name in ["a", "b"] {
            declare(&queues, name).await;
        }
        store.bind(binding.clone()).unwrap().await.unwrap();
        let ids = store.definitions().queues;
        enqueue_committed(&queues, "a", 0, msg(b"", b"a0")).await;
        enqueue_committed(&queues, "b", 0, msg(b"", b"b0")).await;
        // Same topology again: nothing is appended, ids stay.
        let records = store.stats().records;
        declare(&queues, "b").await;
        store.bind(binding.clone()).unwrap().await.unwrap();
        store
            .declare_exchange(exchange.clone())
            .unwrap()
            .await
            .unwrap();
        assert_eq!(store.stats().records, records);
        assert_eq!(store.definitions().queues, ids);
        // Queue b deleted: its message goes with it.
        queues.delete_queue("/", "b").unwrap().await.unwrap();
        assert_eq!(store.stats().live_messages, 1);
        assert!(queues
            .enqueue("/", "b", 1, msg(b"", b"b1"))
            .unwrap()
            .await
            .is_err());
        store.close().await.unwrap();
        drop((queues, store));

        let (_, recovered) = open(&dir);
        assert_eq!(recovered.definitions.exchanges, vec![exchange]);
        assert_eq!(recovered.definitions.bindings, vec![binding]);
        assert_eq!(recovered.queues.len(), 1);
        assert_eq!(recovered.queues[0].messages.len(), 1);
    }

    #[test]
    fn slot_sweeps_tombstones() {
        let mut slot = Slot::new(QueueId(1));
        let at = |seq: u64| Position {
            segment: 1,
            offset: 8 + seq as u32 * 30,
            len: 30,
        };
        for seq in 0..1000 {
            slot.insert(seq, at(seq));
        }
        // Keep the head, ack the rest out of order: tombstones are swept before they dominate.
        for seq in (1..1000).rev() {
            assert_eq!(slot.take(seq), Some(at(seq)));
            let live = seq as usize;
            assert!(slot.messages.len() <= 2 * live + 64, "seq {seq}");
        }
        assert_eq!(slot.take(5), None);
        assert_eq!(slot.take(0), Some(at(0)));
        assert!(slot.messages.is_empty());
    }
}
