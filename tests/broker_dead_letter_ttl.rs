//! Queue arguments and per-message expiry against the test broker: `x-message-ttl`,
//! `expiration`, `x-expires`, `x-max-length` with `x-overflow` (drop-head, reject-publish),
//! `x-dead-letter-exchange` / `x-dead-letter-routing-key` with the `x-death` header, and
//! `x-max-priority`. Each test passes against RabbitMQ 3.10, which is the specification the
//! bundled broker must meet.
//!
//! TTLs here are short (tens of milliseconds) and every wait for their effect is a bounded
//! poll, so the tests take little wall time and do not depend on timer precision.

mod amqp;
mod common;

use amqp::*;
use lapin::message::BasicGetMessage;
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{BasicProperties, Channel, ExchangeKind};

fn long(v: i64) -> AMQPValue {
    AMQPValue::LongLongInt(v)
}

/// A dead-letter target: a direct exchange and a queue bound to it with `key`.
async fn dead_letter_target(ch: &Channel, key: &str) -> (String, String) {
    bound_queue(ch, ExchangeKind::Direct, key, "ex.dlx", "q.dlq").await
}

/// Queue arguments `extra` plus dead-lettering to exchange `dlx` with routing key `key`.
fn dead_lettering(dlx: &str, key: &str, mut extra: Vec<(&str, AMQPValue)>) -> FieldTable {
    extra.push(("x-dead-letter-exchange", s(dlx)));
    extra.push(("x-dead-letter-routing-key", s(key)));
    table(extra)
}

/// A queue named from `prefix`, with the arguments `extra`, that dead-letters to a fresh
/// [`dead_letter_target`] with routing key `key`: (queue, dead-letter exchange, its queue).
async fn dead_lettering_queue(
    ch: &Channel,
    prefix: &str,
    key: &str,
    extra: Vec<(&str, AMQPValue)>,
) -> (String, String, String) {
    let (dlx, dlq) = dead_letter_target(ch, key).await;
    let q = common::unique(prefix);
    declare_queue(ch, &q, dead_lettering(&dlx, key, extra)).await;
    (q, dlx, dlq)
}

/// Waits until `dlq` holds `n` messages and takes the first (manual ack).
async fn first_of(ch: &Channel, dlq: &str, n: u32) -> BasicGetMessage {
    wait_message_count(ch, dlq, n).await;
    get(ch, dlq).await.expect("dead-lettered")
}

/// Waits until `dlq` holds `n` messages and asserts that the first is `body`, dead-lettered
/// for `reason`.
async fn assert_dead_lettered(ch: &Channel, dlq: &str, n: u32, body: &[u8], reason: &str) {
    let dead = first_of(ch, dlq, n).await;
    assert_eq!(dead.delivery.data, body);
    assert_eq!(text(&x_death(&dead.delivery.properties), "reason"), reason);
}

/// Publishes each of `bodies` to `q` through the default exchange on confirm channel `pch`,
/// and returns whether each was acked (rather than nacked).
async fn publish_all_confirmed(pch: &Channel, q: &str, bodies: &[&str]) -> Vec<bool> {
    let mut acks = Vec::new();
    for body in bodies {
        let props = BasicProperties::default();
        let c = publish_confirmed(pch, "", q, body.as_bytes(), props).await;
        acks.push(c.is_ack());
    }
    acks
}

/// The array `key` of table `t`.
fn array<'t>(t: &'t FieldTable, key: &str) -> &'t [AMQPValue] {
    match t.inner().get(key) {
        Some(AMQPValue::FieldArray(a)) => a.as_slice(),
        other => panic!("{key} is not an array: {other:?}"),
    }
}

/// A long-string value's text; `what` names it in the failure.
fn long_string(v: &AMQPValue, what: &str) -> String {
    match v {
        AMQPValue::LongString(v) => String::from_utf8_lossy(v.as_bytes()).into_owned(),
        other => panic!("{what} is not a string: {other:?}"),
    }
}

