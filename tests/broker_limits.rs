//! The rows of the README's limits table that no other suite covers: for each quantity a
//! client controls, the broker accepts it at its bound, refuses it one step past the bound
//! with the reply RabbitMQ 3.10 gives, and keeps serving a well-behaved client on another
//! connection ([`raw::Bystander`]) all the while.
//!
//! Rows covered elsewhere (the README's table names each test): frame sizes and `tune-ok`
//! limits (`broker_raw_handshake`, `broker_raw_frames`), connections, channels, consumers per
//! channel and message sizes (`access_robustness`).
//!
//! Every test here runs unchanged against RabbitMQ (`LEPUS_TEST_AMQP_URL`), which sets the
//! same bounds.

mod amqp;
mod common;
mod raw;

use amq_protocol::frame::{AMQPContentHeader, AMQPFrame};
use amq_protocol::protocol::basic::AMQPProperties;
use amqp::*;
use lapin::options::QueueDeclareOptions;
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::BasicProperties;
use raw::*;

/// RabbitMQ's default frame_max, which the bundled broker shares.
const FRAME_MAX: u32 = 131_072;

/// The longest TTL or expiry RabbitMQ accepts: ten years, in milliseconds.
const MAX_EXPIRY_MS: i64 = 315_360_000_000;

/// A `headers` table of `n` boolean entries `h00000`..: 9 bytes each on the wire (a shortstr
/// key of 6 bytes with its length octet, the type octet `t`, the value octet).
fn many_headers(n: usize) -> FieldTable {
    let mut headers = FieldTable::default();
    for i in 0..n {
        headers.insert(
            ShortString::from(format!("h{i:05}")),
            AMQPValue::Boolean(true),
        );
    }
    headers
}

/// The content header frame of a 1-byte basic message with `headers`.
fn header_frame(channel: u16, headers: FieldTable) -> Vec<u8> {
    encode(&AMQPFrame::Header(
        channel,
        AMQPContentHeader {
            class_id: 60,
            body_size: 1,
            properties: AMQPProperties::default().with_headers(headers),
        },
    ))
}

/// Headers (and every other property) travel in one content header frame, which the spec does
/// not let a client split: the number and size of a message's headers are bounded by
/// frame_max. A message with as many headers as fit is delivered whole; one more kilobyte of
/// them is a frame over frame_max, 501 FRAME_ERROR for that connection alone.
#[tokio::test]
async fn a_messages_headers_are_bounded_by_one_frame() {
    let (broker, bystander) = broker_with_bystander().await;
    let (_admin, admin) = open(&broker).await;
    let q = declare_unique_queue(&admin, "q.limits.headers").await;

    // 14,000 headers: a 126,022-byte frame, under 131,072.
    let fits = 14_000;
    let frame = header_frame(1, many_headers(fits));
    assert!(frame.len() < FRAME_MAX as usize, "{}", frame.len());
    let mut conn = RawConn::open(&broker, FRAME_MAX, 0).await;
    conn.open_channel(1).await;
    conn.send(&basic_publish(1, &q)).await;
    conn.send(&frame).await;
    conn.send(&raw_frame(3, 1, b"x", FRAME_END)).await;
    wait_message_count(&admin, &q, 1).await;
    let got = get(&admin, &q)
        .await
        .expect("the message with 14,000 headers");
    let headers = got.delivery.properties.headers().clone().expect("headers");
    assert_eq!(headers.inner().len(), fits);

    // 15,000 headers: a 135,022-byte frame.
    let frame = header_frame(1, many_headers(15_000));
    assert!(frame.len() > FRAME_MAX as usize, "{}", frame.len());
    conn.send(&basic_publish(1, &q)).await;
    conn.send_lossy(&frame).await;
    let close = conn.expect_connection_close().await;
    assert_eq!(close.code, 501, "{close:?}");

    delete_queues(&admin, &[&q]).await;
    bystander.assert_unaffected().await;
}

/// `x-max-priority` sets how many priority levels a queue keeps apart (memory and work per
/// queue grow with it): at most 255, as in RabbitMQ; 256 is 406 PRECONDITION_FAILED on that
/// channel only.
#[tokio::test]
async fn x_max_priority_is_at_most_255() {
    let (broker, bystander) = broker_with_bystander().await;
    let (conn, ch) = open(&broker).await;
    let q = common::unique("q.limits.priority");
    let args = |n: i32| table(vec![("x-max-priority", AMQPValue::LongInt(n))]);
    declare_queue(&ch, &q, args(255)).await;
    delete_queues(&ch, &[&q]).await;
    assert_code(
        ch.queue_declare(q.as_str().into(), QueueDeclareOptions::default(), args(256))
            .await,
        406,
    );
    let ch = conn
        .create_channel()
        .await
        .expect("the connection lives on");
    assert_code(passive_queue(&ch, &q).await, 404);
    bystander.assert_unaffected().await;
}

/// Every TTL and expiry a client sets (`x-message-ttl`, `x-expires`, the `expiration`
/// property) keeps a timer in the broker: at most ten years, as in RabbitMQ; one millisecond
/// more is 406 on that channel only.
#[tokio::test]
async fn ttls_and_expiries_are_at_most_ten_years() {
    let (broker, bystander) = broker_with_bystander().await;
    let (conn, ch) = open(&broker).await;
    for key in ["x-message-ttl", "x-expires"] {
        let q = common::unique("q.limits.ttl");
        let args = |n: i64| table(vec![(key, AMQPValue::LongLongInt(n))]);
        declare_queue(&ch, &q, args(MAX_EXPIRY_MS)).await;
        delete_queues(&ch, &[&q]).await;
        let bad = conn.create_channel().await.expect("channel");
        assert_code(
            bad.queue_declare(
                q.as_str().into(),
                QueueDeclareOptions::default(),
                args(MAX_EXPIRY_MS + 1),
            )
            .await,
            406,
        );
    }

    let q = declare_unique_queue(&ch, "q.limits.expiration").await;
    let expiring = |ms: i64| BasicProperties::default().with_expiration(ms.to_string().into());
    publish_with(&ch, "", &q, b"kept", expiring(MAX_EXPIRY_MS)).await;
    assert_eq!(get_body(&ch, &q).await.as_deref(), Some(&b"kept"[..]));
    // The 406 closes the publishing channel, failing its pending confirm with the code.
    assert_code(
        publish_error(&conn, "", &q, expiring(MAX_EXPIRY_MS + 1)).await,
        406,
    );
    assert_eq!(
        get_body(&ch, &q).await,
        None,
        "the refused message is not queued"
    );
    delete_queues(&ch, &[&q]).await;
    bystander.assert_unaffected().await;
}
