//! Helpers shared by the lapin integration suites (`tests/broker_*.rs`): connecting, reading the
//! AMQP reply code out of a lapin error, and waiting for deliveries with bounded timeouts.
//!
//! Every wait here is bounded: a broker that never answers fails the test after
//! [`DEADLINE`] instead of hanging CI. "Nothing more arrives" checks use [`QUIET`], the only
//! place the suites wait for an absence.
#![allow(dead_code, unreachable_pub)]

use std::future::Future;
use std::time::Duration;

use futures::StreamExt;
use lapin::message::{BasicGetMessage, Delivery};
use lapin::options::{
    BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicGetOptions, BasicNackOptions,
    BasicPublishOptions, BasicQosOptions, BasicRejectOptions, ExchangeBindOptions,
    ExchangeDeclareOptions, ExchangeDeleteOptions, ExchangeUnbindOptions, QueueBindOptions,
    QueueDeclareOptions, QueueDeleteOptions, QueuePurgeOptions,
};
use lapin::types::FieldTable;
use lapin::{
    Acker, BasicProperties, Channel, Connection, ConnectionProperties, Consumer, ErrorKind,
    ExchangeKind,
};

use crate::common::TestBroker;

// The lapin shorthands the broker crate's integration tests use, one definition for both suites.
#[path = "../../broker/tests/common/amqp.rs"]
mod lapin_shared;

/// The longest any single expected event may take before the test fails.
pub const DEADLINE: Duration = Duration::from_secs(5);

/// How long a test watches for something that must *not* happen (an extra delivery).
pub const QUIET: Duration = Duration::from_millis(300);

/// Opens a lapin connection to the test broker.
pub async fn connect(broker: &TestBroker) -> Connection {
    connect_url(broker.url()).await
}

/// Opens a lapin connection to `url`.
pub async fn connect_url(url: &str) -> Connection {
    try_connect_url(url).await.expect("lapin connects")
}

/// Tries to open a lapin connection to `url` (within [`DEADLINE`]), returning lapin's answer,
/// for a login or an open the broker may refuse.
pub async fn try_connect_url(url: &str) -> lapin::Result<Connection> {
    within(
        "the connection attempt",
        Connection::connect(url, ConnectionProperties::default()),
    )
    .await
}

/// Opens a connection and one channel on it.
pub async fn open(broker: &TestBroker) -> (Connection, Channel) {
    let conn = connect(broker).await;
    let ch = conn.create_channel().await.expect("channel opens");
    (conn, ch)
}

/// The AMQP reply code carried by a lapin error (channel.close / connection.close), if any.
pub fn reply_code(err: &lapin::Error) -> Option<u16> {
    match err.kind() {
        ErrorKind::ProtocolError(amqp) => Some(amqp.get_id()),
        _ => None,
    }
}

/// Asserts that `res` failed with the AMQP reply `code`, and returns the error's text.
#[track_caller]
pub fn assert_code<T: std::fmt::Debug>(res: lapin::Result<T>, code: u16) -> String {
    match res {
        Ok(v) => panic!("expected AMQP error {code}, got Ok({v:?})"),
        Err(err) => {
            assert_eq!(
                reply_code(&err),
                Some(code),
                "expected AMQP error {code}, got {err}"
            );
            err.to_string()
        }
    }
}

/// Awaits `fut` for at most [`DEADLINE`], failing the test with `what` if it takes longer.
pub async fn within<F: Future>(what: &str, fut: F) -> F::Output {
    match tokio::time::timeout(DEADLINE, fut).await {
        Ok(out) => out,
        Err(_) => panic!("timed out after {DEADLINE:?} waiting for {what}"),
    }
}

/// Declares a server-named, exclusive queue (`amq.gen-...`).
pub async fn declare_server_named(ch: &Channel) -> lapin::Queue {
    lapin_shared::declare_exclusive(ch).await
}

/// Starts the test broker (see [`crate::common::broker`]) and opens a connection and a channel
/// on it. Keep the broker bound for the whole test: it is the broker's owner.
pub async fn start_and_open() -> (TestBroker, Connection, Channel) {
    let broker = crate::common::broker().await;
    let (conn, ch) = open(&broker).await;
    (broker, conn, ch)
}

