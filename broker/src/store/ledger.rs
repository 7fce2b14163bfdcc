//! `Ledger`: live-message accounting per segment, which decides when a segment can be deleted
//! (compaction).
//!
//! A segment may go when (a) none of its enqueue records is still live, (b) none of its
//! remove/purge records still matters, (c) the records that made its messages dead are
//! committed, and (d) none of its topology records is newer than the durable snapshot.
//!
//! (b): a remove record in segment S for a message in an older segment T matters as long as T
//! exists: deleting S first would bring the message back on the next recovery. So S keeps a
//! *pin* on T for each such record, and T's deletion releases them.
//!
//! (c): the ledger is updated when a record is appended, before the writer has written it.
//! Deleting T as soon as its last message is removed would let a crash lose both the removal
//! (never written) and T: for a dead-lettered message, whose copy in its new queue is appended
//! just before that removal, that is a loss. So each segment remembers where the last record
//! that freed one of its messages ends (`freed_upto`), and is deletable only once the log is
//! committed up to there.
//!
//! (d): a segment holding topology records is kept until a snapshot of the topology taken at
//! or after its end is durable (see `Definitions`): recovery replays those records otherwise.
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

/// A place in the log: (segment, byte offset). Ordered as the log is.
pub(crate) type LogPoint = (u32, u32);

/// Accounting of one segment.
#[derive(Debug, Default)]
struct Account {
    /// Offsets of the live (enqueued, not yet removed) messages in this segment, per queue.
    /// Empty sets are removed, so an empty map means "nothing live".
    live: HashMap<QueueId, Offsets>,
    /// Older segments that removal records in this segment refer to, with the record count.
    pins: BTreeMap<u32, u64>,
    /// End of the last record (remove, purge, queue delete) that made one of this segment's
    /// messages dead: the segment may go only once the log is committed up to here.
    freed_upto: LogPoint,
    /// End offset of the last topology record in this segment that no durable snapshot
    /// covers yet.
    topology: Option<u32>,
}

impl Account {
    fn freed(&mut self, by: LogPoint) {
        self.freed_upto = self.freed_upto.max(by);
    }
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

    /// A remove record in segment `holder`, ending at `end`, took the message of `queue` at
    /// (`target`, `offset`) out. Returns false (and changes nothing) when that message was not
    /// live.
    pub(crate) fn removed(
        &mut self,
        holder: u32,
        end: u32,
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
        account.freed((holder, end));
        self.pin(holder, target);
        true
    }

    /// A purge record in segment `holder`, ending at `end`, removed every message of `queue`
    /// enqueued before it.
    pub(crate) fn purged(&mut self, holder: u32, end: u32, queue: QueueId) {
        let mut targets = Vec::new();
        for (&segment, account) in &mut self.segments {
            if account.live.remove(&queue).is_some() {
                account.freed((holder, end));
                targets.push(segment);
            }
        }
        for target in targets {
            self.pin(holder, target);
        }
    }

    /// The durable queue was deleted by the record ending at `end`: its records are dead, so
    /// it stops counting anywhere. Needs no pins: the queue-delete record is a topology record,
    /// kept (with its segment) until a snapshot without the queue is durable.
    pub(crate) fn forget_queue(&mut self, queue: QueueId, end: LogPoint) {
        for account in self.segments.values_mut() {
            if account.live.remove(&queue).is_some() {
                account.freed(end);
            }
        }
    }

    /// Segment `segment` holds a topology record ending at `end` (kept until a snapshot
    /// covers it).
    pub(crate) fn topology_record(&mut self, segment: u32, end: u32) {
        let account = self.segments.entry(segment).or_default();
        account.topology = account.topology.max(Some(end));
    }

