//! Publisher confirms (`confirm.select`, basic.ack / basic.nack from the server) and the `tx`
//! class (select, commit, rollback) against the test broker, with their 406 errors. Each test
//! passes against RabbitMQ 3.10, which is the specification the bundled broker must meet.
//!
//! lapin folds the server's `multiple` acks into per-publish confirmations, so "ack multiple"
//! is checked through what it implies: every one of a burst of publishes gets its confirm,
//! and none is left pending.

mod amqp;
mod common;
mod raw;

use amqp::*;
use lapin::options::{BasicAckOptions, BasicGetOptions, QueueDeleteOptions};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Confirmation};

#[tokio::test]
async fn every_publish_on_a_confirm_channel_is_acked() {
    let broker = common::broker().await;
    let conn = connect(&broker).await;
    let ch = confirm_channel(&conn).await;
    assert!(ch.status().confirm());
    let q = common::unique("q.confirm");
    declare_queue(&ch, &q, FieldTable::default()).await;
    // A burst of 200 publishes in flight at once: the server may ack them with multiple=true.
    let mut pending = Vec::new();
    for i in 0..200 {
        pending.push(
            ch.basic_publish(
                "".into(),
                q.as_str().into(),
                Default::default(),
                format!("m{i}").as_bytes(),
                BasicProperties::default(),
            )
            .await
            .expect("publish"),
        );
    }
    for (i, confirm) in pending.into_iter().enumerate() {
        let c = within("a confirm", confirm).await.expect("confirm");
        assert_eq!(c, Confirmation::Ack(None), "publish {i}");
    }
    assert!(ch
        .wait_for_confirms()
        .await
        .expect("none pending")
        .is_empty());
    // Acked transient messages are in the queue.
    let probe = conn.create_channel().await.expect("channel");
    let declared = passive_queue(&probe, &q).await.expect("passive");
    assert_eq!(declared.message_count(), 200);
    ch.queue_delete(q.as_str().into(), QueueDeleteOptions::default())
        .await
        .expect("delete");
}

#[tokio::test]
async fn publishes_before_confirm_select_are_not_confirmed() {
    let broker = common::broker().await;
    let (conn, ch) = open(&broker).await;
    let q = common::unique("q.noconfirm");
    declare_queue(&ch, &q, FieldTable::default()).await;
    let c = ch
        .basic_publish(
            "".into(),
            q.as_str().into(),
            Default::default(),
            b"x",
            BasicProperties::default(),
        )
        .await
        .expect("publish")
        .await
        .expect("no confirm needed");
    assert_eq!(c, Confirmation::NotRequested);
    // confirm.select is idempotent on a channel already in confirm mode.
    ch.confirm_select(Default::default()).await.expect("select");
    ch.confirm_select(Default::default())
        .await
        .expect("select again");
    let c = publish_confirmed(&ch, "", &q, b"y", BasicProperties::default()).await;
    assert!(c.is_ack());
    let ch = conn.create_channel().await.expect("channel");
    ch.queue_delete(q.as_str().into(), QueueDeleteOptions::default())
        .await
        .expect("delete");
}

#[tokio::test]
async fn tx_commit_makes_publishes_visible() {
    let broker = common::broker().await;
    let (conn, ch) = open(&broker).await;
    let q = common::unique("q.txcommit");
    declare_queue(&ch, &q, FieldTable::default()).await;
    let tx = conn.create_channel().await.expect("channel");
    tx.tx_select().await.expect("tx.select");
    publish(&tx, "", &q, b"a").await;
    publish(&tx, "", &q, b"b").await;
    // tx.select is synchronous; a round trip on the tx channel proves the publishes arrived,
    // yet they are not enqueued before the commit.
    tx.tx_select().await.expect("tx.select again is allowed");
    let probe = passive_queue(&ch, &q).await.expect("passive");
    assert_eq!(
        probe.message_count(),
        0,
        "uncommitted publishes are invisible"
    );
    tx.tx_commit().await.expect("tx.commit");
    wait_message_count(&ch, &q, 2).await;
    assert_eq!(drain(&ch, &q).await, vec!["a", "b"]);
    ch.queue_delete(q.as_str().into(), QueueDeleteOptions::default())
        .await
        .expect("delete");
}