/// [`start_and_open`], then `op` on a queue name that does not exist: asserts the broker
/// refuses it with 404 and returns the broker and the connection (its other channels stay
/// open).
pub async fn assert_404_on_a_missing_queue<T: std::fmt::Debug>(
    op: impl AsyncFnOnce(&Channel, &str) -> lapin::Result<T>,
) -> (TestBroker, Connection) {
    let (broker, conn, ch) = start_and_open().await;
    assert_code(op(&ch, &crate::common::unique("q.missing")).await, 404);
    (broker, conn)
}

/// [`start_and_open`], then [`declare_unique_queue`] from `prefix` on the channel: the broker,
/// the connection, the channel and the queue's name.
pub async fn start_with_queue(prefix: &str) -> (TestBroker, Connection, Channel, String) {
    let (broker, conn, ch) = start_and_open().await;
    let q = declare_unique_queue(&ch, prefix).await;
    (broker, conn, ch, q)
}

/// Declares a non-durable queue, without arguments, named by [`crate::common::unique`] from
/// `prefix`, and returns its name.
pub async fn declare_unique_queue(ch: &Channel, prefix: &str) -> String {
    let name = crate::common::unique(prefix);
    declare_queue(ch, &name, FieldTable::default()).await;
    name
}

/// Declares one non-durable queue, without arguments, per prefix of `prefixes` (each named by
/// [`crate::common::unique`]), and returns their names in the same order.
pub async fn declare_unique_queues<const N: usize>(
    ch: &Channel,
    prefixes: [&str; N],
) -> [String; N] {
    let names = prefixes.map(crate::common::unique);
    for name in &names {
        declare_queue(ch, name, FieldTable::default()).await;
    }
    names
}

/// Declares an exchange of `kind` and a queue, named by [`crate::common::unique`] from
/// `exchange_prefix` and `queue_prefix`, and binds the queue to the exchange with `key`:
/// returns (exchange, queue).
pub async fn bound_queue(
    ch: &Channel,
    kind: ExchangeKind,
    key: &str,
    exchange_prefix: &str,
    queue_prefix: &str,
) -> (String, String) {
    let ex = crate::common::unique(exchange_prefix);
    let q = crate::common::unique(queue_prefix);
    declare_exchange(ch, &ex, kind).await;
    declare_queue(ch, &q, FieldTable::default()).await;
    bind(ch, &q, &ex, key).await;
    (ex, q)
}

/// Declares a non-durable queue named `name` with `args`.
pub async fn declare_queue(ch: &Channel, name: &str, args: FieldTable) -> lapin::Queue {
    declare_queue_as(ch, name, QueueDeclareOptions::default(), args).await
}

/// Declares a queue named `name` with `options` and no arguments.
pub async fn declare_queue_with(
    ch: &Channel,
    name: &str,
    options: QueueDeclareOptions,
) -> lapin::Queue {
    declare_queue_as(ch, name, options, FieldTable::default()).await
}

/// Declares a queue named `name` with `options` and `args`; fails the test if refused.
async fn declare_queue_as(
    ch: &Channel,
    name: &str,
    options: QueueDeclareOptions,
    args: FieldTable,
) -> lapin::Queue {
    try_declare_queue(ch, name, options, args)
        .await
        .unwrap_or_else(|e| panic!("declare queue {name} ({options:?}): {e}"))
}

/// queue.declare of `name` with `options` and `args`, returning lapin's answer, for a declare
/// the broker may refuse.
pub async fn try_declare_queue(
    ch: &Channel,
    name: &str,
    options: QueueDeclareOptions,
    args: FieldTable,
) -> lapin::Result<lapin::Queue> {
    ch.queue_declare(name.into(), options, args).await
}

/// `QueueDeclareOptions` with only `auto_delete` set.
pub fn auto_delete() -> QueueDeclareOptions {
    QueueDeclareOptions {
        auto_delete: true,
        ..QueueDeclareOptions::default()
    }
}

/// Opens one more channel on `conn` (for a second consumer, or after a channel error closed
/// the previous one).
pub async fn channel(conn: &Connection) -> Channel {
    conn.create_channel().await.expect("channel opens")
}

