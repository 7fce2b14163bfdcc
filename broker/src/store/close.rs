//! Closing the store: [`Store::close`] flushes and fsyncs what was appended, stops the writer
//! thread and releases the data directory's lock; dropping a [`Store`] does the same, blocking.

use std::sync::PoisonError;

use super::{Store, StoreError};

impl Store {
    /// Waits for the topology snapshot being written, if any (and the compaction it ends
    /// with). Blocking.
    #[cfg(test)]
    pub(crate) fn wait_for_snapshot(&self) {
        let thread = self.shared.take_snapshot_thread();
        if let Some(thread) = thread {
            thread.join().unwrap_or_default();
        }
    }

    /// Stops accepting records, waits until everything appended so far is written and fsynced,
    /// stops the writer thread and releases the data directory's lock. Later appends fail with
    /// [`StoreError::Closed`].
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
        // A snapshot being written holds the directory too; with the writer gone its wait for
        // the log is over, so it ends soon.
        let snapshot = self.shared.take_snapshot_thread();
        if let Some(thread) = snapshot {
            let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        }
        // Nothing writes any more: another store may open the directory, even while this one
        // is still referenced (the broker's queues hold it until they are dropped).
        self.shared
            .dir_lock
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        match &self.shared.lock().failed {
            Some(cause) => Err(StoreError::WriterFailed(cause.clone())),
            None => Ok(()),
        }
    }
}

impl Drop for Store {
    /// Tells the writer thread to flush what is pending and exit, and waits for it (and for a
    /// snapshot being written), so that the directory's lock is released when this returns.
    /// Blocking: after [`Store::close`] there is nothing left to wait for.
    fn drop(&mut self) {
        self.shared.lock().closing = true;
        self.shared.wake.notify_one();
        if let Some(thread) = self.writer_thread.take() {
            let _ = thread.join();
        }
        let snapshot = self.shared.take_snapshot_thread();
        if let Some(thread) = snapshot {
            let _ = thread.join();
        }
    }
}
