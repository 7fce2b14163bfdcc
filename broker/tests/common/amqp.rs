//! lapin shorthands shared by the broker crate's integration tests (and, through a `#[path]`
//! module, the workspace's `tests/amqp`): connecting, the server-named queue a test publishes
//! to, and a steady background publisher.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use lapin::options::{BasicConsumeOptions, BasicPublishOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use lapin::{
    BasicProperties, Channel, Connection, ConnectionProperties, Consumer, PublisherConfirm,
};

/// A lapin connection to `url` (an `amqp://` URL); fails the test if the broker refuses it.
pub(crate) async fn connect_url(url: &str) -> Connection {
    Connection::connect(url, ConnectionProperties::default())
        .await
        .unwrap_or_else(|e| panic!("connect to {url}: {e}"))
}

/// Declares a server-named, exclusive queue (`amq.gen-...`) on `ch`.
pub(crate) async fn declare_exclusive(ch: &Channel) -> lapin::Queue {
    ch.queue_declare(
        "".into(),
        QueueDeclareOptions::exclusive(),
        FieldTable::default(),
    )
    .await
    .expect("declare a server-named exclusive queue")
}

/// Declares the plain queue `queue` (not durable, not exclusive, no arguments) on `ch`; fails
/// the test if the broker refuses it.
pub(crate) async fn declare_plain_queue(ch: &Channel, queue: &str) -> lapin::Queue {
    ch.queue_declare(
        queue.into(),
        QueueDeclareOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap_or_else(|e| panic!("declare {queue}: {e}"))
}

/// Publishes `body` (default properties) to `queue` through the default exchange; fails the
/// test if the channel refuses it. The confirm is for channels in confirm mode to await.
pub(crate) async fn publish_to_queue(ch: &Channel, queue: &str, body: &[u8]) -> PublisherConfirm {
    ch.basic_publish(
        "".into(),
        queue.into(),
        BasicPublishOptions::default(),
        body,
        BasicProperties::default(),
    )
    .await
    .unwrap_or_else(|e| panic!("publish to {queue}: {e}"))
}

/// Waits until lapin sees `conn` closed, polling every 50 ms for at most `limit`: false if it
/// is still connected then.
pub(crate) async fn closed_within(conn: &Connection, limit: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + limit;
    while conn.status().connected() {
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    true
}

/// Passive-declares `queue`: its message and consumer counts, or the error if it does not
/// exist. Also a synchronous round trip that orders the channel's earlier methods before it.
pub(crate) async fn passive_queue(ch: &Channel, queue: &str) -> lapin::Result<lapin::Queue> {
    let options = QueueDeclareOptions {
        passive: true,
        ..QueueDeclareOptions::default()
    };
    ch.queue_declare(queue.into(), options, FieldTable::default())
        .await
}

/// Starts a no-ack consumer of `queue` with consumer tag `tag`.
pub(crate) async fn consume_no_ack(ch: &Channel, queue: &str, tag: &str) -> Consumer {
    consume_tagged(ch, queue, tag, true).await
}

/// Starts a consumer of `queue` with consumer tag `tag` (`""`: the broker names it), acking
/// or `no_ack`; fails the test if the broker refuses it.
pub(crate) async fn consume_tagged(ch: &Channel, queue: &str, tag: &str, no_ack: bool) -> Consumer {
    let options = BasicConsumeOptions {
        no_ack,
        ..BasicConsumeOptions::default()
    };
    ch.basic_consume(queue.into(), tag.into(), options, FieldTable::default())
        .await
        .unwrap_or_else(|e| panic!("consume {queue}: {e}"))
}

/// Spawns a publisher that sends `body` with `props` to `queue` (through the default exchange)
/// every `period` until `stop` is set, then closes its connection. The task owns its
/// connection; the test holds `stop` and awaits the handle.
pub(crate) fn publish_until_stopped(
    url: String,
    queue: &'static str,
    body: &'static [u8],
    props: BasicProperties,
    period: Duration,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let conn = connect_url(&url).await;
        let ch = conn.create_channel().await.expect("channel");
        while !stop.load(Ordering::Relaxed) {
            ch.basic_publish(
                "".into(),
                queue.into(),
                BasicPublishOptions::default(),
                body,
                props.clone(),
            )
            .await
            .expect("basic.publish");
            tokio::time::sleep(period).await;
        }
        conn.close(200, "done".into())
            .await
            .expect("connection.close");
    })
}