/// Declares an exchange of `kind` (non-durable, not auto-delete).
pub async fn declare_exchange(ch: &Channel, name: &str, kind: ExchangeKind) {
    declare_exchange_with(ch, name, kind, Default::default(), FieldTable::default()).await;
}

/// Declares an exchange of `kind` with `options` and `args`.
pub async fn declare_exchange_with(
    ch: &Channel,
    name: &str,
    kind: ExchangeKind,
    options: ExchangeDeclareOptions,
    args: FieldTable,
) {
    try_declare_exchange(ch, name, kind, options, args)
        .await
        .unwrap_or_else(|e| panic!("declare exchange {name}: {e}"));
}

/// exchange.declare, returning lapin's answer, for a declare the broker may refuse.
pub async fn try_declare_exchange(
    ch: &Channel,
    name: &str,
    kind: ExchangeKind,
    options: ExchangeDeclareOptions,
    args: FieldTable,
) -> lapin::Result<()> {
    ch.exchange_declare(name.into(), kind, options, args).await
}

/// exchange.delete of `name` (`if_unused` as given), returning lapin's answer.
pub async fn try_delete_exchange(ch: &Channel, name: &str, if_unused: bool) -> lapin::Result<()> {
    let options = ExchangeDeleteOptions {
        if_unused,
        ..ExchangeDeleteOptions::default()
    };
    ch.exchange_delete(name.into(), options).await
}

/// exchange.bind of `destination` to `source` with `key` and `args`, returning lapin's answer.
pub async fn try_bind_exchange(
    ch: &Channel,
    destination: &str,
    source: &str,
    key: &str,
    args: FieldTable,
) -> lapin::Result<()> {
    let options = ExchangeBindOptions::default();
    ch.exchange_bind(destination.into(), source.into(), key.into(), options, args)
        .await
}

/// Binds exchange `destination` to `source` with `key` (no arguments).
pub async fn bind_exchange(ch: &Channel, destination: &str, source: &str, key: &str) {
    try_bind_exchange(ch, destination, source, key, FieldTable::default())
        .await
        .unwrap_or_else(|e| panic!("bind exchange {destination} to {source} with {key}: {e}"));
}

/// exchange.unbind of `destination` from `source` for `key`, returning lapin's answer.
pub async fn try_unbind_exchange(
    ch: &Channel,
    destination: &str,
    source: &str,
    key: &str,
) -> lapin::Result<()> {
    let (options, args) = (ExchangeUnbindOptions::default(), FieldTable::default());
    ch.exchange_unbind(destination.into(), source.into(), key.into(), options, args)
        .await
}

/// The flags of an exchange.declare that is not passive.
#[derive(Clone, Copy, Default)]
pub struct ExchangeFlags {
    /// Survives a broker restart.
    pub durable: bool,
    /// Deleted when its last binding (as a source) goes.
    pub auto_delete: bool,
    /// Clients may not publish to it; only exchange-to-exchange bindings reach it.
    pub internal: bool,
}

/// Declares an exchange of `kind` with `flags` and no arguments.
pub async fn declare_flagged_exchange(
    ch: &Channel,
    name: &str,
    kind: ExchangeKind,
    flags: ExchangeFlags,
) {
    let options = ExchangeDeclareOptions {
        durable: flags.durable,
        auto_delete: flags.auto_delete,
        internal: flags.internal,
        ..ExchangeDeclareOptions::default()
    };
    declare_exchange_with(ch, name, kind, options, FieldTable::default()).await;
}

/// Declares a durable exchange of `kind` (no arguments).
pub async fn declare_durable_exchange(ch: &Channel, name: &str, kind: ExchangeKind) {
    let durable = ExchangeFlags {
        durable: true,
        ..ExchangeFlags::default()
    };
    declare_flagged_exchange(ch, name, kind, durable).await;
}

/// Declares an internal exchange of `kind` (one a client may not publish to).
pub async fn declare_internal_exchange(ch: &Channel, name: &str, kind: ExchangeKind) {
    let internal = ExchangeFlags {
        internal: true,
        ..ExchangeFlags::default()
    };
    declare_flagged_exchange(ch, name, kind, internal).await;
}

