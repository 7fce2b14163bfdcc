//! `Ledger`: live-message accounting per segment, which decides when a segment can be deleted
//! (compaction).
//!
//! A segment may go when (a) none of its enqueue records is still live and (b) none of its
//! remove/purge records still matters. A remove record in segment S for a message in an older
//! segment T matters as long as T exists: deleting S first would bring the message back on the
//! next recovery. So S keeps a *pin* on T for each such record, and T's deletion releases them.
//!
//! Live messages are tracked by offset (4 bytes each, see [`Offsets`]), not just counted, so a
//! second remove of the same message is refused instead of freeing a segment that still holds
//! a live one.

use std::collections::{BTreeMap, HashMap};

use super::QueueId;

/// The enqueue offsets of one queue in one segment, ascending (records are appended, and
/// recovered, in offset order), with removed ones flagged by [`REMOVED`]: 4 bytes per message,
/// found by binary search. Offsets are below 2^30 (segments are at most 1 GiB), so the top bit
/// is free for the flag.
#[derive(Debug, Default)]
struct Offsets {
    offsets: Vec<u32>,
    live: usize,
}

/// Flag bit of a removed offset in [`Offsets`].
const REMOVED: u32 = 1 << 31;

impl Offsets {
    fn insert(&mut self, offset: u32) {
        match self.offsets.last() {
            Some(&last) if last & !REMOVED >= offset => {
                // Out of order (not produced by the store itself): keep the order anyway.
                let at = self.offsets.partition_point(|&o| o & !REMOVED < offset);
                if self
                    .offsets
                    .get(at)
                    .is_some_and(|&o| o & !REMOVED == offset)
                {
                    if self.offsets[at] & REMOVED != 0 {
                        self.offsets[at] = offset;
                        self.live += 1;
                    }
                    return;
                }
                self.offsets.insert(at, offset);
            }
            _ => self.offsets.push(offset),
        }
        self.live += 1;
    }

    fn index(&self, offset: u32) -> Option<usize> {
        self.offsets
            .binary_search_by_key(&offset, |&o| o & !REMOVED)
            .ok()
            .filter(|&i| self.offsets[i] & REMOVED == 0)
    }

    fn contains(&self, offset: u32) -> bool {
        self.index(offset).is_some()
    }

    /// Flags `offset` removed; false if it was not live.
    fn remove(&mut self, offset: u32) -> bool {
        let Some(i) = self.index(offset) else {
            return false;
        };
        self.offsets[i] |= REMOVED;
        self.live -= 1;
        // Drop the removed prefix now and then, so a draining queue gives memory back.
        let removed = self.offsets.len() - self.live;
        if removed > 1024 && removed * 2 > self.offsets.len() {
            self.offsets.retain(|&o| o & REMOVED == 0);
            self.offsets.shrink_to_fit();
        }
        true
    }

    fn is_empty(&self) -> bool {
        self.live == 0
    }
}

/// Accounting of one segment.
#[derive(Debug, Default)]
struct Account {
    /// Offsets of the live (enqueued, not yet removed) messages in this segment, per queue.
    /// Empty sets are removed, so an empty map means "nothing live".
    live: HashMap<QueueId, Offsets>,
    /// Older segments that removal records in this segment refer to, with the record count.
    pins: BTreeMap<u32, u64>,
}

/// Live counts and pins of every segment on disk. Owned by the store's append state (behind its
/// mutex): appenders update it as they reserve records, the writer thread asks it what to
/// delete.
#[derive(Debug, Default)]
pub(crate) struct Ledger {
    segments: BTreeMap<u32, Account>,
}

impl Ledger {
    /// Registers a (new or recovered) segment.
    pub(crate) fn add_segment(&mut self, segment: u32) {
        self.segments.entry(segment).or_default();
    }

    /// A message of `queue` was enqueued at (`segment`, `offset`).
    pub(crate) fn enqueued(&mut self, segment: u32, offset: u32, queue: QueueId) {
        self.segments
            .entry(segment)
            .or_default()
            .live
            .entry(queue)
            .or_default()
            .insert(offset);
    }

    /// Whether the message of `queue` at (`segment`, `offset`) is live.
    pub(crate) fn is_live(&self, queue: QueueId, segment: u32, offset: u32) -> bool {
        self.segments
            .get(&segment)
            .and_then(|account| account.live.get(&queue))
            .is_some_and(|offsets| offsets.contains(offset))
    }

    /// A remove record in segment `holder` took the message of `queue` at (`target`, `offset`)
    /// out. Returns false (and changes nothing) when that message was not live.
    pub(crate) fn removed(
        &mut self,
        holder: u32,
        queue: QueueId,
        target: u32,
        offset: u32,
    ) -> bool {
        let Some(account) = self.segments.get_mut(&target) else {
            return false;
        };
        let Some(offsets) = account.live.get_mut(&queue) else {
            return false;
        };
        if !offsets.remove(offset) {
            return false;
        }
        if offsets.is_empty() {
            account.live.remove(&queue);
        }
        self.pin(holder, target);
        true
    }