#[tokio::test]
async fn tx_rollback_discards_publishes() {
    let broker = common::broker().await;
    let (conn, ch) = open(&broker).await;
    let q = common::unique("q.txrollback");
    declare_queue(&ch, &q, FieldTable::default()).await;
    let tx = conn.create_channel().await.expect("channel");
    tx.tx_select().await.expect("tx.select");
    publish(&tx, "", &q, b"discarded").await;
    tx.tx_rollback().await.expect("tx.rollback");
    publish(&tx, "", &q, b"kept").await;
    tx.tx_commit().await.expect("tx.commit");
    wait_message_count(&ch, &q, 1).await;
    assert_eq!(drain(&ch, &q).await, vec!["kept"]);
    ch.queue_delete(q.as_str().into(), QueueDeleteOptions::default())
        .await
        .expect("delete");
}

#[tokio::test]
async fn acks_in_a_transaction_take_effect_on_commit() {
    let broker = common::broker().await;
    let (conn, ch) = open(&broker).await;
    let q = common::unique("q.txack");
    declare_queue(&ch, &q, FieldTable::default()).await;
    publish(&ch, "", &q, b"m").await;
    wait_message_count(&ch, &q, 1).await;

    // Ack then rollback: the ack is forgotten, the message stays unacked and comes back when
    // the channel closes.
    let tx = conn.create_channel().await.expect("channel");
    tx.tx_select().await.expect("tx.select");
    let m = tx
        .basic_get(q.as_str().into(), BasicGetOptions { no_ack: false })
        .await
        .expect("get")
        .expect("message");
    m.delivery
        .acker
        .ack(BasicAckOptions::default())
        .await
        .expect("ack");
    tx.tx_rollback().await.expect("rollback");
    tx.close(200, "bye".into()).await.expect("close");
    wait_message_count(&ch, &q, 1).await;

    // Ack then commit: gone for good.
    let tx = conn.create_channel().await.expect("channel");
    tx.tx_select().await.expect("tx.select");
    let m = tx
        .basic_get(q.as_str().into(), BasicGetOptions { no_ack: false })
        .await
        .expect("get")
        .expect("message");
    assert!(m.delivery.redelivered);
    m.delivery
        .acker
        .ack(BasicAckOptions::default())
        .await
        .expect("ack");
    tx.tx_commit().await.expect("commit");
    tx.close(200, "bye".into()).await.expect("close");
    wait_message_count(&ch, &q, 0).await;
    ch.queue_delete(q.as_str().into(), QueueDeleteOptions::default())
        .await
        .expect("delete");
}

#[tokio::test]
async fn tx_commit_without_select_is_406() {
    let broker = common::broker().await;
    let (conn, ch) = open(&broker).await;
    assert_code(ch.tx_commit().await, 406);
    let ch = conn.create_channel().await.expect("channel");
    assert_code(ch.tx_rollback().await, 406);
}

#[tokio::test]
async fn confirm_and_tx_modes_exclude_each_other_406() {
    let broker = common::broker().await;
    let conn = connect(&broker).await;
    let ch = confirm_channel(&conn).await;
    assert_code(ch.tx_select().await, 406);
    let ch = conn.create_channel().await.expect("channel");
    ch.tx_select().await.expect("tx.select");
    assert_code(ch.confirm_select(Default::default()).await, 406);
}