/// Declares an auto-delete exchange of `kind` (deleted when its last binding goes).
pub async fn declare_auto_delete_exchange(ch: &Channel, name: &str, kind: ExchangeKind) {
    let auto_delete = ExchangeFlags {
        auto_delete: true,
        ..ExchangeFlags::default()
    };
    declare_flagged_exchange(ch, name, kind, auto_delete).await;
}

/// Passive-declares exchange `name` (as a direct exchange), returning the error if it does not
/// exist.
pub async fn passive_exchange(ch: &Channel, name: &str) -> lapin::Result<()> {
    passive_exchange_as(ch, name, ExchangeKind::Direct).await
}

/// Passive-declares exchange `name` naming `kind` (which a passive declare does not check),
/// returning the error if it does not exist.
pub async fn passive_exchange_as(
    ch: &Channel,
    name: &str,
    kind: ExchangeKind,
) -> lapin::Result<()> {
    let options = ExchangeDeclareOptions {
        passive: true,
        ..ExchangeDeclareOptions::default()
    };
    try_declare_exchange(ch, name, kind, options, FieldTable::default()).await
}

/// Declares a durable queue named `name` (no arguments).
pub async fn declare_durable_queue(ch: &Channel, name: &str) -> lapin::Queue {
    let options = QueueDeclareOptions {
        durable: true,
        ..QueueDeclareOptions::default()
    };
    ch.queue_declare(name.into(), options, FieldTable::default())
        .await
        .unwrap_or_else(|e| panic!("declare durable queue {name}: {e}"))
}

/// Binds `queue` to `exchange` with `key`.
pub async fn bind(ch: &Channel, queue: &str, exchange: &str, key: &str) {
    bind_with(ch, queue, exchange, key, FieldTable::default()).await;
}

/// Binds `queue` to `exchange` with `key` and binding arguments `args`.
pub async fn bind_with(ch: &Channel, queue: &str, exchange: &str, key: &str, args: FieldTable) {
    try_bind(ch, queue, exchange, key, args)
        .await
        .unwrap_or_else(|e| panic!("bind {queue} to {exchange} with {key}: {e}"));
}

/// queue.bind, returning lapin's answer, for a bind the broker may refuse.
pub async fn try_bind(
    ch: &Channel,
    queue: &str,
    exchange: &str,
    key: &str,
    args: FieldTable,
) -> lapin::Result<()> {
    let options = QueueBindOptions::default();
    ch.queue_bind(queue.into(), exchange.into(), key.into(), options, args)
        .await
}

/// queue.unbind (no binding arguments), returning lapin's answer.
pub async fn try_unbind(ch: &Channel, queue: &str, exchange: &str, key: &str) -> lapin::Result<()> {
    try_unbind_with(ch, queue, exchange, key, FieldTable::default()).await
}

/// queue.unbind with binding arguments `args`, returning lapin's answer.
pub async fn try_unbind_with(
    ch: &Channel,
    queue: &str,
    exchange: &str,
    key: &str,
    args: FieldTable,
) -> lapin::Result<()> {
    ch.queue_unbind(queue.into(), exchange.into(), key.into(), args)
        .await
}

/// Unbinds `queue` from `exchange` for `key` (no binding arguments).
pub async fn unbind(ch: &Channel, queue: &str, exchange: &str, key: &str) {
    try_unbind(ch, queue, exchange, key)
        .await
        .unwrap_or_else(|e| panic!("unbind {queue} from {exchange} for {key}: {e}"));
}

/// Publishes `body` (no confirm wait) with default properties.
pub async fn publish(ch: &Channel, exchange: &str, key: &str, body: &[u8]) {
    publish_with(ch, exchange, key, body, BasicProperties::default()).await;
}

/// Publishes `m{i}` for each `i` of `range` to `queue` through the default exchange.
pub async fn publish_numbered(ch: &Channel, queue: &str, range: std::ops::Range<usize>) {
    for i in range {
        publish(ch, "", queue, format!("m{i}").as_bytes()).await;
    }
}