/// All `x-death` entries of a dead-lettered message's headers, most recent first.
fn x_deaths(props: &BasicProperties) -> Vec<FieldTable> {
    let headers = props
        .headers()
        .as_ref()
        .expect("dead-lettered message has headers");
    let entry = |v: &AMQPValue| match v {
        AMQPValue::FieldTable(t) => t.clone(),
        other => panic!("x-death entry is not a table: {other:?}"),
    };
    array(headers, "x-death").iter().map(entry).collect()
}

/// The single `x-death` entry of a dead-lettered message's headers.
fn x_death(props: &BasicProperties) -> FieldTable {
    let mut deaths = x_deaths(props);
    assert_eq!(deaths.len(), 1, "one death event: {deaths:?}");
    deaths.remove(0)
}

fn text(t: &FieldTable, key: &str) -> String {
    match t.inner().get(key) {
        Some(AMQPValue::ShortString(v)) => v.as_str().to_owned(),
        Some(v) => long_string(v, key),
        None => panic!("{key} is missing from {t:?}"),
    }
}

fn count(t: &FieldTable) -> i64 {
    match t.inner().get("count") {
        Some(AMQPValue::LongLongInt(n)) => *n,
        Some(AMQPValue::LongInt(n)) => i64::from(*n),
        other => panic!("count is not an integer: {other:?}"),
    }
}

fn routing_keys(t: &FieldTable) -> Vec<String> {
    let key = |v| long_string(v, "routing key");
    array(t, "routing-keys").iter().map(key).collect()
}

/// Asserts that `props` carry a single `x-death` entry: one dead-lettering for `reason` from
/// `queue`, of a message published to `exchange` with the routing keys `keys`. Returns the
/// entry for further checks.
#[track_caller]
fn assert_died_once(
    props: &BasicProperties,
    reason: &str,
    queue: &str,
    exchange: &str,
    keys: &[&str],
) -> FieldTable {
    let death = x_death(props);
    assert_eq!(text(&death, "reason"), reason, "{death:?}");
    assert_eq!(text(&death, "queue"), queue, "{death:?}");
    assert_eq!(text(&death, "exchange"), exchange, "{death:?}");
    assert_eq!(routing_keys(&death), keys, "{death:?}");
    assert_eq!(count(&death), 1, "{death:?}");
    death
}

#[tokio::test]
async fn x_message_ttl_expires_messages() {
    let (_broker, conn, ch) = start_and_open().await;
    let q = common::unique("q.ttl");
    declare_queue(&ch, &q, table(vec![("x-message-ttl", long(50))])).await;
    let pch = confirm_channel(&conn).await;
    publish_confirmed(&pch, "", &q, b"short-lived", BasicProperties::default()).await;
    wait_message_count(&ch, &q, 0).await;
    assert!(
        get(&ch, &q).await.is_none(),
        "expired message is never delivered"
    );
    delete_queues(&ch, &[&q]).await;
}

#[tokio::test]
async fn per_message_expiration_expires_only_that_message() {
    let (_broker, conn, ch, q) = start_with_queue("q.expiration").await;
    let pch = confirm_channel(&conn).await;
    publish_confirmed(
        &pch,
        "",
        &q,
        b"short",
        BasicProperties::default().with_expiration("30".into()),
    )
    .await;
    publish_confirmed(&pch, "", &q, b"forever", BasicProperties::default()).await;
    assert_drains_to(&ch, &q, &["forever"]).await;
    delete_queues(&ch, &[&q]).await;
}

#[tokio::test]
async fn expired_messages_are_dead_lettered_with_reason_expired() {
    let (_broker, _conn, ch) = start_and_open().await;
    let (q, dlx, dlq) = dead_lettering_queue(
        &ch,
        "q.ttl.dlx",
        "expired-key",
        vec![("x-message-ttl", long(30))],
    )
    .await;
    publish(&ch, "", &q, b"will expire").await;
    let m = first_of(&ch, &dlq, 1).await;
    assert_eq!(m.delivery.data, b"will expire");
    assert_eq!(m.delivery.exchange.as_str(), dlx.as_str());
    assert_eq!(m.delivery.routing_key.as_str(), "expired-key");
    assert_died_once(&m.delivery.properties, "expired", &q, "", &[q.as_str()]);
    // The queue TTL that expired the message is recorded as original-expiration only for a
    // per-message TTL; with a queue TTL RabbitMQ does not set the expiration property.
    assert_eq!(m.delivery.properties.expiration(), &None);
    delete_all(&ch, &[&q, &dlq], &[&dlx]).await;
}

