//! The input limits of issue 13 over a bare socket: field tables nested deeper than the
//! broker's bound (64 levels) anywhere a client can put one, and frames larger than 4,096 bytes
//! before `tune-ok`. The broker must refuse them with a reply (or by closing that one socket)
//! and live on: a well-behaved lapin client ([`raw::Bystander`]) keeps working and a new
//! connection still opens.
//!
//! Before the bound, each deep table here overflowed the stack of the task decoding it and
//! aborted the whole broker process (the test executable, for the in-process broker).
//!
//! Against RabbitMQ (`LEPUS_TEST_AMQP_URL`), which decodes tables thousands of levels deep, the
//! tests check only that it survives and that the bystander is unaffected.

mod common;
mod raw;

use amq_protocol::frame::AMQPFrame;
use amq_protocol::protocol::{basic, connection, queue, AMQPClass};
use amq_protocol::types::AMQPValue;
use raw::*;

/// The broker's nesting bound (`frame::MAX_NESTING_DEPTH`).
const MAX_DEPTH: usize = 64;

/// A field table nested `depth` levels deep, `{"a": {"a": ... {}}}`, as bytes (length prefix
/// included). Built by hand: the test side must not recurse over it either.
///
/// Written outside in: the table `k` levels above the innermost (empty) one has `7 * k` bytes
/// of content, one entry (key length 1, key "a", type 'F') and the nested table (its 4-byte
/// length and `7 * (k - 1)` bytes). So each level is `7 * k` as a u32, then `1 'a' 'F'`; the
/// innermost table is its length 0 alone.
fn deep_table(depth: usize) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(7 * depth);
    for k in (1..depth).rev() {
        bytes.extend_from_slice(&((7 * k) as u32).to_be_bytes());
        bytes.extend_from_slice(&[1, b'a', b'F']);
    }
    bytes.extend_from_slice(&0u32.to_be_bytes());
    bytes
}

/// As [`deep_table`], alternating tables and arrays from the outside in
/// (`{"a": [{"a": [...]}]}`): level `i` (1 is the outermost) is a table when `i` is odd.
fn deep_mixed(depth: usize) -> Vec<u8> {
    let is_table = |level: usize| level % 2 == 1;
    let mut inner = vec![0u8, 0, 0, 0];
    for level in (1..depth).rev() {
        let code = if is_table(level + 1) { b'F' } else { b'A' };
        let mut t = Vec::new();
        if is_table(level) {
            t.extend_from_slice(&((inner.len() + 3) as u32).to_be_bytes());
            t.extend_from_slice(&[1, b'a', code]);
        } else {
            t.extend_from_slice(&((inner.len() + 1) as u32).to_be_bytes());
            t.push(code);
        }
        t.extend_from_slice(&inner);
        inner = t;
    }
    inner
}

fn short(s: &str) -> Vec<u8> {
    let mut out = vec![s.len() as u8];
    out.extend_from_slice(s.as_bytes());
    out
}

fn long(s: &[u8]) -> Vec<u8> {
    let mut out = (s.len() as u32).to_be_bytes().to_vec();
    out.extend_from_slice(s);
    out
}

/// A method frame on `channel` from its class, method and argument bytes.
fn method_frame(channel: u16, class_id: u16, method_id: u16, args: &[u8]) -> Vec<u8> {
    let mut payload = class_id.to_be_bytes().to_vec();
    payload.extend_from_slice(&method_id.to_be_bytes());
    payload.extend_from_slice(args);
    raw_frame(1, channel, &payload, FRAME_END)
}

/// `connection.start-ok` with raw client-properties bytes.
fn start_ok_with(properties: &[u8], mechanism: &str, response: &[u8]) -> Vec<u8> {
    let mut args = properties.to_vec();
    args.extend(short(mechanism));
    args.extend(long(response));
    args.extend(short("en_US"));
    method_frame(0, 10, 11, &args)
}

/// Asserts the broker still accepts a full handshake on a new connection.
async fn still_serving(broker: &common::TestBroker) {
    let mut conn = RawConn::open(broker, 131_072, 0).await;
    conn.open_channel(1).await;
}

