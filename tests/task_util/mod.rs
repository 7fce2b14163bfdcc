//! Helpers shared by the `task_*` and `event_*` integration tests: workers in the background
//! on their own connections (so killing one looks like a dead process to the broker), clients,
//! all isolated by a unique queue prefix.
#![allow(dead_code, unreachable_pub)]

use std::time::Duration;

use lepus::{Client, Connection, Worker};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// A worker pool running in a task of the test.
pub struct BackgroundWorker {
    /// Its own connection.
    pub conn: Connection,
    stop: Option<oneshot::Sender<()>>,
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

    /// Graceful shutdown.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = tokio::time::timeout(Duration::from_secs(10), &mut self.task).await;
        self.conn.close().await;
    }

    /// Kills the worker as a crash would: its tasks are dropped mid-run and its connection
    /// closes without any ack.
    pub async fn kill(self) {
        self.task.abort();
        let _ = self.task.await;
        self.conn.close().await;
    }
}

/// A client on its own connection with `prefix`.
pub async fn client(url: &str, prefix: &str) -> (Connection, Client) {
    let conn = lepus::connect(url).await.expect("client connects");
    let client = Client::builder(&conn)
        .queue_prefix(prefix)
        .build()
        .await
        .expect("client session");
    (conn, client)
}

/// Polls `check` every 10 ms until it is true or `timeout` passes; returns the last result.
pub async fn eventually(timeout: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if check() {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The message count of `queue` (passive `queue.declare` on a throwaway channel).
pub async fn message_count(conn: &lapin::Connection, queue: &str) -> u32 {
    let channel = conn.create_channel().await.expect("channel");
    let q = channel
        .queue_declare(
            queue.into(),
            lapin::options::QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            Default::default(),
        )
        .await
        .expect("queue exists");
    let _ = channel.close(200, "".into()).await;
    q.message_count()
}

/// A raw lapin connection (for inspecting queues).
pub async fn raw(url: &str) -> lapin::Connection {
    lapin::Connection::connect(url, lapin::ConnectionProperties::default())
        .await
        .expect("raw connection")
}
