//! Persistent publishes with confirms, shared by the tests of the store under duress
//! (`disk_full`, `store_descriptors`): numbered message bodies, publishing until the broker
//! refuses (every answer awaited at most [`ANSWER`]), draining a queue, and checking that
//! every confirmed message came back.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use futures::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, ConfirmSelectOptions,
    QueueDeclareOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Confirmation, Connection, PublisherConfirm};
use lepus_broker::{Broker, BrokerHandle};

use super::amqp::connect_url;

/// Bytes per message body.
pub(crate) const BODY: usize = 1024;
/// Publishes awaited together (confirms in flight).
pub(crate) const WINDOW: u64 = 64;
/// Longest wait for any one answer from the broker.
pub(crate) const ANSWER: Duration = Duration::from_secs(20);

/// The body of message `id`: `len` bytes (at least 8), the id first.
pub(crate) fn body(id: u64, len: usize) -> Vec<u8> {
    let mut body = vec![b'.'; len];
    body[..8].copy_from_slice(&id.to_be_bytes());
    body
}

/// The id of a message made by [`body`].
pub(crate) fn id_of(body: &[u8]) -> u64 {
    u64::from_be_bytes(body[..8].try_into().unwrap())
}

/// A new channel on `conn`, in confirm mode.
pub(crate) async fn confirm_channel(conn: &Connection) -> Channel {
    let ch = conn.create_channel().await.unwrap();
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    ch
}

/// `queue.declare` options of a durable queue.
pub(crate) fn durable() -> QueueDeclareOptions {
    QueueDeclareOptions {
        durable: true,
        ..QueueDeclareOptions::default()
    }
}

/// Publishes message `id` (persistent, [`BODY`] bytes) to `queue` through the default
/// exchange; the confirm is the caller's to await.
pub(crate) async fn publish_persistent(
    ch: &Channel,
    queue: &str,
    id: u64,
) -> lapin::Result<PublisherConfirm> {
    publish_sized(ch, queue, id, BODY).await
}

/// [`publish_persistent`] with a body of `len` bytes.
pub(crate) async fn publish_sized(
    ch: &Channel,
    queue: &str,
    id: u64,
    len: usize,
) -> lapin::Result<PublisherConfirm> {
    ch.basic_publish(
        "".into(),
        queue.into(),
        BasicPublishOptions::default(),
        &body(id, len),
        BasicProperties::default().with_delivery_mode(2),
    )
    .await
}

/// What became of the publishes.
#[derive(Debug, Default)]
pub(crate) struct Outcome {
    /// Publishes confirmed.
    pub(crate) acked: BTreeSet<u64>,
    /// Publishes nacked.
    pub(crate) nacked: BTreeSet<u64>,
    /// Publishes answered by a channel or connection error instead of a confirm.
    pub(crate) failed: BTreeSet<u64>,
}

impl std::fmt::Display for Outcome {
    /// "N acked, N nacked, N failed".
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} acked, {} nacked, {} failed",
            self.acked.len(),
            self.nacked.len(),
            self.failed.len()
        )
    }
}

/// Publishes persistent messages `ids` to `queue` on `ch`, `WINDOW` confirms in flight, until
/// a whole window is refused (nack or error) or `ids` ends. Every answer is awaited at most
/// [`ANSWER`]: a hang fails the test.
pub(crate) async fn publish_until_refused(
    ch: &Channel,
    queue: &str,
    ids: std::ops::Range<u64>,
) -> Outcome {
    let mut outcome = Outcome::default();
    let mut next = ids.start;
    while next < ids.end {
        let window: Vec<u64> = (next..ids.end.min(next + WINDOW)).collect();
        next += window.len() as u64;
        let mut confirms = Vec::new();
        for &id in &window {
            confirms.push((id, publish_persistent(ch, queue, id).await));
        }
        let mut refused = 0;
        for (id, published) in confirms {
            let answer = match published {
                Ok(confirm) => tokio::time::timeout(ANSWER, confirm)
                    .await
                    .unwrap_or_else(|_| panic!("no confirm for message {id} within {ANSWER:?}")),
                Err(e) => Err(e),
            };
            match answer {
                Ok(Confirmation::Ack(_)) => {
                    outcome.acked.insert(id);
                }
                Ok(Confirmation::Nack(_)) => {
                    outcome.nacked.insert(id);
                    refused += 1;
                }
                Ok(Confirmation::NotRequested) => panic!("the channel is in confirm mode"),
                Err(_) => {
                    outcome.failed.insert(id);
                    refused += 1;
                }
            }
        }
        if refused == window.len() {
            break;
        }
    }
    outcome
}

/// Consumes `queue` on a connection of its own until nothing arrives for two seconds; returns
/// the message ids seen (repeats counted once). With `ack`, acks each delivery (freeing its
/// space); without, closes the connection at the end, which requeues them all.
pub(crate) async fn drain(url: &str, queue: &str, ack: bool) -> BTreeSet<u64> {
    let conn = connect_url(url).await;
    let ch = conn.create_channel().await.unwrap();
    // Unacked deliveries stop at the prefetch: without acks, take everything.
    let prefetch = if ack { 500 } else { 0 };
    ch.basic_qos(prefetch, Default::default()).await.unwrap();
    let mut consumer = ch
        .basic_consume(
            queue.into(),
            "drain".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect("basic.consume on a full disk");
    let mut seen = BTreeSet::new();
    while let Ok(Some(delivery)) =
        tokio::time::timeout(Duration::from_secs(2), consumer.next()).await
    {
        let delivery = delivery.expect("a delivery");
        seen.insert(id_of(&delivery.data));
        if ack {
            delivery
                .ack(BasicAckOptions::default())
                .await
                .expect("basic.ack on a full disk");
        }
    }
    let _ = conn.close(200, "drained".into()).await;
    seen
}

/// Fails the test when a message of `confirmed` is not in `seen`.
pub(crate) fn assert_covers(seen: &BTreeSet<u64>, confirmed: &BTreeSet<u64>, what: &str) {
    let missing: Vec<_> = confirmed.difference(seen).take(10).collect();
    assert!(
        missing.is_empty(),
        "confirmed messages not {what}: {missing:?} (first 10 of {})",
        confirmed.difference(seen).count()
    );
}

/// A broker on `data_dir` (segments of `segment_size` bytes) with the disk alarm off: these
/// tests are about what happens when the store's writes do fail.
pub(crate) async fn start_durable(data_dir: &Path, segment_size: u32) -> BrokerHandle {
    Broker::builder()
        .listen("127.0.0.1:0")
        .data_dir(data_dir)
        .disk_free_limit(0)
        .segment_size(segment_size)
        .start()
        .await
        .expect("the broker starts on its data directory")
}

/// Connects to `url`, opens a confirm channel, declares durable `queue` and publishes messages
/// `0..count` to it, every one confirmed (else the test fails).
pub(crate) async fn confirmed_queue(
    url: &str,
    queue: &str,
    count: u64,
) -> (Connection, Channel, Outcome) {
    let conn = connect_url(url).await;
    let ch = confirm_channel(&conn).await;
    ch.queue_declare(queue.into(), durable(), FieldTable::default())
        .await
        .unwrap();
    let published = publish_until_refused(&ch, queue, 0..count).await;
    assert_eq!(published.acked.len() as u64, count, "{published:?}");
    (conn, ch, published)
}
