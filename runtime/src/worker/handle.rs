//! [`WorkerHandle`]: a worker started in a task of its own with [`Worker::spawn`], that says
//! when it consumes ([`WorkerHandle::ready`]) and stops gracefully on request.

use std::time::Duration;

use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;

use crate::error::{Error, Result};
use crate::worker::Worker;

/// A running worker (see [`Worker::spawn`]). Dropping the handle stops the worker gracefully
/// in the background, as [`WorkerHandle::shutdown`] does without waiting.
#[derive(Debug)]
pub struct WorkerHandle {
    /// Completing (or dropping) it is the worker's shutdown signal; held here only.
    stop: Option<oneshot::Sender<()>>,
    /// The worker's task; its result is the worker's.
    task: Option<JoinHandle<Result<()>>>,
    /// Counts the link generations on which the worker consumes; the sender is the worker's.
    consuming: watch::Receiver<u64>,
}

impl Worker {
    /// Starts the worker in a task of its own and returns at once; [`WorkerHandle::ready`]
    /// waits until it consumes from every queue (from then on, calls it serves do not fail with
    /// `NoRoute`), [`WorkerHandle::shutdown`] stops it gracefully.
    pub fn spawn(mut self) -> WorkerHandle {
        let (consuming_tx, consuming) = watch::channel(0);
        self.consuming = Some(consuming_tx);
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(self.run_until(async move {
            let _ = stopped.await;
        }));
        WorkerHandle {
            stop: Some(stop),
            task: Some(task),
            consuming,
        }
    }
}

impl WorkerHandle {
    /// Waits until the worker has declared its queues and consumes from them, or fails with
    /// the worker's error if it stopped first, or [`Error::Timeout`].
    pub async fn ready(&mut self, timeout: Duration) -> Result<()> {
        let waited = tokio::time::timeout(timeout, self.consuming.wait_for(|n| *n > 0)).await;
        match waited {
            Ok(Ok(_)) => Ok(()),
            // The worker ended without consuming: report why.
            Ok(Err(_)) => match self.task.take() {
                Some(task) => match task.await {
                    Ok(Err(err)) => Err(err),
                    _ => Err(Error::Closed),
                },
                None => Err(Error::Closed),
            },
            Err(_) => Err(Error::Timeout(timeout)),
        }
    }

    /// True once the worker consumes (see [`WorkerHandle::ready`]).
    pub fn is_ready(&self) -> bool {
        *self.consuming.borrow() > 0
    }

    /// Stops the worker gracefully (no new request taken; running handlers finish, reply and
    /// ack) and returns its result.
    pub async fn shutdown(mut self) -> Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        match self.task.take() {
            Some(task) => task.await.unwrap_or(Err(Error::Closed)),
            None => Ok(()),
        }
    }

    /// Stops the worker as a crash would: its task and every running handler are dropped, and
    /// nothing it holds is acked (the broker redelivers it once the connection closes).
    pub async fn abort(mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
            let _ = task.await;
        }
    }
}