#[tokio::test]
async fn rejected_messages_are_dead_lettered_with_routing_key_and_x_death() {
    let (_broker, _conn, ch) = start_and_open().await;
    let (q, dlx, dlq) = dead_lettering_queue(&ch, "q.reject.dlx", "dead", vec![]).await;
    publish_with(
        &ch,
        "",
        &q,
        b"poison",
        BasicProperties::default()
            .with_correlation_id("c-9".into())
            .with_headers(table(vec![("app", s("kept"))])),
    )
    .await;
    wait_message_count(&ch, &q, 1).await;
    let m = get(&ch, &q).await.expect("message");
    reject(&m, false).await;
    let d = first_of(&ch, &dlq, 1).await;
    assert_eq!(d.delivery.data, b"poison");
    assert_eq!(d.delivery.routing_key.as_str(), "dead");
    assert_eq!(
        d.delivery.properties.correlation_id(),
        &Some(ShortString::from("c-9"))
    );
    let headers = d.delivery.properties.headers().as_ref().expect("headers");
    assert_eq!(
        headers.inner().get("app"),
        Some(&AMQPValue::LongString(LongString::from("kept"))),
        "the publisher's headers survive dead-lettering"
    );
    let death = assert_died_once(&d.delivery.properties, "rejected", &q, "", &[q.as_str()]);
    assert!(
        matches!(death.inner().get("time"), Some(AMQPValue::Timestamp(_))),
        "x-death carries the time: {death:?}"
    );
    delete_all(&ch, &[&q, &dlq], &[&dlx]).await;
}

#[tokio::test]
async fn nacked_messages_keep_their_routing_key_without_x_dead_letter_routing_key() {
    let (_broker, _conn, ch) = start_and_open().await;
    let (dlx, dlq) = bound_queue(&ch, ExchangeKind::Fanout, "", "ex.dlx.fanout", "q.dlq").await;
    let src = common::unique("ex.src");
    declare_exchange(&ch, &src, ExchangeKind::Direct).await;
    let q = common::unique("q.nack.dlx");
    declare_queue(&ch, &q, table(vec![("x-dead-letter-exchange", s(&dlx))])).await;
    bind(&ch, &q, &src, "orig.key").await;
    publish(&ch, &src, "orig.key", b"n").await;
    wait_message_count(&ch, &q, 1).await;
    let m = get(&ch, &q).await.expect("message");
    nack(&m, false, false).await;
    let d = first_of(&ch, &dlq, 1).await;
    assert_eq!(d.delivery.routing_key.as_str(), "orig.key");
    assert_died_once(&d.delivery.properties, "rejected", &q, &src, &["orig.key"]);
    delete_all(&ch, &[&q, &dlq], &[&src, &dlx]).await;
}

#[tokio::test]
async fn x_expires_deletes_an_unused_queue() {
    let (_broker, conn, ch) = start_and_open().await;
    let q = common::unique("q.expires");
    declare_queue(&ch, &q, table(vec![("x-expires", long(100))])).await;
    wait_queue_gone_every(&conn, &q, std::time::Duration::from_millis(400)).await;
}

#[tokio::test]
async fn x_max_length_drop_head_discards_the_oldest_and_dead_letters_them() {
    let (_broker, conn, ch) = start_and_open().await;
    let (q, dlx, dlq) =
        dead_lettering_queue(&ch, "q.maxlen", "overflow", vec![("x-max-length", long(2))]).await;
    let pch = confirm_channel(&conn).await;
    let acks = publish_all_confirmed(&pch, &q, &["m0", "m1", "m2", "m3", "m4"]).await;
    assert_eq!(acks, vec![true; 5], "drop-head accepts every publish");
    assert_eq!(drain(&ch, &q).await, vec!["m3", "m4"]);
    assert_dead_lettered(&ch, &dlq, 3, b"m0", "maxlen").await;
    delete_all(&ch, &[&q, &dlq], &[&dlx]).await;
}