/// Publishes `m0`..`m{n-1}` to `queue` ([`publish_numbered`]) and waits until it holds `n`
/// messages.
pub async fn fill(ch: &Channel, queue: &str, n: usize) {
    publish_numbered(ch, queue, 0..n).await;
    wait_message_count(ch, queue, n as u32).await;
}

/// Publishes `body` with `props`.
pub async fn publish_with(
    ch: &Channel,
    exchange: &str,
    key: &str,
    body: &[u8],
    props: BasicProperties,
) {
    // Not waiting for the publisher confirm (without confirm mode there is none to wait for).
    let options = BasicPublishOptions::default();
    drop(send_publish(ch, exchange, key, options, body, props).await);
}

/// Sends basic.publish with `options`; returns lapin's publisher confirm (a real one on a
/// confirm channel).
async fn send_publish(
    ch: &Channel,
    exchange: &str,
    key: &str,
    options: BasicPublishOptions,
    body: &[u8],
    props: BasicProperties,
) -> impl Future<Output = lapin::Result<lapin::Confirmation>> {
    ch.basic_publish(exchange.into(), key.into(), options, body, props)
        .await
        .expect("basic.publish is sent")
}

/// `BasicPublishOptions` with `mandatory` set: an unroutable message comes back as basic.return.
pub fn mandatory() -> BasicPublishOptions {
    BasicPublishOptions {
        mandatory: true,
        ..BasicPublishOptions::default()
    }
}

/// Publishes `body` with `options` (mandatory, immediate) and `props` on a confirm channel and
/// returns the confirm's outcome within [`DEADLINE`]: the confirm (with a basic.return's
/// message if one came back) or the error the broker closed the channel or connection with.
pub async fn publish_flagged(
    ch: &Channel,
    exchange: &str,
    key: &str,
    options: BasicPublishOptions,
    body: &[u8],
    props: BasicProperties,
) -> lapin::Result<lapin::Confirmation> {
    let confirm = send_publish(ch, exchange, key, options, body, props).await;
    within("the confirm or the error", confirm).await
}

/// Starts a consumer with a server-generated tag.
pub async fn consume(ch: &Channel, queue: &str, no_ack: bool) -> Consumer {
    let options = BasicConsumeOptions {
        no_ack,
        ..BasicConsumeOptions::default()
    };
    try_consume_with(ch, queue, options)
        .await
        .unwrap_or_else(|e| panic!("consume {queue}: {e}"))
}

/// Starts a consumer of `queue` tagged `tag` (empty: server-generated) with `options`, and
/// returns lapin's answer.
pub async fn try_consume_tagged(
    ch: &Channel,
    queue: &str,
    tag: &str,
    options: BasicConsumeOptions,
) -> lapin::Result<Consumer> {
    ch.basic_consume(queue.into(), tag.into(), options, FieldTable::default())
        .await
}

/// Cancels `consumer` (basic.cancel on `ch`, the channel it consumes on).
pub async fn cancel(ch: &Channel, consumer: &Consumer) {
    ch.basic_cancel(consumer.tag(), BasicCancelOptions::default())
        .await
        .unwrap_or_else(|e| panic!("cancel {}: {e}", consumer.tag()));
}

/// basic.qos: `prefetch` messages per consumer (`global` false) or per channel (true).
pub async fn qos(ch: &Channel, prefetch: u16, global: bool) {
    ch.basic_qos(prefetch, BasicQosOptions { global })
        .await
        .expect("basic.qos");
}

/// Acks one delivery (a [`Delivery`] or, through `Deref`, a basic.get message).
pub async fn ack(delivery: &Acker) {
    delivery.ack(BasicAckOptions::default()).await.expect("ack");
}

/// Nacks a delivery (and with `multiple` every earlier unacked one), requeueing or dropping.
pub async fn nack(delivery: &Acker, multiple: bool, requeue: bool) {
    let options = BasicNackOptions { multiple, requeue };
    delivery.nack(options).await.expect("nack");
}

/// Rejects one delivery, requeueing or dropping (dead-lettering) it.
pub async fn reject(delivery: &Acker, requeue: bool) {
    let options = BasicRejectOptions { requeue };
    delivery.reject(options).await.expect("reject");
}

