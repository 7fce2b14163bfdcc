//! Tests of the memory budget and the memory alarm through the real broker and lapin: paged-out
//! persistent messages are delivered in order with their content, requeued in place, expired
//! and dead-lettered, purged; publishers are blocked above the watermark while consumers drain.

#![allow(clippy::unwrap_used)]

use std::path::PathBuf;
use std::time::Duration;

use futures::{Stream, StreamExt};
use lapin::message::Delivery;
use lapin::options::*;
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Connection, ConnectionProperties, Event};

use crate::field_value::table;
use crate::memory::INDEX_ENTRY_COST;
use crate::{Broker, BrokerHandle};

/// A data directory for one test (a path inside a fresh `tempfile` directory, created by the
/// broker), removed with that directory at the end.
struct DataDir(
    PathBuf,
    // Held for its `Drop`, which removes the directory.
    #[allow(dead_code)] tempfile::TempDir,
);

impl DataDir {
    fn new() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("lepus-paging-")
            .tempdir()
            .expect("a temporary directory");
        Self(dir.path().join("data"), dir)
    }
}

const BUDGET: u64 = 64 * 1024;
const SIZE: usize = 1024;

async fn paging_broker(dir: &DataDir) -> BrokerHandle {
    Broker::builder()
        .listen("127.0.0.1:0")
        .data_dir(&dir.0)
        .memory_budget(BUDGET)
        // Far above what these tests queue: only paging is under test here.
        .memory_high_watermark(1 << 30)
        .start()
        .await
        .unwrap()
}

async fn connect(handle: &BrokerHandle) -> Connection {
    Connection::connect(&handle.amqp_url(), ConnectionProperties::default())
        .await
        .unwrap()
}

/// A paging broker on `dir`, a connection to it and a channel in confirm mode.
async fn paging_session(dir: &DataDir) -> (BrokerHandle, Connection, lapin::Channel) {
    let handle = paging_broker(dir).await;
    let conn = connect(&handle).await;
    let ch = confirm_channel(&conn).await;
    (handle, conn, ch)
}

/// A channel in confirm mode.
async fn confirm_channel(conn: &Connection) -> lapin::Channel {
    let ch = conn.create_channel().await.unwrap();
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    ch
}

/// Body of message `i`: its number, then a filler derived from it.
fn body(i: u32) -> Vec<u8> {
    let mut body = i.to_be_bytes().to_vec();
    body.extend((4..SIZE).map(|j| (j as u32).wrapping_mul(31).wrapping_add(i) as u8));
    body
}

fn index_of(data: &[u8]) -> u32 {
    let i = u32::from_be_bytes([data[0], data[1], data[2], data[3]]);
    assert_eq!(data, body(i).as_slice(), "content of message {i}");
    i
}

async fn declare(ch: &lapin::Channel, name: &str, args: FieldTable) {
    ch.queue_declare(
        name.into(),
        QueueDeclareOptions {
            durable: true,
            ..Default::default()
        },
        args,
    )
    .await
    .unwrap();
}

/// Publishes messages `range` persistently to `queue` and waits for every confirm.
async fn publish(ch: &lapin::Channel, queue: &str, range: std::ops::Range<u32>) {
    publish_with(ch, queue, range, |_| BasicProperties::default()).await;
}

/// [`publish`], with the properties `properties(i)` for message `i` (made persistent).
async fn publish_with(
    ch: &lapin::Channel,
    queue: &str,
    range: std::ops::Range<u32>,
    properties: impl Fn(u32) -> BasicProperties,
) {
    let mut confirms = Vec::new();
    for i in range {
        confirms.push(
            ch.basic_publish(
                "".into(),
                queue.into(),
                BasicPublishOptions::default(),
                &body(i),
                properties(i).with_delivery_mode(2),
            )
            .await
            .unwrap(),
        );
    }
    for confirm in confirms {
        assert!(confirm.await.unwrap().is_ack());
    }
}

