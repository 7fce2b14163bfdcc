//! Limits and hostile clients: the broker keeps serving well-behaved clients while 1,000
//! connections are opened and abandoned mid-handshake, while a client sends its protocol
//! header one byte at a time, and after oversized frames and messages; `max_connections`
//! refuses the connection over the limit with 530; the per-connection caps (channel_max,
//! consumer_max_per_channel) close the connection with 530 and max_message_size closes only
//! the publishing channel with 406.
//!
//! Every broker here is started by the test on 127.0.0.1 port 0.

mod amqp;
mod common;
mod raw;
mod task_util;

use std::time::Duration;

use amq_protocol::frame::AMQPFrame;
use amq_protocol::protocol::{channel, connection, AMQPClass};
use amq_protocol::types::FieldTable as WireTable;
use amqp::*;
use lapin::options::{BasicCancelOptions, BasicConsumeOptions, BasicPublishOptions};
use lapin::{BasicProperties, Connection, ConnectionProperties};
use lepus::broker::{Broker, BrokerHandle};
use task_util::eventually;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

async fn start(builder: lepus::broker::BrokerBuilder) -> BrokerHandle {
    builder
        .listen("127.0.0.1:0")
        .start()
        .await
        .expect("broker starts")
}

/// A full round trip through the broker on a fresh lapin connection: declare, publish with a
/// confirm, get the message back.
async fn assert_serving(broker: &BrokerHandle) {
    let conn = within(
        "a well-behaved client connects",
        Connection::connect(&broker.amqp_url(), ConnectionProperties::default()),
    )
    .await
    .expect("the broker accepts a well-behaved client");
    let ch = confirm_channel(&conn).await;
    let q = declare_server_named(&ch).await;
    publish_confirmed(
        &ch,
        "",
        q.name().as_str(),
        b"ping",
        BasicProperties::default(),
    )
    .await;
    assert_eq!(
        get_body(&ch, q.name().as_str()).await.as_deref(),
        Some(&b"ping"[..])
    );
    conn.close(200, "bye".into()).await.expect("close");
}

/// Asserts [`assert_serving`] one last time, then shuts `broker` down.
async fn still_serving_then_shut_down(broker: BrokerHandle) {
    assert_serving(&broker).await;
    broker.shutdown().await;
}

/// Sends `bytes` (frames built with [`raw`]'s builders).
async fn send(s: &mut TcpStream, bytes: &[u8]) {
    s.write_all(bytes).await.expect("socket I/O");
}

/// Reads the next frame and asserts it is a method on channel `ch` that `is` accepts (`what`
/// names it in the failure).
async fn expect_method(
    s: &mut TcpStream,
    buf: &mut Vec<u8>,
    ch: u16,
    what: &str,
    is: impl Fn(&AMQPClass) -> bool,
) {
    let frame = raw::read_parsed_frame(s, buf).await;
    assert!(
        matches!(&frame, Some(AMQPFrame::Method(n, class)) if *n == ch && is(class)),
        "expected {what}, got {frame:?}"
    );
}

/// `connection.start`.
fn is_start(class: &AMQPClass) -> bool {
    matches!(
        class,
        AMQPClass::Connection(connection::AMQPMethod::Start(_))
    )
}

/// Handshakes as guest up to open-ok on a raw socket; returns the stream and read buffer.
async fn raw_open(broker: &BrokerHandle) -> (TcpStream, Vec<u8>) {
    raw_open_tuned(broker, 16).await
}

/// As [`raw_open`], answering `connection.tune` with `channel_max`.
async fn raw_open_tuned(broker: &BrokerHandle, channel_max: u16) -> (TcpStream, Vec<u8>) {
    let mut s = TcpStream::connect(broker.local_addr())
        .await
        .expect("connect");
    let mut buf = Vec::new();
    send(&mut s, raw::PROTOCOL_HEADER).await;
    expect_method(&mut s, &mut buf, 0, "connection.start", is_start).await;
    let start_ok = raw::start_ok(WireTable::default(), "PLAIN", b"\0guest\0guest");
    send(&mut s, &start_ok).await;
    expect_method(&mut s, &mut buf, 0, "connection.tune", |c| {
        matches!(c, AMQPClass::Connection(connection::AMQPMethod::Tune(_)))
    })
    .await;
    send(&mut s, &raw::tune_ok(channel_max, 131_072, 0)).await;
    send(&mut s, &raw::connection_open("/")).await;
    expect_method(&mut s, &mut buf, 0, "connection.open-ok", |c| {
        matches!(c, AMQPClass::Connection(connection::AMQPMethod::OpenOk(_)))
    })
    .await;
    (s, buf)
}