/// A connection that just sent something the broker must refuse: the bundled broker answers
/// `connection.close` 501 naming `class_method` (when given); RabbitMQ may do anything short
/// of dying.
async fn expect_501(conn: &mut RawConn, broker: &common::TestBroker, class_method: (u16, u16)) {
    if !broker.is_bundled() {
        return;
    }
    let close = conn.expect_connection_close().await;
    assert_eq!(close.code, 501, "{close:?}");
    assert!(close.text.contains("nested deeper than 64"), "{close:?}");
    assert_eq!((close.class_id, close.method_id), class_method, "{close:?}");
}

#[tokio::test]
async fn deep_client_properties_before_login_do_not_take_the_broker_down() {
    let (broker, bystander) = broker_with_bystander().await;
    // 500 levels fit in the 4,096 bytes allowed before tune-ok (7 bytes a level); a stranger
    // with a wrong password sends them.
    for table in [deep_table(500), deep_mixed(500)] {
        let mut conn = RawConn::started(&broker).await;
        conn.send(&start_ok_with(&table, "PLAIN", b"\0guest\0wrong"))
            .await;
        // The bundled broker refuses the frame (501) before looking at the credentials;
        // RabbitMQ drops the socket for the wrong password.
        if let Some(close) = conn.expect_connection_close_or_drop().await {
            assert_eq!(close.code, 501, "{close:?}");
        }
    }
    // The same with the credentials right: still refused, no login.
    let mut conn = RawConn::started(&broker).await;
    conn.send(&start_ok_with(&deep_table(500), "PLAIN", b"\0guest\0guest"))
        .await;
    if broker.is_bundled() {
        let close = conn.expect_connection_close_or_drop().await;
        assert_eq!(close.map(|c| c.code), Some(501));
    }
    // At the bound, the login goes through.
    let mut conn = RawConn::started(&broker).await;
    conn.send(&start_ok_with(
        &deep_table(MAX_DEPTH),
        "PLAIN",
        b"\0guest\0guest",
    ))
    .await;
    match conn.expect_method().await {
        (0, AMQPClass::Connection(connection::AMQPMethod::Tune(_))) => {}
        other => panic!("expected connection.tune, got {other:?}"),
    }
    still_serving(&broker).await;
    bystander.assert_unaffected().await;
}

#[tokio::test]
async fn a_deep_amqplain_response_is_a_failed_login() {
    let (broker, bystander) = broker_with_bystander().await;
    // LOGIN and PASSWORD right, then an entry nested 500 deep.
    let mut response = amqplain("guest", "guest");
    response.extend(short("n"));
    response.push(b'F');
    response.extend(deep_table(500));
    let mut conn = RawConn::started(&broker).await;
    conn.send(&start_ok_with(&[0, 0, 0, 0], "AMQPLAIN", &response))
        .await;
    // The bundled broker treats it as a malformed response: a failed login, which a client
    // without `authentication_failure_close` sees as the socket closing.
    if broker.is_bundled() {
        assert_eq!(conn.expect_connection_close_or_drop().await, None);
    }
    still_serving(&broker).await;
    bystander.assert_unaffected().await;
}

