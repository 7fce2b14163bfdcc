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
        self.remove_as(vhost, queue, seq, None);
    }

    /// How many write batches the store has refused so far: read before a dead letter's
    /// copies are appended, for [`remove_moved`](Self::remove_moved).
    pub fn refusals(&self) -> u64 {
        self.store.refusals()
    }

    /// [`remove`](Self::remove) of a message dead-lettered to other durable queues, whose
    /// copies were appended after [`refusals`](Self::refusals) read `refusals`: withheld (the
    /// message stays in the log, a duplicate after a restart) when a write was refused since,
    /// as the refused batch may have held a copy (see [`Store::remove_moved`]).
    pub fn remove_moved(&self, vhost: &str, queue: &str, seq: u64, refusals: u64) {
        self.remove_as(vhost, queue, seq, Some(refusals));
    }

    fn remove_as(&self, vhost: &str, queue: &str, seq: u64, refusals: Option<u64>) {
        let Some(slot) = self.slot(vhost, queue) else {
            return;
        };
        let mut slot = lock(&slot);
        match slot.take(seq) {
            Some(position) => {
                let removed = match refusals {
                    None => self.store.remove(slot.id, position),
                    Some(refusals) => self.store.remove_moved(slot.id, position, refusals),
                };
                if let Err(StoreError::MoveUnconfirmed) = removed {
                    tracing::warn!(
                        vhost,
                        queue,
                        seq,
                        "dead-lettered message kept in its queue's log: a write was refused \
                         after its copy was appended (it comes back after a restart)"
                    );
                } else if let Err(err) = removed {
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
mod tests;
