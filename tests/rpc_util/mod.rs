//! Helpers shared by the `rpc_*` integration tests: start a worker pool in the background and
//! stop it (gracefully or by killing it), make a client, all isolated by a unique queue prefix.
#![allow(dead_code, unreachable_pub)]

use std::time::Duration;

use lepus::{Client, Connection, Worker};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// A worker pool running in a task of the test.
pub struct RunningWorker {
    /// Its own connection (so that killing it looks like a dead process to the broker).
    pub conn: Connection,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<lepus::Result<()>>,
}

impl RunningWorker {
    /// Starts `configure(Worker::new(&conn).queue_prefix(prefix))` on a new connection and waits
    /// until its consumers are up (polls with a no-op until `ready` answers).
    pub async fn start(
        url: &str,
        prefix: &str,
        configure: impl FnOnce(Worker) -> Worker,
    ) -> RunningWorker {
        let conn = lepus::connect(url).await.expect("worker connects");
        let worker = configure(Worker::new(&conn).queue_prefix(prefix));
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(worker.run_until(async move {
            let _ = stopped.await;
        }));
        RunningWorker {
            conn,
            stop: Some(stop),
            task,
        }
    }

    /// Graceful shutdown: cancel consumers, finish in-flight handlers, close.
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

    /// Kills the worker: its task (and every running handler) is dropped and its connection
    /// closed without acking anything, as if the process died.
    pub async fn kill(self) {
        self.task.abort();
        let _ = self.task.await;
        self.conn.close().await;
    }
}

/// A client on its own connection, calling queues under `prefix`.
pub async fn client(url: &str, prefix: &str) -> Client {
    let conn = lepus::connect(url).await.expect("client connects");
    Client::builder(&conn)
        .queue_prefix(prefix)
        .build()
        .await
        .expect("client session starts")
}

/// Retries `f` until it returns `Some` (the first worker may still be declaring its queue).
pub async fn eventually<T, F, Fut>(what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let started = std::time::Instant::now();
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
