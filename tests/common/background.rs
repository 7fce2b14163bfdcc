//! A worker pool running in a task of the test, on its own connection (so that killing it
//! looks like a dead process to the broker). Shared by the `rpc_*`, `task_*`, `event_*` and
//! `worker_*` suites.

use std::time::Duration;

use lepus::{Connection, Worker};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// A worker pool running in a task of the test.
pub struct BackgroundWorker {
    /// Its own connection.
    pub conn: Connection,
    /// Sending (or dropping) it ends the worker's `run_until`; `None` once sent.
    stop: Option<oneshot::Sender<()>>,
    /// The task running the worker; aborting it is a crash.
    task: JoinHandle<lepus::Result<()>>,
}

impl BackgroundWorker {
    /// Starts `configure(Worker::new(&conn).queue_prefix(prefix))` on a new connection.
    pub async fn start(
        url: &str,
        prefix: &str,
        configure: impl FnOnce(Worker) -> Worker,
    ) -> BackgroundWorker {
        let conn = lepus::connect(url).await.expect("worker connects");
        BackgroundWorker::start_on(conn, prefix, configure)
    }

    /// Starts `configure(Worker::new(&conn).queue_prefix(prefix))` on `conn`.
    pub fn start_on(
        conn: Connection,
        prefix: &str,
        configure: impl FnOnce(Worker) -> Worker,
    ) -> BackgroundWorker {
        let worker = configure(Worker::new(&conn).queue_prefix(prefix));
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(worker.run_until(async move {
            let _ = stopped.await;
        }));
        BackgroundWorker {
            conn,
            stop: Some(stop),
            task,
        }
    }

    /// True once the worker's `run_until` returned (it stopped or failed).
    pub fn is_finished(&self) -> bool {
        self.task.is_finished()
    }

    /// Graceful shutdown, checked: cancel consumers, finish in-flight handlers, close; fails
    /// the test unless the worker stops within 30 s without error.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let result = tokio::time::timeout(Duration::from_secs(30), &mut self.task)
            .await
            .expect("worker stops within 30 s")
            .expect("worker task did not panic");
        result.expect("worker ran without error");
        self.conn.close().await;
    }

    /// Graceful shutdown, unchecked: asks the worker to stop, waits up to 10 s, closes.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = tokio::time::timeout(Duration::from_secs(10), &mut self.task).await;
        self.conn.close().await;
    }

    /// Kills the worker as a crash would: its task (and every running handler) is dropped
    /// mid-run and its connection closes without any ack.
    pub async fn kill(self) {
        self.task.abort();
        let _ = self.task.await;
        self.conn.close().await;
    }
}