#[tokio::test]
async fn a_thousand_connections_abandoned_mid_handshake_leave_the_broker_serving() {
    let broker = start(Broker::builder().handshake_timeout(Duration::from_secs(30))).await;
    let mut abandoned = Vec::with_capacity(1000);
    for i in 0..1000usize {
        let mut s = TcpStream::connect(broker.local_addr())
            .await
            .expect("connect");
        // Stop at different points: nothing, half a header, a whole header (the broker then
        // waits for start-ok).
        let sent: &[u8] = match i % 3 {
            0 => b"",
            1 => b"AMQ",
            _ => raw::PROTOCOL_HEADER,
        };
        s.write_all(sent).await.expect("write");
        abandoned.push(s);
    }
    // All 1,000 are stalled in the handshake; others are still served.
    assert_serving(&broker).await;
    drop(abandoned);
    still_serving_then_shut_down(broker).await;
}

#[tokio::test]
async fn a_header_sent_one_byte_at_a_time_still_gets_connection_start() {
    let broker = start(Broker::builder()).await;
    let mut s = TcpStream::connect(broker.local_addr())
        .await
        .expect("connect");
    s.set_nodelay(true).expect("socket I/O");
    for b in raw::PROTOCOL_HEADER {
        s.write_all(&[*b]).await.expect("socket I/O");
        s.flush().await.expect("socket I/O");
        // Others are served between the slow client's bytes.
        assert_serving(&broker).await;
    }
    let mut buf = Vec::new();
    let what = "connection.start for the slow client";
    expect_method(&mut s, &mut buf, 0, what, is_start).await;
    broker.shutdown().await;
}

#[tokio::test]
async fn oversized_frames_and_messages_are_refused_and_others_served() {
    let broker = start(Broker::builder()).await;

    // A frame header announcing ~4 GiB: 501 FRAME_ERROR without the broker waiting for (or
    // allocating) the payload.
    let (mut s, mut buf) = raw_open(&broker).await;
    let mut frame = vec![1u8, 0, 1];
    frame.extend_from_slice(&0xFFFF_FFF0u32.to_be_bytes());
    frame.extend_from_slice(&[0u8; 64]);
    s.write_all(&frame).await.expect("socket I/O");
    match raw::read_parsed_frame(&mut s, &mut buf).await {
        Some(AMQPFrame::Method(0, AMQPClass::Connection(connection::AMQPMethod::Close(c)))) => {
            assert_eq!(c.reply_code, 501, "{c:?}")
        }
        other => panic!("expected connection.close 501, got {other:?}"),
    }
    assert_serving(&broker).await;

    // A message announcing 128 MiB + 1: 406 on the channel (RabbitMQ's max_message_size).
    let (mut s, mut buf) = raw_open(&broker).await;
    let reply = raw_channel_open(&mut s, &mut buf, 1).await;
    assert!(is_open_ok(&reply, 1), "{reply:?}");
    send(&mut s, &raw::basic_publish(1, "nowhere")).await;
    send(&mut s, &raw::content_header(1, 128 * 1024 * 1024 + 1)).await;
    match raw::read_parsed_frame(&mut s, &mut buf).await {
        Some(AMQPFrame::Method(1, AMQPClass::Channel(channel::AMQPMethod::Close(c)))) => {
            assert_eq!(c.reply_code, 406, "{c:?}");
            assert!(c.reply_text.as_str().contains("max size"), "{c:?}");
        }
        other => panic!("expected channel.close 406, got {other:?}"),
    }
    still_serving_then_shut_down(broker).await;
}

#[tokio::test]
async fn max_connections_refuses_the_connection_over_the_limit_with_530() {
    let broker = start(Broker::builder().max_connections(2)).await;
    let url = broker.amqp_url();
    let a = connect_url(&url).await;
    let b = connect_url(&url).await;
    let err = within(
        "the third connection",
        Connection::connect(&url, ConnectionProperties::default()),
    )
    .await
    .expect_err("over the limit");
    assert_eq!(reply_code(&err), Some(530), "got {err}");
    assert!(err.to_string().contains("connection limit"), "{err}");
    // Closing one makes room again.
    a.close(200, "bye".into()).await.expect("close");
    let admitted = connect_within_2_5_s(&url).await;
    assert!(admitted.is_some(), "a slot freed by a close is reusable");
    drop(b);
    broker.shutdown().await;
}

