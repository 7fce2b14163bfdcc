//! Helpers shared by the `task_*`, `worker_*` and `cluster_failover` integration tests
//! (`eventually` also by `access_robustness`): clients, polling, queue counts, raw
//! connections; each test isolates itself by a unique queue prefix.
#![allow(dead_code, unreachable_pub)]

use std::time::Duration;

/// A client on its own connection with `prefix` (every suite using these helpers also has
/// `mod common`, where it is defined).
#[allow(unused_imports)] // not every suite calls it
pub use crate::common::queued::client;

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