/// A new channel on `conn` with a prefetch of `prefetch`, consuming `queue` (with acks) as
/// `tag`.
async fn consume(
    conn: &Connection,
    queue: &str,
    tag: &str,
    prefetch: u16,
) -> (lapin::Channel, lapin::Consumer) {
    let ch = conn.create_channel().await.unwrap();
    ch.basic_qos(prefetch, BasicQosOptions::default())
        .await
        .unwrap();
    let deliveries = ch
        .basic_consume(
            queue.into(),
            tag.into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    (ch, deliveries)
}

/// Takes every message of `queue` with `basic.get` (no-ack), in order.
async fn get_all(ch: &lapin::Channel, queue: &str) -> Vec<Delivery> {
    let mut got = Vec::new();
    while let Some(m) = ch
        .basic_get(queue.into(), BasicGetOptions { no_ack: true })
        .await
        .unwrap()
    {
        got.push(m.delivery);
    }
    got
}

/// The numbers of every message of `queue`, taken with [`get_all`], in order (each one's
/// content checked by [`index_of`]).
async fn indexes(ch: &lapin::Channel, queue: &str) -> Vec<u32> {
    get_all(ch, queue)
        .await
        .iter()
        .map(|d| index_of(&d.data))
        .collect()
}

/// The first connection event `pick` takes (`Some`), or `Err` after 10 seconds.
async fn next_event<T>(
    events: &mut (impl Stream<Item = Event> + Unpin),
    pick: impl Fn(Event) -> Option<T>,
) -> Result<T, tokio::time::error::Elapsed> {
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let event = events.next().await.expect("events ended");
            if let Some(picked) = pick(event) {
                break picked;
            }
        }
    })
    .await
}

#[tokio::test]
async fn paged_messages_are_delivered_in_order_and_requeued_in_place() {
    let dir = DataDir::new();
    let (handle, conn, ch) = paging_session(&dir).await;
    let memory = handle.memory();
    declare(&ch, "paged", FieldTable::default()).await;
    const N: u32 = 2000;
    publish(&ch, "paged", 0..N).await;
    // 2 MB queued; in memory only the index and what fit in half the budget.
    let used = memory.used();
    assert!(
        used <= u64::from(N) * INDEX_ENTRY_COST + BUDGET / 4 + SIZE as u64,
        "accounted {used} bytes: the bodies were not paged out"
    );

    // A consumer takes 50 without acking, then its channel closes: they go back in place.
    let (first, mut deliveries) = consume(&conn, "paged", "first", 50).await;
    for expected in 0..50 {
        let d = deliveries.next().await.unwrap().unwrap();
        assert_eq!(index_of(&d.data), expected);
    }
    first.close(200, "requeue".into()).await.unwrap();

    let (_second, mut deliveries) = consume(&conn, "paged", "second", 100).await;
    for expected in 0..N {
        let d = deliveries.next().await.unwrap().unwrap();
        assert_eq!(index_of(&d.data), expected);
        assert_eq!(d.redelivered, expected < 50, "message {expected}");
        d.ack(BasicAckOptions::default()).await.unwrap();
    }
    conn.close(200, "bye".into()).await.unwrap();
    assert_eq!(memory.used(), 0, "an empty queue accounts nothing");
    handle.shutdown().await;
}

#[tokio::test]
async fn paged_messages_expire_dead_letter_purge_and_survive_a_restart() {
    let dir = DataDir::new();
    let (handle, conn, ch) = paging_session(&dir).await;
    let ttl = table(&[
        ("x-message-ttl", AMQPValue::LongInt(300)),
        ("x-dead-letter-exchange", AMQPValue::LongString("".into())),
        (
            "x-dead-letter-routing-key",
            AMQPValue::LongString("dead".into()),
        ),
    ]);
    declare(&ch, "dead", FieldTable::default()).await;
    declare(&ch, "expiring", ttl).await;
    declare(&ch, "purged", FieldTable::default()).await;
    declare(&ch, "kept", FieldTable::default()).await;
    publish(&ch, "expiring", 0..300).await;
    publish(&ch, "purged", 0..300).await;
    publish(&ch, "kept", 0..300).await;

    // Expired at the head with no consumer: dead-lettered with their bodies, in order.
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let q = ch
            .queue_declare(
                "dead".into(),
                QueueDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .unwrap();
        if q.message_count() == 300 {
            break;
        }
    }
    assert_eq!(indexes(&ch, "dead").await, (0..300).collect::<Vec<_>>());

    assert_eq!(
        ch.queue_purge("purged".into(), QueuePurgeOptions::default())
            .await
            .unwrap(),
        300
    );
    conn.close(200, "bye".into()).await.unwrap();
    handle.shutdown().await;

    // After a restart: the purged and dead-lettered messages stay gone, the kept ones come
    // back (paged out again), in order.
    let handle = paging_broker(&dir).await;
    let conn = connect(&handle).await;
    let ch = conn.create_channel().await.unwrap();
    for (queue, expected) in [
        ("purged", 0u32),
        ("dead", 0),
        ("expiring", 0),
        ("kept", 300),
    ] {
        let mut got = 0;
        for d in get_all(&ch, queue).await {
            assert_eq!(index_of(&d.data), got);
            assert!(d.redelivered);
            got += 1;
        }
        assert_eq!(got, expected, "queue {queue}");
    }
    conn.close(200, "bye".into()).await.unwrap();
    handle.shutdown().await;
}

