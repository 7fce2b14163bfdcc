//! Direct reply-to (`amq.rabbitmq.reply-to`) against the test broker, as RabbitMQ implements
//! it: the requester consumes the pseudo-queue in no-ack mode and publishes requests with
//! `reply_to = amq.rabbitmq.reply-to` on the same channel; the broker rewrites `reply_to` to a
//! per-channel name the responder publishes to through the default exchange. Each test passes
//! against RabbitMQ 3.10, which is the specification the bundled broker must meet.

mod amqp;
mod common;

use amqp::*;
use lapin::options::{BasicConsumeOptions, BasicPublishOptions};
use lapin::types::FieldTable;
use lapin::BasicProperties;

const REPLY_TO: &str = "amq.rabbitmq.reply-to";

#[tokio::test]
async fn reply_reaches_the_requester_through_the_pseudo_queue() {
    let (broker, _server_conn, server) = start_and_open().await;
    let rpc_queue = declare_unique_queue(&server, "q.rpc").await;
    let mut requests = consume(&server, &rpc_queue, false).await;

    let (_client_conn, client) = open(&broker).await;
    let mut replies = consume(&client, REPLY_TO, true).await;
    for n in 0..3u32 {
        publish_with(
            &client,
            "",
            &rpc_queue,
            n.to_string().as_bytes(),
            BasicProperties::default()
                .with_reply_to(REPLY_TO.into())
                .with_correlation_id(format!("corr-{n}").as_str().into()),
        )
        .await;
        let req = next(&mut requests).await;
        let reply_to = req
            .properties
            .reply_to()
            .clone()
            .expect("request keeps a reply_to");
        // The broker replaced the pseudo-queue name with a routable per-requester name.
        assert!(
            reply_to.as_str().starts_with("amq.rabbitmq.reply-to."),
            "rewritten reply_to: {reply_to}"
        );
        publish_with(
            &server,
            "",
            reply_to.as_str(),
            format!("answer-{n}").as_bytes(),
            BasicProperties::default().with_correlation_id(
                req.properties
                    .correlation_id()
                    .clone()
                    .expect("correlation id"),
            ),
        )
        .await;
        req.acker.ack(Default::default()).await.expect("ack");
        let reply = next(&mut replies).await;
        assert_eq!(reply.data, format!("answer-{n}").as_bytes());
        assert_eq!(
            reply
                .properties
                .correlation_id()
                .as_ref()
                .map(|s| s.as_str()),
            Some(format!("corr-{n}").as_str())
        );
        // Replies are delivered on the pseudo-queue's consumer and need no ack.
        assert_eq!(reply.routing_key.as_str(), reply_to.as_str());
    }
    delete_queues(&server, &[&rpc_queue]).await;
}

#[tokio::test]
async fn publishing_with_reply_to_without_consuming_it_is_406() {
    // RabbitMQ: "PRECONDITION_FAILED - fast reply consumer does not exist".
    let (broker, conn, ch) = start_and_open().await;
    let q = declare_unique_queue(&ch, "q.rpc.noconsumer").await;
    let res = publish_error(
        &conn,
        "",
        &q,
        BasicProperties::default().with_reply_to(REPLY_TO.into()),
    )
    .await;
    assert_code(res, 406);
    let (_c2, ch2) = open(&broker).await;
    // The request was refused, not enqueued.
    assert_eq!(drain(&ch2, &q).await, Vec::<String>::new());
    delete_queues(&ch2, &[&q]).await;
}