// Moved from tests/core_basic.rs (confirms_and_mandatory_return): 50 confirmed publishes, then
// an unroutable mandatory publish comes back with 312 and is still acked.
#[tokio::test]
async fn confirms_and_mandatory_return() {
    let broker = common::broker().await;
    let conn = connect(&broker).await;
    let ch = confirm_channel(&conn).await;
    let q = common::unique("core.confirm");
    declare_queue(&ch, &q, FieldTable::default()).await;
    let mut confirms = Vec::new();
    for _ in 0..50 {
        confirms.push(
            ch.basic_publish(
                "".into(),
                q.as_str().into(),
                Default::default(),
                b"x",
                BasicProperties::default(),
            )
            .await
            .expect("publish"),
        );
    }
    for c in confirms {
        assert!(within("a confirm", c).await.expect("confirm").is_ack());
    }
    let mandatory = lapin::options::BasicPublishOptions {
        mandatory: true,
        ..Default::default()
    };
    let nowhere = common::unique("nowhere");
    let confirm = ch
        .basic_publish(
            "amq.direct".into(),
            nowhere.as_str().into(),
            mandatory,
            b"lost",
            BasicProperties::default(),
        )
        .await
        .expect("publish");
    let confirm = within("a confirm", confirm).await.expect("confirm");
    assert!(confirm.is_ack());
    let returned = confirm.take_message().expect("the message comes back");
    assert_eq!(returned.reply_code, 312);
    assert_eq!(returned.delivery.data, b"lost");
    let ok = passive_queue(&ch, &q).await.expect("passive declare");
    assert_eq!(ok.message_count(), 50);
    delete_queues(&ch, &[&q]).await;
    finish(conn, broker).await;
}

// Moved from tests/core_features.rs (tx_commit_and_rollback): one transaction rolled back and
// the next committed on the same channel; nothing is visible before the commit.
#[tokio::test]
async fn tx_commit_and_rollback() {
    let broker = common::broker().await;
    let (conn, ch) = open(&broker).await;
    let q = common::unique("core.tx");
    declare_queue(&ch, &q, FieldTable::default()).await;
    ch.tx_select().await.expect("tx.select");
    publish(&ch, "", &q, b"rolled back").await;
    ch.tx_rollback().await.expect("tx.rollback");
    publish(&ch, "", &q, b"committed").await;
    let other = conn.create_channel().await.expect("channel");
    assert!(get_body(&other, &q).await.is_none());
    ch.tx_commit().await.expect("tx.commit");
    assert_eq!(drain_settled(&other, &q).await, vec!["committed"]);
    delete_queues(&other, &[&q]).await;
    finish(conn, broker).await;
}

