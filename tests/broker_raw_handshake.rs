//! The connection handshake over a bare socket: the protocol header check, what
//! `connection.start` and `connection.tune` carry, and how the broker refuses a bad header,
//! bad credentials, an unknown mechanism and tune-ok values outside its limits. Each
//! expectation was read off RabbitMQ 3.10 byte by byte (its replies are quoted in comments);
//! a well-behaved lapin client ([`raw::Bystander`]) keeps working throughout.

mod amqp;
mod common;
mod raw;

use amq_protocol::protocol::{connection, AMQPClass};
use amq_protocol::types::{AMQPValue, FieldTable};
use raw::*;

/// Sends `header` as the very first bytes and checks the broker answers with exactly its own
/// protocol header and then closes the socket (AMQP 0-9-1 §4.2.2).
async fn refused_header(broker: &common::TestBroker, header: &[u8]) {
    let mut conn = RawConn::connect(broker).await;
    conn.send(header).await;
    let reply = conn.read_to_eof(DEADLINE).await;
    assert_eq!(
        reply,
        PROTOCOL_HEADER.to_vec(),
        "reply to header {header:?} must be AMQP 0-0-9-1 then close"
    );
}

#[tokio::test]
async fn a_bad_protocol_header_gets_ours_back_then_close() {
    let (broker, bystander) = broker_with_bystander().await;
    // RabbitMQ answers each of these with b"AMQP\x00\x00\x09\x01" and closes.
    for header in [
        &b"AMQP\x00\x00\x0a\x00"[..], // a version we do not speak
        b"AMQP\x00\x00\x09\x02",      // 0-9-2
        b"AMQP\x03\x01\x00\x00",      // AMQP 1.0 over TLS/SASL negotiation id 3
        b"GET / HTTP/1.1\r\n\r\n",    // not AMQP at all
        b"\x01\x00\x00\x00\x00\x00\x05\x00\x0a\x00\x0a\x00\xce", // a frame, no header
    ] {
        refused_header(&broker, header).await;
    }
    bystander.assert_unaffected().await;
}

#[tokio::test]
async fn connection_start_advertises_rabbitmq_capabilities_and_mechanisms() {
    let broker = common::broker().await;
    let conn = RawConn::started(&broker).await;
    let props = conn.server_properties.clone().expect("server properties");
    let caps = match props.inner().get("capabilities") {
        Some(AMQPValue::FieldTable(t)) => t.clone(),
        other => panic!("capabilities is not a table: {other:?}"),
    };
    for cap in [
        "publisher_confirms",
        "exchange_exchange_bindings",
        "basic.nack",
        "consumer_cancel_notify",
        "connection.blocked",
        "consumer_priorities",
        "authentication_failure_close",
        "per_consumer_qos",
        "direct_reply_to",
    ] {
        assert_eq!(
            caps.inner().get(cap),
            Some(&AMQPValue::Boolean(true)),
            "capability {cap}"
        );
    }
    // kombu reads product and version to decide how to use basic.qos.
    for key in ["product", "version", "platform"] {
        assert!(
            matches!(props.inner().get(key), Some(AMQPValue::LongString(s)) if !s.as_bytes().is_empty()),
            "server property {key}: {:?}",
            props.inner().get(key)
        );
    }
    let mechanisms: Vec<&str> = conn.mechanisms.split(' ').collect();
    assert!(mechanisms.contains(&"PLAIN"), "{mechanisms:?}");
    assert!(mechanisms.contains(&"AMQPLAIN"), "{mechanisms:?}");
    assert!(
        conn.locales.split(' ').any(|l| l == "en_US"),
        "{}",
        conn.locales
    );
}

#[tokio::test]
async fn connection_tune_proposes_rabbitmq_limits() {
    let broker = common::broker().await;
    let mut conn = RawConn::started(&broker).await;
    conn.authenticate().await;
    let tune = conn.tune.clone().expect("tune");
    // RabbitMQ 3.10 defaults: channel_max 2047, frame_max 131072, heartbeat 60.
    assert_eq!(
        (tune.channel_max, tune.frame_max, tune.heartbeat),
        (2047, 131_072, 60)
    );
}

#[tokio::test]
async fn amqplain_authenticates() {
    let broker = common::broker().await;
    let mut conn = RawConn::started(&broker).await;
    // AMQPLAIN response: a field table without its length prefix:
    // 5 "LOGIN" 'S' u32 5 "guest", 8 "PASSWORD" 'S' u32 5 "guest".
    conn.send(&start_ok(
        FieldTable::default(),
        "AMQPLAIN",
        &amqplain("guest", "guest"),
    ))
    .await;
    match conn.expect_method().await {
        (0, AMQPClass::Connection(connection::AMQPMethod::Tune(_))) => {}
        other => panic!("expected connection.tune after AMQPLAIN, got {other:?}"),
    }
}