/// The socket budget counts every socket, logged in or not: sockets that never send a byte
/// fill it, the next one is closed at once (end of stream before any byte, instead of a place
/// in the kernel's backlog), a logged-in connection keeps working meanwhile, and a freed place
/// is taken again. It is what keeps file descriptors for the store when a client opens sockets
/// by the thousand: before it, 60 idle sockets under `ulimit -n 48` left the store unable to
/// open its next segment, and every persistent write failed from then on.
#[tokio::test]
async fn sockets_over_the_socket_limit_are_closed_at_once_logged_in_or_not() {
    let broker = start(Broker::builder().socket_limit(3)).await;
    let url = broker.amqp_url();
    let conn = connect_url(&url).await;
    let idle = [
        TcpStream::connect(broker.local_addr())
            .await
            .expect("connect"),
        TcpStream::connect(broker.local_addr())
            .await
            .expect("connect"),
    ];
    for _ in 0..3 {
        let mut over = TcpStream::connect(broker.local_addr())
            .await
            .expect("connect");
        let _ = over.write_all(raw::PROTOCOL_HEADER).await;
        let mut byte = [0u8; 1];
        let read = within(
            "the broker closes the socket over the budget",
            over.read(&mut byte),
        )
        .await;
        assert!(
            matches!(read, Ok(0) | Err(_)),
            "a socket over the budget got {read:?} instead of being closed"
        );
    }
    // The logged-in connection is unaffected.
    let ch = confirm_channel(&conn).await;
    let q = declare_server_named(&ch).await;
    publish_confirmed(&ch, "", q.name().as_str(), b"x", BasicProperties::default()).await;
    // A freed place is taken again (once the broker has seen the idle socket go).
    drop(idle);
    let admitted = connect_within_2_5_s(&url).await;
    assert!(admitted.is_some(), "a freed place admits a new connection");
    conn.close(200, "bye".into()).await.expect("close");
    broker.shutdown().await;
}

