//! Broker-core checks with lapin: the paths an RPC or task-queue user needs first.
//! Runs against the bundled broker (or RabbitMQ with `LEPUS_TEST_AMQP_URL`).

#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use futures::StreamExt;
use lapin::options::*;
use lapin::types::FieldTable;
use lapin::{BasicProperties, Connection, ConnectionProperties};

async fn connect(url: &str) -> Connection {
    Connection::connect(url, ConnectionProperties::default())
        .await
        .expect("connect")
}

async fn next_delivery(consumer: &mut lapin::Consumer) -> lapin::message::Delivery {
    tokio::time::timeout(Duration::from_secs(5), consumer.next())
        .await
        .expect("a delivery within 5 s")
        .expect("stream open")
        .expect("delivery ok")
}

#[tokio::test]
async fn publish_consume_ack_round_trip() {
    let broker = common::broker().await;
    let conn = connect(broker.url()).await;
    let ch = conn.create_channel().await.unwrap();
    let q = common::unique("core.rt");
    let ok = ch
        .queue_declare(
            q.as_str().into(),
            QueueDeclareOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    assert_eq!(ok.message_count(), 0);
    for i in 0..10u8 {
        ch.basic_publish(
            "".into(),
            q.as_str().into(),
            BasicPublishOptions::default(),
            &[i],
            BasicProperties::default(),
        )
        .await
        .unwrap();
    }
    let mut consumer = ch
        .basic_consume(
            q.as_str().into(),
            "c1".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    for i in 0..10u8 {
        let d = next_delivery(&mut consumer).await;
        assert_eq!(d.data, vec![i]);
        assert!(!d.redelivered);
        d.ack(BasicAckOptions::default()).await.unwrap();
    }
    ch.queue_delete(q.as_str().into(), QueueDeleteOptions::default())
        .await
        .unwrap();
    conn.close(200, "bye".into()).await.unwrap();
    broker.stop().await;
}

#[tokio::test]
async fn large_message_round_trips_across_frames() {
    let broker = common::broker().await;
    let conn = connect(broker.url()).await;
    let ch = conn.create_channel().await.unwrap();
    let q = common::unique("core.big");
    ch.queue_declare(
        q.as_str().into(),
        QueueDeclareOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    let body: Vec<u8> = (0..4 * 1024 * 1024).map(|i| (i % 251) as u8).collect();
    ch.basic_publish(
        "".into(),
        q.as_str().into(),
        BasicPublishOptions::default(),
        &body,
        BasicProperties::default(),
    )
    .await
    .unwrap();
    let got = loop {
        if let Some(m) = ch
            .basic_get(q.as_str().into(), BasicGetOptions { no_ack: true })
            .await
            .unwrap()
        {
            break m;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(got.delivery.data.len(), body.len());
    assert!(got.delivery.data == body);
    ch.queue_delete(q.as_str().into(), QueueDeleteOptions::default())
        .await
        .unwrap();
    conn.close(200, "bye".into()).await.unwrap();
    broker.stop().await;
}

#[tokio::test]
async fn unacked_messages_return_in_order_redelivered_when_channel_closes() {
    let broker = common::broker().await;
    let conn = connect(broker.url()).await;
    let ch = conn.create_channel().await.unwrap();
    let q = common::unique("core.requeue");
    ch.queue_declare(
        q.as_str().into(),
        QueueDeclareOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    for i in 0..5u8 {
        ch.basic_publish(
            "".into(),
            q.as_str().into(),
            BasicPublishOptions::default(),
            &[i],
            BasicProperties::default(),
        )
        .await
        .unwrap();
    }
    let ch2 = conn.create_channel().await.unwrap();
    ch2.basic_qos(3, BasicQosOptions::default()).await.unwrap();
    let mut c2 = ch2
        .basic_consume(
            q.as_str().into(),
            "".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    let mut got = Vec::new();
    for _ in 0..3 {
        got.push(next_delivery(&mut c2).await.data[0]);
    }
    assert_eq!(got, vec![0, 1, 2]);
    // Prefetch 3: nothing more arrives while three are unacked.
    assert!(tokio::time::timeout(Duration::from_millis(200), c2.next())
        .await
        .is_err());
    ch2.close(200, "bye".into()).await.unwrap();
    let mut c = ch
        .basic_consume(
            q.as_str().into(),
            "".into(),
            BasicConsumeOptions {
                no_ack: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
    for i in 0..5u8 {
        let d = next_delivery(&mut c).await;
        assert_eq!(d.data, vec![i]);
        assert_eq!(d.redelivered, i < 3, "message {i}");
    }
    ch.queue_delete(q.as_str().into(), QueueDeleteOptions::default())
        .await
        .unwrap();
    conn.close(200, "bye".into()).await.unwrap();
    broker.stop().await;
}

#[tokio::test]
async fn confirms_and_mandatory_return() {
    let broker = common::broker().await;
    let conn = connect(broker.url()).await;
    let ch = conn.create_channel().await.unwrap();
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    let q = common::unique("core.confirm");
    ch.queue_declare(
        q.as_str().into(),
        QueueDeclareOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    let mut confirms = Vec::new();
    for _ in 0..50 {
        confirms.push(
            ch.basic_publish(
                "".into(),
                q.as_str().into(),
                BasicPublishOptions::default(),
                b"x",
                BasicProperties::default(),
            )
            .await
            .unwrap(),
        );
    }
    for c in confirms {
        assert!(c.await.unwrap().is_ack());
    }
    let confirm = ch
        .basic_publish(
            "amq.direct".into(),
            common::unique("nowhere").as_str().into(),
            BasicPublishOptions {
                mandatory: true,
                ..Default::default()
            },
            b"lost",
            BasicProperties::default(),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    assert!(confirm.is_ack());
    let returned = confirm.take_message().expect("the message comes back");
    assert_eq!(returned.reply_code, 312);
    assert_eq!(returned.delivery.data, b"lost");
    let ok = ch
        .queue_declare(
            q.as_str().into(),
            QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
    assert_eq!(ok.message_count(), 50);
    ch.queue_delete(q.as_str().into(), QueueDeleteOptions::default())
        .await
        .unwrap();
    conn.close(200, "bye".into()).await.unwrap();
    broker.stop().await;
}

#[tokio::test]
async fn direct_reply_to_rpc() {
    let broker = common::broker().await;
    let conn = connect(broker.url()).await;
    let server_ch = conn.create_channel().await.unwrap();
    let client_ch = conn.create_channel().await.unwrap();
    let q = common::unique("core.rpc");
    server_ch
        .queue_declare(
            q.as_str().into(),
            QueueDeclareOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    let mut requests = server_ch
        .basic_consume(
            q.as_str().into(),
            "".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    let mut replies = client_ch
        .basic_consume(
            "amq.rabbitmq.reply-to".into(),
            "".into(),
            BasicConsumeOptions {
                no_ack: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
    client_ch
        .basic_publish(
            "".into(),
            q.as_str().into(),
            BasicPublishOptions::default(),
            b"21",
            BasicProperties::default()
                .with_reply_to("amq.rabbitmq.reply-to".into())
                .with_correlation_id("c1".into()),
        )
        .await
        .unwrap();
    let req = next_delivery(&mut requests).await;
    let reply_to = req.properties.reply_to().clone().unwrap();
    assert!(
        reply_to.as_str().starts_with("amq.rabbitmq.reply-to."),
        "{reply_to}"
    );
    let n: u32 = std::str::from_utf8(&req.data).unwrap().parse().unwrap();
    server_ch
        .basic_publish(
            "".into(),
            reply_to,
            BasicPublishOptions::default(),
            (n * 2).to_string().as_bytes(),
            BasicProperties::default()
                .with_correlation_id(req.properties.correlation_id().clone().unwrap()),
        )
        .await
        .unwrap();
    req.ack(BasicAckOptions::default()).await.unwrap();
    let reply = next_delivery(&mut replies).await;
    assert_eq!(reply.data, b"42");
    assert_eq!(
        reply.properties.correlation_id().as_ref().unwrap().as_str(),
        "c1"
    );
    server_ch
        .queue_delete(q.as_str().into(), QueueDeleteOptions::default())
        .await
        .unwrap();
    conn.close(200, "bye".into()).await.unwrap();
    broker.stop().await;
}