/// The argument bytes of each method that carries a table, with `table` as its arguments.
fn methods_with_arguments(table: &[u8], q: &str) -> Vec<((u16, u16), Vec<u8>)> {
    let reserved = [0u8, 0];
    let cat = |parts: &[&[u8]]| parts.concat();
    // exchange.bind and unbind: reserved, destination, source, key, nowait, arguments.
    let exchange_binding = cat(&[
        &reserved,
        &short("amq.fanout"),
        &short("amq.topic"),
        &short("k"),
        &[0],
        table,
    ]);
    vec![
        // queue.declare: reserved, queue, bits (auto-delete), arguments.
        ((50, 10), cat(&[&reserved, &short(q), &[0b1000], table])),
        // exchange.declare: reserved, exchange, type, bits (auto-delete), arguments.
        (
            (40, 10),
            cat(&[&reserved, &short(q), &short("topic"), &[0b100], table]),
        ),
        // queue.bind: reserved, queue, exchange, key, nowait, arguments.
        (
            (50, 20),
            cat(&[
                &reserved,
                &short(q),
                &short("amq.topic"),
                &short("k"),
                &[0],
                table,
            ]),
        ),
        // queue.unbind: reserved, queue, exchange, key, arguments.
        (
            (50, 50),
            cat(&[
                &reserved,
                &short(q),
                &short("amq.topic"),
                &short("k"),
                table,
            ]),
        ),
        // exchange.bind and unbind (the same arguments).
        ((40, 30), exchange_binding.clone()),
        ((40, 40), exchange_binding),
        // basic.consume: reserved, queue, consumer tag, bits (no-ack), arguments.
        (
            (60, 20),
            cat(&[&reserved, &short(q), &short(""), &[0b10], table]),
        ),
    ]
}

#[tokio::test]
async fn deep_arguments_of_every_method_are_501_and_the_broker_lives_on() {
    let (broker, bystander) = broker_with_bystander().await;
    let q = common::unique("q.raw.deep");
    // 3,000 levels: ~21 KB, what issue 13 sent. Each method on its own connection.
    for table in [deep_table(3000), deep_mixed(3000)] {
        for (class_method, args) in methods_with_arguments(&table, &q) {
            let mut conn = RawConn::with_channel_1(&broker).await;
            conn.send(&method_frame(1, class_method.0, class_method.1, &args))
                .await;
            expect_501(&mut conn, &broker, class_method).await;
        }
    }
    still_serving(&broker).await;
    bystander.assert_unaffected().await;
}

#[tokio::test]
async fn arguments_at_the_bound_are_accepted() {
    let broker = common::broker().await;
    let q = common::unique("q.raw.atbound");
    let mut conn = RawConn::with_channel_1(&broker).await;
    let (_, args) = methods_with_arguments(&deep_mixed(MAX_DEPTH), &q).remove(0);
    conn.send(&method_frame(1, 50, 10, &args)).await;
    match conn.expect_method().await {
        (1, AMQPClass::Queue(queue::AMQPMethod::DeclareOk(ok))) => {
            assert_eq!(ok.queue.as_str(), q)
        }
        other => panic!("expected queue.declare-ok, got {other:?}"),
    }
}

/// A content header (class 60) whose properties are just `headers` = `table`.
fn header_with(channel: u16, body_size: u64, table: &[u8]) -> Vec<u8> {
    let mut payload = vec![0, 60, 0, 0];
    payload.extend_from_slice(&body_size.to_be_bytes());
    payload.extend_from_slice(&(1u16 << 13).to_be_bytes());
    payload.extend_from_slice(table);
    raw_frame(2, channel, &payload, FRAME_END)
}