#[tokio::test]
async fn a_publish_in_a_transaction_is_checked_at_the_publish() {
    // RabbitMQ checks a publish when it arrives, transaction or not: the channel closes at
    // the publish (class 60, method 40), not at the commit. Found by difftest: the bundled
    // broker checked only the exchange's existence at the publish and the rest at the commit.
    // Raw frames, so that nothing can overtake the publish's content on the wire.
    use amq_protocol::frame::{AMQPContentHeader, AMQPFrame};
    use amq_protocol::protocol::{basic, tx, AMQPClass};
    let broker = common::broker().await;
    let conn = connect(&broker).await;
    let internal = common::unique("x.internal");
    let setup = conn.create_channel().await.expect("channel");
    setup
        .exchange_declare(
            internal.as_str().into(),
            lapin::ExchangeKind::Direct,
            lapin::options::ExchangeDeclareOptions {
                internal: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .expect("declare an internal exchange");
    let q = common::unique("q.txcheck");
    declare_queue(&setup, &q, FieldTable::default()).await;
    let cases = [
        (internal.as_str(), basic::AMQPProperties::default(), 403),
        (
            "",
            basic::AMQPProperties::default().with_expiration("soon".into()),
            406,
        ),
        (
            "",
            basic::AMQPProperties::default().with_delivery_mode(7),
            406,
        ),
    ];
    for (exchange, properties, code) in cases {
        let mut raw = raw::RawConn::open(&broker, 131_072, 0).await;
        raw.open_channel(1).await;
        raw.send(&raw::method(
            1,
            AMQPClass::Tx(tx::AMQPMethod::Select(tx::Select {})),
        ))
        .await;
        raw.expect_method().await;
        let mut frames = raw::method(
            1,
            AMQPClass::Basic(basic::AMQPMethod::Publish(basic::Publish {
                exchange: exchange.into(),
                routing_key: q.as_str().into(),
                mandatory: false,
                immediate: false,
            })),
        );
        frames.extend(raw::encode(&AMQPFrame::Header(
            1,
            AMQPContentHeader {
                class_id: 60,
                body_size: 3,
                properties,
            },
        )));
        frames.extend(raw::raw_frame(3, 1, b"abc", raw::FRAME_END));
        frames.extend(raw::method(
            1,
            AMQPClass::Tx(tx::AMQPMethod::Rollback(tx::Rollback {})),
        ));
        raw.send(&frames).await;
        let close = raw.expect_channel_close(1).await;
        assert_eq!(
            (close.code, close.class_id, close.method_id),
            (code, 60, 40),
            "publish to {exchange:?}: {close:?}"
        );
    }
    setup
        .exchange_delete(internal.as_str().into(), Default::default())
        .await
        .expect("delete");
    setup
        .queue_delete(q.as_str().into(), Default::default())
        .await
        .expect("delete");
}

#[tokio::test]
async fn an_ack_in_a_transaction_is_checked_when_it_arrives() {
    // RabbitMQ takes the deliveries an ack, nack or reject names when it arrives, inside a
    // transaction too (and gives them back on rollback): an unknown tag, or one an earlier
    // ack of the same transaction settled, is 406 at once, so the rollback that follows finds
    // the channel closed. Found by difftest: the bundled broker checked them only at commit.
    use lapin::options::{BasicNackOptions, BasicRejectOptions};
    let broker = common::broker().await;
    let (conn, ch) = open(&broker).await;
    let q = common::unique("q.txcheckack");
    declare_queue(&ch, &q, FieldTable::default()).await;
    for case in 0..4 {
        publish(&ch, "", &q, b"m").await;
        wait_message_count(&ch, &q, 1).await;
        let tx = conn.create_channel().await.expect("channel");
        tx.tx_select().await.expect("tx.select");
        let tag = tx
            .basic_get(q.as_str().into(), BasicGetOptions { no_ack: false })
            .await
            .expect("get")
            .expect("message")
            .delivery
            .delivery_tag;
        let sent = match case {
            0 => tx.basic_ack(tag + 100, BasicAckOptions::default()).await,
            1 => {
                tx.basic_ack(tag, BasicAckOptions::default())
                    .await
                    .expect("first ack sent");
                tx.basic_ack(tag, BasicAckOptions::default()).await
            }
            2 => {
                tx.basic_ack(tag, BasicAckOptions { multiple: true })
                    .await
                    .expect("first ack sent");
                tx.basic_reject(tag, BasicRejectOptions { requeue: true })
                    .await
            }
            _ => {
                tx.basic_nack(
                    tag + 1,
                    BasicNackOptions {
                        multiple: true,
                        requeue: true,
                    },
                )
                .await
            }
        };
        sent.expect("sent");
        // The broker's 406 channel.close may reach lapin before the rollback is sent (lapin
        // then refuses it as "invalid channel state: Closing") or after (the rollback fails
        // with the 406). Either way the channel is closed by the broker's check at the ack.
        match tx.tx_rollback().await {
            Err(err) if matches!(err.kind(), lapin::ErrorKind::InvalidChannelState(..)) => {}
            res => {
                assert_code(res, 406);
            }
        }
        // The channel closed without settling anything: the message is back.
        wait_message_count(&ch, &q, 1).await;
        ch.queue_purge(q.as_str().into(), Default::default())
            .await
            .expect("purge");
    }
    ch.queue_delete(q.as_str().into(), QueueDeleteOptions::default())
        .await
        .expect("delete");
}
