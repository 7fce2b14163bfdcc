//! Topology snapshots: folding the topology records of the log into a new `definitions` file,
//! so that recovery replays few records and the segments holding old ones can be deleted.
//!
//! A snapshot is started (one at a time) when the log holds more than 1,024 uncovered topology
//! records and more than half as many as the topology has entries (see
//! `TopologyLog::snapshot_due`), or when
//! compaction finds a segment that only its topology records keep. Under the topology lock it
//! copies the topology and notes the log's end; a thread of its own then waits until the log
//! is committed up to that point (a snapshot never gets ahead of the log), writes the file
//! (temp, fsync, rename, directory fsync), releases the segments the snapshot now covers, and
//! runs compaction. Topology changes go on meanwhile: they are logged after the snapshot's
//! point and replayed on top of it.

use std::sync::Arc;

use tokio::sync::oneshot;

use super::{Shared, Waiter};
use crate::store::topology::TopologyLog;

impl Shared {
    /// Starts a snapshot of `log` (the content of the held topology lock) covering the log up to
    /// its current end. Costs one copy of the topology under the lock; the writing happens on a
    /// thread of its own.
    pub(crate) fn start_snapshot(self: &Arc<Self>, log: &mut TopologyLog) {
        let shared = self;
        if log.snapshot_running {
            return;
        }
        let definitions = log.topology.to_definitions();
        let counted = log.uncovered;
        let covers = shared.lock().append_point();
        let (tx, rx) = oneshot::channel();
        shared.commit_upto(Some(covers), Waiter::Outcome(tx));
        let thread_shared = shared.clone();
        let spawned = std::thread::Builder::new()
            .name("lepus-store-snapshot".into())
            .spawn(move || {
                let shared = thread_shared;
                let written = match rx.blocking_recv() {
                    Ok(Ok(())) => definitions.save(&shared.data_dir, covers),
                    Ok(Err(err)) => Err(err),
                    Err(_) => Err(crate::store::StoreError::Closed),
                };
                match &written {
                    Ok(()) => {
                        shared.lock().ledger.snapshot_covers(covers);
                        tracing::debug!(
                            records = counted,
                            segment = covers.0,
                            offset = covers.1,
                            "topology snapshot written"
                        );
                        // Still marked running: this compaction starts no other snapshot.
                        if let Err(err) = shared.compact() {
                            tracing::warn!(cause = %err, "compaction after a topology snapshot failed");
                        }
                    }
                    // The log still holds every record: nothing is lost, the next snapshot retries.
                    Err(err) => tracing::warn!(cause = %err, "topology snapshot not written"),
                }
                // Last: once this is seen, the thread takes no lock again and is about to end.
                let mut log = shared.lock_topology();
                log.snapshot_running = false;
                if written.is_ok() {
                    log.uncovered = log.uncovered.saturating_sub(counted);
                }
            });
        match spawned {
            Ok(thread) => {
                log.snapshot_running = true;
                let previous = shared
                    .snapshot_thread
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .replace(thread);
                // The previous snapshot thread is past its last lock (it cleared
                // `snapshot_running`): joining it cannot wait on the lock held here.
                if let Some(previous) = previous {
                    let _ = previous.join();
                }
            }
            Err(err) => tracing::warn!(cause = %err, "cannot start a topology snapshot"),
        }
    }
}
