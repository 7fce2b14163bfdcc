//! [`queue_status`]: how many messages and consumers a queue has (a passive `queue.declare`),
//! and [`wait_for_consumers`], to start publishing only once handlers listen.
//!
//! `wait_for_consumers` runs on a cold start, before any worker declared the queue, so it must
//! not ask about a queue that does not exist: a passive declare of a missing queue makes the
//! broker close the channel with 404, which lapin logs as an ERROR. It declares the handler's
//! queue instead, with the options the handler's worker declares it with (a no-op when the
//! queue exists), and reads the consumer count from `declare-ok`.

use std::time::Duration;

use crate::amqp::passive_declare;
use crate::connection::Connection;
use crate::error::{Error, Result};
use crate::worker::{Handler, QueueOptions};

/// A queue's counters, as `queue.declare-ok` reports them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueStatus {
    /// Messages ready for delivery (not counting those delivered and unacked).
    pub messages: u32,
    /// Active consumers.
    pub consumers: u32,
}

/// The status of `queue`, or `None` when it does not exist. Uses a throwaway channel, since
/// a passive declare of a missing queue closes its channel (404; lapin logs that channel close
/// as an ERROR, so to wait for a queue that may not exist yet use [`wait_for_consumers`]).
pub async fn queue_status(conn: &Connection, queue: &str) -> Result<Option<QueueStatus>> {
    let link = conn.link_after(0).await?;
    let channel = link.conn.create_channel().await?;
    match passive_declare(&channel, queue).await {
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

/// Waits (polling every 20 ms) until the queue of `handler` has at least `consumers`
/// consumers (workers serving it), declaring it meanwhile with the options its worker uses (an
/// RPC handler's queue with [`QueueOptions::rpc`], unless `options` says otherwise). Give the
/// handler the queue name the worker uses (`handler.on_queue(..)` with the worker's prefix).
/// Fails with [`Error::Config`] for a broadcast event handler (each instance has a queue of
/// its own: use [`TestBed`-style completions](crate::task::Completions::declared) instead).
pub async fn wait_for_consumers(
    conn: &Connection,
    handler: &Handler,
    consumers: u32,
    timeout: Duration,
) -> Result<()> {
    let options = match handler.settle() {
        Some(settle) => settle.queue_options(),
        None => QueueOptions::rpc(),
    };
    wait_for_queue_consumers(conn, handler.queue(), &options, consumers, timeout).await
}

/// [`wait_for_consumers`] for a queue given by name and declaration options (they must be the
/// ones its workers declare it with, or the broker refuses the declaration: 406).
pub async fn wait_for_queue_consumers(
    conn: &Connection,
    queue: &str,
    options: &QueueOptions,
    consumers: u32,
    timeout: Duration,
) -> Result<()> {
    if options.declare_options().exclusive {
        return Err(Error::Config(format!(
            "{queue:?} is an exclusive queue (a broadcast handler's): each instance has its own"
        )));
    }
    let deadline = tokio::time::Instant::now() + timeout;
    let mut channel: Option<lapin::Channel> = None;
    loop {
        let open = match channel.take() {
            Some(open) if open.status().connected() => open,
            _ => conn.link_after(0).await?.conn.create_channel().await?,
        };
        let declared = open
            .queue_declare(queue.into(), options.declare_options(), options.arguments())
            .await?;
        if declared.consumer_count() >= consumers {
            let _ = open.close(200, "ready".into()).await;
            return Ok(());
        }
        channel = Some(open);
        if tokio::time::Instant::now() >= deadline {
            return Err(Error::Timeout(timeout));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