/// A lapin connection to `url`, tried every 50 ms for 2.5 s (for a place the broker frees
/// once it has seen a connection go); `None` if every try was refused.
async fn connect_within_2_5_s(url: &str) -> Option<Connection> {
    for _ in 0..50 {
        if let Ok(c) = Connection::connect(url, ConnectionProperties::default()).await {
            return Some(c);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    None
}

/// Sends `channel.open` on `ch` and returns the broker's answer.
async fn raw_channel_open(s: &mut TcpStream, buf: &mut Vec<u8>, ch: u16) -> Option<AMQPFrame> {
    send(s, &raw::channel_open(ch)).await;
    raw::read_parsed_frame(s, buf).await
}

/// Opens each of `channels`, asserting each gets its open-ok.
async fn open_channels(s: &mut TcpStream, buf: &mut Vec<u8>, channels: &[u16]) {
    for &ch in channels {
        let reply = raw_channel_open(s, buf, ch).await;
        assert!(is_open_ok(&reply, ch), "channel {ch}: {reply:?}");
    }
}

fn is_open_ok(frame: &Option<AMQPFrame>, ch: u16) -> bool {
    matches!(frame, Some(AMQPFrame::Method(n, AMQPClass::Channel(channel::AMQPMethod::OpenOk(_)))) if *n == ch)
}

/// The `connection.close` in `frame`, or a panic naming what came instead.
fn connection_close(frame: Option<AMQPFrame>) -> connection::Close {
    match frame {
        Some(AMQPFrame::Method(0, AMQPClass::Connection(connection::AMQPMethod::Close(c)))) => c,
        other => panic!("expected connection.close, got {other:?}"),
    }
}

#[tokio::test]
async fn channel_max_counts_open_channels_and_refuses_one_more_with_530() {
    let broker = start(Broker::builder().channel_max(2)).await;

    // lapin takes the broker's proposal.
    let conn = connect_url(&broker.amqp_url()).await;
    assert_eq!(conn.configuration().channel_max(), 2);
    conn.close(200, "bye".into()).await.expect("close");

    // Two channels open; the third is refused on the connection with 530 and RabbitMQ's
    // text, and nothing more is served on it.
    let (mut s, mut buf) = raw_open_tuned(&broker, 2).await;
    open_channels(&mut s, &mut buf, &[1, 2]).await;
    let close = connection_close(raw_channel_open(&mut s, &mut buf, 3).await);
    assert_eq!(close.reply_code, 530, "{close:?}");
    assert_eq!(
        close.reply_text.as_str(),
        "NOT_ALLOWED - number of channels opened (2) has reached the negotiated channel_max (2)"
    );
    let close_ok = AMQPClass::Connection(connection::AMQPMethod::CloseOk(connection::CloseOk {}));
    send(&mut s, &raw::method(0, close_ok)).await;
    assert!(
        raw::read_parsed_frame(&mut s, &mut buf).await.is_none(),
        "the broker hangs up"
    );

    // The limit counts open channels: closing one makes room for another.
    let (mut s, mut buf) = raw_open_tuned(&broker, 2).await;
    open_channels(&mut s, &mut buf, &[1, 2]).await;
    let close = AMQPClass::Channel(channel::AMQPMethod::Close(channel::Close {
        reply_code: 200,
        reply_text: "bye".into(),
        class_id: 0,
        method_id: 0,
    }));
    send(&mut s, &raw::method(1, close)).await;
    expect_method(&mut s, &mut buf, 1, "channel.close-ok", |c| {
        matches!(c, AMQPClass::Channel(channel::AMQPMethod::CloseOk(_)))
    })
    .await;
    let reply = raw_channel_open(&mut s, &mut buf, 1).await;
    assert!(is_open_ok(&reply, 1), "reopened channel 1: {reply:?}");

    // A client may negotiate a lower limit, and then that one applies.
    let (mut s, mut buf) = raw_open_tuned(&broker, 1).await;
    let reply = raw_channel_open(&mut s, &mut buf, 1).await;
    assert!(is_open_ok(&reply, 1), "{reply:?}");
    let close = connection_close(raw_channel_open(&mut s, &mut buf, 2).await);
    assert_eq!(close.reply_code, 530, "{close:?}");
    assert!(
        close
            .reply_text
            .as_str()
            .ends_with("negotiated channel_max (1)"),
        "{close:?}"
    );

    still_serving_then_shut_down(broker).await;
}

#[tokio::test]
async fn consumer_max_per_channel_refuses_one_more_consumer_with_530() {
    let broker = start(Broker::builder().consumer_max_per_channel(2)).await;
    let conn = connect_url(&broker.amqp_url()).await;
    let (a, b) = (channel(&conn).await, channel(&conn).await);
    let q = declare_server_named(&a).await;
    let queue = q.name().as_str();

    // The cap is per channel: two consumers on each of two channels. (Kept: lapin cancels a
    // consumer whose handle is dropped.)
    let mut consumers = Vec::new();
    for ch in [&a, &b] {
        for tag in ["c1", "c2"] {
            let c = try_consume_tagged(ch, queue, tag, BasicConsumeOptions::default())
                .await
                .unwrap_or_else(|e| panic!("consumer {tag}: {e}"));
            consumers.push(c);
        }
    }
    // It counts current consumers: a cancelled one frees its place.
    b.basic_cancel("c2".into(), BasicCancelOptions::default())
        .await
        .expect("cancel");
    consumers.push(
        try_consume_tagged(&b, queue, "c3", BasicConsumeOptions::default())
            .await
            .expect("a consumer in the freed place"),
    );

    // A third consumer on channel a: the connection closes with 530, as RabbitMQ's
    // consumer_max_per_channel does.
    let text = assert_code(
        within(
            "the refused basic.consume",
            try_consume_tagged(&a, queue, "c3", BasicConsumeOptions::default()),
        )
        .await,
        530,
    );
    assert!(
        text.contains("reached maximum (2) of consumers per channel"),
        "{text}"
    );
    let closed = eventually(Duration::from_secs(2), || !conn.status().connected()).await;
    assert!(closed, "530 closes the whole connection");
    still_serving_then_shut_down(broker).await;
}

#[tokio::test]
async fn max_message_size_closes_only_the_publishing_channel_with_406() {
    let broker = start(Broker::builder().max_message_size(1024)).await;
    let conn = connect_url(&broker.amqp_url()).await;

    // A bystander channel with a consumer, on the same connection.
    let bystander = conn.create_channel().await.expect("bystander channel");
    let q = declare_server_named(&bystander).await;
    let queue = q.name().as_str().to_owned();
    let mut consumer = consume(&bystander, &queue, true).await;

    // Exactly the limit is accepted and delivered.
    let publisher = confirm_channel(&conn).await;
    let at_limit = vec![b'a'; 1024];
    publish_confirmed(
        &publisher,
        "",
        &queue,
        &at_limit,
        BasicProperties::default(),
    )
    .await;
    assert_eq!(next(&mut consumer).await.data, at_limit);

    // One byte more: channel.close 406 with RabbitMQ's text, reported on the pending confirm.
    let confirm = publisher
        .basic_publish(
            "".into(),
            queue.as_str().into(),
            BasicPublishOptions::default(),
            &[b'b'; 1025],
            BasicProperties::default(),
        )
        .await
        .expect("basic.publish is sent");
    let text = assert_code(within("the refused publish", confirm).await, 406);
    assert!(
        text.contains("message size 1025 is larger than configured max size 1024"),
        "{text}"
    );
    assert!(
        !publisher.status().connected(),
        "the publishing channel is closed"
    );
    assert_quiet(&mut consumer).await;

    // The connection and its other channel live on.
    assert!(conn.status().connected());
    publish(&bystander, "", &queue, b"still here").await;
    assert_eq!(next(&mut consumer).await.data, b"still here");
    let other = confirm_channel(&conn).await;
    publish_confirmed(
        &other,
        "",
        &queue,
        b"new channel",
        BasicProperties::default(),
    )
    .await;
    assert_eq!(next(&mut consumer).await.data, b"new channel");
    conn.close(200, "bye".into()).await.expect("close");
    broker.shutdown().await;
}