#[tokio::test]
async fn x_max_length_drop_head_counts_the_new_message_too() {
    // RabbitMQ enqueues, then drops from the head while over the limit: with x-max-length 0
    // every message goes (dead-lettered, reason maxlen), and a body larger than
    // x-max-length-bytes drops itself. Found by difftest: the bundled broker trimmed before
    // adding, so the new message always stayed.
    let (_broker, conn, ch) = start_and_open().await;
    let (zero, dlx, dlq) = dead_lettering_queue(
        &ch,
        "q.maxlen0",
        "overflow",
        vec![("x-max-length", long(0))],
    )
    .await;
    let bytes = common::unique("q.maxbytes");
    declare_queue(&ch, &bytes, table(vec![("x-max-length-bytes", long(10))])).await;
    let pch = confirm_channel(&conn).await;
    let mut acks = publish_all_confirmed(&pch, &zero, &["a"]).await;
    acks.extend(
        publish_all_confirmed(&pch, &bytes, &["0123456789-too-long", "fits", "fits-too"]).await,
    );
    assert_eq!(acks, vec![true; 4], "drop-head accepts every publish");
    assert_dead_lettered(&ch, &dlq, 1, b"a", "maxlen").await;
    assert_eq!(drain(&ch, &zero).await, Vec::<String>::new());
    // 4 + 8 bytes is over 10: the older one went.
    assert_eq!(drain(&ch, &bytes).await, vec!["fits-too"]);
    delete_all(&ch, &[&zero, &bytes, &dlq], &[&dlx]).await;
}

#[tokio::test]
async fn requeued_messages_are_held_to_x_max_length_too() {
    // RabbitMQ's requeue_and_run drops from the head (dead-lettering, reason maxlen) until the
    // queue is within its limits before it dispatches again. Found by difftest: the bundled
    // broker requeued past x-max-length and redelivered.
    let (_broker, conn, ch) = start_and_open().await;
    let (q, dlx, dlq) = dead_lettering_queue(
        &ch,
        "q.maxlen.requeue",
        "overflow",
        vec![("x-max-length", long(1))],
    )
    .await;
    let cch = channel(&conn).await;
    let mut consumer = consume(&cch, &q, false).await;
    publish(&ch, "", &q, b"first").await;
    publish(&ch, "", &q, b"second").await;
    let got = take(&mut consumer, 2).await;
    assert_eq!(bodies(&got), vec!["first", "second"]);
    cancel(&cch, &consumer).await;
    // Both back: two messages in a queue of at most one; the head goes.
    nack(&got[1], true, true).await;
    assert_dead_lettered(&ch, &dlq, 1, b"first", "maxlen").await;
    let kept = get(&ch, &q).await.expect("the second stays");
    assert_eq!(kept.delivery.data, b"second");
    assert!(kept.delivery.redelivered);
    assert_eq!(get(&ch, &q).await.map(|m| m.delivery.data), None);
    delete_all(&ch, &[&q, &dlq], &[&dlx]).await;
}

