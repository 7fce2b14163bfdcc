//! The AMQP `queue` class against the test broker: declare (server-named, passive, durable,
//! exclusive, auto-delete), bind, unbind, purge, delete (if-unused, if-empty), and every error
//! reply those methods can give (403, 404, 405, 406). Each test passes against RabbitMQ 3.10,
//! which is the specification the bundled broker must meet.

mod amqp;
mod common;

use amqp::*;
use lapin::options::{BasicConsumeOptions, QueueDeclareOptions, QueueDeleteOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{Connection, ExchangeKind};

/// A queue.declare's flags and arguments.
type Declaration = (QueueDeclareOptions, FieldTable);

/// A plain declaration with `options` and no arguments.
fn flags(options: QueueDeclareOptions) -> Declaration {
    (options, FieldTable::default())
}

/// A plain declaration: not durable, no arguments.
fn plain() -> Declaration {
    flags(QueueDeclareOptions::default())
}

/// A durable declaration without arguments.
fn durable() -> Declaration {
    flags(QueueDeclareOptions::durable())
}

/// A plain (non-durable) declaration with `args`.
fn with_args(args: FieldTable) -> Declaration {
    (QueueDeclareOptions::default(), args)
}

/// Declares a fresh queue named from `prefix` as `first` (twice: the same declaration again is
/// fine), asserts that redeclaring it as `second` is refused with `code` (the channel closes),
/// and deletes it from a fresh channel.
async fn assert_redeclare_refused(
    conn: &Connection,
    prefix: &str,
    first: Declaration,
    second: Declaration,
    code: u16,
) {
    let name = common::unique(prefix);
    let ch = channel(conn).await;
    for _ in 0..2 {
        let (options, args) = first.clone();
        try_declare_queue(&ch, &name, options, args)
            .await
            .unwrap_or_else(|e| panic!("declare {name} as {first:?}: {e}"));
    }
    let (options, args) = second;
    assert_code(try_declare_queue(&ch, &name, options, args).await, code);
    delete_queues(&channel(conn).await, &[&name]).await;
}

#[tokio::test]
async fn server_named_queue_gets_an_amq_gen_name() {
    let (_broker, _conn, ch) = start_and_open().await;
    let q = declare_server_named(&ch).await;
    assert!(
        q.name().as_str().starts_with("amq.gen-"),
        "got {}",
        q.name()
    );
    // The name really designates the queue: it routes through the default exchange.
    publish(&ch, "", q.name().as_str(), b"x").await;
    wait_message_count(&ch, q.name().as_str(), 1).await;
    let q2 = declare_server_named(&ch).await;
    assert_ne!(q.name(), q2.name());
}

#[tokio::test]
async fn declare_ok_reports_message_and_consumer_counts() {
    let (broker, _conn, ch) = start_and_open().await;
    let name = common::unique("q.counts");
    let q = declare_queue(&ch, &name, FieldTable::default()).await;
    assert_eq!((q.message_count(), q.consumer_count()), (0, 0));
    fill(&ch, &name, 3).await;
    let (_other, other_ch) = open(&broker).await;
    let _consumer = consume(&other_ch, &name, false).await;
    let _ = within("deliveries drain", async {
        loop {
            let q = passive_queue(&ch, &name).await.expect("passive");
            if q.consumer_count() == 1 && q.message_count() == 0 {
                return q;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    })
    .await;
    delete_queues(&ch, &[&name]).await;
}

#[tokio::test]
async fn passive_declare_of_a_missing_queue_is_404() {
    let (_broker, conn) =
        assert_404_on_a_missing_queue(async |ch, q| passive_queue(ch, q).await).await;
    // A channel error closes only the channel: the connection keeps working.
    let ch2 = channel(&conn).await;
    declare_queue(&ch2, &common::unique("q.after"), FieldTable::default()).await;
}

#[tokio::test]
async fn passive_declare_of_an_existing_queue_ignores_flags() {
    let (_broker, _conn, ch, name) = start_with_queue("q.passive").await;
    // passive=true with durable=true must not complain about the flag mismatch.
    let passive_durable = QueueDeclareOptions {
        passive: true,
        durable: true,
        ..QueueDeclareOptions::default()
    };
    try_declare_queue(&ch, &name, passive_durable, FieldTable::default())
        .await
        .expect("passive declare ignores the other flags");
    delete_queues(&ch, &[&name]).await;
}

#[tokio::test]
async fn redeclare_with_different_durable_flag_is_406() {
    let (_broker, conn, _ch) = start_and_open().await;
    assert_redeclare_refused(&conn, "q.redeclare", plain(), durable(), 406).await;
}

#[tokio::test]
async fn redeclare_with_different_auto_delete_flag_is_406() {
    let (_broker, conn, _ch) = start_and_open().await;
    let auto_delete = flags(auto_delete());
    assert_redeclare_refused(&conn, "q.redeclare.ad", plain(), auto_delete, 406).await;
}

#[tokio::test]
async fn redeclare_with_different_arguments_is_406() {
    let (_broker, conn, _ch) = start_and_open().await;
    let ttl = |ms| with_args(table(vec![("x-message-ttl", AMQPValue::LongInt(ms))]));
    assert_redeclare_refused(&conn, "q.redeclare.args", ttl(60_000), ttl(30_000), 406).await;
}

#[tokio::test]
async fn an_explicit_default_argument_is_not_equivalent_to_none() {
    // RabbitMQ compares the declared arguments, not their effect: x-overflow=drop-head (the
    // default) on a queue declared without it is "inequivalent arg 'x-overflow'", 406, and
    // the other way round. Found by difftest (the bundled broker compared the effect).
    let broker = common::broker().await;
    let conn = connect(&broker).await;
    // The same for x-queue-mode, which the bundled broker did not compare at all (found by
    // difftest: "lazy" on a queue declared without it was declare-ok).
    let arg = |key: &str, value: &str| table(vec![(key, AMQPValue::LongString(value.into()))]);
    let drop_head = || arg("x-overflow", "drop-head");
    for (first, second) in [
        (FieldTable::default(), drop_head()),
        (drop_head(), FieldTable::default()),
        (FieldTable::default(), arg("x-queue-mode", "lazy")),
        (arg("x-queue-mode", "lazy"), FieldTable::default()),
        (arg("x-queue-mode", "default"), arg("x-queue-mode", "lazy")),
    ] {
        let (first, second) = (with_args(first), with_args(second));
        assert_redeclare_refused(&conn, "q.redeclare.default", first, second, 406).await;
    }
}

#[tokio::test]
async fn declaring_a_queue_with_the_reserved_amq_prefix_is_403() {
    let (_broker, _conn, ch) = start_and_open().await;
    let name = common::unique("amq.mine");
    let res = try_declare_queue(&ch, &name, Default::default(), FieldTable::default()).await;
    assert_code(res, 403);
}

#[tokio::test]
async fn exclusive_queue_is_locked_to_its_connection_405() {
    let (broker, _owner, ch) = start_and_open().await;
    let name = common::unique("q.exclusive");
    let exclusive = QueueDeclareOptions::exclusive();
    declare_queue_with(&ch, &name, exclusive).await;

    let (other, och) = open(&broker).await;
    // Consuming from another connection.
    let res = try_consume(&och, &name).await;
    assert_code(res, 405);
    // Passive declare from another connection.
    let och = channel(&other).await;
    assert_code(passive_queue(&och, &name).await, 405);
    // Redeclaring from another connection.
    let och = channel(&other).await;
    let res = try_declare_queue(&och, &name, exclusive, FieldTable::default()).await;
    assert_code(res, 405);
    // Deleting from another connection.
    let och = channel(&other).await;
    let res = try_delete_queue(&och, &name, QueueDeleteOptions::default()).await;
    assert_code(res, 405);
    // The owner still uses it.
    publish(&ch, "", &name, b"still mine").await;
    wait_message_count(&ch, &name, 1).await;
}

#[tokio::test]
async fn exclusive_queue_is_deleted_with_its_connection() {
    let (broker, owner, ch) = start_and_open().await;
    let name = common::unique("q.exclusive.gone");
    declare_queue_with(&ch, &name, QueueDeclareOptions::exclusive()).await;
    let watcher = connect(&broker).await;
    owner.close(200, "bye".into()).await.expect("close");
    wait_queue_gone(&watcher, &name).await;
}

#[tokio::test]
async fn auto_delete_queue_goes_after_its_last_consumer() {
    let (_broker, conn, ch) = start_and_open().await;
    let name = common::unique("q.autodelete");
    declare_queue_with(&ch, &name, auto_delete()).await;
    let c1 = consume(&ch, &name, true).await;
    let c2 = consume(&ch, &name, true).await;
    cancel(&ch, &c1).await;
    // One consumer left: the queue stays.
    let probe = channel(&conn).await;
    passive_queue(&probe, &name)
        .await
        .expect("queue survives while a consumer remains");
    cancel(&ch, &c2).await;
    wait_queue_gone(&conn, &name).await;
}

#[tokio::test]
async fn auto_delete_queue_without_consumers_ever_stays() {
    let (_broker, _conn, ch) = start_and_open().await;
    let name = common::unique("q.autodelete.never");
    declare_queue_with(&ch, &name, auto_delete()).await;
    tokio::time::sleep(QUIET).await;
    passive_queue(&ch, &name)
        .await
        .expect("never-consumed auto-delete queue is kept");
    delete_queues(&ch, &[&name]).await;
}

#[tokio::test]
async fn bind_and_unbind_control_routing() {
    let (_broker, _conn, ch) = start_and_open().await;
    let (ex, q) = bound_queue(&ch, ExchangeKind::Direct, "k", "ex.bind", "q.bind").await;
    // Binding twice is idempotent: still one copy per publish.
    bind(&ch, &q, &ex, "k").await;
    publish(&ch, &ex, "k", b"one").await;
    wait_message_count(&ch, &q, 1).await;
    unbind(&ch, &q, &ex, "k").await;
    publish(&ch, &ex, "k", b"two").await;
    publish(&ch, "", &q, b"three").await;
    assert_drains_to(&ch, &q, &["one", "three"]).await;
    // Unbinding a binding that does not exist is not an error (RabbitMQ errata: idempotent).
    try_unbind(&ch, &q, &ex, "never-bound")
        .await
        .expect("unbind of a missing binding is ok");
    delete_all(&ch, &[&q], &[&ex]).await;
}

#[tokio::test]
async fn bind_to_a_missing_exchange_is_404() {
    let (_broker, conn, ch, q) = start_with_queue("q.bind404").await;
    let missing_ex = common::unique("ex.missing");
    let res = try_bind(&ch, &q, &missing_ex, "k", FieldTable::default()).await;
    assert_code(res, 404);
    let ch = channel(&conn).await;
    let missing_q = common::unique("q.missing");
    let res = try_bind(&ch, &missing_q, "amq.direct", "k", FieldTable::default()).await;
    assert_code(res, 404);
    delete_queues(&channel(&conn).await, &[&q]).await;
}

#[tokio::test]
async fn binding_to_the_default_exchange_is_403() {
    let (_broker, conn, ch, q) = start_with_queue("q.bind.default").await;
    let res = try_bind(&ch, &q, "", "other", FieldTable::default()).await;
    assert_code(res, 403);
    let ch = channel(&conn).await;
    assert_code(try_unbind(&ch, &q, "", &q).await, 403);
    delete_queues(&channel(&conn).await, &[&q]).await;
}

#[tokio::test]
async fn purge_returns_the_number_of_messages_removed() {
    let (_broker, _conn, ch, q) = start_with_queue("q.purge").await;
    fill(&ch, &q, 5).await;
    // One message delivered and unacked is not ready, so purge does not count or remove it.
    let held = get(&ch, &q).await.expect("a message");
    assert_eq!(purge(&ch, &q).await, 4);
    assert_eq!(purge(&ch, &q).await, 0, "purge again");
    reject(&held, true).await;
    wait_message_count(&ch, &q, 1).await;
    delete_queues(&ch, &[&q]).await;
}

#[tokio::test]
async fn purge_of_a_missing_queue_is_404() {
    assert_404_on_a_missing_queue(async |ch, q| try_purge(ch, q).await).await;
}

#[tokio::test]
async fn delete_returns_the_message_count() {
    let (_broker, _conn, ch, q) = start_with_queue("q.delete").await;
    fill(&ch, &q, 3).await;
    let n = try_delete_queue(&ch, &q, QueueDeleteOptions::default())
        .await
        .expect("delete");
    assert_eq!(n, 3);
    assert_code(passive_queue(&ch, &q).await, 404);
}

#[tokio::test]
async fn delete_of_a_missing_queue_is_ok() {
    // RabbitMQ errata: queue.delete is idempotent; deleting a queue that does not exist
    // answers delete-ok with message-count 0.
    let (_broker, _conn, ch) = start_and_open().await;
    let never = common::unique("q.never");
    let n = try_delete_queue(&ch, &never, QueueDeleteOptions::default())
        .await
        .expect("idempotent delete");
    assert_eq!(n, 0);
}

#[tokio::test]
async fn delete_if_unused_with_a_consumer_is_406() {
    let (_broker, conn, ch, q) = start_with_queue("q.ifunused").await;
    let cch = channel(&conn).await;
    let consumer = consume(&cch, &q, false).await;
    let if_unused = delete_if(true, false);
    assert_code(try_delete_queue(&ch, &q, if_unused).await, 406);
    cancel(&cch, &consumer).await;
    let ch = channel(&conn).await;
    try_delete_queue(&ch, &q, if_unused)
        .await
        .expect("if-unused delete once unused");
}

#[tokio::test]
async fn delete_if_empty_with_messages_is_406() {
    let (_broker, conn, ch, q) = start_with_queue("q.ifempty").await;
    publish(&ch, "", &q, b"m").await;
    wait_message_count(&ch, &q, 1).await;
    let if_empty = delete_if(false, true);
    assert_code(try_delete_queue(&ch, &q, if_empty).await, 406);
    let ch = channel(&conn).await;
    assert_eq!(drain(&ch, &q).await, vec!["m"]);
    let n = try_delete_queue(&ch, &q, if_empty)
        .await
        .expect("if-empty delete once empty");
    assert_eq!(n, 0);
}

#[tokio::test]
async fn durable_queue_declare_is_reported_back_on_passive() {
    let (_broker, conn, _ch) = start_and_open().await;
    // Redeclaring without durable is a mismatch: proves the flag was recorded.
    assert_redeclare_refused(&conn, "q.durable", durable(), plain(), 406).await;
}

#[tokio::test]
async fn invalid_queue_arguments_are_406() {
    // RabbitMQ: "PRECONDITION_FAILED - invalid arg 'x-message-ttl' for queue '...' in vhost
    // '/': {unacceptable_type,longstr}" and the like.
    let broker = common::broker().await;
    let conn = connect(&broker).await;
    for (arg, value) in [
        ("x-message-ttl", AMQPValue::LongString("soon".into())),
        ("x-message-ttl", AMQPValue::LongInt(-1)),
        ("x-expires", AMQPValue::LongInt(0)),
        ("x-max-length", AMQPValue::LongString("ten".into())),
        ("x-max-length", AMQPValue::LongInt(-1)),
        ("x-overflow", AMQPValue::LongString("explode".into())),
        ("x-max-priority", AMQPValue::LongInt(-1)),
        // Found by difftest: RabbitMQ allows at most 255 priorities, and a dead-letter
        // routing key only with a dead-letter exchange.
        ("x-max-priority", AMQPValue::LongInt(256)),
        (
            "x-dead-letter-routing-key",
            AMQPValue::LongString("k".into()),
        ),
        ("x-dead-letter-exchange", AMQPValue::LongInt(5)),
        ("x-queue-mode", AMQPValue::LongString("eager".into())),
    ] {
        let ch = channel(&conn).await;
        let name = common::unique("q.badarg");
        let args = table(vec![(arg, value.clone())]);
        let res = try_declare_queue(&ch, &name, Default::default(), args).await;
        let text = match res {
            Ok(q) => panic!("{arg} = {value:?} accepted as {}", q.name()),
            Err(e) => e,
        };
        assert_eq!(reply_code(&text), Some(406), "{arg} = {value:?}: {text}");
    }
}

/// A queue.declare of `name` with `options` (no arguments).
async fn declare_with(
    ch: &lapin::Channel,
    name: &str,
    options: QueueDeclareOptions,
) -> lapin::Result<lapin::Queue> {
    try_declare_queue(ch, name, options, FieldTable::default()).await
}

// Moved from tests/core_features.rs (channel_errors_have_the_right_codes): 405, 406, 404, 403
// and 406 in a row on channels of one connection, which keeps working, as does another one.
#[tokio::test]
async fn channel_errors_have_the_right_codes() {
    let (broker, conn, ch) = start_and_open().await;
    let other = connect(&broker).await;
    let q = common::unique("core.err");
    declare_with(&ch, &q, QueueDeclareOptions::exclusive())
        .await
        .expect("exclusive declare");
    // 405: exclusive queue from another connection.
    let och = channel(&other).await;
    let res = try_consume(&och, &q).await;
    assert_code(res, 405);
    // 406: redeclare with different flags.
    let plain = declare_unique_queue(&ch, "core.err.plain").await;
    let durable = QueueDeclareOptions {
        durable: true,
        ..Default::default()
    };
    assert_code(declare_with(&ch, &plain, durable).await, 406);
    // 404: publish to a missing exchange (the channel closes).
    let ch = channel(&conn).await;
    publish(&ch, &common::unique("missing"), "k", b"x").await;
    let err = declare_with(&ch, "", QueueDeclareOptions::default())
        .await
        .expect_err("the channel is closed");
    assert_channel_closed_with(&err, 404);
    // 403: reserved names.
    let ch = channel(&conn).await;
    let res = ch
        .exchange_declare(
            "amq.mine".into(),
            ExchangeKind::Direct,
            Default::default(),
            FieldTable::default(),
        )
        .await;
    assert_code(res, 403);
    // 406: unknown delivery tag.
    let ch = channel(&conn).await;
    let _ = ch.basic_ack(42, Default::default()).await;
    let err = declare_with(&ch, "", QueueDeclareOptions::default())
        .await
        .expect_err("the channel is closed");
    assert_channel_closed_with(&err, 406);
    // Other channels and connections are unaffected.
    let ch = channel(&conn).await;
    passive_queue(&ch, &q)
        .await
        .expect("the queue is still there");
    assert!(other.status().connected());
    delete_queues(&ch, &[&plain]).await;
    other.close(200, "bye".into()).await.expect("close");
    finish(conn, broker).await;
}

// Moved from tests/core_features.rs (queue_delete_cancels_consumers_and_exclusive_queues_die_
// with_connection): the consumer's stream ends on delete; a server-named exclusive queue goes
// with its connection.
#[tokio::test]
async fn queue_delete_cancels_consumers_and_exclusive_queues_die_with_connection() {
    let (broker, conn, ch, q) = start_with_queue("core.cancel").await;
    let mut consumer = consume(&ch, &q, false).await;
    let ch2 = channel(&conn).await;
    delete_queues(&ch2, &[&q]).await;
    let end = within("the consumer ends", futures::StreamExt::next(&mut consumer)).await;
    assert!(end.is_none(), "{end:?}");

    let (owner, och) = open(&broker).await;
    let ex = declare_with(&och, "", QueueDeclareOptions::exclusive())
        .await
        .expect("exclusive declare");
    let name = ex.name().as_str().to_owned();
    assert!(name.starts_with("amq.gen-"), "{name}");
    owner.close(200, "bye".into()).await.expect("close");
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    assert_code(passive_queue(&ch2, &name).await, 404);
    finish(conn, broker).await;
}

// Moved from tests/core_lifecycle.rs (auto_delete_and_expires): an auto-delete queue goes when
// its only consumer cancels (the stream ends), an x-expires queue when unused for 200 ms.
#[tokio::test]
async fn auto_delete_and_expires() {
    let (broker, conn, ch) = start_and_open().await;
    let auto = common::unique("core.auto");
    declare_queue_with(&ch, &auto, auto_delete()).await;
    let mut consumer = try_consume_tagged(&ch, &auto, "c", BasicConsumeOptions::default())
        .await
        .expect("consume");
    ch.basic_cancel("c".into(), Default::default())
        .await
        .expect("cancel");
    assert!(futures::StreamExt::next(&mut consumer).await.is_none());
    let expiring = common::unique("core.expires");
    let expires = table(vec![("x-expires", AMQPValue::LongInt(200))]);
    declare_queue(&ch, &expiring, expires).await;
    tokio::time::sleep(std::time::Duration::from_millis(800)).await;
    for q in [&auto, &expiring] {
        let probe = channel(&conn).await;
        assert_code(passive_queue(&probe, q).await, 404);
    }
    finish(conn, broker).await;
}

#[tokio::test]
async fn redeclaring_with_a_different_exclusive_flag_is_405_even_on_the_same_connection() {
    // RabbitMQ checks exclusivity before the other flags, strictly: "RESOURCE_LOCKED - cannot
    // obtain exclusive access to locked queue ... or the exclusive property value does not
    // match that of the original declaration". Found by difftest (the bundled broker answered
    // 406 inequivalent arg 'exclusive').
    let broker = common::broker().await;
    let conn = connect(&broker).await;
    for first_exclusive in [true, false] {
        let name = common::unique("q.exclusiveflag");
        let ch = channel(&conn).await;
        let first = QueueDeclareOptions {
            exclusive: first_exclusive,
            ..QueueDeclareOptions::default()
        };
        declare_queue_with(&ch, &name, first).await;
        let second = QueueDeclareOptions {
            exclusive: !first_exclusive,
            // A durable flag that differs too: the exclusivity check comes first.
            durable: true,
            ..QueueDeclareOptions::default()
        };
        let res = try_declare_queue(&ch, &name, second, FieldTable::default()).await;
        assert_code(res, 405);
        // An argument that is invalid (x-expires 0) too: for an existing queue RabbitMQ
        // checks exclusivity first.
        let ch = channel(&conn).await;
        let expires_0 = table(vec![("x-expires", AMQPValue::LongInt(0))]);
        assert_code(try_declare_queue(&ch, &name, second, expires_0).await, 405);
        delete_queues(&channel(&conn).await, &[&name]).await;
    }
}

#[tokio::test]
async fn queue_bind_checks_the_exchange_then_the_arguments_then_exclusivity() {
    // RabbitMQ (rabbit_binding:add): a missing exchange is 404 even for another connection's
    // exclusive queue; a headers binding with an invalid x-match is 406 before the 405.
    // Found by difftest.
    let (broker, _owner, owner_ch) = start_and_open().await;
    let name = common::unique("q.bindorder");
    declare_queue_with(&owner_ch, &name, QueueDeclareOptions::exclusive()).await;
    let other = connect(&broker).await;
    let missing = common::unique("x.missing");
    let cases = [
        (missing.as_str(), FieldTable::default(), 404),
        (
            "amq.headers",
            table(vec![("x-match", AMQPValue::LongString("most".into()))]),
            406,
        ),
        (
            "amq.headers",
            table(vec![("x-match", AMQPValue::LongString("any".into()))]),
            405,
        ),
    ];
    for (exchange, args, code) in cases {
        let ch = channel(&other).await;
        assert_code(try_bind(&ch, &name, exchange, "", args).await, code);
    }
}

/// A quorum queue cannot be deleted `if-unused` or `if-empty`: RabbitMQ closes the connection
/// with 540, naming the flag (`if-unused` when both are set), even for an unused, empty queue;
/// a plain delete works. The bundled broker does the same, so that code tried on it does not
/// first fail on a RabbitMQ cluster.
#[tokio::test]
async fn a_conditional_delete_of_a_quorum_queue_is_540() {
    let broker = common::broker().await;
    let q = common::unique("q.quorum");
    let mut args = FieldTable::default();
    args.insert(
        "x-queue-type".into(),
        AMQPValue::LongString("quorum".into()),
    );
    for (if_unused, if_empty, flag) in [
        (true, false, "if-unused"),
        (false, true, "if-empty"),
        (true, true, "if-unused"),
    ] {
        let conn = connect(&broker).await;
        let ch = channel(&conn).await;
        try_declare_queue(&ch, &q, QueueDeclareOptions::durable(), args.clone())
            .await
            .expect("declare the quorum queue");
        let text = assert_code(
            try_delete_queue(&ch, &q, delete_if(if_unused, if_empty)).await,
            540,
        );
        assert!(
            text.contains(&format!(
                "queue.delete operations with {flag} flag set are not supported by quorum queues"
            )),
            "{text}"
        );
        // A connection error: the connection is closed, not only the channel.
        assert!(
            !conn.status().connected(),
            "540 closes the connection ({flag})"
        );
    }
    let (_conn, ch) = open(&broker).await;
    passive_queue(&ch, &q).await.expect("still there");
    try_delete_queue(&ch, &q, QueueDeleteOptions::default())
        .await
        .expect("a plain delete of a quorum queue");
    assert_code(passive_queue(&ch, &q).await, 404);
}

/// `x-queue-type` with the declaration `args` on top.
fn typed(queue_type: &str, args: Vec<(&str, AMQPValue)>) -> FieldTable {
    let mut t = table(args);
    t.insert(
        "x-queue-type".into(),
        AMQPValue::LongString(queue_type.into()),
    );
    t
}

/// A new queue's declaration as RabbitMQ 3.10 checks it per queue type: the type itself, each
/// type's arguments (another type's are 406), and the flags a quorum queue or stream refuses
/// (auto-delete, then exclusive, then non-durable), each with RabbitMQ's text (measured).
#[tokio::test]
async fn each_queue_type_refuses_what_rabbitmq_refuses_at_declare() {
    let broker = common::broker().await;
    let conn = connect(&broker).await;
    let exclusive = QueueDeclareOptions {
        exclusive: true,
        durable: true,
        ..QueueDeclareOptions::default()
    };
    let auto_delete_exclusive = QueueDeclareOptions {
        auto_delete: true,
        ..exclusive
    };
    let int = AMQPValue::LongInt;
    let cases: Vec<(QueueDeclareOptions, FieldTable, &str)> = vec![
        (
            QueueDeclareOptions::default(),
            typed("quorum", vec![]),
            "invalid property 'non-durable' for queue '{q}'",
        ),
        (
            exclusive,
            typed("quorum", vec![]),
            "invalid property 'exclusive-owner' for queue '{q}'",
        ),
        (
            auto_delete_exclusive,
            typed("stream", vec![]),
            "invalid property 'auto-delete' for queue '{q}'",
        ),
        (
            QueueDeclareOptions::durable(),
            typed("bogus", vec![]),
            "invalid arg 'x-queue-type' for queue '{q}' in vhost '/': \"unsupported queue type 'bogus'\"",
        ),
        (
            QueueDeclareOptions::durable(),
            table(vec![("x-queue-type", int(1))]),
            "invalid arg 'x-queue-type' for queue '{q}' in vhost '/': {unacceptable_type,signedint}",
        ),
        (
            QueueDeclareOptions::default(),
            typed("quorum", vec![("x-max-priority", int(5))]),
            "invalid arg 'x-max-priority' for queue '{q}' in vhost '/' of queue type rabbit_quorum_queue",
        ),
        (
            QueueDeclareOptions::durable(),
            typed("quorum", vec![("x-max-priority", int(300))]),
            "invalid arg 'x-max-priority' for queue '{q}' in vhost '/' of queue type rabbit_quorum_queue",
        ),
        (
            QueueDeclareOptions::durable(),
            typed("classic", vec![("x-max-priority", int(300))]),
            "invalid arg 'x-max-priority' for queue '{q}' in vhost '/': {max_value_exceeded,300}",
        ),
        (
            QueueDeclareOptions::durable(),
            table(vec![("x-delivery-limit", int(5))]),
            "invalid arg 'x-delivery-limit' for queue '{q}' in vhost '/' of queue type rabbit_classic_queue",
        ),
        (
            QueueDeclareOptions::durable(),
            typed("stream", vec![("x-max-length", int(5))]),
            "invalid arg 'x-max-length' for queue '{q}' in vhost '/' of queue type rabbit_stream_queue",
        ),
        (
            QueueDeclareOptions::durable(),
            typed("quorum", vec![("x-overflow", AMQPValue::LongString("x".into()))]),
            "invalid arg 'x-overflow' for queue '{q}' in vhost '/': invalid_overflow",
        ),
        (
            QueueDeclareOptions::durable(),
            table(vec![(
                "x-single-active-consumer",
                AMQPValue::LongString("yes".into()),
            )]),
            "invalid arg 'x-single-active-consumer' for queue '{q}' in vhost '/': {unacceptable_type,longstr}",
        ),
    ];
    for (options, args, expected) in cases {
        let ch = channel(&conn).await;
        let q = common::unique("q.typed");
        let text = assert_code(try_declare_queue(&ch, &q, options, args.clone()).await, 406);
        let expected = expected.replace("{q}", &q);
        assert!(text.contains(&expected), "{args:?}: {text}");
    }
    // Server-named quorum queues and streams are refused before anything else.
    for queue_type in ["quorum", "stream"] {
        let ch = channel(&conn).await;
        let text = assert_code(
            try_declare_queue(
                &ch,
                "",
                QueueDeclareOptions::durable(),
                typed(queue_type, vec![]),
            )
            .await,
            406,
        );
        assert!(
            text.contains(&format!(
                "Cannot declare a server-named queue for type rabbit_{queue_type}_queue"
            )),
            "{text}"
        );
    }
    // What each type takes: unknown arguments too.
    let ch = channel(&conn).await;
    let q = common::unique("q.quorum");
    let args = typed(
        "quorum",
        vec![
            ("x-delivery-limit", int(5)),
            (
                "x-overflow",
                AMQPValue::LongString("reject-publish-dlx".into()),
            ),
            ("x-foo", int(1)),
        ],
    );
    try_declare_queue(&ch, &q, QueueDeclareOptions::durable(), args)
        .await
        .expect("a quorum queue with quorum arguments");
    delete_queues(&ch, &[&q]).await;
}

/// A redeclare compares the arguments of the queue's type, and only those: an absent
/// `x-queue-type` is `classic`; a quorum queue ignores `x-max-priority` (even invalid) and
/// compares `x-delivery-limit`; a classic queue ignores `x-delivery-limit`.
#[tokio::test]
async fn a_redeclare_compares_the_arguments_of_the_queues_type() {
    let broker = common::broker().await;
    let conn = connect(&broker).await;
    let durable_with = |args| (QueueDeclareOptions::durable(), args);
    let int = AMQPValue::LongInt;
    let limited = || typed("quorum", vec![("x-delivery-limit", int(3))]);
    for (first, second) in [
        (durable(), durable_with(typed("quorum", vec![]))),
        (durable_with(limited()), durable()),
        (
            durable_with(limited()),
            durable_with(typed("classic", vec![])),
        ),
        (
            durable_with(limited()),
            durable_with(typed("quorum", vec![])),
        ),
        (
            durable_with(limited()),
            durable_with(typed("quorum", vec![("x-delivery-limit", int(4))])),
        ),
    ] {
        assert_redeclare_refused(&conn, "q.equiv", first, second, 406).await;
    }
    for (first, second) in [
        (
            durable(),
            typed("classic", vec![("x-delivery-limit", int(4))]),
        ),
        (
            durable_with(typed("classic", vec![])),
            FieldTable::default(),
        ),
        (
            durable_with(limited()),
            typed(
                "quorum",
                vec![
                    ("x-delivery-limit", AMQPValue::LongLongInt(3)),
                    ("x-max-priority", int(300)),
                ],
            ),
        ),
    ] {
        let ch = channel(&conn).await;
        let q = common::unique("q.equiv");
        let (options, args) = first;
        try_declare_queue(&ch, &q, options, args)
            .await
            .expect("declare");
        try_declare_queue(&ch, &q, QueueDeclareOptions::durable(), second)
            .await
            .expect("an equivalent redeclare");
        delete_queues(&ch, &[&q]).await;
    }
}

/// Consumers of a quorum queue, as RabbitMQ 3.10 has them: `exclusive` is ignored (other
/// consumers join, exclusive or not), and a consume under a non-zero global prefetch closes
/// the connection with 540.
#[tokio::test]
async fn a_quorum_queue_ignores_exclusive_and_refuses_global_qos() {
    let broker = common::broker().await;
    let conn = connect(&broker).await;
    let ch = channel(&conn).await;
    let q = common::unique("q.quorum");
    try_declare_queue(
        &ch,
        &q,
        QueueDeclareOptions::durable(),
        typed("quorum", vec![]),
    )
    .await
    .expect("declare the quorum queue");
    let exclusive = BasicConsumeOptions {
        exclusive: true,
        ..BasicConsumeOptions::default()
    };
    try_consume_tagged(&ch, &q, "first", exclusive)
        .await
        .expect("an exclusive consumer");
    try_consume_tagged(&channel(&conn).await, &q, "second", exclusive)
        .await
        .expect("a second exclusive consumer is not refused");
    try_consume(&channel(&conn).await, &q)
        .await
        .expect("nor a plain one");
    let (other, global) = open(&broker).await;
    qos(&global, 2, true).await;
    let text = assert_code(try_consume(&global, &q).await, 540);
    assert!(
        text.contains(&format!(
            "queue '{q}' in vhost '/' does not support global qos"
        )),
        "{text}"
    );
    assert!(!other.status().connected(), "540 closes the connection");
    delete_queues(&ch, &[&q]).await;
}
