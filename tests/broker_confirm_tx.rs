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
use lapin::options::BasicAckOptions;
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Confirmation, Connection};

/// Publishes `n` messages (`m0`, `m1`, ...) to `q` on confirm channel `ch` back to back, all
/// in flight at once, then waits for every confirm: the confirms in publish order.
async fn publish_burst(ch: &Channel, q: &str, n: usize) -> Vec<Confirmation> {
    let mut pending = Vec::new();
    for i in 0..n {
        let body = format!("m{i}");
        let options = Default::default();
        let props = BasicProperties::default();
        let sent = ch.basic_publish("".into(), q.into(), options, body.as_bytes(), props);
        pending.push(sent.await.expect("publish"));
    }
    let mut confirms = Vec::new();
    for confirm in pending {
        confirms.push(within("a confirm", confirm).await.expect("confirm"));
    }
    confirms
}

/// Opens a channel on `conn` and puts it in transaction mode (tx.select).
async fn tx_channel(conn: &Connection) -> Channel {
    let tx = channel(conn).await;
    tx.tx_select().await.expect("tx.select");
    tx
}

#[tokio::test]
async fn every_publish_on_a_confirm_channel_is_acked() {
    let (_broker, conn, _ch) = start_and_open().await;
    let ch = confirm_channel(&conn).await;
    assert!(ch.status().confirm());
    let q = declare_unique_queue(&ch, "q.confirm").await;
    // A burst of 200 publishes in flight at once: the server may ack them with multiple=true.
    for (i, c) in publish_burst(&ch, &q, 200).await.into_iter().enumerate() {
        assert_eq!(c, Confirmation::Ack(None), "publish {i}");
    }
    assert!(ch
        .wait_for_confirms()
        .await
        .expect("none pending")
        .is_empty());
    // Acked transient messages are in the queue.
    let probe = channel(&conn).await;
    assert_eq!(message_count(&probe, &q).await, 200);
    delete_queues(&ch, &[&q]).await;
}

#[tokio::test]
async fn publishes_before_confirm_select_are_not_confirmed() {
    let (_broker, conn, ch, q) = start_with_queue("q.noconfirm").await;
    let props = BasicProperties::default();
    let c = publish_flagged(&ch, "", &q, Default::default(), b"x", props)
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
    delete_queues(&channel(&conn).await, &[&q]).await;
}

#[tokio::test]
async fn tx_commit_makes_publishes_visible() {
    let (_broker, conn, ch, q) = start_with_queue("q.txcommit").await;
    let tx = tx_channel(&conn).await;
    publish(&tx, "", &q, b"a").await;
    publish(&tx, "", &q, b"b").await;
    // tx.select is synchronous; a round trip on the tx channel proves the publishes arrived,
    // yet they are not enqueued before the commit.
    tx.tx_select().await.expect("tx.select again is allowed");
    assert_eq!(
        message_count(&ch, &q).await,
        0,
        "uncommitted publishes are invisible"
    );
    tx.tx_commit().await.expect("tx.commit");
    assert_drains_to(&ch, &q, &["a", "b"]).await;
    delete_queues(&ch, &[&q]).await;
}

#[tokio::test]
async fn tx_rollback_discards_publishes() {
    let (_broker, conn, ch, q) = start_with_queue("q.txrollback").await;
    let tx = tx_channel(&conn).await;
    publish(&tx, "", &q, b"discarded").await;
    tx.tx_rollback().await.expect("tx.rollback");
    publish(&tx, "", &q, b"kept").await;
    tx.tx_commit().await.expect("tx.commit");
    assert_drains_to(&ch, &q, &["kept"]).await;
    delete_queues(&ch, &[&q]).await;
}

#[tokio::test]
async fn acks_in_a_transaction_take_effect_on_commit() {
    let (_broker, conn, ch, q) = start_with_queue("q.txack").await;
    publish(&ch, "", &q, b"m").await;
    wait_message_count(&ch, &q, 1).await;

    // Ack then rollback: the ack is forgotten, the message stays unacked and comes back when
    // the channel closes.
    let tx = tx_channel(&conn).await;
    let m = get(&tx, &q).await.expect("message");
    ack(&m).await;
    tx.tx_rollback().await.expect("rollback");
    tx.close(200, "bye".into()).await.expect("close");
    wait_message_count(&ch, &q, 1).await;

    // Ack then commit: gone for good.
    let tx = tx_channel(&conn).await;
    let m = get(&tx, &q).await.expect("message");
    assert!(m.delivery.redelivered);
    ack(&m).await;
    tx.tx_commit().await.expect("commit");
    tx.close(200, "bye".into()).await.expect("close");
    wait_message_count(&ch, &q, 0).await;
    delete_queues(&ch, &[&q]).await;
}