#[tokio::test]
async fn a_ttl_0_message_no_consumer_takes_is_gone_at_once() {
    // RabbitMQ drops a message that expires on arrival right after the publish
    // (drop_expired_msgs: expired when now >= expiry), dead-lettering it then; the bundled
    // broker kept it until its expiry timer ran, so a passive declare counted it (found by
    // difftest, on a priority queue with x-message-ttl 0).
    let (_broker, conn, ch) = start_and_open().await;
    let (dlx, dlq) = dead_letter_target(&ch, "expired").await;
    let dead_letter = |args| dead_lettering(&dlx, "expired", args);
    let ttl0 = common::unique("q.ttl0");
    declare_queue(&ch, &ttl0, dead_letter(vec![("x-message-ttl", long(0))])).await;
    let prio = common::unique("q.ttl0.priority");
    declare_queue(
        &ch,
        &prio,
        dead_letter(vec![
            ("x-message-ttl", long(0)),
            ("x-max-priority", long(3)),
        ]),
    )
    .await;
    let plain = common::unique("q.expiration0");
    declare_queue(&ch, &plain, dead_letter(vec![])).await;
    let expiring = BasicProperties::default().with_expiration("0".into());
    let pch = confirm_channel(&conn).await;
    for (queue, props) in [
        (&ttl0, BasicProperties::default()),
        (&prio, BasicProperties::default().with_priority(2)),
        (&plain, expiring),
    ] {
        // Confirmed, so enqueued; the count right after is the queue's at once.
        let c = publish_confirmed(&pch, "", queue, b"gone", props).await;
        assert!(c.is_ack());
        assert_eq!(message_count(&ch, queue).await, 0, "{queue}");
    }
    wait_message_count(&ch, &dlq, 3).await;
    delete_all(&ch, &[&ttl0, &prio, &plain, &dlq], &[&dlx]).await;
}

#[tokio::test]
async fn basic_get_drops_the_expired_messages_it_brings_to_the_head() {
    // RabbitMQ expires messages at the head only, and after each fetch drops those the fetch
    // brought there before counting what is left: get-ok's message_count and the queue's
    // depth leave them out, and they are dead-lettered (reason expired) at once. Found by
    // difftest: the bundled broker counted them until its timer ran.
    let (_broker, _conn, ch) = start_and_open().await;
    let (q, dlx, dlq) = dead_lettering_queue(&ch, "q.getexpired", "gone", vec![]).await;
    publish(&ch, "", &q, b"lives").await;
    publish_with(
        &ch,
        "",
        &q,
        b"expires",
        BasicProperties::default().with_expiration("0".into()),
    )
    .await;
    // Behind a live head it stays (and counts) until it reaches the head.
    wait_message_count(&ch, &q, 2).await;
    let got = get(&ch, &q).await.expect("the head");
    assert_eq!(got.delivery.data, b"lives");
    assert_eq!(got.message_count, 0, "the expired one is not left");
    assert_dead_lettered(&ch, &dlq, 1, b"expires", "expired").await;
    delete_all(&ch, &[&q, &dlq], &[&dlx]).await;
}

#[tokio::test]
async fn x_overflow_reject_publish_nacks_new_messages() {
    let (_broker, conn, ch) = start_and_open().await;
    let q = common::unique("q.rejectpublish");
    let args = table(vec![
        ("x-max-length", long(2)),
        ("x-overflow", s("reject-publish")),
    ]);
    declare_queue(&ch, &q, args).await;
    let pch = confirm_channel(&conn).await;
    let acks = publish_all_confirmed(&pch, &q, &["m0", "m1", "m2", "m3"]).await;
    assert_eq!(acks, vec![true, true, false, false]);
    assert_eq!(drain(&ch, &q).await, vec!["m0", "m1"]);
    // Room again: accepted.
    let c = publish_confirmed(&pch, "", &q, b"m4", BasicProperties::default()).await;
    assert!(c.is_ack());
    delete_queues(&ch, &[&q]).await;
}

#[tokio::test]
async fn x_max_priority_delivers_higher_priorities_first() {
    let (_broker, conn, ch) = start_and_open().await;
    let q = common::unique("q.priority");
    declare_queue(&ch, &q, table(vec![("x-max-priority", long(10))])).await;
    let pch = confirm_channel(&conn).await;
    // Priorities above x-max-priority count as the maximum; no priority counts as 0.
    for (body, prio) in [
        ("p1", Some(1)),
        ("none", None),
        ("p5a", Some(5)),
        ("p9", Some(9)),
        ("p3", Some(3)),
        ("p5b", Some(5)),
        ("p200", Some(200)),
    ] {
        let mut props = BasicProperties::default();
        if let Some(p) = prio {
            props = props.with_priority(p);
        }
        publish_confirmed(&pch, "", &q, body.as_bytes(), props).await;
    }
    let order = drain(&ch, &q).await;
    assert_eq!(order, vec!["p200", "p9", "p5a", "p5b", "p3", "p1", "none"]);
    delete_queues(&ch, &[&q]).await;
}