#[tokio::test]
async fn consuming_the_pseudo_queue_with_acks_is_406() {
    let (_broker, _conn, ch) = start_and_open().await;
    let res = ch
        .basic_consume(
            REPLY_TO.into(),
            "".into(),
            BasicConsumeOptions {
                no_ack: false,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await;
    assert_code(res, 406);
}

#[tokio::test]
async fn the_pseudo_queue_can_be_declared_passively() {
    let (_broker, _conn, ch) = start_and_open().await;
    let q = passive_queue(&ch, REPLY_TO)
        .await
        .expect("passive declare of amq.rabbitmq.reply-to");
    // RabbitMQ 3.10 answers with a fixed declare-ok: 0 messages, 1 consumer (the pseudo-queue
    // always "has" its consumer), whether or not this channel consumes it.
    assert_eq!(q.name().as_str(), REPLY_TO);
    assert_eq!((q.message_count(), q.consumer_count()), (0, 1));
}

#[tokio::test]
async fn a_reply_to_a_requester_that_is_gone_is_dropped() {
    let (broker, server_conn, server) = start_and_open().await;
    let rpc_queue = declare_unique_queue(&server, "q.rpc.gone").await;

    let (client_conn, client) = open(&broker).await;
    let _replies = consume(&client, REPLY_TO, true).await;
    publish_with(
        &client,
        "",
        &rpc_queue,
        b"req",
        BasicProperties::default().with_reply_to(REPLY_TO.into()),
    )
    .await;
    wait_message_count(&server, &rpc_queue, 1).await;
    let req = get(&server, &rpc_queue).await.expect("request");
    let reply_to = req
        .delivery
        .properties
        .reply_to()
        .clone()
        .expect("reply_to");
    client_conn
        .close(200, "requester leaves".into())
        .await
        .expect("close");

    // Mandatory on a confirm channel: the reply has nowhere to go, so it comes back 312
    // and the responder's channel stays open.
    let pch = confirm_channel(&server_conn).await;
    let confirm = pch
        .basic_publish(
            "".into(),
            reply_to.as_str().into(),
            BasicPublishOptions {
                mandatory: true,
                ..Default::default()
            },
            b"late reply",
            BasicProperties::default(),
        )
        .await
        .expect("publish");
    let c = within("confirm", confirm).await.expect("confirm");
    assert!(c.is_ack());
    let returned = c.take_message().expect("returned as unroutable");
    assert_eq!(returned.reply_code, 312);
    publish_confirmed(
        &pch,
        "",
        &rpc_queue,
        b"still fine",
        BasicProperties::default(),
    )
    .await;
    delete_queues(&server, &[&rpc_queue]).await;
}

// Moved from tests/core_basic.rs (direct_reply_to_rpc): requester and responder are two
// channels of one connection.
#[tokio::test]
async fn direct_reply_to_rpc() {
    let (broker, conn, server_ch) = start_and_open().await;
    let client_ch = conn.create_channel().await.expect("channel");
    let q = declare_unique_queue(&server_ch, "core.rpc").await;
    let mut requests = consume(&server_ch, &q, false).await;
    let mut replies = consume(&client_ch, REPLY_TO, true).await;
    let request = BasicProperties::default()
        .with_reply_to(REPLY_TO.into())
        .with_correlation_id("c1".into());
    publish_with(&client_ch, "", &q, b"21", request).await;
    let req = next(&mut requests).await;
    let reply_to = req.properties.reply_to().clone().expect("reply_to");
    assert!(
        reply_to.as_str().starts_with("amq.rabbitmq.reply-to."),
        "{reply_to}"
    );
    let n: u32 = std::str::from_utf8(&req.data)
        .expect("utf-8")
        .parse()
        .expect("a number");
    let correlation = req
        .properties
        .correlation_id()
        .clone()
        .expect("correlation");
    let answer = BasicProperties::default().with_correlation_id(correlation);
    publish_with(
        &server_ch,
        "",
        reply_to.as_str(),
        (n * 2).to_string().as_bytes(),
        answer,
    )
    .await;
    req.acker.ack(Default::default()).await.expect("ack");
    let reply = next(&mut replies).await;
    assert_eq!(reply.data, b"42");
    let got = reply
        .properties
        .correlation_id()
        .clone()
        .expect("correlation");
    assert_eq!(got.as_str(), "c1");
    delete_queues(&server_ch, &[&q]).await;
    finish(conn, broker).await;
}
