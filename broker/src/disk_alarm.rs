//! The disk alarm (RabbitMQ's `disk_free_limit`): the free space of the data directory's file
//! system, checked every second by a task of its own; below the limit (`--disk-free-limit`,
//! default 50 MB as in RabbitMQ, 0 turns it off) the disk bit of the broker's alarm set (see
//! `alarms`) is raised, and publishing connections are blocked with reason "low on disk"
//! exactly as for the memory alarm (see `connection_blocked`); consumers keep draining, which
//! is what frees space. It clears once the free space is back at the limit or above.
//!
//! Only with a data directory: without one the broker writes nothing. The check is a timer,
//! never on the message path. It keeps the disk from ever filling under a steady publisher;
//! what happens when it fills anyway (a limit of 0, another process writing, a burst faster
//! than a second) is the store's low-on-space mode (`store/reserve.rs`).
//!
//! Not implemented: RabbitMQ's limit relative to total memory (`{mem_relative, 1.0}`) and its
//! adaptive interval (faster when close to the limit); a second here is always fast enough.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;

use crate::alarms::{Alarms, Resource};
use crate::shutdown::Shutdown;

/// RabbitMQ's default `disk_free_limit`: 50 MB.
pub(crate) const DEFAULT_DISK_FREE_LIMIT: u64 = 50_000_000;

/// How often the free space is read.
const CHECK_EVERY: Duration = Duration::from_secs(1);

/// The disk alarm of a broker with a data directory; see the module doc.
#[derive(Debug)]
pub(crate) struct DiskAlarm {
    /// The data directory, whose file system is watched.
    data_dir: PathBuf,
    /// The alarm is raised below this many free bytes; 0: never.
    limit: u64,
    /// True while the alarm is raised (mirrors the disk bit of `alarms`).
    raised: AtomicBool,
    /// The broker's alarm set (shared with its `Memory`), whose disk bit this sets.
    alarms: Arc<Alarms>,
}

impl DiskAlarm {
    /// The alarm for `data_dir` with `limit` bytes (0: off), not yet checked.
    pub(crate) fn new(data_dir: PathBuf, limit: u64, alarms: Arc<Alarms>) -> Self {
        Self {
            data_dir,
            limit,
            raised: AtomicBool::new(false),
            alarms,
        }
    }

    /// Reads the free space now and raises or clears the alarm.
    pub(crate) fn check(&self) {
        let free = match rustix::fs::statvfs(&self.data_dir) {
            Ok(stat) => stat.f_bavail.saturating_mul(stat.f_frsize),
            Err(err) => {
                // Unknown is not low: the alarm keeps its state.
                tracing::debug!(cause = %err, "cannot read the data directory's free space");
                return;
            }
        };
        let low = free < self.limit;
        if self.raised.swap(low, Ordering::Relaxed) != low {
            self.alarms.set(Resource::Disk, low);
            if low {
                tracing::warn!(
                    free,
                    limit = self.limit,
                    "disk alarm raised: blocking publishers"
                );
            } else {
                tracing::info!(free, limit = self.limit, "disk alarm cleared");
            }
        }
    }

    /// The limit in bytes (0: off).
    pub(crate) fn limit(&self) -> u64 {
        self.limit
    }

    /// True while the alarm is raised.
    pub(crate) fn raised(&self) -> bool {
        self.raised.load(Ordering::Relaxed)
    }

    /// Checks now, then every second until `shutdown`. The handle is the broker's to await.
    pub(crate) fn start(self: Arc<Self>, mut shutdown: Shutdown) -> JoinHandle<()> {
        self.check();
        tokio::spawn(async move {
            let mut every = tokio::time::interval(CHECK_EVERY);
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    () = shutdown.recv() => return,
                    _ = every.tick() => self.check(),
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_limit_above_the_free_space_raises_the_alarm_and_zero_never_does() {
        let dir = std::env::temp_dir();
        let alarms = Arc::new(Alarms::default());
        let off = DiskAlarm::new(dir.clone(), 0, alarms.clone());
        off.check();
        assert!(!off.raised() && !alarms.current().disk);
        let high = DiskAlarm::new(dir, u64::MAX, alarms.clone());
        high.check();
        assert!(high.raised() && alarms.current().disk);
        assert_eq!(alarms.current().reason(), "low on disk");
    }
}
