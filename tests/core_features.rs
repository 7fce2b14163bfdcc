//! Broker-core checks with lapin for routing, queue arguments, errors and lifecycle.
//! Runs against the bundled broker (or RabbitMQ with `LEPUS_TEST_AMQP_URL`).

#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use futures::StreamExt;
use lapin::options::*;
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, ErrorKind, ExchangeKind};

async fn connect(url: &str) -> Connection {
    Connection::connect(url, ConnectionProperties::default())
        .await
        .expect("connect")
}

fn code(err: &lapin::Error) -> u16 {
    match err.kind() {
        ErrorKind::ProtocolError(e) => e.get_id(),
        other => panic!("not a protocol error: {other:?}"),
    }
}

/// For errors reported after a method without a reply (publish, ack): lapin returns the broker's
/// channel.close as the error of the next call, or, when the close overtook that call, a
/// closing-channel error; either shows the broker closed the channel.
fn assert_closed_with(err: &lapin::Error, expected: u16) {
    match err.kind() {
        ErrorKind::ProtocolError(e) => assert_eq!(e.get_id(), expected),
        ErrorKind::InvalidChannelState(..) => {}
        other => panic!("unexpected error {other:?}"),
    }
}

fn table(entries: &[(&str, AMQPValue)]) -> FieldTable {
    let mut t = FieldTable::default();
    for (k, v) in entries {
        t.insert((*k).into(), v.clone());
    }
    t
}

async fn declare(ch: &Channel, name: &str, args: FieldTable) {
    ch.queue_declare(name.into(), QueueDeclareOptions::default(), args)
        .await
        .expect("queue.declare");
}

async fn publish(ch: &Channel, exchange: &str, key: &str, body: &[u8], props: BasicProperties) {
    ch.basic_publish(
        exchange.into(),
        key.into(),
        BasicPublishOptions::default(),
        body,
        props,
    )
    .await
    .expect("publish");
}

/// Pulls every ready message with basic.get (no-ack), waiting a little for stragglers.
async fn drain(ch: &Channel, queue: &str) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut empty = 0;
    while empty < 3 {
        match ch
            .basic_get(queue.into(), BasicGetOptions { no_ack: true })
            .await
            .unwrap()
        {
            Some(m) => out.push(m.delivery.data),
            None => {
                empty += 1;
                tokio::time::sleep(Duration::from_millis(30)).await;
            }
        }
    }
    out
}

