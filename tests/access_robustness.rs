//! Limits and hostile clients: the broker keeps serving well-behaved clients while 1,000
//! connections are opened and abandoned mid-handshake, while a client sends its protocol
//! header one byte at a time, and after oversized frames and messages; `max_connections`
//! refuses the connection over the limit with 530.
//!
//! Every broker here is started by the test on 127.0.0.1 port 0.

mod amqp;
mod common;

use std::time::Duration;

use amq_protocol::frame::{gen_frame, parse_frame, AMQPFrame, WriteContext};
use amq_protocol::protocol::{basic, channel, connection, AMQPClass};
use amq_protocol::types::{FieldTable as WireTable, LongString};
use amqp::*;
use lapin::options::QueueDeclareOptions;
use lapin::types::FieldTable;
use lapin::{BasicProperties, Connection, ConnectionProperties};
use lepus::broker::{Broker, BrokerHandle};
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
    let q = ch
        .queue_declare(
            "".into(),
            QueueDeclareOptions::exclusive(),
            FieldTable::default(),
        )
        .await
        .expect("declare");
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

fn encode(frame: &AMQPFrame) -> Vec<u8> {
    gen_frame(frame)(WriteContext::from(Vec::new()))
        .expect("serialise")
        .write
}

/// Reads frames until one parses; `None` on EOF or after 5 s.
async fn read_frame(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Option<AMQPFrame> {
    loop {
        if let Ok((rest, frame)) = parse_frame(&buf[..]) {
            let used = buf.len() - rest.len();
            buf.drain(..used);
            return Some(frame);
        }
        let mut chunk = [0u8; 4096];
        let n = tokio::time::timeout(DEADLINE, stream.read(&mut chunk))
            .await
            .ok()?
            .ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// Handshakes as guest up to open-ok on a raw socket; returns the stream and read buffer.
async fn raw_open(broker: &BrokerHandle) -> (TcpStream, Vec<u8>) {
    let mut s = TcpStream::connect(broker.local_addr())
        .await
        .expect("connect");
    let mut buf = Vec::new();
    s.write_all(b"AMQP\x00\x00\x09\x01")
        .await
        .expect("socket I/O");
    assert!(matches!(
        read_frame(&mut s, &mut buf).await,
        Some(AMQPFrame::Method(
            0,
            AMQPClass::Connection(connection::AMQPMethod::Start(_))
        ))
    ));
    let start_ok = AMQPClass::Connection(connection::AMQPMethod::StartOk(connection::StartOk {
        client_properties: WireTable::default(),
        mechanism: "PLAIN".into(),
        response: LongString::from("\0guest\0guest"),
        locale: "en_US".into(),
    }));
    s.write_all(&encode(&AMQPFrame::Method(0, start_ok)))
        .await
        .expect("socket I/O");
    assert!(matches!(
        read_frame(&mut s, &mut buf).await,
        Some(AMQPFrame::Method(
            0,
            AMQPClass::Connection(connection::AMQPMethod::Tune(_))
        ))
    ));
    let tune_ok = AMQPClass::Connection(connection::AMQPMethod::TuneOk(connection::TuneOk {
        channel_max: 16,
        frame_max: 131_072,
        heartbeat: 0,
    }));
    s.write_all(&encode(&AMQPFrame::Method(0, tune_ok)))
        .await
        .expect("socket I/O");
    let open = AMQPClass::Connection(connection::AMQPMethod::Open(connection::Open {
        virtual_host: "/".into(),
    }));
    s.write_all(&encode(&AMQPFrame::Method(0, open)))
        .await
        .expect("socket I/O");
    assert!(matches!(
        read_frame(&mut s, &mut buf).await,
        Some(AMQPFrame::Method(
            0,
            AMQPClass::Connection(connection::AMQPMethod::OpenOk(_))
        ))
    ));
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
            _ => b"AMQP\x00\x00\x09\x01",
        };
        s.write_all(sent).await.expect("write");
        abandoned.push(s);
    }
    // All 1,000 are stalled in the handshake; others are still served.
    assert_serving(&broker).await;
    drop(abandoned);
    assert_serving(&broker).await;
    broker.shutdown().await;
}

#[tokio::test]
async fn a_header_sent_one_byte_at_a_time_still_gets_connection_start() {
    let broker = start(Broker::builder()).await;
    let mut s = TcpStream::connect(broker.local_addr())
        .await
        .expect("connect");
    s.set_nodelay(true).expect("socket I/O");
    for b in b"AMQP\x00\x00\x09\x01" {
        s.write_all(&[*b]).await.expect("socket I/O");
        s.flush().await.expect("socket I/O");
        // Others are served between the slow client's bytes.
        assert_serving(&broker).await;
    }
    let mut buf = Vec::new();
    assert!(
        matches!(
            read_frame(&mut s, &mut buf).await,
            Some(AMQPFrame::Method(
                0,
                AMQPClass::Connection(connection::AMQPMethod::Start(_))
            ))
        ),
        "the slow client got connection.start"
    );
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
    match read_frame(&mut s, &mut buf).await {
        Some(AMQPFrame::Method(0, AMQPClass::Connection(connection::AMQPMethod::Close(c)))) => {
            assert_eq!(c.reply_code, 501, "{c:?}")
        }
        other => panic!("expected connection.close 501, got {other:?}"),
    }
    assert_serving(&broker).await;

    // A message announcing 128 MiB + 1: 406 on the channel (RabbitMQ's max_message_size).
    let (mut s, mut buf) = raw_open(&broker).await;
    let open = AMQPClass::Channel(channel::AMQPMethod::Open(channel::Open {}));
    s.write_all(&encode(&AMQPFrame::Method(1, open)))
        .await
        .expect("socket I/O");
    assert!(matches!(
        read_frame(&mut s, &mut buf).await,
        Some(AMQPFrame::Method(
            1,
            AMQPClass::Channel(channel::AMQPMethod::OpenOk(_))
        ))
    ));
    let publish = AMQPClass::Basic(basic::AMQPMethod::Publish(basic::Publish {
        exchange: "".into(),
        routing_key: "nowhere".into(),
        mandatory: false,
        immediate: false,
    }));
    s.write_all(&encode(&AMQPFrame::Method(1, publish)))
        .await
        .expect("socket I/O");
    let header = AMQPFrame::Header(
        1,
        amq_protocol::frame::AMQPContentHeader {
            class_id: 60,
            body_size: 128 * 1024 * 1024 + 1,
            properties: basic::AMQPProperties::default(),
        },
    );
    s.write_all(&encode(&header)).await.expect("socket I/O");
    match read_frame(&mut s, &mut buf).await {
        Some(AMQPFrame::Method(1, AMQPClass::Channel(channel::AMQPMethod::Close(c)))) => {
            assert_eq!(c.reply_code, 406, "{c:?}");
            assert!(c.reply_text.as_str().contains("max size"), "{c:?}");
        }
        other => panic!("expected channel.close 406, got {other:?}"),
    }
    assert_serving(&broker).await;
    broker.shutdown().await;
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
    let mut admitted = None;
    for _ in 0..50 {
        if let Ok(c) = Connection::connect(&url, ConnectionProperties::default()).await {
            admitted = Some(c);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(admitted.is_some(), "a slot freed by a close is reusable");
    drop(b);
    broker.shutdown().await;
}