#[tokio::test]
async fn bad_credentials_with_authentication_failure_close_get_403() {
    let (broker, bystander) = broker_with_bystander().await;
    let mut conn = RawConn::started(&broker).await;
    let props = failure_close_properties();
    conn.send(&start_ok(props, "PLAIN", b"\0guest\0wrong"))
        .await;
    // RabbitMQ: connection.close 403 "ACCESS_REFUSED - Login was refused using authentication
    // mechanism PLAIN. ...", class 0 method 0.
    let close = conn.expect_connection_close().await;
    assert_eq!(close.code, 403, "{close:?}");
    assert!(close.text.starts_with("ACCESS_REFUSED"), "{close:?}");
    bystander.assert_unaffected().await;
}

#[tokio::test]
async fn bad_credentials_without_the_capability_just_close() {
    let broker = common::broker().await;
    let mut conn = RawConn::started(&broker).await;
    conn.send(&start_ok(FieldTable::default(), "PLAIN", b"\0guest\0wrong"))
        .await;
    // RabbitMQ closes the socket without a frame: a client that did not ask for
    // authentication_failure_close would not understand a close during the handshake.
    // A connection.close 403 is accepted too.
    if let Some(close) = conn.expect_connection_close_or_drop().await {
        assert_eq!(close.code, 403, "{close:?}");
    }
}

#[tokio::test]
async fn an_unknown_mechanism_is_refused() {
    let (broker, bystander) = broker_with_bystander().await;
    let mut conn = RawConn::started(&broker).await;
    conn.send(&start_ok(FieldTable::default(), "FOO", b"whatever"))
        .await;
    // AMQP 0-9-1, connection.start-ok, field "mechanism": "If the mechanism field does not
    // contain one of the security mechanisms proposed by the server in the Start method, the
    // server MUST close the connection without sending any further data." RabbitMQ does exactly
    // that (and logs "unknown authentication mechanism 'FOO'").
    let rest = conn.read_to_eof(DEADLINE).await;
    assert!(
        rest.is_empty(),
        "no further data after an unknown mechanism, got {rest:?}"
    );
    bystander.assert_unaffected().await;
}

/// Sends a tune-ok the broker must refuse and checks the connection does not proceed.
async fn refused_tune_ok(broker: &common::TestBroker, channel_max: u16, frame_max: u32) {
    let mut conn = RawConn::started(broker).await;
    conn.authenticate().await;
    conn.send(&tune_ok(channel_max, frame_max, 0)).await;
    // AMQP 0-9-1, connection.tune-ok: "If the client specifies a channel max [frame max] that
    // is higher than the value provided by the server, the server MUST close the connection
    // without attempting a negotiated close", and frame-max may not be below frame-min-size
    // (4096). RabbitMQ 3.10 drops the socket ("negotiated channel_max = 3000 is higher than the
    // maximum allowed value (2047)", "frame_max=1024 < 4096 min size" in its log).
    let rest = conn.read_to_eof(DEADLINE).await;
    assert!(
        rest.is_empty(),
        "no negotiated close after tune-ok channel_max={channel_max} frame_max={frame_max}, \
         got {rest:?}"
    );
}

#[tokio::test]
async fn tune_ok_outside_the_server_limits_is_refused() {
    let (broker, bystander) = broker_with_bystander().await;
    // Concurrently (RabbitMQ waits 3 s before each such close): channel_max above the
    // server's 2047, frame_max below the 4096 minimum, frame_max above the server's 131072.
    tokio::join!(
        refused_tune_ok(&broker, 3000, 131_072),
        refused_tune_ok(&broker, 2047, 1024),
        refused_tune_ok(&broker, 2047, 1 << 20),
    );
    bystander.assert_unaffected().await;
}

#[tokio::test]
async fn a_non_connection_method_on_channel_zero_is_504() {
    // queue.declare on channel 0. RabbitMQ: 504 "CHANNEL_ERROR - unexpected method in
    // connection state running", class 50 method 10.
    let close = closes_with(false, &queue_declare_on(0)).await;
    close.assert_names(504, 50, 10);
}

#[tokio::test]
async fn a_frame_of_exactly_frame_max_is_accepted_and_a_larger_payload_is_501() {
    let (broker, bystander) = broker_with_bystander().await;
    let (_admin, admin) = amqp::open(&broker).await;
    let q = amqp::declare_unique_queue(&admin, "q.raw.exact").await;

    // frame_max counts the whole frame: 7 header bytes + payload + 1 end byte. RabbitMQ's
    // limit for the payload is frame_max - 8 ("frame_too_large,200004,131064").
    let mut conn = RawConn::open(&broker, 4096, 0).await;
    conn.open_channel(1).await;
    let body = vec![b'x'; 4096 - 8];
    conn.send(&basic_publish(1, &q)).await;
    conn.send(&content_header(1, body.len() as u64)).await;
    conn.send(&raw_frame(3, 1, &body, FRAME_END)).await;
    // A synchronous round trip on channel 0 would not prove the body was accepted; the
    // message arriving in the queue does.
    // get_eventually fails the test if the exactly-frame_max body is never enqueued.
    let got = amqp::get_eventually(&admin, &q).await.delivery.data;
    assert_eq!(got.len(), 4096 - 8);

    // RabbitMQ adds a fudge of 8 bytes (?FRAME_SIZE_FUDGE in rabbit_reader): it refuses a
    // payload only when it exceeds frame_max itself, although its message quotes frame_max - 8.
    // Frames of frame_max + 1 ..= frame_max + 8 bytes are therefore accepted by RabbitMQ and
    // may be refused by a stricter broker; the test does not pin that range down. A payload of
    // frame_max + 1 is over the limit for both.
    let body = vec![b'y'; 4096 + 1];
    conn.send(&basic_publish(1, &q)).await;
    conn.send(&content_header(1, body.len() as u64)).await;
    conn.send_lossy(&raw_frame(3, 1, &body, FRAME_END)).await;
    let close = conn.expect_connection_close().await;
    assert_eq!(close.code, 501, "{close:?}");
    amqp::delete_queues(&admin, &[&q]).await;
    bystander.assert_unaffected().await;
}

