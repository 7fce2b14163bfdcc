//! Recovery: scan every segment in order at open, rebuild each durable queue's ordered list of
//! unacknowledged persistent messages and the compaction ledger, and cut a torn tail.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::Path;

use super::ledger::Ledger;
use super::record::Record;
use super::segment::{list_segments, scan, segment_path, segments_dir, sync_dir, SEGMENT_HEADER};
use super::{Position, QueueId, StoreError};

/// What a scan of the whole log found.
#[derive(Debug)]
pub(crate) struct Scanned {
    /// Live messages per known queue, keyed (and so ordered) by (segment, offset).
    pub(crate) queues: HashMap<QueueId, BTreeMap<(u32, u32), u32>>,
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
        self.queues
            .remove(&queue)
            .unwrap_or_default()
            .into_iter()
            .map(|((segment, offset), len)| Position {
                segment,
                offset,
                len,
            })
            .collect()
    }
}

/// Scans the segment log of `data_dir`. Records of queues not in `known` (deleted queues) are
/// skipped. Creates segment 1 when there is none; truncates a torn tail of the last segment.
pub(crate) fn recover(data_dir: &Path, known: &HashSet<QueueId>) -> Result<Scanned, StoreError> {
    let mut numbers = list_segments(data_dir)?;
    if numbers.is_empty() {
        create_segment(data_dir, 1)?;
        numbers.push(1);
    }
    let mut scanned = Scanned {
        queues: known.iter().map(|&q| (q, BTreeMap::new())).collect(),
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
            queues,
            ledger,
            max_queue_id,
            ..
        } = &mut scanned;
        let end = scan(&path, is_last, |offset, len, record| {
            let queue = match record {
                Record::Enqueue { queue, .. }
                | Record::Remove { queue, .. }
                | Record::Purge { queue } => queue,
            };
            *max_queue_id = (*max_queue_id).max(queue.0);
            let Some(messages) = queues.get_mut(&queue) else {
                return; // a deleted queue's record
            };
            match record {
                Record::Enqueue { .. } => {
                    messages.insert((segment, offset), len);
                    ledger.enqueued(segment, offset, queue);
                }
                Record::Remove {
                    segment: target,
                    offset: target_offset,
                    ..
                } => {
                    if messages.remove(&(target, target_offset)).is_some() {
                        ledger.removed(segment, queue, target, target_offset);
                    }
                }
                Record::Purge { .. } => {
                    messages.clear();
                    ledger.purged(segment, queue);
                }
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
