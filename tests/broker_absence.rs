//! What each method answers when what it names is absent: RabbitMQ 3.10's "idempotent on
//! absence" rules (unbind, delete and cancel of what does not exist answer `-ok`) and their
//! limits (ack of an unknown delivery tag, purge of a missing queue, another connection's
//! exclusive queue, the channel's "last declared queue" for an empty queue name). Each test
//! passes against RabbitMQ 3.10 (`.ci/run` runs this file against it), which is the
//! specification the bundled broker must meet; the table in issue 13's report lists every rule
//! compared.

mod amqp;
mod common;

use amqp::*;
use lapin::options::{
    BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicNackOptions, BasicQosOptions,
    BasicRejectOptions, ExchangeDeclareOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Connection, ExchangeKind};

/// Asserts that `ch` is still open: a synchronous method round-trips on it.
async fn assert_open(ch: &Channel) {
    within("basic.qos-ok", ch.basic_qos(0, BasicQosOptions::default()))
        .await
        .expect("the channel is still open");
}

/// Passive-declares an exchange on a fresh channel of `conn` (a 404 closes that channel only).
async fn exchange_exists(conn: &Connection, name: &str) -> bool {
    let ch = conn.create_channel().await.expect("probe channel");
    let res = passive_exchange(&ch, name).await;
    match res {
        Ok(()) => true,
        Err(e) if reply_code(&e) == Some(404) => false,
        Err(e) => panic!("unexpected error probing exchange {name}: {e}"),
    }
}