/// Starts a consumer with default options (acks, not exclusive) and returns lapin's answer,
/// for a consume the broker may refuse.
pub async fn try_consume(ch: &Channel, queue: &str) -> lapin::Result<Consumer> {
    try_consume_with(ch, queue, BasicConsumeOptions::default()).await
}

/// Starts a consumer of `queue` with `options` and a server-generated tag.
async fn try_consume_with(
    ch: &Channel,
    queue: &str,
    options: BasicConsumeOptions,
) -> lapin::Result<Consumer> {
    try_consume_tagged(ch, queue, "", options).await
}

/// The consumer's next delivery; fails the test after [`DEADLINE`] or if the consumer ends.
pub async fn next(consumer: &mut Consumer) -> Delivery {
    within("a delivery", consumer.next())
        .await
        .expect("consumer still open")
        .expect("delivery without error")
}

/// Asserts that no delivery arrives on `consumer` during [`QUIET`].
pub async fn assert_quiet(consumer: &mut Consumer) {
    if let Ok(item) = tokio::time::timeout(QUIET, consumer.next()).await {
        match item {
            Some(Ok(d)) => panic!("unexpected delivery {:?}", String::from_utf8_lossy(&d.data)),
            Some(Err(e)) => panic!("unexpected consumer error {e}"),
            None => panic!("consumer ended unexpectedly"),
        }
    }
}

/// Collects `n` deliveries' bodies, acking none.
pub async fn take(consumer: &mut Consumer, n: usize) -> Vec<Delivery> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        out.push(next(consumer).await);
    }
    out
}

/// basic.get with manual ack.
pub async fn get(ch: &Channel, queue: &str) -> Option<BasicGetMessage> {
    try_get(ch, queue).await.expect("basic.get")
}

/// basic.get with manual ack, returning lapin's answer, for a get the broker may refuse.
pub async fn try_get(ch: &Channel, queue: &str) -> lapin::Result<Option<BasicGetMessage>> {
    ch.basic_get(queue.into(), BasicGetOptions { no_ack: false })
        .await
}

/// basic.get with no-ack; returns just the body.
pub async fn get_body(ch: &Channel, queue: &str) -> Option<Vec<u8>> {
    ch.basic_get(queue.into(), BasicGetOptions { no_ack: true })
        .await
        .expect("basic.get")
        .map(|m| m.delivery.data)
}

/// Drains `queue` with no-ack basic.get and returns the bodies as strings, in order.
pub async fn drain(ch: &Channel, queue: &str) -> Vec<String> {
    let mut out = Vec::new();
    while let Some(body) = get_body(ch, queue).await {
        out.push(String::from_utf8_lossy(&body).into_owned());
    }
    out
}

/// Waits until `queue` holds `expected.len()` messages, then drains it (no-ack basic.get) and
/// asserts that the bodies are `expected`, in order.
pub async fn assert_drains_to(ch: &Channel, queue: &str, expected: &[&str]) {
    wait_message_count(ch, queue, expected.len() as u32).await;
    assert_eq!(drain(ch, queue).await, expected, "the messages of {queue}");
}

/// The number of ready messages in `queue` now (passive declare); fails the test if the queue
/// does not exist. To wait for a count, use [`wait_message_count`].
pub async fn message_count(ch: &Channel, queue: &str) -> u32 {
    passive_queue(ch, queue)
        .await
        .unwrap_or_else(|e| panic!("passive declare of {queue}: {e}"))
        .message_count()
}