#[tokio::test]
async fn deep_message_headers_are_501_and_headers_at_the_bound_round_trip() {
    let (broker, bystander) = broker_with_bystander().await;
    let q = common::unique("q.raw.headers");
    let mut conn = RawConn::with_channel_1(&broker).await;
    conn.send(&method(
        1,
        AMQPClass::Queue(queue::AMQPMethod::Declare(queue::Declare {
            queue: q.as_str().into(),
            auto_delete: false,
            ..Default::default()
        })),
    ))
    .await;
    conn.expect_method().await;
    // At the bound: published, then fetched back with the same headers.
    conn.send(&basic_publish(1, &q)).await;
    conn.send(&header_with(1, 2, &deep_mixed(MAX_DEPTH))).await;
    conn.send(&raw_frame(3, 1, b"ok", FRAME_END)).await;
    conn.send(&method(
        1,
        AMQPClass::Basic(basic::AMQPMethod::Get(basic::Get {
            queue: q.as_str().into(),
            no_ack: true,
        })),
    ))
    .await;
    match conn.expect_method().await {
        (1, AMQPClass::Basic(basic::AMQPMethod::GetOk(_))) => {}
        other => panic!("expected basic.get-ok, got {other:?}"),
    }
    match conn.next_non_heartbeat().await {
        Outcome::Frame(AMQPFrame::Header(1, header)) => {
            let headers = header.properties.headers().clone().unwrap_or_default();
            assert!(matches!(
                headers.inner().get("a"),
                Some(AMQPValue::FieldArray(_))
            ));
        }
        other => panic!("expected the content header, got {other:?}"),
    }
    conn.next_non_heartbeat().await;
    // Past it: the connection is closed, the broker lives on.
    conn.send(&basic_publish(1, &q)).await;
    conn.send_lossy(&header_with(1, 2, &deep_table(3000))).await;
    conn.send_lossy(&raw_frame(3, 1, b"no", FRAME_END)).await;
    if broker.is_bundled() {
        let close = conn.expect_connection_close().await;
        assert_eq!(close.code, 501, "{close:?}");
        assert!(close.text.contains("nested deeper than 64"), "{close:?}");
    }
    let mut cleanup = RawConn::open(&broker, 131_072, 0).await;
    cleanup.open_channel(1).await;
    cleanup
        .send(&method(
            1,
            AMQPClass::Queue(queue::AMQPMethod::Delete(queue::Delete {
                queue: q.as_str().into(),
                ..Default::default()
            })),
        ))
        .await;
    cleanup.expect_method().await;
    bystander.assert_unaffected().await;
}

/// The largest frame a client may send before tune-ok, overhead included.
const FRAME_MIN_SIZE: usize = 4096;

/// A start-ok (PLAIN guest/guest) padded to exactly `total` bytes with a long-string client
/// property.
fn start_ok_of_size(total: usize) -> Vec<u8> {
    let frame = |pad: usize| {
        let mut props = short("x");
        props.push(b'S');
        props.extend(long(&vec![b'p'; pad]));
        let mut table = (props.len() as u32).to_be_bytes().to_vec();
        table.extend(props);
        start_ok_with(&table, "PLAIN", b"\0guest\0guest")
    };
    let base = frame(0).len();
    let out = frame(total - base);
    assert_eq!(out.len(), total);
    out
}

#[tokio::test]
async fn frames_before_tune_ok_are_limited_to_4096_bytes() {
    let (broker, bystander) = broker_with_bystander().await;
    // Exactly 4,096: accepted.
    let mut conn = RawConn::started(&broker).await;
    conn.send(&start_ok_of_size(FRAME_MIN_SIZE)).await;
    match conn.expect_method().await {
        (0, AMQPClass::Connection(connection::AMQPMethod::Tune(_))) => {}
        other => panic!("expected connection.tune, got {other:?}"),
    }
    // 4,105 bytes (a payload of 4,097: past RabbitMQ's 8-byte fudge too) and 131,072 (the
    // frame_max the broker proposes, which does not apply yet): refused.
    for total in [FRAME_MIN_SIZE + 9, 131_072] {
        let mut conn = RawConn::started(&broker).await;
        conn.send_lossy(&start_ok_of_size(total)).await;
        match conn.expect_connection_close_or_drop().await {
            Some(close) => {
                assert_eq!(close.code, 501, "{close:?}");
                assert!(close.text.contains("frame_max 4096"), "{close:?}");
            }
            None => assert!(!broker.is_bundled(), "the bundled broker answers 501"),
        }
    }
    // Between tune and tune-ok: still 4,096 (a 5,000-byte body frame; before the fix the
    // broker read it whole and answered 503 "expected connection.tune-ok").
    let mut conn = RawConn::started(&broker).await;
    conn.authenticate().await;
    conn.send_lossy(&raw_frame(3, 1, &[b'b'; 5000], FRAME_END))
        .await;
    match conn.expect_connection_close_or_drop().await {
        Some(close) => assert_eq!(close.code, 501, "{close:?}"),
        None => assert!(!broker.is_bundled(), "the bundled broker answers 501"),
    }
    still_serving(&broker).await;
    bystander.assert_unaffected().await;
}