#[tokio::test]
async fn paged_messages_of_a_priority_queue_come_back_by_priority_then_order() {
    let dir = DataDir::new();
    let (handle, conn, ch) = paging_session(&dir).await;
    let args = table(&[("x-max-priority", AMQPValue::ShortShortUInt(3))]);
    declare(&ch, "prio", args).await;
    publish_with(&ch, "prio", 0..600, |i| {
        BasicProperties::default().with_priority((i % 4) as u8)
    })
    .await;
    let got = indexes(&ch, "prio").await;
    let expected: Vec<u32> = (0..4u32)
        .rev()
        .flat_map(|p| (0..600).filter(move |i| i % 4 == p))
        .collect();
    assert_eq!(got, expected);
    conn.close(200, "bye".into()).await.unwrap();
    handle.shutdown().await;
}

#[tokio::test]
async fn publishers_are_blocked_above_the_watermark_while_consumers_drain() {
    // No data directory: nothing can be paged, the watermark is the only protection.
    let handle = Broker::builder()
        .listen("127.0.0.1:0")
        .memory_high_watermark(200 * 1024)
        .start()
        .await
        .unwrap();
    let memory = handle.memory();
    let publisher = connect(&handle).await;
    let mut events = publisher.events_listener();
    let ch = publisher.create_channel().await.unwrap();
    ch.queue_declare(
        "flood".into(),
        QueueDeclareOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    let big = vec![7u8; 10 * 1024];
    let publish = |n: usize| {
        let ch = ch.clone();
        let big = big.clone();
        async move {
            for _ in 0..n {
                ch.basic_publish(
                    "".into(),
                    "flood".into(),
                    BasicPublishOptions::default(),
                    &big,
                    BasicProperties::default(),
                )
                .await
                .unwrap();
            }
        }
    };
    // 30 × 10 KiB: past the 200 KiB watermark. In tasks: lapin holds back frames while told
    // the connection is blocked, so a publish may wait for the unblock.
    let first = tokio::spawn(publish(30));
    let blocked = next_event(&mut events, |event| match event {
        Event::ConnectionBlocked(reason) => Some(reason),
        _ => None,
    })
    .await
    .expect("connection.blocked");
    assert_eq!(blocked, "low on memory");
    assert!(memory.used() > 200 * 1024);
    // Publishes go on in the client; they reach the queue only once unblocked.
    let second = tokio::spawn(publish(10));

    // A consumer on another connection is not blocked and drains the queue.
    let consumer = connect(&handle).await;
    let cch = consumer.create_channel().await.unwrap();
    let mut deliveries = cch
        .basic_consume(
            "flood".into(),
            "drain".into(),
            BasicConsumeOptions {
                no_ack: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
    let unblocked = next_event(&mut events, |event| {
        matches!(event, Event::ConnectionUnblocked).then_some(())
    });
    let mut drained = 0;
    let drain = async {
        while drained < 40 {
            let d = deliveries.next().await.unwrap().unwrap();
            assert_eq!(d.data.len(), 10 * 1024);
            drained += 1;
        }
    };
    let (unblocked, ()) = tokio::join!(unblocked, drain);
    unblocked.expect("connection.unblocked once the consumer drained the queue");
    assert_eq!(
        drained, 40,
        "the 10 held-back publishes arrive after unblocking"
    );
    first.await.unwrap();
    second.await.unwrap();
    assert!(!publisher.status().blocked());
    consumer.close(200, "bye".into()).await.unwrap();
    publisher.close(200, "bye".into()).await.unwrap();
    handle.shutdown().await;
}