    /// A purge record in segment `holder` removed every message of `queue` enqueued before it.
    pub(crate) fn purged(&mut self, holder: u32, queue: QueueId) {
        let mut targets = Vec::new();
        for (&segment, account) in &mut self.segments {
            if account.live.remove(&queue).is_some() {
                targets.push(segment);
            }
        }
        for target in targets {
            self.pin(holder, target);
        }
    }

    /// The durable queue was deleted: its records are dead (recovery skips queues missing from
    /// the definitions), so it stops counting anywhere. Needs no pins: the definitions file,
    /// not a log record, says the queue is gone.
    pub(crate) fn forget_queue(&mut self, queue: QueueId) {
        for account in self.segments.values_mut() {
            account.live.remove(&queue);
        }
    }

    fn pin(&mut self, holder: u32, target: u32) {
        if holder != target {
            *self
                .segments
                .entry(holder)
                .or_default()
                .pins
                .entry(target)
                .or_default() += 1;
        }
    }

    /// Segments below `limit` with nothing live and no pins: safe to delete now, in any order.
    pub(crate) fn deletable(&self, limit: u32) -> Vec<u32> {
        self.segments
            .range(..limit)
            .filter(|(_, account)| account.live.is_empty() && account.pins.is_empty())
            .map(|(&segment, _)| segment)
            .collect()
    }

    /// `segment` is gone from disk: forget it and release the pins that referred to it.
    pub(crate) fn deleted(&mut self, segment: u32) {
        self.segments.remove(&segment);
        for account in self.segments.values_mut() {
            account.pins.remove(&segment);
        }
    }

    /// Number of segments accounted for.
    pub(crate) fn segment_count(&self) -> usize {
        self.segments.len()
    }

    /// Live messages over all segments.
    pub(crate) fn live_messages(&self) -> u64 {
        self.segments
            .values()
            .flat_map(|account| account.live.values())
            .map(|offsets| offsets.live as u64)
            .sum()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const Q: QueueId = QueueId(1);

    #[test]
    fn offsets_take_four_bytes_each_and_forget_removed_ones() {
        let mut offsets = Offsets::default();
        for i in 0..5000u32 {
            offsets.insert(8 + i * 100);
        }
        offsets.insert(58); // out of order: still found
        assert!(offsets.contains(58) && offsets.contains(108) && !offsets.contains(109));
        assert!(offsets.remove(58));
        assert!(!offsets.remove(58), "a second remove changes nothing");
        for i in 0..4000u32 {
            assert!(offsets.remove(8 + i * 100));
        }
        assert!(offsets.offsets.len() < 2000, "removed entries are swept");
        assert_eq!(offsets.live, 1000);
        assert!(offsets.contains(8 + 4000 * 100) && !offsets.contains(8));
        for i in 4000..5000u32 {
            assert!(offsets.remove(8 + i * 100));
        }
        assert!(offsets.is_empty());
    }

    #[test]
    fn segment_with_live_messages_is_kept() {
        let mut ledger = Ledger::default();
        ledger.enqueued(1, 8, Q);
        ledger.enqueued(1, 20, Q);
        assert!(ledger.removed(1, Q, 1, 8));
        assert!(
            !ledger.removed(1, Q, 1, 8),
            "a second remove changes nothing"
        );
        assert!(!ledger.removed(1, QueueId(9), 1, 20), "wrong queue");
        assert_eq!(ledger.deletable(10), Vec::<u32>::new());
        assert!(ledger.is_live(Q, 1, 20));
        assert!(ledger.removed(1, Q, 1, 20));
        assert!(!ledger.is_live(Q, 1, 20));
        assert_eq!(ledger.deletable(10), vec![1]);
        assert_eq!(ledger.deletable(1), Vec::<u32>::new(), "limit excludes");
    }

    #[test]
    fn a_removal_pins_its_target_until_the_target_is_deleted() {
        let mut ledger = Ledger::default();
        ledger.enqueued(1, 8, Q); // a: stays live for a while
        ledger.enqueued(1, 30, Q); // b
        ledger.enqueued(2, 8, Q); // c
        ledger.removed(2, Q, 1, 30); // ack b, recorded in segment 2
        ledger.removed(2, Q, 2, 8); // ack c

        // Segment 2 has nothing live but its ack of b must outlive segment 1.
        assert_eq!(ledger.deletable(10), Vec::<u32>::new());
        ledger.removed(3, Q, 1, 8); // ack a, recorded in segment 3
        assert_eq!(ledger.deletable(10), vec![1]);
        ledger.deleted(1);
        assert_eq!(ledger.deletable(10), vec![2, 3]);
    }

    #[test]
    fn purge_and_queue_deletion_release_live_counts() {
        let mut ledger = Ledger::default();
        let other = QueueId(2);
        ledger.enqueued(1, 8, Q);
        ledger.enqueued(1, 30, other);
        ledger.enqueued(2, 8, Q);
        ledger.purged(3, Q);
        assert_eq!(ledger.live_messages(), 1);
        assert_eq!(ledger.deletable(10), vec![2]);
        ledger.forget_queue(other);
        assert_eq!(ledger.deletable(10), vec![1, 2]);
        ledger.deleted(1);
        ledger.deleted(2);
        assert_eq!(ledger.deletable(10), vec![3]);
    }
}
