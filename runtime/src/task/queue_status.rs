//! [`queue_status`]: how many messages and consumers a queue has (a passive `queue.declare`),
//! and [`wait_for_consumers`], to start publishing only once handlers listen.

use std::time::Duration;

use lapin::options::QueueDeclareOptions;
use lapin::types::FieldTable;

use crate::connection::Connection;
use crate::error::{Error, Result};

/// A queue's counters, as `queue.declare-ok` reports them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueStatus {
    /// Messages ready for delivery (not counting those delivered and unacked).
    pub messages: u32,
    /// Active consumers.
    pub consumers: u32,
}

/// The status of `queue`, or `None` when it does not exist. Uses a throwaway channel, since
/// a passive declare of a missing queue closes its channel (404).
pub async fn queue_status(conn: &Connection, queue: &str) -> Result<Option<QueueStatus>> {
    let link = conn.link_after(0).await?;
    let channel = link.conn.create_channel().await?;
    let declared = channel
        .queue_declare(
            queue.into(),
            QueueDeclareOptions {
                passive: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await;
    match declared {
        Ok(q) => {
            let _ = channel.close(200, "status".into()).await;
            Ok(Some(QueueStatus {
                messages: q.message_count(),
                consumers: q.consumer_count(),
            }))
        }
        Err(err) => match Error::<crate::Never>::Transport(err).reply_code() {
            Some(404) => Ok(None),
            _ => Err(Error::Config(format!("cannot inspect queue {queue:?}"))),
        },
    }
}

/// Waits (polling every 20 ms) until `queue` has at least `consumers` consumers.
pub async fn wait_for_consumers(
    conn: &Connection,
    queue: &str,
    consumers: u32,
    timeout: Duration,
) -> Result<()> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(status) = queue_status(conn, queue).await? {
            if status.consumers >= consumers {
                return Ok(());
            }
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(Error::Timeout(timeout));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