#[tokio::test]
async fn tx_commit_without_select_is_406() {
    let (_broker, conn, ch) = start_and_open().await;
    assert_code(ch.tx_commit().await, 406);
    assert_code(channel(&conn).await.tx_rollback().await, 406);
}

#[tokio::test]
async fn confirm_and_tx_modes_exclude_each_other_406() {
    let (_broker, conn, _ch) = start_and_open().await;
    let ch = confirm_channel(&conn).await;
    assert_code(ch.tx_select().await, 406);
    let ch = tx_channel(&conn).await;
    assert_code(ch.confirm_select(Default::default()).await, 406);
}

// Moved from tests/core_basic.rs (confirms_and_mandatory_return): 50 confirmed publishes, then
// an unroutable mandatory publish comes back with 312 and is still acked.
#[tokio::test]
async fn confirms_and_mandatory_return() {
    let broker = common::broker().await;
    let conn = connect(&broker).await;
    let ch = confirm_channel(&conn).await;
    let q = declare_unique_queue(&ch, "core.confirm").await;
    for c in publish_burst(&ch, &q, 50).await {
        assert!(c.is_ack());
    }
    let nowhere = common::unique("nowhere");
    let props = BasicProperties::default();
    let confirm = publish_flagged(&ch, "amq.direct", &nowhere, mandatory(), b"lost", props)
        .await
        .expect("confirm");
    assert!(confirm.is_ack());
    let returned = confirm.take_message().expect("the message comes back");
    assert_eq!(returned.reply_code, 312);
    assert_eq!(returned.delivery.data, b"lost");
    assert_eq!(message_count(&ch, &q).await, 50);
    delete_queues(&ch, &[&q]).await;
    finish(conn, broker).await;
}

// Moved from tests/core_features.rs (tx_commit_and_rollback): one transaction rolled back and
// the next committed on the same channel; nothing is visible before the commit.
#[tokio::test]
async fn tx_commit_and_rollback() {
    let (broker, conn, ch, q) = start_with_queue("core.tx").await;
    ch.tx_select().await.expect("tx.select");
    publish(&ch, "", &q, b"rolled back").await;
    ch.tx_rollback().await.expect("tx.rollback");
    publish(&ch, "", &q, b"committed").await;
    let other = channel(&conn).await;
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
    use amq_protocol::protocol::{basic, tx, AMQPClass};
    let (broker, _conn, setup, q) = start_with_queue("q.txcheck").await;
    let internal = common::unique("x.internal");
    declare_internal_exchange(&setup, &internal, lapin::ExchangeKind::Direct).await;
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
        let mut frames = publish_frames(exchange, &q, false, properties, b"abc");
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
    delete_all(&setup, &[&q], &[&internal]).await;
}

#[tokio::test]
async fn an_ack_in_a_transaction_is_checked_when_it_arrives() {
    // RabbitMQ takes the deliveries an ack, nack or reject names when it arrives, inside a
    // transaction too (and gives them back on rollback): an unknown tag, or one an earlier
    // ack of the same transaction settled, is 406 at once, so the rollback that follows finds
    // the channel closed. Found by difftest: the bundled broker checked them only at commit.
    use lapin::options::{BasicNackOptions, BasicRejectOptions};
    let (_broker, conn, ch, q) = start_with_queue("q.txcheckack").await;
    for case in 0..4 {
        publish(&ch, "", &q, b"m").await;
        wait_message_count(&ch, &q, 1).await;
        let tx = tx_channel(&conn).await;
        let tag = get(&tx, &q).await.expect("message").delivery.delivery_tag;
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
        purge(&ch, &q).await;
    }
    delete_queues(&ch, &[&q]).await;
}

/// A `basic.publish` on channel 1 with its content (one body frame).
fn publish_frames(
    exchange: &str,
    key: &str,
    mandatory: bool,
    properties: amq_protocol::protocol::basic::AMQPProperties,
    body: &[u8],
) -> Vec<u8> {
    use amq_protocol::frame::{AMQPContentHeader, AMQPFrame};
    use amq_protocol::protocol::{basic, AMQPClass};
    let mut frames = raw::method(
        1,
        AMQPClass::Basic(basic::AMQPMethod::Publish(basic::Publish {
            exchange: exchange.into(),
            routing_key: key.into(),
            mandatory,
            immediate: false,
        })),
    );
    frames.extend(raw::encode(&AMQPFrame::Header(
        1,
        AMQPContentHeader {
            class_id: 60,
            body_size: body.len() as u64,
            properties,
        },
    )));
    frames.extend(raw::raw_frame(3, 1, body, raw::FRAME_END));
    frames
}