/// Polls `queue`'s message count (passive declare) until it equals `n`, within [`DEADLINE`].
pub async fn wait_message_count(ch: &Channel, queue: &str, n: u32) {
    let start = tokio::time::Instant::now();
    loop {
        let q = passive_queue(ch, queue).await.expect("passive declare");
        if q.message_count() == n {
            return;
        }
        if start.elapsed() > DEADLINE {
            panic!(
                "queue {queue} has {} messages, expected {n}",
                q.message_count()
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Passive-declares `queue`, returning the error if it does not exist.
pub async fn passive_queue(ch: &Channel, queue: &str) -> lapin::Result<lapin::Queue> {
    lapin_shared::passive_queue(ch, queue).await
}

/// Polls until the queue no longer exists (passive declare answers 404), within [`DEADLINE`].
/// Each probe uses a fresh channel because the 404 closes the channel.
pub async fn wait_queue_gone(conn: &Connection, queue: &str) {
    wait_queue_gone_every(conn, queue, Duration::from_millis(20)).await;
}

/// Like [`wait_queue_gone`], probing every `interval`. A passive declare counts as a use of
/// the queue (it resets `x-expires`), so an `x-expires` test must probe less often than that.
pub async fn wait_queue_gone_every(conn: &Connection, queue: &str, interval: Duration) {
    let start = tokio::time::Instant::now();
    loop {
        let ch = conn.create_channel().await.expect("probe channel");
        match passive_queue(&ch, queue).await {
            Err(e) if reply_code(&e) == Some(404) => return,
            Err(e) => panic!("unexpected error probing {queue}: {e}"),
            Ok(_) => {
                let _ = ch.close(200, "probe".into()).await;
            }
        }
        if start.elapsed() > DEADLINE {
            panic!("queue {queue} still exists after {DEADLINE:?}");
        }
        tokio::time::sleep(interval).await;
    }
}

/// Bodies of deliveries as strings.
pub fn bodies(ds: &[Delivery]) -> Vec<String> {
    ds.iter()
        .map(|d| String::from_utf8_lossy(&d.data).into_owned())
        .collect()
}

/// A long-string (`S`) field value: the shorthand for string arguments and headers.
pub fn s(v: &str) -> lapin::types::AMQPValue {
    lapin::types::AMQPValue::LongString(v.into())
}

/// A `FieldTable` from `(key, value)` pairs.
pub fn table(pairs: Vec<(&str, lapin::types::AMQPValue)>) -> FieldTable {
    let mut t = FieldTable::default();
    for (k, v) in pairs {
        t.insert(k.into(), v);
    }
    t
}

/// Opens a channel in confirm mode: a publish awaited with [`publish_confirmed`] has been
/// routed and enqueued by the broker, so a following basic.get sees it.
pub async fn confirm_channel(conn: &Connection) -> Channel {
    let ch = conn.create_channel().await.expect("channel opens");
    ch.confirm_select(Default::default())
        .await
        .expect("confirm.select");
    ch
}

/// Publishes on a confirm channel and waits for the broker's confirmation.
pub async fn publish_confirmed(
    ch: &Channel,
    exchange: &str,
    key: &str,
    body: &[u8],
    props: BasicProperties,
) -> lapin::Confirmation {
    let options = BasicPublishOptions::default();
    let confirm = send_publish(ch, exchange, key, options, body, props).await;
    within("a publisher confirm", confirm)
        .await
        .expect("publisher confirm")
}

/// Runs `op`, a method the server does not answer (basic.ack, basic.reject, ...), together
/// with a synchronous probe (an exclusive server-named queue.declare) queued right behind it,
/// and returns the probe's result. If `op` makes the server close the channel, the probe fails
/// with that channel.close's reply code.
///
/// Both frames are queued in the same poll (lapin queues a method's frames synchronously on
/// the first poll), so the probe is always on the wire before the server's channel.close can
/// arrive; awaiting `op` first and probing afterwards would race with the close and get
/// lapin's "invalid channel state: Closing" instead of the reply code.
///
/// Not for basic.publish: lapin sends content frames from a queue of lower priority than
/// method frames, so the probe could overtake the publish. Publish on a confirm channel and
/// read the error from the confirm instead ([`publish_error`]).
pub async fn probe_after<F, T>(ch: &Channel, op: F) -> lapin::Result<lapin::Queue>
where
    F: Future<Output = lapin::Result<T>>,
{
    let probe = ch.queue_declare(
        "".into(),
        QueueDeclareOptions::exclusive(),
        FieldTable::default(),
    );
    let (_, res) = tokio::join!(op, probe);
    res
}

/// Publishes on a fresh confirm channel of `conn` and returns the confirm's outcome: a publish
/// the server refuses closes the channel, and lapin fails the pending confirm with that
/// channel.close's reply code.
pub async fn publish_error(
    conn: &Connection,
    exchange: &str,
    key: &str,
    props: BasicProperties,
) -> lapin::Result<lapin::Confirmation> {
    let ch = confirm_channel(conn).await;
    let confirm = ch
        .basic_publish(
            exchange.into(),
            key.into(),
            BasicPublishOptions::default(),
            b"refused",
            props,
        )
        .await?;
    within("the confirm or the channel error", confirm).await
}

/// Asserts that the broker closed the channel with `expected`, for a method without a reply
/// (basic.publish, basic.ack): lapin returns the channel.close as the error of the next call
/// or, when the close overtook that call, a closing-channel error; either shows the broker
/// closed the channel.
#[track_caller]
pub fn assert_channel_closed_with(err: &lapin::Error, expected: u16) {
    match err.kind() {
        ErrorKind::ProtocolError(e) => assert_eq!(e.get_id(), expected, "{err}"),
        ErrorKind::InvalidChannelState(..) => {}
        other => panic!("expected channel.close {expected}, got {other:?}"),
    }
}

/// basic.get (no-ack) until a message arrives, within [`DEADLINE`].
pub async fn get_eventually(ch: &Channel, queue: &str) -> BasicGetMessage {
    within("a message to get", async {
        loop {
            if let Some(m) = ch
                .basic_get(queue.into(), BasicGetOptions { no_ack: true })
                .await
                .expect("basic.get")
            {
                return m;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
}

/// Like [`drain`], but keeps asking until `queue` has been empty three times 30 ms apart, for
/// publishes made without confirms that may still be on their way.
pub async fn drain_settled(ch: &Channel, queue: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut empty = 0;
    while empty < 3 {
        match get_body(ch, queue).await {
            Some(body) => out.push(String::from_utf8_lossy(&body).into_owned()),
            None => {
                empty += 1;
                tokio::time::sleep(Duration::from_millis(30)).await;
            }
        }
    }
    out
}

/// Deletes each queue of `queues` (which must exist).
pub async fn delete_queues<S: AsRef<str>>(ch: &Channel, queues: &[S]) {
    for q in queues {
        let q = q.as_ref();
        try_delete_queue(ch, q, QueueDeleteOptions::default())
            .await
            .unwrap_or_else(|e| panic!("delete queue {q}: {e}"));
    }
}

/// queue.delete of `queue` with `options`: the number of messages deleted, or the refusal.
pub async fn try_delete_queue(
    ch: &Channel,
    queue: &str,
    options: QueueDeleteOptions,
) -> lapin::Result<u32> {
    ch.queue_delete(queue.into(), options).await
}

/// `QueueDeleteOptions` with `if_unused` and `if_empty` as given.
pub fn delete_if(if_unused: bool, if_empty: bool) -> QueueDeleteOptions {
    QueueDeleteOptions {
        if_unused,
        if_empty,
        ..QueueDeleteOptions::default()
    }
}

/// queue.purge of `queue`: the number of messages purged, or the refusal.
pub async fn try_purge(ch: &Channel, queue: &str) -> lapin::Result<u32> {
    ch.queue_purge(queue.into(), QueuePurgeOptions::default())
        .await
}

/// Purges `queue` (which must exist) and returns how many messages it removed.
pub async fn purge(ch: &Channel, queue: &str) -> u32 {
    try_purge(ch, queue)
        .await
        .unwrap_or_else(|e| panic!("purge {queue}: {e}"))
}

/// Deletes `queues`, then `exchanges` (all of which must exist): a test's clean-up.
pub async fn delete_all<Q: AsRef<str>, E: AsRef<str>>(ch: &Channel, queues: &[Q], exchanges: &[E]) {
    delete_queues(ch, queues).await;
    for ex in exchanges {
        delete_exchange(ch, ex.as_ref()).await;
    }
}

/// Deletes exchange `name` (RabbitMQ answers delete-ok for a missing one too).
pub async fn delete_exchange(ch: &Channel, name: &str) {
    try_delete_exchange(ch, name, false)
        .await
        .unwrap_or_else(|e| panic!("delete exchange {name}: {e}"));
}

/// Closes `conn` with 200 and stops the test broker.
pub async fn finish(conn: Connection, broker: TestBroker) {
    conn.close(200, "bye".into())
        .await
        .expect("connection.close");
    broker.stop().await;
}