#[tokio::test]
async fn a_client_connection_close_is_answered_with_close_ok_then_eof() {
    let broker = common::broker().await;
    let mut conn = RawConn::with_channel_1(&broker).await;
    conn.send(&method(
        0,
        AMQPClass::Connection(connection::AMQPMethod::Close(connection::Close {
            reply_code: 200,
            reply_text: "bye".into(),
            class_id: 0,
            method_id: 0,
        })),
    ))
    .await;
    // The broker answers connection.close with close-ok on channel 0 and sends nothing more.
    // RabbitMQ then leaves the socket to the client (the peer that sent close closes it once it
    // has the close-ok); a broker that closes the socket itself is tolerated here, but see
    // broker_connection.rs `connection_close_from_the_client_is_acknowledged` for what that
    // does to lapin.
    match conn.next_non_heartbeat().await {
        Outcome::Frame(amq_protocol::frame::AMQPFrame::Method(
            0,
            AMQPClass::Connection(connection::AMQPMethod::CloseOk(_)),
        )) => {}
        other => panic!("expected connection.close-ok, got {other:?}"),
    }
    let mut buf = [0u8; 64];
    match tokio::time::timeout(
        std::time::Duration::from_millis(300),
        tokio::io::AsyncReadExt::read(conn.stream_mut(), &mut buf),
    )
    .await
    {
        Err(_) | Ok(Ok(0)) | Ok(Err(_)) => {}
        Ok(Ok(n)) => panic!("bytes after close-ok: {:?}", &buf[..n]),
    }
}

/// How long a stalled handshake may last before the broker must hang up. RabbitMQ's
/// `handshake_timeout` is 10 s; the bundled broker may be quicker.
const HANDSHAKE_LIMIT: std::time::Duration = std::time::Duration::from_secs(15);

/// Reads `conn` until the broker hangs up (within [`HANDSHAKE_LIMIT`]) and asserts it sent
/// nothing more (`what` says what was expected).
async fn assert_hung_up_without_a_frame(mut conn: RawConn, what: &str) {
    let rest = conn.read_to_eof(HANDSHAKE_LIMIT).await;
    assert!(rest.is_empty(), "{what}, got {rest:?}");
}

#[tokio::test]
async fn stalled_handshakes_are_dropped_after_the_handshake_timeout() {
    let broker = common::broker().await;
    // Both stalls run at once: the test takes one handshake timeout, not two.
    let silent = async {
        // Connected, never sends the protocol header.
        let conn = RawConn::connect(&broker).await;
        assert_hung_up_without_a_frame(conn, "nothing sent to a silent client").await;
    };
    let stalled = async {
        // Got connection.start, never answers: the timeout covers the whole handshake.
        let conn = RawConn::started(&broker).await;
        let what = "no frames after connection.start to a stalled client";
        assert_hung_up_without_a_frame(conn, what).await;
    };
    tokio::join!(silent, stalled);
}

// Moved from tests/core_lifecycle.rs (handshake_timeout_drops_a_silent_client): a client that
// never sends the protocol header is dropped after the handshake timeout, without a frame.
// Bundled broker only (the timeout is one of its options).
#[tokio::test]
async fn handshake_timeout_drops_a_silent_client() {
    let broker =
        common::bundled_broker(|b| b.handshake_timeout(std::time::Duration::from_millis(200)))
            .await;
    let mut conn = RawConn::connect(&broker).await;
    let started = std::time::Instant::now();
    let got = conn.read_to_eof(DEADLINE).await;
    assert!(got.is_empty(), "{got:?}");
    assert!(started.elapsed() >= std::time::Duration::from_millis(150));
    broker.stop().await;
}

// Moved from tests/core_lifecycle.rs (bad_protocol_header_gets_ours_back): eight bytes of
// HTTP, exactly a header's length. Bundled broker only, as it was.
#[tokio::test]
async fn bad_protocol_header_gets_ours_back() {
    let broker = common::bundled_broker(|b| b).await;
    refused_header(&broker, b"HTTP/1.1").await;
    broker.stop().await;
}