/// A raw client's transactional channel 1: every frame the broker sends on it is seen, in
/// order, with nothing hidden or reordered by a client library.
struct RawTx {
    raw: raw::RawConn,
}

/// A `basic.return`: reply code, exchange, routing key, body.
type Returned = (u16, String, String, Vec<u8>);

impl RawTx {
    async fn open(broker: &common::TestBroker) -> RawTx {
        let mut raw = raw::RawConn::open(broker, 131_072, 0).await;
        raw.open_channel(1).await;
        let mut me = RawTx { raw };
        assert_eq!(me.sync().await, Vec::<Returned>::new());
        me
    }

    /// Publishes `body` on the transaction, then makes a round trip so that the broker has
    /// it before the test goes on.
    async fn publish(&mut self, exchange: &str, key: &str, mandatory: bool, body: &[u8]) {
        let properties = amq_protocol::protocol::basic::AMQPProperties::default();
        let frames = publish_frames(exchange, key, mandatory, properties, body);
        self.raw.send(&frames).await;
        let returned = self.sync().await;
        assert_eq!(
            returned,
            Vec::new(),
            "nothing is returned before the commit"
        );
    }

    /// `tx.select` again (allowed) as a round trip: the returns that came before its `-ok`.
    async fn sync(&mut self) -> Vec<Returned> {
        use amq_protocol::protocol::{tx, AMQPClass};
        self.raw
            .send(&raw::method(
                1,
                AMQPClass::Tx(tx::AMQPMethod::Select(tx::Select {})),
            ))
            .await;
        self.returns_until(|m| matches!(m, AMQPClass::Tx(tx::AMQPMethod::SelectOk(_))))
            .await
    }

    /// `tx.commit`, which must be answered `commit-ok` (not a close): the `basic.return`s the
    /// broker sent for the commit, before the `commit-ok` or after it (up to a round trip).
    async fn commit(&mut self) -> Vec<Returned> {
        use amq_protocol::protocol::{tx, AMQPClass};
        self.raw
            .send(&raw::method(
                1,
                AMQPClass::Tx(tx::AMQPMethod::Commit(tx::Commit {})),
            ))
            .await;
        let mut returned = self
            .returns_until(|m| matches!(m, AMQPClass::Tx(tx::AMQPMethod::CommitOk(_))))
            .await;
        returned.extend(self.sync().await);
        returned
    }

    /// Reads channel 1 until a method `done` accepts, collecting `basic.return`s; anything
    /// else (a `channel.close`) fails the test.
    async fn returns_until(
        &mut self,
        done: impl Fn(&amq_protocol::protocol::AMQPClass) -> bool,
    ) -> Vec<Returned> {
        use amq_protocol::frame::AMQPFrame;
        use amq_protocol::protocol::{basic, AMQPClass};
        let mut returned = Vec::new();
        loop {
            match self.raw.next_non_heartbeat().await {
                raw::Outcome::Frame(AMQPFrame::Method(1, m)) if done(&m) => return returned,
                raw::Outcome::Frame(AMQPFrame::Method(
                    1,
                    AMQPClass::Basic(basic::AMQPMethod::Return(r)),
                )) => {
                    let size = match self.raw.next_non_heartbeat().await {
                        raw::Outcome::Frame(AMQPFrame::Header(1, h)) => h.body_size as usize,
                        other => panic!("expected the returned message's header, got {other:?}"),
                    };
                    let mut body = Vec::new();
                    while body.len() < size {
                        match self.raw.next_non_heartbeat().await {
                            raw::Outcome::Frame(AMQPFrame::Body(1, b)) => body.extend(b),
                            other => panic!("expected the returned body, got {other:?}"),
                        }
                    }
                    returned.push((
                        r.reply_code,
                        r.exchange.to_string(),
                        r.routing_key.to_string(),
                        body,
                    ));
                }
                other => panic!("unexpected on the transactional channel: {other:?}"),
            }
        }
    }
}