#[tokio::test]
async fn a_consumer_never_receives_an_expired_message() {
    let (_broker, conn, ch) = start_and_open().await;
    let q = common::unique("q.ttl.consumer");
    declare_queue(&ch, &q, table(vec![("x-message-ttl", long(40))])).await;
    // Confirmed, so the message is enqueued before the count is polled.
    let pch = confirm_channel(&conn).await;
    publish_confirmed(&pch, "", &q, b"old", BasicProperties::default()).await;
    wait_message_count(&ch, &q, 0).await;
    publish(&ch, "", &q, b"new").await;
    let cch = channel(&conn).await;
    let mut c = consume(&cch, &q, true).await;
    assert_eq!(next(&mut c).await.data, b"new");
    assert_quiet(&mut c).await;
    delete_queues(&ch, &[&q]).await;
}

/// All `x-death` entries of a message, as (queue, reason, count), most recent first.
fn deaths(props: &BasicProperties) -> Vec<(String, String, i64)> {
    let entry = |t: FieldTable| (text(&t, "queue"), text(&t, "reason"), count(&t));
    x_deaths(props).into_iter().map(entry).collect()
}

#[tokio::test]
async fn x_death_counts_repeated_dead_lettering_per_queue_and_reason() {
    // A retry loop: rejected from `work` into `wait`, whose TTL sends it back to `work`.
    // RabbitMQ keeps one x-death entry per (queue, reason), most recent first, and bumps its
    // count; the loop is not a cycle it drops because a rejection is part of it.
    let (_broker, _conn, ch) = start_and_open().await;
    let work = common::unique("q.work");
    let wait = common::unique("q.wait");
    declare_queue(&ch, &work, dead_lettering("", &wait, vec![])).await;
    let wait_args = dead_lettering("", &work, vec![("x-message-ttl", long(20))]);
    declare_queue(&ch, &wait, wait_args).await;
    publish(&ch, "", &work, b"job").await;
    for round in 1..=2i64 {
        wait_message_count(&ch, &work, 1).await;
        let m = get(&ch, &work).await.expect("job is back in work");
        if round > 1 {
            assert_eq!(
                deaths(&m.delivery.properties),
                vec![
                    (wait.clone(), "expired".to_owned(), round - 1),
                    (work.clone(), "rejected".to_owned(), round - 1),
                ]
            );
        }
        reject(&m, false).await;
    }
    wait_message_count(&ch, &work, 1).await;
    let m = get(&ch, &work).await.expect("job after two rounds");
    assert_eq!(
        deaths(&m.delivery.properties),
        vec![
            (wait.clone(), "expired".to_owned(), 2),
            (work.clone(), "rejected".to_owned(), 2),
        ]
    );
    delete_queues(&ch, &[&work, &wait]).await;
}