    /// A durable snapshot covers every topology record before `covers`.
    pub(crate) fn snapshot_covers(&mut self, covers: LogPoint) {
        for (&segment, account) in self.segments.range_mut(..=covers.0) {
            if account.topology.is_some_and(|end| (segment, end) <= covers) {
                account.topology = None;
            }
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

    /// Segments below `limit` with nothing live, no pins, their freeing records committed (the
    /// log is committed up to `committed`) and no topology record newer than the snapshot:
    /// safe to delete now, in any order.
    pub(crate) fn deletable(&self, limit: u32, committed: LogPoint) -> Vec<u32> {
        self.segments
            .range(..limit)
            .filter(|(_, account)| Self::free(account, committed) && account.topology.is_none())
            .map(|(&segment, _)| segment)
            .collect()
    }

    /// True when a segment below `limit` could be deleted but for its topology records: a
    /// snapshot would let it go.
    pub(crate) fn held_by_topology(&self, limit: u32, committed: LogPoint) -> bool {
        self.segments
            .range(..limit)
            .any(|(_, account)| account.topology.is_some() && Self::free(account, committed))
    }

    fn free(account: &Account, committed: LogPoint) -> bool {
        account.live.is_empty() && account.pins.is_empty() && account.freed_upto <= committed
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
    /// A log committed everywhere.
    const ALL: LogPoint = (u32::MAX, u32::MAX);

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
        assert!(ledger.removed(1, 50, Q, 1, 8));
        assert!(
            !ledger.removed(1, 67, Q, 1, 8),
            "a second remove changes nothing"
        );
        assert!(!ledger.removed(1, 67, QueueId(9), 1, 20), "wrong queue");
        assert_eq!(ledger.deletable(10, ALL), Vec::<u32>::new());
        assert!(ledger.is_live(Q, 1, 20));
        assert!(ledger.removed(1, 67, Q, 1, 20));
        assert!(!ledger.is_live(Q, 1, 20));
        assert_eq!(ledger.deletable(10, ALL), vec![1]);
        assert_eq!(
            ledger.deletable(1, ALL),
            Vec::<u32>::new(),
            "limit excludes"
        );
    }

    #[test]
    fn a_removal_pins_its_target_until_the_target_is_deleted() {
        let mut ledger = Ledger::default();
        ledger.enqueued(1, 8, Q); // a: stays live for a while
        ledger.enqueued(1, 30, Q); // b
        ledger.enqueued(2, 8, Q); // c
        ledger.removed(2, 40, Q, 1, 30); // ack b, recorded in segment 2
        ledger.removed(2, 57, Q, 2, 8); // ack c

        // Segment 2 has nothing live but its ack of b must outlive segment 1.
        assert_eq!(ledger.deletable(10, ALL), Vec::<u32>::new());
        ledger.removed(3, 25, Q, 1, 8); // ack a, recorded in segment 3
        assert_eq!(ledger.deletable(10, ALL), vec![1]);
        ledger.deleted(1);
        assert_eq!(ledger.deletable(10, ALL), vec![2, 3]);
    }

    #[test]
    fn purge_and_queue_deletion_release_live_counts() {
        let mut ledger = Ledger::default();
        let other = QueueId(2);
        ledger.enqueued(1, 8, Q);
        ledger.enqueued(1, 30, other);
        ledger.enqueued(2, 8, Q);
        ledger.purged(3, 17, Q);
        assert_eq!(ledger.live_messages(), 1);
        assert_eq!(ledger.deletable(10, ALL), vec![2]);
        ledger.forget_queue(other, (3, 34));
        assert_eq!(ledger.deletable(10, ALL), vec![1, 2]);
        ledger.deleted(1);
        ledger.deleted(2);
        assert_eq!(ledger.deletable(10, ALL), vec![3]);
    }

    #[test]
    fn a_segment_waits_for_the_records_that_freed_it_to_be_committed() {
        let mut ledger = Ledger::default();
        ledger.enqueued(1, 8, Q);
        ledger.enqueued(1, 30, QueueId(2));
        ledger.enqueued(2, 8, Q);
        ledger.removed(3, 25, Q, 1, 8); // written at (3, 8..25)
        ledger.purged(3, 42, QueueId(2)); // (3, 25..42)
        ledger.removed(4, 25, Q, 2, 8);
        assert_eq!(ledger.deletable(10, (3, 24)), Vec::<u32>::new());
        assert_eq!(
            ledger.deletable(10, (3, 25)),
            Vec::<u32>::new(),
            "purge pending"
        );
        assert_eq!(ledger.deletable(10, (3, 42)), vec![1]);
        assert_eq!(ledger.deletable(10, ALL), vec![1, 2]);
        ledger.enqueued(5, 8, Q);
        ledger.forget_queue(Q, (6, 17));
        assert_eq!(ledger.deletable(10, (6, 16)), vec![1, 2]);
        assert_eq!(ledger.deletable(10, (6, 17)), vec![1, 2, 5]);
    }

    #[test]
    fn topology_records_keep_their_segment_until_a_snapshot_covers_it() {
        let mut ledger = Ledger::default();
        ledger.enqueued(1, 8, Q);
        ledger.topology_record(1, 30);
        ledger.topology_record(2, 20);
        ledger.removed(2, 37, Q, 1, 8);
        assert_eq!(ledger.deletable(10, ALL), Vec::<u32>::new());
        assert!(ledger.held_by_topology(10, ALL));
        ledger.snapshot_covers((2, 8));
        assert_eq!(ledger.deletable(10, ALL), vec![1]);
        ledger.deleted(1);
        assert!(
            ledger.held_by_topology(10, ALL),
            "segment 2 is not covered yet"
        );
        ledger.snapshot_covers((2, 19));
        assert!(ledger.held_by_topology(10, ALL), "its record ends at 20");
        ledger.snapshot_covers((2, 37));
        assert!(!ledger.held_by_topology(10, ALL));
        assert_eq!(ledger.deletable(10, ALL), vec![2]);
    }
}