#[tokio::test]
async fn a_tx_publish_is_routed_at_the_publish_not_the_commit() {
    // Found by difftest (seed 20261207001 program 14643): RabbitMQ routes a publish inside a
    // transaction when it arrives and keeps the routed queues with it; an exchange deleted
    // before tx.commit changes nothing: commit-ok, and the mandatory message, unroutable at
    // its publish, comes back 312 NO_ROUTE. The bundled broker routed at the commit and
    // closed the channel 404 there.
    let (broker, _conn, setup) = start_and_open().await;
    let x = common::unique("x.txroute");
    let mut tx = RawTx::open(&broker).await;
    declare_exchange(&setup, &x, lapin::ExchangeKind::Topic).await;
    tx.publish(&x, "a.b.c", true, b"lost").await;
    delete_exchange(&setup, &x).await;
    assert_eq!(
        tx.commit().await,
        vec![(312, x.clone(), "a.b.c".to_owned(), b"lost".to_vec())]
    );

    // Routed before its exchange went: delivered at the commit all the same.
    let q = declare_unique_queue(&setup, "q.txroute").await;
    declare_exchange(&setup, &x, lapin::ExchangeKind::Topic).await;
    bind(&setup, &q, &x, "a.#").await;
    tx.publish(&x, "a.b.c", true, b"kept").await;
    delete_exchange(&setup, &x).await;
    assert_eq!(tx.commit().await, Vec::new());
    assert_drains_to(&setup, &q, &["kept"]).await;
    delete_queues(&setup, &[&q]).await;
}

#[tokio::test]
async fn bindings_changed_before_a_tx_commit_do_not_reroute() {
    // As RabbitMQ 3.10: where a transaction's publish goes is decided at the publish. A
    // binding removed before the commit still gets it, one added does not, and a mandatory
    // publish unroutable at the publish is returned at the commit though a binding now
    // matches it.
    let (broker, _conn, setup) = start_and_open().await;
    let x = common::unique("x.txbind");
    declare_exchange(&setup, &x, lapin::ExchangeKind::Direct).await;
    let (q0, q1) = (common::unique("q.txbind0"), common::unique("q.txbind1"));
    declare_queue(&setup, &q0, FieldTable::default()).await;
    declare_queue(&setup, &q1, FieldTable::default()).await;
    bind(&setup, &q0, &x, "k").await;
    let mut tx = RawTx::open(&broker).await;
    tx.publish(&x, "k", true, b"to q0").await;
    tx.publish(&x, "j", true, b"unroutable").await;
    unbind(&setup, &q0, &x, "k").await;
    bind(&setup, &q1, &x, "k").await;
    bind(&setup, &q1, &x, "j").await;
    assert_eq!(
        tx.commit().await,
        vec![(312, x.clone(), "j".to_owned(), b"unroutable".to_vec())]
    );
    assert_drains_to(&setup, &q0, &["to q0"]).await;
    assert_eq!(message_count(&setup, &q1).await, 0, "q1");
    // Routed after the binding change: the new bindings apply.
    tx.publish(&x, "k", true, b"to q1").await;
    assert_eq!(tx.commit().await, Vec::new());
    assert_drains_to(&setup, &q1, &["to q1"]).await;
    assert_eq!(message_count(&setup, &q0).await, 0, "q0");
    delete_all(&setup, &[&q0, &q1], &[&x]).await;
}

#[tokio::test]
async fn a_queue_deleted_before_a_tx_commit_does_not_get_the_message() {
    // As RabbitMQ 3.10, which keeps the routed queue names with the message: at the commit a
    // deleted queue does not get it (the others do; mandatory with none left, it is returned
    // 312 NO_ROUTE), and a queue deleted and declared again under the same name does, even
    // with its binding gone (the bundled broker routed at the commit: q3 got nothing).
    let (broker, _conn, setup) = start_and_open().await;
    let x = common::unique("x.txgone");
    declare_exchange(&setup, &x, lapin::ExchangeKind::Fanout).await;
    let prefixes = ["q.txgone0", "q.txgone1", "q.txgone2", "q.txgone3"];
    let [q0, q1, q2, q3] = declare_unique_queues(&setup, prefixes).await;
    for q in [&q0, &q1, &q3] {
        bind(&setup, q, &x, "").await;
    }
    let mut tx = RawTx::open(&broker).await;
    tx.publish(&x, "", true, b"fanned").await;
    tx.publish("", &q0, true, b"to q0").await;
    tx.publish("", &q2, true, b"to q2").await;
    delete_queues(&setup, &[&q0]).await;
    delete_queues(&setup, &[&q2]).await;
    declare_queue(&setup, &q2, FieldTable::default()).await;
    delete_queues(&setup, &[&q3]).await;
    declare_queue(&setup, &q3, FieldTable::default()).await;
    assert_eq!(
        tx.commit().await,
        vec![(312, String::new(), q0.clone(), b"to q0".to_vec())]
    );
    assert_code(passive_queue(&setup, &q0).await, 404);
    let (_conn, setup) = open(&broker).await;
    assert_drains_to(&setup, &q1, &["fanned"]).await;
    assert_drains_to(&setup, &q2, &["to q2"]).await;
    assert_drains_to(&setup, &q3, &["fanned"]).await;
    delete_all(&setup, &[&q1, &q2, &q3], &[&x]).await;
}