// Moved from tests/core_features.rs (ttl_dead_lettering_overflow_and_priority): TTL, expiration,
// x-max-length and rejection dead-letter into one fanout DLX; reject-publish nacks; priorities.
#[tokio::test]
async fn ttl_dead_lettering_overflow_and_priority() {
    let (broker, conn, ch) = start_and_open().await;
    let (dlx, dead) = bound_queue(&ch, ExchangeKind::Fanout, "", "core.dlx", "q.dead").await;
    let (ttl, maxlen, reject, prio) = (
        common::unique("q.ttl"),
        common::unique("q.maxlen"),
        common::unique("q.reject"),
        common::unique("q.prio"),
    );
    let dl = ("x-dead-letter-exchange", s(&dlx));
    let ttl_args = table(vec![("x-message-ttl", AMQPValue::LongInt(100)), dl.clone()]);
    declare_queue(&ch, &ttl, ttl_args).await;
    let maxlen_args = table(vec![("x-max-length", AMQPValue::LongInt(2)), dl.clone()]);
    declare_queue(&ch, &maxlen, maxlen_args).await;
    let reject_args = table(vec![
        ("x-max-length", AMQPValue::LongInt(1)),
        ("x-overflow", s("reject-publish")),
    ]);
    declare_queue(&ch, &reject, reject_args).await;
    let prio_args = table(vec![("x-max-priority", AMQPValue::ShortShortUInt(5))]);
    declare_queue(&ch, &prio, prio_args).await;

    publish(&ch, "", &ttl, b"t1").await;
    let expires_soon = BasicProperties::default().with_expiration("10".into());
    publish_with(&ch, "", &ttl, b"t2", expires_soon).await;
    for b in [b"m1", b"m2", b"m3"] {
        publish(&ch, "", &maxlen, b).await;
    }
    tokio::time::sleep(std::time::Duration::from_millis(400)).await;
    assert!(drain_settled(&ch, &ttl).await.is_empty());
    let mut dead_bodies = drain_settled(&ch, &dead).await;
    dead_bodies.sort();
    assert_eq!(dead_bodies, vec!["m1", "t1", "t2"]);
    assert_eq!(drain_settled(&ch, &maxlen).await, vec!["m2", "m3"]);

    // x-death is added; rejection without requeue dead-letters too.
    publish(&ch, "", &maxlen, b"r").await;
    let got = get(&ch, &maxlen).await.expect("a message");
    amqp::reject(&got, false).await;
    let dead_msg = get_eventually(&ch, &dead).await;
    let first = x_death(&dead_msg.delivery.properties);
    assert_eq!(first.inner().get("reason"), Some(&s("rejected")));

    // reject-publish: the publisher gets a nack.
    let cch = confirm_channel(&conn).await;
    let c1 = publish_confirmed(&cch, "", &reject, b"1", BasicProperties::default()).await;
    let c2 = publish_confirmed(&cch, "", &reject, b"2", BasicProperties::default()).await;
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
        publish_with(
            &ch,
            "",
            &prio,
            body,
            BasicProperties::default().with_priority(p),
        )
        .await;
    }
    assert_eq!(
        drain_settled(&ch, &prio).await,
        vec!["p5", "p9", "p1a", "p1b", "p0"]
    );
    delete_queues(&ch, &[&dead, &ttl, &maxlen, &reject, &prio]).await;
    delete_exchange(&ch, &dlx).await;
    finish(conn, broker).await;
}

// Moved from tests/core_features.rs (ttl_zero_reaches_a_ready_consumer_and_huge_ttls_never_
// expire): x-message-ttl 0 still reaches a waiting consumer; ten-year TTLs are kept and a
// longer expiration is refused (406).
#[tokio::test]
async fn ttl_zero_reaches_a_ready_consumer_and_huge_ttls_never_expire() {
    let (broker, conn, ch) = start_and_open().await;
    let zero = common::unique("core.ttl0");
    let zero_args = table(vec![("x-message-ttl", AMQPValue::LongInt(0))]);
    declare_queue(&ch, &zero, zero_args).await;
    publish(&ch, "", &zero, b"nobody waits").await;
    let cch = channel(&conn).await;
    let mut c = consume(&cch, &zero, true).await;
    publish(&ch, "", &zero, b"taken at once").await;
    assert_eq!(next(&mut c).await.data, b"taken at once");

    // The longest TTLs RabbitMQ accepts (ten years) are kept; longer ones are refused (406).
    let huge = common::unique("core.hugettl");
    let huge_args = table(vec![("x-message-ttl", long(315_360_000_000))]);
    declare_queue(&ch, &huge, huge_args).await;
    let ten_years = BasicProperties::default().with_expiration("315360000000".into());
    publish_with(&ch, "", &huge, b"forever", ten_years).await;
    assert_eq!(drain_settled(&ch, &huge).await, vec!["forever"]);
    let too_long = BasicProperties::default().with_expiration(u64::MAX.to_string().into());
    assert_code(publish_error(&conn, "", &huge, too_long).await, 406);
    delete_queues(&ch, &[&zero, &huge]).await;
    finish(conn, broker).await;
}
