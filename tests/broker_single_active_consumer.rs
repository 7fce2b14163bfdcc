//! `x-single-active-consumer` against the test broker, for classic and quorum queues: one
//! consumer at a time gets messages, the others wait (counted by a classic queue's
//! `declare-ok`); when the active one's channel or connection closes its unacked messages come
//! back and the next consumer takes over; an exclusive consumer, `basic.get` and a redeclare
//! get RabbitMQ 3.10's answers. Each test passes against RabbitMQ 3.10 (measured there first).
//!
//! One departure is pinned on the bundled broker only: after a `basic.cancel` of the active
//! consumer of a classic queue, RabbitMQ 3.10 makes the next consumer active without serving
//! it, and its queue process crashes on the next publish (`{badmatch,false}` in
//! rabbit_amqqueue_process); the bundled broker serves the successor at once, as quorum
//! queues do (deliberate difference D1 of the differential tester).

mod amqp;
mod common;

use amqp::*;
use lapin::message::Delivery;
use lapin::options::{BasicConsumeOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{Channel, Connection, Consumer};

/// The queue types that take `x-single-active-consumer`.
const TYPES: [&str; 2] = ["classic", "quorum"];

/// Declaration arguments: `x-queue-type` and `x-single-active-consumer: true`.
fn sac_args(queue_type: &str) -> FieldTable {
    table(vec![
        ("x-queue-type", AMQPValue::LongString(queue_type.into())),
        ("x-single-active-consumer", AMQPValue::Boolean(true)),
    ])
}

/// Declares a fresh durable single-active-consumer queue of `queue_type`; returns its name.
async fn declare_sac(ch: &Channel, queue_type: &str) -> String {
    let q = common::unique(&format!("q.sac.{queue_type}"));
    try_declare_queue(ch, &q, QueueDeclareOptions::durable(), sac_args(queue_type))
        .await
        .unwrap_or_else(|e| panic!("declare {q}: {e}"));
    q
}

/// A consumer tagged `tag` of `queue` on a new channel of `conn` with a per-consumer
/// `prefetch` (0: none), and that channel.
async fn consumer(conn: &Connection, queue: &str, tag: &str, prefetch: u16) -> (Channel, Consumer) {
    consumer_with(conn, queue, tag, prefetch, FieldTable::default()).await
}

/// [`consumer`] with consume arguments (`x-priority`).
async fn consumer_with(
    conn: &Connection,
    queue: &str,
    tag: &str,
    prefetch: u16,
    args: FieldTable,
) -> (Channel, Consumer) {
    let ch = channel(conn).await;
    if prefetch != 0 {
        qos(&ch, prefetch, false).await;
    }
    let c = ch
        .basic_consume(
            queue.into(),
            tag.into(),
            BasicConsumeOptions::default(),
            args,
        )
        .await
        .unwrap_or_else(|e| panic!("consume {queue} as {tag}: {e}"));
    (ch, c)
}

/// The bodies and redelivered flags of `deliveries`.
fn seen(deliveries: &[Delivery]) -> Vec<(String, bool)> {
    deliveries
        .iter()
        .map(|d| (String::from_utf8_lossy(&d.data).into_owned(), d.redelivered))
        .collect()
}

/// `(m{i}, redelivered)` for each `i` of `range`.
fn expected(range: std::ops::Range<usize>, redelivered: bool) -> Vec<(String, bool)> {
    range.map(|i| (format!("m{i}"), redelivered)).collect()
}

/// Only the first consumer gets messages; the second is registered (a classic queue counts
/// it in `declare-ok`; RabbitMQ's quorum queue counts only the active one) and waits.
#[tokio::test]
async fn only_the_first_consumer_gets_messages() {
    let broker = common::broker().await;
    let conn = connect(&broker).await;
    for queue_type in TYPES {
        let ch = channel(&conn).await;
        let q = declare_sac(&ch, queue_type).await;
        let (_cha, mut a) = consumer(&conn, &q, "a", 0).await;
        let (_chb, mut b) = consumer(&conn, &q, "b", 0).await;
        let ok = try_declare_queue(
            &ch,
            &q,
            QueueDeclareOptions::durable(),
            sac_args(queue_type),
        )
        .await
        .expect("the same declaration again");
        let counted = if queue_type == "classic" { 2 } else { 1 };
        assert_eq!(ok.consumer_count(), counted, "{queue_type}");
        publish_numbered(&ch, &q, 0..4).await;
        assert_eq!(seen(&take(&mut a, 4).await), expected(0..4, false));
        assert_quiet(&mut b).await;
        delete_queues(&ch, &[&q]).await;
    }
}

/// The active consumer's prefetch applies as usual: what it cannot take waits in the queue
/// (the waiting consumer gets none of it). When its channel closes, or its connection, its
/// unacked messages come back and the next consumer gets them, then the rest, in order.
#[tokio::test]
async fn the_next_consumer_takes_over_when_the_active_channel_or_connection_closes() {
    let broker = common::broker().await;
    let conn = connect(&broker).await;
    for queue_type in TYPES {
        for whole_connection in [false, true] {
            let ch = channel(&conn).await;
            let q = declare_sac(&ch, queue_type).await;
            let other = connect(&broker).await;
            let (cha, mut a) = consumer(&other, &q, "a", 2).await;
            let (_chb, mut b) = consumer(&conn, &q, "b", 0).await;
            publish_numbered(&ch, &q, 0..5).await;
            let got = take(&mut a, 2).await;
            assert_eq!(seen(&got), expected(0..2, false), "{queue_type}");
            assert_quiet(&mut b).await;
            ack(&got[0].acker).await;
            assert_eq!(seen(&take(&mut a, 1).await), expected(2..3, false));
            assert_quiet(&mut b).await;
            if whole_connection {
                other
                    .close(200, "bye".into())
                    .await
                    .expect("close a's connection");
            } else {
                cha.close(200, "bye".into())
                    .await
                    .expect("close a's channel");
            }
            let mut want = expected(1..3, true);
            want.extend(expected(3..5, false));
            let case = format!("{queue_type}, whole connection: {whole_connection}");
            assert_eq!(seen(&take(&mut b, 4).await), want, "{case}");
            assert_quiet(&mut b).await;
            delete_queues(&ch, &[&q]).await;
        }
    }
}

/// A cancelled active consumer's unacked messages stay with its channel (they can still be
/// acked) and come back when the channel closes. A quorum queue serves the next consumer at
/// once; RabbitMQ 3.10's classic queue serves it only when something runs the queue (here the
/// channel close), the bundled broker at once (see the module doc).
#[tokio::test]
async fn the_next_consumer_takes_over_when_the_active_one_cancels() {
    let broker = common::broker().await;
    let conn = connect(&broker).await;
    for queue_type in TYPES {
        let ch = channel(&conn).await;
        let q = declare_sac(&ch, queue_type).await;
        let (cha, mut a) = consumer(&conn, &q, "a", 3).await;
        let (_chb, mut b) = consumer(&conn, &q, "b", 0).await;
        publish_numbered(&ch, &q, 0..6).await;
        let got = take(&mut a, 3).await;
        assert_eq!(seen(&got), expected(0..3, false));
        cancel(&cha, &a).await;
        let at_once = queue_type == "quorum" || broker.is_bundled();
        let mut received = Vec::new();
        if at_once {
            received = take(&mut b, 3).await;
            assert_eq!(seen(&received), expected(3..6, false), "{queue_type}");
        }
        // Acked after the cancel: settled, not returned.
        ack(&got[0].acker).await;
        cha.close(200, "bye".into())
            .await
            .expect("close a's channel");
        received.extend(take(&mut b, 5 - received.len()).await);
        assert_quiet(&mut b).await;
        let mut want = expected(1..3, true);
        want.extend(expected(3..6, false));
        if at_once {
            want.rotate_left(2);
        }
        assert_eq!(seen(&received), want, "{queue_type}");
        delete_queues(&ch, &[&q]).await;
    }
}

/// The active consumer is the first registered, whatever the consumers' priorities. When it
/// goes, a classic queue makes the first of the highest priority active; a quorum queue (3.10)
/// the next registered.
#[tokio::test]
async fn priorities_pick_the_successor_only_on_classic_queues() {
    let broker = common::broker().await;
    let conn = connect(&broker).await;
    let priority = |p: i32| table(vec![("x-priority", AMQPValue::LongInt(p))]);
    for queue_type in TYPES {
        let ch = channel(&conn).await;
        let q = declare_sac(&ch, queue_type).await;
        let (cha, mut a) = consumer(&conn, &q, "a", 0).await;
        let (_chb, b) = consumer(&conn, &q, "b", 0).await;
        let (_chc, c) = consumer_with(&conn, &q, "c", 0, priority(10)).await;
        publish_numbered(&ch, &q, 0..1).await;
        assert_eq!(seen(&take(&mut a, 1).await), expected(0..1, false));
        cha.close(200, "bye".into())
            .await
            .expect("close a's channel");
        let (mut next, mut waiting) = if queue_type == "classic" {
            (c, b)
        } else {
            (b, c)
        };
        assert_eq!(
            seen(&take(&mut next, 1).await),
            expected(0..1, true),
            "{queue_type}"
        );
        publish_numbered(&ch, &q, 1..2).await;
        assert_eq!(seen(&take(&mut next, 1).await), expected(1..2, false));
        assert_quiet(&mut waiting).await;
        delete_queues(&ch, &[&q]).await;
    }
}

/// An exclusive consumer of a classic single-active-consumer queue is refused with 403, even
/// when the queue has no consumer (the channel closes, not the connection); a quorum queue
/// ignores `exclusive` as for any consumer.
#[tokio::test]
async fn an_exclusive_consumer_is_refused_on_classic_queues() {
    let broker = common::broker().await;
    let conn = connect(&broker).await;
    let exclusive = BasicConsumeOptions {
        exclusive: true,
        ..BasicConsumeOptions::default()
    };
    for queue_type in TYPES {
        let ch = channel(&conn).await;
        let q = declare_sac(&ch, queue_type).await;
        // The consumers made here live until the queue is deleted (the broker cancels them),
        // as in the other tests: lapin cancels a consumer when it is dropped, and when
        // RabbitMQ's deletion of a quorum queue cancels it at the same moment, lapin takes
        // RabbitMQ's cancel-ok as unexpected and closes the connection (seen in CI).
        let mut consumers = Vec::new();
        for tag in ["x1", "x2"] {
            let c = channel(&conn).await;
            let answer = try_consume_tagged(&c, &q, tag, exclusive).await;
            if queue_type == "classic" {
                let text = assert_code(answer, 403);
                assert!(
                    text.contains(&format!("queue '{q}' in vhost '/' in exclusive use")),
                    "{text}"
                );
                assert!(!c.status().connected(), "the channel closes");
                // A plain consumer is welcome.
                let plain = channel(&conn).await;
                let consumer = try_consume(&plain, &q).await.expect("a plain consumer");
                consumers.push((plain, consumer));
            } else {
                let consumer = answer.expect("exclusive is ignored on a quorum queue");
                consumers.push((c, consumer));
            }
        }
        assert!(conn.status().connected(), "403 closes only the channel");
        delete_queues(&ch, &[&q]).await;
        drop(consumers);
    }
}

/// `basic.get` works on a classic single-active-consumer queue as on any queue (it takes the
/// next ready message, here one the active consumer has no credit for); a quorum queue refuses
/// it with 405.
#[tokio::test]
async fn basic_get_works_on_classic_queues_only() {
    let broker = common::broker().await;
    let conn = connect(&broker).await;
    for queue_type in TYPES {
        let ch = channel(&conn).await;
        let q = declare_sac(&ch, queue_type).await;
        let (_cha, mut a) = consumer(&conn, &q, "a", 1).await;
        publish_numbered(&ch, &q, 0..3).await;
        assert_eq!(seen(&take(&mut a, 1).await), expected(0..1, false));
        let getter = channel(&conn).await;
        let answer = try_get(&getter, &q).await;
        if queue_type == "classic" {
            let got = answer.expect("basic.get").expect("a message");
            assert_eq!(got.delivery.data, b"m1");
            assert_eq!(got.message_count, 1);
        } else {
            let text = assert_code(answer, 405);
            assert!(
                text.contains(&format!(
                    "cannot obtain access to locked queue '{q}' in vhost '/'. basic.get operations are not supported by quorum queues with single active consumer"
                )),
                "{text}"
            );
            assert!(conn.status().connected(), "405 closes only the channel");
        }
        delete_queues(&ch, &[&q]).await;
    }
}

/// A redeclare compares the argument: `false` or none where `true` was declared is 406.
#[tokio::test]
async fn a_redeclare_compares_the_argument() {
    let broker = common::broker().await;
    let conn = connect(&broker).await;
    for queue_type in TYPES {
        let ch = channel(&conn).await;
        let q = declare_sac(&ch, queue_type).await;
        let off = table(vec![
            ("x-queue-type", AMQPValue::LongString(queue_type.into())),
            ("x-single-active-consumer", AMQPValue::Boolean(false)),
        ]);
        let none = table(vec![(
            "x-queue-type",
            AMQPValue::LongString(queue_type.into()),
        )]);
        for args in [off, none] {
            let c = channel(&conn).await;
            let text = assert_code(
                try_declare_queue(&c, &q, QueueDeclareOptions::durable(), args).await,
                406,
            );
            assert!(
                text.contains("inequivalent arg 'x-single-active-consumer'"),
                "{text}"
            );
        }
        delete_queues(&ch, &[&q]).await;
    }
}