#[tokio::test]
async fn exchange_types_e2e_bindings_and_alternate_exchange() {
    let broker = common::broker().await;
    let conn = connect(broker.url()).await;
    let ch = conn.create_channel().await.unwrap();
    let (topic, headers, fan, ae) = (
        common::unique("core.topic"),
        common::unique("core.headers"),
        common::unique("core.fan"),
        common::unique("core.ae"),
    );
    ch.exchange_declare(
        ae.as_str().into(),
        ExchangeKind::Fanout,
        ExchangeDeclareOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    ch.exchange_declare(
        topic.as_str().into(),
        ExchangeKind::Topic,
        ExchangeDeclareOptions::default(),
        table(&[(
            "alternate-exchange",
            AMQPValue::LongString(ae.as_str().into()),
        )]),
    )
    .await
    .unwrap();
    ch.exchange_declare(
        headers.as_str().into(),
        ExchangeKind::Headers,
        ExchangeDeclareOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    ch.exchange_declare(
        fan.as_str().into(),
        ExchangeKind::Fanout,
        ExchangeDeclareOptions {
            internal: true,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await
    .unwrap();
    let (qt, qh, qf, qa) = (
        common::unique("q.t"),
        common::unique("q.h"),
        common::unique("q.f"),
        common::unique("q.a"),
    );
    for q in [&qt, &qh, &qf, &qa] {
        declare(&ch, q, FieldTable::default()).await;
    }
    ch.queue_bind(
        qt.as_str().into(),
        topic.as_str().into(),
        "a.#".into(),
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    ch.queue_bind(
        qt.as_str().into(),
        topic.as_str().into(),
        "*.x".into(),
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    ch.queue_bind(
        qh.as_str().into(),
        headers.as_str().into(),
        "".into(),
        QueueBindOptions::default(),
        table(&[
            ("x-match", AMQPValue::LongString("any".into())),
            ("k", AMQPValue::LongString("v".into())),
            ("n", AMQPValue::LongInt(1)),
        ]),
    )
    .await
    .unwrap();
    ch.queue_bind(
        qf.as_str().into(),
        fan.as_str().into(),
        "".into(),
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    ch.queue_bind(
        qa.as_str().into(),
        ae.as_str().into(),
        "".into(),
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    ch.exchange_bind(
        fan.as_str().into(),
        topic.as_str().into(),
        "e2e.#".into(),
        ExchangeBindOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    for key in ["a", "a.b.c", "b.x", "b.c.x", "e2e.1", "zzz"] {
        publish(&ch, &topic, key, key.as_bytes(), BasicProperties::default()).await;
    }
    let h = |k: &str, v: AMQPValue| BasicProperties::default().with_headers(table(&[(k, v)]));
    publish(
        &ch,
        &headers,
        "",
        b"h1",
        h("k", AMQPValue::LongString("v".into())),
    )
    .await;
    publish(&ch, &headers, "", b"h2", h("n", AMQPValue::LongInt(1))).await;
    publish(
        &ch,
        &headers,
        "",
        b"h3",
        h("k", AMQPValue::LongString("w".into())),
    )
    .await;
    assert_eq!(
        drain(&ch, &qt).await,
        vec![b"a".to_vec(), b"a.b.c".to_vec(), b"b.x".to_vec()]
    );
    assert_eq!(drain(&ch, &qh).await, vec![b"h1".to_vec(), b"h2".to_vec()]);
    assert_eq!(drain(&ch, &qf).await, vec![b"e2e.1".to_vec()]);
    assert_eq!(
        drain(&ch, &qa).await,
        vec![b"b.c.x".to_vec(), b"zzz".to_vec()]
    );
    // Publishing to an internal exchange is refused.
    let err = ch
        .basic_publish(
            fan.as_str().into(),
            "".into(),
            BasicPublishOptions::default(),
            b"no",
            BasicProperties::default(),
        )
        .await;
    let err = match err {
        Err(e) => e,
        Ok(_) => ch
            .basic_get(qf.as_str().into(), BasicGetOptions::default())
            .await
            .unwrap_err(),
    };
    // lapin reports the broker's channel.close as the error of the pending call, or, if the
    // close overtook the call, as a closing channel; either way the publish was refused.
    match err.kind() {
        ErrorKind::ProtocolError(e) => assert_eq!(e.get_id(), 403),
        ErrorKind::InvalidChannelState(..) => {}
        other => panic!("unexpected error {other:?}"),
    }
    let ch = conn.create_channel().await.unwrap();
    for q in [&qt, &qh, &qf, &qa] {
        ch.queue_delete(q.as_str().into(), QueueDeleteOptions::default())
            .await
            .unwrap();
    }
    for x in [&topic, &headers, &fan, &ae] {
        ch.exchange_delete(x.as_str().into(), ExchangeDeleteOptions::default())
            .await
            .unwrap();
    }
    conn.close(200, "bye".into()).await.unwrap();
    broker.stop().await;
}

#[tokio::test]
async fn ttl_dead_lettering_overflow_and_priority() {
    let broker = common::broker().await;
    let conn = connect(broker.url()).await;
    let ch = conn.create_channel().await.unwrap();
    let dlx = common::unique("core.dlx");
    let (dead, ttl, maxlen, reject, prio) = (
        common::unique("q.dead"),
        common::unique("q.ttl"),
        common::unique("q.maxlen"),
        common::unique("q.reject"),
        common::unique("q.prio"),
    );
    ch.exchange_declare(
        dlx.as_str().into(),
        ExchangeKind::Fanout,
        ExchangeDeclareOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    declare(&ch, &dead, FieldTable::default()).await;
    ch.queue_bind(
        dead.as_str().into(),
        dlx.as_str().into(),
        "".into(),
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    let dl = (
        "x-dead-letter-exchange",
        AMQPValue::LongString(dlx.as_str().into()),
    );
    declare(
        &ch,
        &ttl,
        table(&[("x-message-ttl", AMQPValue::LongInt(100)), dl.clone()]),
    )
    .await;
    declare(
        &ch,
        &maxlen,
        table(&[("x-max-length", AMQPValue::LongInt(2)), dl.clone()]),
    )
    .await;
    declare(
        &ch,
        &reject,
        table(&[
            ("x-max-length", AMQPValue::LongInt(1)),
            ("x-overflow", AMQPValue::LongString("reject-publish".into())),
        ]),
    )
    .await;
    declare(
        &ch,
        &prio,
        table(&[("x-max-priority", AMQPValue::ShortShortUInt(5))]),
    )
    .await;

    publish(&ch, "", &ttl, b"t1", BasicProperties::default()).await;
    publish(
        &ch,
        "",
        &ttl,
        b"t2",
        BasicProperties::default().with_expiration("10".into()),
    )
    .await;
    for b in [b"m1", b"m2", b"m3"] {
        publish(&ch, "", &maxlen, b, BasicProperties::default()).await;
    }
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(drain(&ch, &ttl).await.is_empty());
    let mut dead_bodies = drain(&ch, &dead).await;
    dead_bodies.sort();
    assert_eq!(
        dead_bodies,
        vec![b"m1".to_vec(), b"t1".to_vec(), b"t2".to_vec()]
    );
    assert_eq!(
        drain(&ch, &maxlen).await,
        vec![b"m2".to_vec(), b"m3".to_vec()]
    );

    // x-death is added; rejection without requeue dead-letters too.
    publish(&ch, "", &maxlen, b"r", BasicProperties::default()).await;
    let got = ch
        .basic_get(maxlen.as_str().into(), BasicGetOptions::default())
        .await
        .unwrap()
        .unwrap();
    got.delivery
        .reject(BasicRejectOptions { requeue: false })
        .await
        .unwrap();
    let dead_msg = loop {
        if let Some(m) = ch
            .basic_get(dead.as_str().into(), BasicGetOptions { no_ack: true })
            .await
            .unwrap()
        {
            break m;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let headers = dead_msg.delivery.properties.headers().clone().unwrap();
    let deaths = match headers.inner().get("x-death") {
        Some(AMQPValue::FieldArray(a)) => a.as_slice().to_vec(),
        other => panic!("x-death missing: {other:?}"),
    };
    let AMQPValue::FieldTable(first) = &deaths[0] else {
        panic!("x-death entry is a table")
    };
    assert_eq!(
        first.inner().get("reason"),
        Some(&AMQPValue::LongString("rejected".into()))
    );

    // reject-publish: the publisher gets a nack.
    let cch = conn.create_channel().await.unwrap();
    cch.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    let c1 = cch
        .basic_publish(
            "".into(),
            reject.as_str().into(),
            BasicPublishOptions::default(),
            b"1",
            BasicProperties::default(),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    let c2 = cch
        .basic_publish(
            "".into(),
            reject.as_str().into(),
            BasicPublishOptions::default(),
            b"2",
            BasicProperties::default(),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    assert!(c1.is_ack());
    assert!(c2.is_nack());

    // Priorities: higher first, FIFO within a priority.
    for (body, p) in [
        (&b"p1a"[..], 1u8),
        (b"p5", 5),
        (b"p0", 0),
        (b"p1b", 1),
        (b"p9", 9),
    ] {
        publish(
            &ch,
            "",
            &prio,
            body,
            BasicProperties::default().with_priority(p),
        )
        .await;
    }
    assert_eq!(
        drain(&ch, &prio).await,
        vec![
            b"p5".to_vec(),
            b"p9".to_vec(),
            b"p1a".to_vec(),
            b"p1b".to_vec(),
            b"p0".to_vec()
        ]
    );
    for q in [&dead, &ttl, &maxlen, &reject, &prio] {
        ch.queue_delete(q.as_str().into(), QueueDeleteOptions::default())
            .await
            .unwrap();
    }
    ch.exchange_delete(dlx.as_str().into(), ExchangeDeleteOptions::default())
        .await
        .unwrap();
    conn.close(200, "bye".into()).await.unwrap();
    broker.stop().await;
}

#[tokio::test]
async fn channel_errors_have_the_right_codes() {
    let broker = common::broker().await;
    let conn = connect(broker.url()).await;
    let other = connect(broker.url()).await;
    let q = common::unique("core.err");
    let ch = conn.create_channel().await.unwrap();
    ch.queue_declare(
        q.as_str().into(),
        QueueDeclareOptions {
            exclusive: true,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await
    .unwrap();
    // 405: exclusive queue from another connection.
    let och = other.create_channel().await.unwrap();
    let err = och
        .basic_consume(
            q.as_str().into(),
            "".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap_err();
    assert_eq!(code(&err), 405);
    // 406: redeclare with different flags.
    let plain = common::unique("core.err.plain");
    declare(&ch, &plain, FieldTable::default()).await;
    let err = ch
        .queue_declare(
            plain.as_str().into(),
            QueueDeclareOptions {
                durable: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap_err();
    assert_eq!(code(&err), 406);
    // 404: publish to a missing exchange (the channel closes).
    let ch = conn.create_channel().await.unwrap();
    let _ = ch
        .basic_publish(
            common::unique("missing").as_str().into(),
            "k".into(),
            BasicPublishOptions::default(),
            b"x",
            BasicProperties::default(),
        )
        .await;
    let err = ch
        .queue_declare(
            "".into(),
            QueueDeclareOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap_err();
    assert_closed_with(&err, 404);
    // 403: reserved names.
    let ch = conn.create_channel().await.unwrap();
    let err = ch
        .exchange_declare(
            "amq.mine".into(),
            ExchangeKind::Direct,
            ExchangeDeclareOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap_err();
    assert_eq!(code(&err), 403);
    // 406: unknown delivery tag.
    let ch = conn.create_channel().await.unwrap();
    let _ = ch.basic_ack(42, BasicAckOptions::default()).await;
    let err = ch
        .queue_declare(
            "".into(),
            QueueDeclareOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap_err();
    assert_closed_with(&err, 406);
    // Other channels and connections are unaffected.
    let ch = conn.create_channel().await.unwrap();
    ch.queue_declare(
        q.as_str().into(),
        QueueDeclareOptions {
            passive: true,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await
    .unwrap();
    assert!(other.status().connected());
    ch.queue_delete(plain.as_str().into(), QueueDeleteOptions::default())
        .await
        .unwrap();
    other.close(200, "bye".into()).await.unwrap();
    conn.close(200, "bye".into()).await.unwrap();
    broker.stop().await;
}

#[tokio::test]
async fn queue_delete_cancels_consumers_and_exclusive_queues_die_with_connection() {
    let broker = common::broker().await;
    let conn = connect(broker.url()).await;
    let ch = conn.create_channel().await.unwrap();
    let q = common::unique("core.cancel");
    declare(&ch, &q, FieldTable::default()).await;
    let mut consumer = ch
        .basic_consume(
            q.as_str().into(),
            "".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    let ch2 = conn.create_channel().await.unwrap();
    ch2.queue_delete(q.as_str().into(), QueueDeleteOptions::default())
        .await
        .unwrap();
    let end = tokio::time::timeout(Duration::from_secs(5), consumer.next())
        .await
        .expect("the consumer ends");
    assert!(end.is_none(), "{end:?}");

    let owner = connect(broker.url()).await;
    let och = owner.create_channel().await.unwrap();
    let ex = och
        .queue_declare(
            "".into(),
            QueueDeclareOptions {
                exclusive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
    let name = ex.name().as_str().to_owned();
    assert!(name.starts_with("amq.gen-"), "{name}");
    owner.close(200, "bye".into()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let err = ch2
        .queue_declare(
            name.as_str().into(),
            QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap_err();
    assert_eq!(code(&err), 404);
    conn.close(200, "bye".into()).await.unwrap();
    broker.stop().await;
}

#[tokio::test]
async fn tx_commit_and_rollback() {
    let broker = common::broker().await;
    let conn = connect(broker.url()).await;
    let ch = conn.create_channel().await.unwrap();
    let q = common::unique("core.tx");
    declare(&ch, &q, FieldTable::default()).await;
    ch.tx_select().await.unwrap();
    publish(&ch, "", &q, b"rolled back", BasicProperties::default()).await;
    ch.tx_rollback().await.unwrap();
    publish(&ch, "", &q, b"committed", BasicProperties::default()).await;
    let other = conn.create_channel().await.unwrap();
    assert!(other
        .basic_get(q.as_str().into(), BasicGetOptions { no_ack: true })
        .await
        .unwrap()
        .is_none());
    ch.tx_commit().await.unwrap();
    assert_eq!(drain(&other, &q).await, vec![b"committed".to_vec()]);
    other
        .queue_delete(q.as_str().into(), QueueDeleteOptions::default())
        .await
        .unwrap();
    conn.close(200, "bye".into()).await.unwrap();
    broker.stop().await;
}

#[tokio::test]
async fn round_robin_and_nack_requeue() {
    let broker = common::broker().await;
    let conn = connect(broker.url()).await;
    let ch = conn.create_channel().await.unwrap();
    let q = common::unique("core.rr");
    declare(&ch, &q, FieldTable::default()).await;
    let c1ch = conn.create_channel().await.unwrap();
    let c2ch = conn.create_channel().await.unwrap();
    let opts = BasicConsumeOptions {
        no_ack: true,
        ..Default::default()
    };
    let mut c1 = c1ch
        .basic_consume(q.as_str().into(), "a".into(), opts, FieldTable::default())
        .await
        .unwrap();
    let mut c2 = c2ch
        .basic_consume(q.as_str().into(), "b".into(), opts, FieldTable::default())
        .await
        .unwrap();
    for i in 0..6u8 {
        publish(&ch, "", &q, &[i], BasicProperties::default()).await;
    }
    let mut a = Vec::new();
    let mut b = Vec::new();
    for _ in 0..3 {
        a.push(
            tokio::time::timeout(Duration::from_secs(5), c1.next())
                .await
                .unwrap()
                .unwrap()
                .unwrap()
                .data[0],
        );
        b.push(
            tokio::time::timeout(Duration::from_secs(5), c2.next())
                .await
                .unwrap()
                .unwrap()
                .unwrap()
                .data[0],
        );
    }
    assert_eq!(a, vec![0, 2, 4]);
    assert_eq!(b, vec![1, 3, 5]);
    c1ch.close(200, "bye".into()).await.unwrap();
    c2ch.close(200, "bye".into()).await.unwrap();
    publish(&ch, "", &q, b"again", BasicProperties::default()).await;
    let m = ch
        .basic_get(q.as_str().into(), BasicGetOptions::default())
        .await
        .unwrap()
        .unwrap();
    assert!(!m.delivery.redelivered);
    m.delivery
        .nack(BasicNackOptions {
            requeue: true,
            multiple: false,
        })
        .await
        .unwrap();
    let m = ch
        .basic_get(q.as_str().into(), BasicGetOptions::default())
        .await
        .unwrap()
        .unwrap();
    assert!(m.delivery.redelivered);
    assert_eq!(m.delivery.data, b"again");
    m.delivery.ack(BasicAckOptions::default()).await.unwrap();
    ch.queue_delete(q.as_str().into(), QueueDeleteOptions::default())
        .await
        .unwrap();
    conn.close(200, "bye".into()).await.unwrap();
    broker.stop().await;
}

#[tokio::test]
async fn ttl_zero_reaches_a_ready_consumer_and_huge_ttls_never_expire() {
    let broker = common::broker().await;
    let conn = connect(broker.url()).await;
    let ch = conn.create_channel().await.unwrap();
    let zero = common::unique("core.ttl0");
    declare(
        &ch,
        &zero,
        table(&[("x-message-ttl", AMQPValue::LongInt(0))]),
    )
    .await;
    publish(&ch, "", &zero, b"nobody waits", BasicProperties::default()).await;
    let cch = conn.create_channel().await.unwrap();
    let mut c = cch
        .basic_consume(
            zero.as_str().into(),
            "".into(),
            BasicConsumeOptions {
                no_ack: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
    publish(&ch, "", &zero, b"taken at once", BasicProperties::default()).await;
    let d = tokio::time::timeout(Duration::from_secs(5), c.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(d.data, b"taken at once");

    // The longest TTLs RabbitMQ accepts (ten years) are kept; longer ones are refused (406).
    let huge = common::unique("core.hugettl");
    declare(
        &ch,
        &huge,
        table(&[("x-message-ttl", AMQPValue::LongLongInt(315_360_000_000))]),
    )
    .await;
    publish(
        &ch,
        "",
        &huge,
        b"forever",
        BasicProperties::default().with_expiration("315360000000".into()),
    )
    .await;
    assert_eq!(drain(&ch, &huge).await, vec![b"forever".to_vec()]);
    let bad = conn.create_channel().await.unwrap();
    let _ = bad
        .basic_publish(
            "".into(),
            huge.as_str().into(),
            BasicPublishOptions::default(),
            b"x",
            BasicProperties::default().with_expiration(u64::MAX.to_string().into()),
        )
        .await;
    let err = bad
        .queue_declare(
            "".into(),
            QueueDeclareOptions {
                exclusive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err.kind(), ErrorKind::ProtocolError(e) if e.get_id() == 406)
            || matches!(err.kind(), ErrorKind::InvalidChannelState(..)),
        "{err:?}"
    );
    for q in [&zero, &huge] {
        ch.queue_delete(q.as_str().into(), QueueDeleteOptions::default())
            .await
            .unwrap();
    }
    conn.close(200, "bye".into()).await.unwrap();
    broker.stop().await;
}
