//! Recovery: scan every segment in order at open, replay the topology records the snapshot
//! does not cover, rebuild each durable queue's ordered list of unacknowledged persistent
//! messages and the compaction ledger, and cut a torn tail.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::Path;

use super::ledger::{Ledger, LogPoint};
use super::record::Record;
use super::segment::{list_segments, scan, segment_path, segments_dir, sync_dir, SEGMENT_HEADER};
use super::topology::StoredTopology;
use super::{Definitions, Position, QueueId, StoreError};

/// What the store found at open: the durable topology and, per durable queue, its persistent
/// messages that were not acked, in queue order.
///
/// The broker declares the exchanges, queues and bindings, then puts each queue's messages back
/// in order with **`redelivered = true`**: the store does not record deliveries, so any of them
/// may have reached a consumer before the crash (RabbitMQ does the same for unacked messages).
/// Bodies stay on disk; fetch them with [`super::Store::read`] when needed.
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
    /// The queue (see [`super::QueueDef::id`]).
    pub id: QueueId,
    /// Its unacked persistent messages, oldest first.
    pub messages: Vec<Position>,
}

/// What a scan of the whole log found.
#[derive(Debug)]
pub(crate) struct Scanned {
    /// The topology: the snapshot with the later topology records applied.
    pub(crate) topology: StoredTopology,
    /// Topology records the snapshot does not cover.
    pub(crate) uncovered: u64,
    /// End of the last of them (where the snapshot's coverage ends when there is none).
    pub(crate) last_topology_end: LogPoint,
    /// Live messages per known queue, in log order.
    pub(crate) queues: HashMap<QueueId, QueueScan>,
    /// Live counts and pins of every segment.
    pub(crate) ledger: Ledger,
    /// The last segment, where appends continue.
    pub(crate) last_segment: u32,
    /// Its valid length: where the next record goes.
    pub(crate) end_offset: u32,
    /// Highest queue id seen in any record, known or not (ids are never reused).
    pub(crate) max_queue_id: u64,
    /// Bytes cut from the end of the last segment.
    pub(crate) torn_bytes: u64,
}

impl Scanned {
    /// The live messages of `queue` in log (= queue) order.
    pub(crate) fn take_queue(&mut self, queue: QueueId) -> Vec<Position> {
        let mut scan = self.queues.remove(&queue).unwrap_or_default();
        scan.compact();
        scan.messages
    }
}

/// One queue's messages during the scan: a vector in log order, which is (segment, offset)
/// order, so a remove finds its message by binary search. Removed entries become tombstones
/// (`len == 0`, never a real record length) and are swept out when they are half the vector.
/// 12 bytes per message, where an ordered map would take twice that.
#[derive(Debug, Default)]
pub(crate) struct QueueScan {
    messages: Vec<Position>,
    tombstones: usize,
}

impl QueueScan {
    fn enqueued(&mut self, position: Position) {
        self.messages.push(position);
    }

    /// Marks the message at (`segment`, `offset`) removed; false if it was not live.
    fn removed(&mut self, segment: u32, offset: u32) -> bool {
        let Ok(index) = self
            .messages
            .binary_search_by_key(&(segment, offset), |p| (p.segment, p.offset))
        else {
            return false;
        };
        if self.messages[index].len == 0 {
            return false;
        }
        self.messages[index].len = 0;
        self.tombstones += 1;
        if self.tombstones > 1024 && self.tombstones * 2 > self.messages.len() {
            self.compact();
        }
        true
    }

    fn purged(&mut self) {
        self.messages.clear();
        self.tombstones = 0;
    }

    fn compact(&mut self) {
        self.messages.retain(|p| p.len != 0);
        self.tombstones = 0;
    }
}