/// Polls until `name` no longer exists, within [`DEADLINE`].
async fn wait_exchange_gone(conn: &Connection, name: &str) {
    within("the auto-delete exchange to go", async {
        while exchange_exists(conn, name).await {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    })
    .await;
}

/// Declares `name` exclusive on `ch`.
async fn declare_exclusive(ch: &Channel, name: &str) {
    declare_queue_with(ch, name, QueueDeclareOptions::exclusive()).await;
}

/// Publishes one message and fetches it with manual ack; returns its delivery tag.
async fn one_unacked(ch: &Channel, queue: &str) -> u64 {
    declare_queue(ch, queue, FieldTable::default()).await;
    publish(ch, "", queue, b"m").await;
    wait_message_count(ch, queue, 1).await;
    get(ch, queue)
        .await
        .expect("the message")
        .delivery
        .delivery_tag
}

/// Unbinds through `unbind(destination, source)` for each pairing of `dst` or `no_dst` with
/// `src` or `no_src` (of each pair the first is declared, the second never was), requires
/// unbind-ok every time, and checks the channel `ch` stayed open. `kinds` names the
/// destination and the source in the failure messages.
async fn assert_unbind_ok_whatever_is_missing(
    ch: &Channel,
    kinds: [&str; 2],
    [dst, no_dst]: [&str; 2],
    [src, no_src]: [&str; 2],
    unbind: impl AsyncFn(&str, &str) -> lapin::Result<()>,
) {
    let [d, s] = kinds;
    for (destination, source, what) in [
        (dst, src, "a binding that was never made".to_owned()),
        (no_dst, src, format!("a missing {d}")),
        (dst, no_src, format!("a missing {s}")),
        (no_dst, no_src, format!("a missing {d} and {s}")),
    ] {
        unbind(destination, source)
            .await
            .unwrap_or_else(|e| panic!("unbind of {what} is unbind-ok, got {e}"));
    }
    assert_open(ch).await;
}

#[tokio::test]
async fn queue_unbind_of_a_missing_binding_queue_or_exchange_is_ok() {
    // Issue 13 item 7: RabbitMQ answers unbind-ok whatever is missing; Lepus used to close the
    // channel with 404 when the queue was missing.
    let (_broker, _conn, ch) = start_and_open().await;
    let (q, ex) = (common::unique("q.unbind"), common::unique("ex.unbind"));
    let (no_q, no_ex) = (common::unique("q.never"), common::unique("ex.never"));
    declare_queue(&ch, &q, FieldTable::default()).await;
    declare_exchange(&ch, &ex, ExchangeKind::Direct).await;
    let unbind = async |queue: &str, exchange: &str| try_unbind(&ch, queue, exchange, "k").await;
    let kinds = ["queue", "exchange"];
    assert_unbind_ok_whatever_is_missing(&ch, kinds, [&q, &no_q], [&ex, &no_ex], unbind).await;
    delete_queues(&ch, &[&q]).await;
    delete_exchange(&ch, &ex).await;
}

#[tokio::test]
async fn queue_unbind_from_the_default_exchange_is_403_even_for_a_missing_queue() {
    let (_broker, _conn, ch) = start_and_open().await;
    let q = common::unique("q.never");
    assert_code(try_unbind(&ch, &q, "", &q).await, 403);
}

#[tokio::test]
async fn queue_unbind_matches_the_binding_arguments_exactly() {
    let (_broker, conn, ch) = start_and_open().await;
    let pch = confirm_channel(&conn).await;
    let (q, ex) = (common::unique("q.hdr"), common::unique("ex.hdr"));
    declare_queue(&ch, &q, FieldTable::default()).await;
    declare_exchange(&ch, &ex, ExchangeKind::Headers).await;
    let args = || {
        table(vec![
            ("x-match", AMQPValue::LongString("any".into())),
            ("a", AMQPValue::LongString("1".into())),
        ])
    };
    bind_with(&ch, &q, &ex, "", args()).await;
    // Publishes a message the binding matches; the queue then holds `n` messages.
    let publish_and_expect = |n: u32| {
        let (pch, ch, ex, q) = (pch.clone(), ch.clone(), ex.clone(), q.clone());
        async move {
            let props = BasicProperties::default()
                .with_headers(table(vec![("a", AMQPValue::LongString("1".into()))]));
            let c = publish_confirmed(&pch, &ex, "", b"m", props).await;
            assert!(c.is_ack());
            wait_message_count(&ch, &q, n).await;
        }
    };
    publish_and_expect(1).await;
    // Without the arguments it names another binding, which does not exist: unbind-ok, and
    // the binding with arguments still routes.
    try_unbind(&ch, &q, &ex, "")
        .await
        .expect("unbind of a binding that does not exist");
    publish_and_expect(2).await;
    try_unbind_with(&ch, &q, &ex, "", args())
        .await
        .expect("unbind");
    // Unbound: the next message is not routed, the queue stays at 2.
    publish_and_expect(2).await;
    delete_all(&ch, &[&q], &[&ex]).await;
}

#[tokio::test]
async fn queue_unbind_of_the_last_binding_deletes_an_auto_delete_exchange() {
    let (_broker, conn, ch) = start_and_open().await;
    let (q, ex) = (common::unique("q.ad"), common::unique("ex.ad"));
    declare_queue(&ch, &q, FieldTable::default()).await;
    declare_auto_delete_exchange(&ch, &ex, ExchangeKind::Direct).await;
    bind(&ch, &q, &ex, "k").await;
    try_unbind(&ch, &q, &ex, "k").await.expect("unbind");
    wait_exchange_gone(&conn, &ex).await;
    delete_queues(&ch, &[&q]).await;
}

#[tokio::test]
async fn queue_unbind_on_another_connections_exclusive_queue_is_405_only_for_a_binding() {
    // RabbitMQ checks exclusivity only when the binding exists (`rabbit_binding:remove`).
    let (broker, _owner, och) = start_and_open().await;
    let q = common::unique("q.excl");
    declare_exclusive(&och, &q).await;
    bind(&och, &q, "amq.direct", "bound").await;
    let (other, ch) = open(&broker).await;
    try_unbind(&ch, &q, "amq.direct", "never-bound")
        .await
        .expect("no such binding: unbind-ok");
    assert_code(try_unbind(&ch, &q, "amq.direct", "bound").await, 405);
    // The binding is still there: the owner's publish through amq.direct arrives.
    let _ = other;
    publish(&och, "amq.direct", "bound", b"still bound").await;
    wait_message_count(&och, &q, 1).await;
}

#[tokio::test]
async fn queue_unbind_after_the_exclusive_owner_closed_is_ok() {
    let (broker, owner, och) = start_and_open().await;
    let q = common::unique("q.excl.gone");
    declare_exclusive(&och, &q).await;
    bind(&och, &q, "amq.direct", "k").await;
    owner.close(200, "bye".into()).await.expect("close owner");
    let (conn, ch) = open(&broker).await;
    wait_queue_gone(&conn, &q).await;
    try_unbind(&ch, &q, "amq.direct", "k")
        .await
        .expect("unbind of the gone exclusive queue");
    assert_open(&ch).await;
}

#[tokio::test]
async fn rpc_reply_queue_teardown_as_aio_pika_does_it_is_ok() {
    // aio_pika.patterns.RPC.close(): cancel the reply consumer (which auto-deletes the reply
    // queue, and with its last binding the auto-delete headers exchange), then unbind the
    // queue from that exchange, then delete the queue. Every step must answer -ok.
    let (_broker, conn, ch) = start_and_open().await;
    let dlx = common::unique("rpc.dlx");
    let q = declare_queue_with(&ch, "", auto_delete())
        .await
        .name()
        .to_string();
    declare_auto_delete_exchange(&ch, &dlx, ExchangeKind::Headers).await;
    let args = || {
        table(vec![
            ("From", AMQPValue::LongString(q.as_str().into())),
            ("x-match", AMQPValue::LongString("any".into())),
        ])
    };
    bind_with(&ch, &q, &dlx, "", args()).await;
    let no_ack_exclusive = BasicConsumeOptions {
        no_ack: true,
        exclusive: true,
        ..BasicConsumeOptions::default()
    };
    let consumer = try_consume_tagged(&ch, &q, "", no_ack_exclusive)
        .await
        .expect("consume");
    cancel(&ch, &consumer).await;
    wait_queue_gone(&conn, &q).await;
    wait_exchange_gone(&conn, &dlx).await;
    try_unbind_with(&ch, &q, &dlx, "", args())
        .await
        .expect("unbind of the gone reply queue from the gone exchange");
    let n = try_delete_queue(&ch, &q, QueueDeleteOptions::default())
        .await
        .expect("delete of the gone reply queue");
    assert_eq!(n, 0);
    assert_open(&ch).await;
}

#[tokio::test]
async fn exchange_unbind_of_a_missing_binding_source_or_destination_is_ok() {
    let (_broker, _conn, ch) = start_and_open().await;
    let (src, dst) = (common::unique("ex.src"), common::unique("ex.dst"));
    let (no_src, no_dst) = (common::unique("ex.never"), common::unique("ex.never"));
    declare_exchange(&ch, &src, ExchangeKind::Direct).await;
    declare_exchange(&ch, &dst, ExchangeKind::Direct).await;
    let unbind = async |d: &str, s: &str| try_unbind_exchange(&ch, d, s, "k").await;
    let kinds = ["destination exchange", "source exchange"];
    assert_unbind_ok_whatever_is_missing(&ch, kinds, [&dst, &no_dst], [&src, &no_src], unbind)
        .await;
    delete_all::<&str, _>(&ch, &[], &[&src, &dst]).await;
}

#[tokio::test]
async fn exchange_unbind_with_the_default_exchange_is_403() {
    let (_broker, conn, ch) = start_and_open().await;
    let x = common::unique("ex.never");
    assert_code(try_unbind_exchange(&ch, &x, "", "k").await, 403);
    let ch = channel(&conn).await;
    assert_code(try_unbind_exchange(&ch, "", &x, "k").await, 403);
}

#[tokio::test]
async fn queue_delete_is_idempotent_whatever_the_flags() {
    let (_broker, _conn, ch, q) = start_with_queue("q.twice").await;
    for _ in 0..2 {
        try_delete_queue(&ch, &q, QueueDeleteOptions::default())
            .await
            .expect("delete, then delete again");
    }
    let n = try_delete_queue(&ch, &q, delete_if(true, true))
        .await
        .expect("if-unused and if-empty on a missing queue");
    assert_eq!(n, 0);
    let nowait = QueueDeleteOptions {
        nowait: true,
        ..QueueDeleteOptions::default()
    };
    try_delete_queue(&ch, &q, nowait)
        .await
        .expect("nowait delete");
    assert_open(&ch).await;
}

#[tokio::test]
async fn queue_delete_if_empty_counts_only_ready_messages() {
    let (broker, _conn, ch) = start_and_open().await;
    let q = common::unique("q.unacked");
    one_unacked(&ch, &q).await;
    let (_c2, ch2) = open(&broker).await;
    try_delete_queue(&ch2, &q, delete_if(false, true))
        .await
        .expect("a queue whose only message is unacked is empty");
    assert_code(passive_queue(&ch2, &q).await, 404);
}

#[tokio::test]
async fn exchange_delete_of_a_missing_exchange_with_if_unused_is_ok() {
    let (_broker, _conn, ch) = start_and_open().await;
    let x = common::unique("ex.never");
    for nowait in [false, true] {
        let options = lapin::options::ExchangeDeleteOptions {
            if_unused: true,
            nowait,
        };
        ch.exchange_delete(x.as_str().into(), options)
            .await
            .expect("delete of a missing exchange");
    }
    assert_open(&ch).await;
}

#[tokio::test]
async fn exchange_delete_of_a_missing_amq_exchange_is_403() {
    let (_broker, _conn, ch) = start_and_open().await;
    let never = common::unique("amq.never");
    assert_code(try_delete_exchange(&ch, &never, false).await, 403);
}

#[tokio::test]
async fn exchange_delete_if_unused_ignores_bindings_to_the_exchange() {
    // "In use" means the exchange is the source of a binding; being a destination is not.
    let (_broker, _conn, ch) = start_and_open().await;
    let (src, dst) = (common::unique("ex.src"), common::unique("ex.dst"));
    declare_exchange(&ch, &src, ExchangeKind::Direct).await;
    declare_exchange(&ch, &dst, ExchangeKind::Direct).await;
    bind_exchange(&ch, &dst, &src, "k").await;
    try_delete_exchange(&ch, &dst, true)
        .await
        .expect("only a destination: not in use");
    delete_exchange(&ch, &src).await;
}

#[tokio::test]
async fn basic_cancel_of_an_unknown_tag_is_cancel_ok() {
    let (_broker, _conn, ch) = start_and_open().await;
    ch.basic_cancel("never-consumed".into(), BasicCancelOptions::default())
        .await
        .expect("cancel of an unknown tag");
    ch.basic_cancel("never-consumed".into(), BasicCancelOptions { nowait: true })
        .await
        .expect("nowait cancel of an unknown tag");
    let q = declare_unique_queue(&ch, "q.cancel").await;
    let c = consume(&ch, &q, false).await;
    for _ in 0..2 {
        ch.basic_cancel(c.tag(), BasicCancelOptions::default())
            .await
            .expect("cancel, then cancel again");
    }
    assert_open(&ch).await;
    delete_queues(&ch, &[&q]).await;
}

#[tokio::test]
async fn basic_cancel_of_another_channels_tag_leaves_that_consumer() {
    let (_broker, conn, a, q) = start_with_queue("q.cancel.other").await;
    let b = channel(&conn).await;
    let c = consume(&a, &q, false).await;
    b.basic_cancel(c.tag(), BasicCancelOptions::default())
        .await
        .expect("cancel-ok on the other channel");
    let info = passive_queue(&b, &q).await.expect("passive");
    assert_eq!(
        info.consumer_count(),
        1,
        "the consumer of channel a is untouched"
    );
    delete_queues(&a, &[&q]).await;
}

#[tokio::test]
async fn ack_or_nack_of_everything_with_nothing_outstanding_is_ok() {
    // delivery-tag 0 with multiple=true means "everything so far", which may be nothing.
    let (_broker, _conn, ch) = start_and_open().await;
    ch.basic_ack(0, BasicAckOptions { multiple: true })
        .await
        .expect("sent");
    ch.basic_nack(
        0,
        BasicNackOptions {
            multiple: true,
            requeue: true,
        },
    )
    .await
    .expect("sent");
    assert_open(&ch).await;
}

/// The ways to settle a delivery tag that is not outstanding, for the test below.
#[derive(Debug, Clone, Copy)]
enum BadSettle {
    AckTwice,
    AckMultipleAboveTheLastTag,
    AckTagZeroWithoutMultiple,
    NackUnknown,
    RejectUnknown,
    RejectTwice,
}

impl BadSettle {
    /// Settles wrongly on `ch`, where `tag` is the one outstanding delivery, and probes.
    async fn run(self, ch: &Channel, tag: u64) -> lapin::Result<lapin::Queue> {
        match self {
            Self::AckTwice => {
                ch.basic_ack(tag, BasicAckOptions::default()).await?;
                probe_after(ch, ch.basic_ack(tag, BasicAckOptions::default())).await
            }
            Self::AckMultipleAboveTheLastTag => {
                probe_after(
                    ch,
                    ch.basic_ack(tag + 5, BasicAckOptions { multiple: true }),
                )
                .await
            }
            Self::AckTagZeroWithoutMultiple => {
                probe_after(ch, ch.basic_ack(0, BasicAckOptions::default())).await
            }
            Self::NackUnknown => {
                probe_after(ch, ch.basic_nack(tag + 7, BasicNackOptions::default())).await
            }
            Self::RejectUnknown => {
                probe_after(ch, ch.basic_reject(tag + 7, BasicRejectOptions::default())).await
            }
            Self::RejectTwice => {
                ch.basic_reject(tag, BasicRejectOptions { requeue: false })
                    .await?;
                probe_after(ch, ch.basic_reject(tag, BasicRejectOptions::default())).await
            }
        }
    }
}

#[tokio::test]
async fn ack_nack_or_reject_of_a_tag_not_outstanding_is_406() {
    let (_broker, conn, _ch) = start_and_open().await;
    for case in [
        BadSettle::AckTwice,
        BadSettle::AckMultipleAboveTheLastTag,
        BadSettle::AckTagZeroWithoutMultiple,
        BadSettle::NackUnknown,
        BadSettle::RejectUnknown,
        BadSettle::RejectTwice,
    ] {
        // Each case on its own channel and queue: the 406 closes the channel.
        let ch = channel(&conn).await;
        let q = common::unique("q.tag");
        let tag = one_unacked(&ch, &q).await;
        let text = assert_code(case.run(&ch, tag).await, 406);
        assert!(text.contains("unknown delivery tag"), "{case:?}: {text}");
        let ch = channel(&conn).await;
        delete_queues(&ch, &[&q]).await;
    }
}

#[tokio::test]
async fn ack_of_a_no_ack_delivery_is_406() {
    let (_broker, _conn, ch, q) = start_with_queue("q.noack").await;
    publish(&ch, "", &q, b"m").await;
    wait_message_count(&ch, &q, 1).await;
    let m = get_eventually(&ch, &q).await;
    let res = probe_after(
        &ch,
        ch.basic_ack(m.delivery.delivery_tag, BasicAckOptions::default()),
    )
    .await;
    assert_code(res, 406);
}

#[tokio::test]
async fn ack_after_the_queue_was_deleted_is_ok() {
    let (broker, _conn, ch) = start_and_open().await;
    let q = common::unique("q.ack.deleted");
    let t = one_unacked(&ch, &q).await;
    let (_c2, ch2) = open(&broker).await;
    delete_queues(&ch2, &[&q]).await;
    ch.basic_ack(t, BasicAckOptions::default())
        .await
        .expect("sent");
    assert_open(&ch).await;
}

#[tokio::test]
async fn passive_declares_of_what_is_missing_or_reserved() {
    let (_broker, conn, _ch) = start_and_open().await;
    let passive_exchange = |name: String, kind: ExchangeKind| {
        let conn = &conn;
        async move {
            let options = ExchangeDeclareOptions {
                passive: true,
                durable: true,
                auto_delete: true,
                ..ExchangeDeclareOptions::default()
            };
            let ch = channel(conn).await;
            try_declare_exchange(&ch, &name, kind, options, FieldTable::default()).await
        }
    };
    // The default exchange cannot be named, even passively.
    assert_code(
        passive_exchange(String::new(), ExchangeKind::Direct).await,
        403,
    );
    // A missing `amq.` exchange or queue is simply missing.
    assert_code(
        passive_exchange(common::unique("amq.never"), ExchangeKind::Direct).await,
        404,
    );
    let ch = channel(&conn).await;
    assert_code(passive_queue(&ch, &common::unique("amq.never")).await, 404);
    // A passive declare checks existence only: type and flags are ignored.
    passive_exchange("amq.direct".to_owned(), ExchangeKind::Fanout)
        .await
        .expect("passive declare ignores the type");
}

#[tokio::test]
async fn another_connections_exclusive_queue_is_405_for_purge_get_and_bind() {
    let (broker, _owner, och) = start_and_open().await;
    let q = common::unique("q.excl");
    declare_exclusive(&och, &q).await;
    let conn = connect(&broker).await;
    assert_code(try_purge(&channel(&conn).await, &q).await, 405);
    assert_code(try_get(&channel(&conn).await, &q).await, 405);
    let ch = channel(&conn).await;
    let res = try_bind(&ch, &q, "amq.direct", "k", FieldTable::default()).await;
    assert_code(res, 405);
}

#[tokio::test]
async fn an_empty_queue_name_without_a_declared_queue_is_404() {
    // 0-9-1: an empty queue name means the channel's last declared queue; with none,
    // RabbitMQ's 404 "no previously declared queue". Lepus used to delete nothing and answer
    // delete-ok.
    let (_broker, conn, _ch) = start_and_open().await;
    let fresh = || channel(&conn);
    let no_args = FieldTable::default;
    let texts = [
        assert_code(
            try_delete_queue(&fresh().await, "", Default::default()).await,
            404,
        ),
        assert_code(try_purge(&fresh().await, "").await, 404),
        assert_code(
            try_bind(&fresh().await, "", "amq.direct", "k", no_args()).await,
            404,
        ),
        assert_code(try_unbind(&fresh().await, "", "amq.direct", "k").await, 404),
        assert_code(try_consume(&fresh().await, "").await, 404),
        assert_code(try_get(&fresh().await, "").await, 404),
    ];
    for text in texts {
        assert!(text.contains("no previously declared queue"), "{text}");
    }
}

#[tokio::test]
async fn an_empty_queue_name_means_the_last_queue_declared_on_the_channel() {
    let (_broker, conn, ch) = start_and_open().await;
    let q = declare_server_named(&ch).await.name().to_string();
    // Empty queue and routing key: bound with the queue's name as the key.
    try_bind(&ch, "", "amq.direct", "", FieldTable::default())
        .await
        .expect("bind ''");
    publish(&ch, "amq.direct", &q, b"one").await;
    wait_message_count(&ch, &q, 1).await;
    let m = get_body(&ch, "")
        .await
        .expect("the message routed through the binding");
    assert_eq!(m, b"one");
    try_unbind(&ch, "", "amq.direct", "")
        .await
        .expect("unbind ''");
    publish(&ch, "amq.direct", &q, b"dropped").await;
    publish(&ch, "", &q, b"two").await;
    wait_message_count(&ch, &q, 1).await;
    let n = try_purge(&ch, "").await.expect("purge ''");
    assert_eq!(n, 1, "only the message sent to the queue directly");
    let c = try_consume(&ch, "").await.expect("consume ''");
    assert_eq!(
        passive_queue(&ch, &q)
            .await
            .expect("passive")
            .consumer_count(),
        1
    );
    cancel(&ch, &c).await;
    // The shortcut is per channel.
    let other = channel(&conn).await;
    assert_code(try_purge(&other, "").await, 404);
    // A passive declare with an empty name is not expanded.
    let probe = channel(&conn).await;
    passive_queue(&probe, &q)
        .await
        .expect("passive declare sets the channel's last queue too");
    assert_code(passive_queue(&probe, "").await, 404);
    // Delete '' deletes it.
    try_delete_queue(&ch, "", QueueDeleteOptions::default())
        .await
        .expect("delete ''");
    assert_code(passive_queue(&ch, &q).await, 404);
}