/// Scans the segment log of `data_dir`, starting from the topology `snapshot`, which covers
/// the log up to `covers`: topology records before that place are skipped (the snapshot has
/// them), later ones are applied in log order. Message records of queues unknown at their
/// place in the log (deleted queues) are skipped. Creates segment 1 when there is none;
/// truncates a torn tail of the last segment.
pub(crate) fn recover(
    data_dir: &Path,
    snapshot: Definitions,
    covers: LogPoint,
) -> Result<Scanned, StoreError> {
    let mut numbers = list_segments(data_dir)?;
    if numbers.is_empty() {
        create_segment(data_dir, 1)?;
        numbers.push(1);
    }
    let topology = StoredTopology::from_definitions(snapshot);
    let mut scanned = Scanned {
        queues: topology
            .queue_ids()
            .map(|q| (q, QueueScan::default()))
            .collect(),
        topology,
        uncovered: 0,
        last_topology_end: covers,
        ledger: Ledger::default(),
        last_segment: 0,
        end_offset: 0,
        max_queue_id: 0,
        torn_bytes: 0,
    };
    let count = numbers.len();
    for (index, &segment) in numbers.iter().enumerate() {
        let is_last = index + 1 == count;
        let path = segment_path(data_dir, segment);
        scanned.ledger.add_segment(segment);
        let Scanned {
            topology,
            uncovered,
            last_topology_end,
            queues,
            ledger,
            max_queue_id,
            ..
        } = &mut scanned;
        let end = scan(&path, is_last, |offset, len, record| {
            let queue = record.queue();
            *max_queue_id = (*max_queue_id).max(queue.0);
            if record.is_topology() {
                if (segment, offset) < covers {
                    return; // in the snapshot already
                }
                let end = (segment, offset + len);
                ledger.topology_record(segment, end.1);
                *uncovered += 1;
                *last_topology_end = end;
                if let Record::QueueDeclare { queue, .. } = record {
                    queues.entry(queue).or_default();
                }
                if let Some(gone) = topology.apply(&record) {
                    queues.remove(&gone);
                    ledger.forget_queue(gone, end);
                }
                return;
            }
            let Some(messages) = queues.get_mut(&queue) else {
                return; // a deleted queue's record
            };
            let end = offset + len;
            match record {
                Record::Enqueue { .. } => {
                    messages.enqueued(Position {
                        segment,
                        offset,
                        len,
                    });
                    ledger.enqueued(segment, offset, queue);
                }
                Record::Remove {
                    segment: target,
                    offset: target_offset,
                    ..
                } if messages.removed(target, target_offset) => {
                    ledger.removed(segment, end, queue, target, target_offset);
                }
                Record::Purge { .. } => {
                    messages.purged();
                    ledger.purged(segment, end, queue);
                }
                _ => {}
            }
        })?;
        if is_last {
            scanned.torn_bytes = end.file_len - end.valid_len;
            if scanned.torn_bytes > 0 {
                tracing::warn!(
                    segment,
                    offset = end.valid_len,
                    bytes = scanned.torn_bytes,
                    "dropping the torn tail of the last segment"
                );
            }
            if end.valid_len < SEGMENT_HEADER.len() as u64 {
                // Created but its header never made it to disk (or an empty file).
                create_segment(data_dir, segment)?;
            } else if scanned.torn_bytes > 0 {
                truncate(&path, end.valid_len)?;
            }
            scanned.last_segment = segment;
            // A segment is at most 1 GiB plus one record of at most 512 MiB: fits u32.
            scanned.end_offset = end.valid_len.max(SEGMENT_HEADER.len() as u64) as u32;
        }
    }
    Ok(scanned)
}

/// Creates (or rewrites, when a crash tore its header) segment `number` holding only the
/// header, durably.
fn create_segment(data_dir: &Path, number: u32) -> Result<(), StoreError> {
    let dir = segments_dir(data_dir);
    let path = segment_path(data_dir, number);
    File::create(&path)
        .and_then(|mut file| {
            file.write_all(&SEGMENT_HEADER)?;
            file.sync_all()
        })
        .map_err(|e| StoreError::io(&path, e))?;
    sync_dir(&dir)
}

fn truncate(path: &Path, len: u64) -> Result<(), StoreError> {
    OpenOptions::new()
        .write(true)
        .open(path)
        .and_then(|file| {
            file.set_len(len)?;
            file.sync_all()
        })
        .map_err(|e| StoreError::io(path, e))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn queue_scan_keeps_order_through_tombstone_sweeps() {
        let mut scan = QueueScan::default();
        let at = |i: u32| Position {
            segment: 1 + i / 1000,
            offset: 8 + (i % 1000) * 40,
            len: 40,
        };
        for i in 0..5000 {
            scan.enqueued(at(i));
        }
        // Remove all but every third, from the back, so sweeps happen midway.
        for i in (0..5000).rev().filter(|i| i % 3 != 0) {
            assert!(scan.removed(at(i).segment, at(i).offset), "message {i}");
            assert!(!scan.removed(at(i).segment, at(i).offset), "again {i}");
        }
        assert!(scan.messages.len() < 5000, "tombstones were swept");
        scan.compact();
        let want: Vec<Position> = (0..5000).filter(|i| i % 3 == 0).map(at).collect();
        assert_eq!(scan.messages, want);
        scan.purged();
        assert!(scan.messages.is_empty());
    }
}
