//! The AMQP `connection` and `channel` classes through lapin: authentication (PLAIN, AMQPLAIN,
//! bad credentials), vhost check, tune negotiation, heartbeats on an idle connection, many
//! channels, channel close and flow. Each test passes against RabbitMQ 3.10, which is the
//! specification the bundled broker must meet. Wire-level details (server properties, the
//! protocol header, malformed frames) are in `broker_raw_*.rs`.

mod amqp;
mod common;

use std::time::Duration;

use amqp::*;
use lapin::options::{ChannelFlowOptions, QueueDeclareOptions};
use lapin::types::FieldTable;

/// `url` with `query` appended (`?k=v`).
fn with_query(url: &str, query: &str) -> String {
    if url.contains('?') {
        format!("{url}&{query}")
    } else {
        format!("{url}?{query}")
    }
}

#[tokio::test]
async fn tune_negotiates_rabbitmq_defaults() {
    let broker = common::broker().await;
    let conn = connect(&broker).await;
    let config = conn.configuration();
    assert_eq!(config.channel_max(), 2047);
    assert_eq!(config.frame_max(), 131_072);
    assert_eq!(config.heartbeat(), 60);
    conn.close(200, "bye".into()).await.expect("close");
}

#[tokio::test]
async fn client_may_lower_frame_max_and_bodies_are_split_accordingly() {
    let broker = common::broker().await;
    let url = with_query(broker.url(), "frame_max=4096&channel_max=16&heartbeat=30");
    let conn = connect_url(&url).await;
    assert_eq!(conn.configuration().frame_max(), 4096);
    assert_eq!(conn.configuration().channel_max(), 16);
    assert_eq!(conn.configuration().heartbeat(), 30);
    // A body of many frames at the small frame_max still round-trips.
    let ch = confirm_channel(&conn).await;
    let q = common::unique("q.smallframes");
    ch.queue_declare(
        q.as_str().into(),
        QueueDeclareOptions::exclusive(),
        FieldTable::default(),
    )
    .await
    .expect("declare");
    let body: Vec<u8> = (0..300_000u32).map(|i| (i % 253) as u8).collect();
    publish_confirmed(&ch, "", &q, &body, Default::default()).await;
    let got = get_body(&ch, &q).await.expect("message");
    assert!(got == body, "body reassembled from 4 KiB frames");
}

#[tokio::test]
async fn plain_and_amqplain_authenticate_guest() {
    let broker = common::broker().await;
    for mechanism in ["plain", "amqplain"] {
        let url = with_query(broker.url(), &format!("auth_mechanism={mechanism}"));
        let conn = try_connect_url(&url)
            .await
            .unwrap_or_else(|e| panic!("{mechanism} login: {e}"));
        let ch = conn.create_channel().await.expect("channel");
        declare_server_named(&ch).await;
        conn.close(200, "bye".into()).await.expect("close");
    }
}

#[tokio::test]
async fn wrong_password_is_refused_403() {
    let broker = common::broker().await;
    let url = broker
        .url()
        .replacen("guest:guest", "guest:not-the-password", 1);
    assert_ne!(url, broker.url(), "the test URL carries guest:guest");
    // RabbitMQ honours the client's authentication_failure_close capability (lapin sets it):
    // it sends connection.close 403 ACCESS_REFUSED before closing the socket.
    let err = try_connect_url(&url).await.expect_err("login must fail");
    assert_eq!(reply_code(&err), Some(403), "got {err}");
    // The broker is unaffected.
    let (_conn, ch) = open(&broker).await;
    declare_server_named(&ch).await;
}

#[tokio::test]
async fn unknown_vhost_is_refused_530() {
    let broker = common::broker().await;
    let base = broker.url();
    let url = match base.rfind('/') {
        Some(i) => format!("{}/{}", &base[..i], common::unique("no-such-vhost")),
        None => panic!("URL without a vhost path: {base}"),
    };
    let err = try_connect_url(&url).await.expect_err("open must fail");
    assert_eq!(reply_code(&err), Some(530), "got {err}");
}

#[tokio::test]
async fn an_idle_connection_with_a_short_heartbeat_stays_alive() {
    let broker = common::broker().await;
    let url = with_query(broker.url(), "heartbeat=1");
    let conn = connect_url(&url).await;
    assert_eq!(conn.configuration().heartbeat(), 1);
    let ch = conn.create_channel().await.expect("channel");
    // Idle for three heartbeat intervals: only heartbeats flow. A broker that failed to send
    // them, or that did not count the client's as traffic, would close the connection.
    tokio::time::sleep(Duration::from_millis(3500)).await;
    assert!(conn.status().connected(), "connection survived idling");
    declare_server_named(&ch).await;
    conn.close(200, "bye".into()).await.expect("close");
}

#[tokio::test]
async fn many_channels_on_one_connection_work_independently() {
    let broker = common::broker().await;
    let conn = connect(&broker).await;
    let mut channels = Vec::new();
    for _ in 0..64 {
        channels.push(conn.create_channel().await.expect("channel"));
    }
    let mut ids: Vec<u16> = channels.iter().map(|c| c.id()).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), 64, "distinct channel ids");
    let q = common::unique("q.channels");
    declare_queue(&channels[0], &q, FieldTable::default()).await;
    for (i, ch) in channels.iter().enumerate() {
        publish(ch, "", &q, format!("{i}").as_bytes()).await;
    }
    wait_message_count(&channels[0], &q, 64).await;
    // An error on one channel leaves the others open.
    assert_code(
        passive_queue(&channels[1], &common::unique("q.nope")).await,
        404,
    );
    passive_queue(&channels[2], &q)
        .await
        .expect("sibling channel unaffected");
    // Closing half the channels and opening new ones reuses ids without confusion.
    for ch in channels.drain(32..) {
        ch.close(200, "bye".into()).await.expect("close");
    }
    for _ in 0..32 {
        let ch = conn.create_channel().await.expect("channel");
        passive_queue(&ch, &q).await.expect("new channel works");
    }
    channels[0]
        .queue_delete(q.as_str().into(), Default::default())
        .await
        .expect("delete");
}

#[tokio::test]
async fn closing_a_channel_twice_and_reopening_is_fine() {
    let broker = common::broker().await;
    let conn = connect(&broker).await;
    let ch = conn.create_channel().await.expect("channel");
    ch.close(200, "bye".into()).await.expect("close");
    assert!(ch.close(200, "bye".into()).await.is_err(), "already closed");
    let ch = conn.create_channel().await.expect("channel");
    let q = declare_unique_queue(&ch, "q.reopen").await;
    delete_queues(&ch, &[&q]).await;
}

#[tokio::test]
async fn channel_flow_active_is_acknowledged() {
    let (_broker, _conn, ch) = start_and_open().await;
    let active = ch
        .channel_flow(ChannelFlowOptions { active: true })
        .await
        .expect("channel.flow");
    assert!(active);
}

#[tokio::test]
async fn connection_close_from_the_client_is_acknowledged() {
    let broker = common::broker().await;
    let conn = connect(&broker).await;
    let _ch = conn.create_channel().await.expect("channel");
    within("close-ok", conn.close(200, "bye".into()))
        .await
        .expect("connection.close-ok");
    // lapin ends "closed" only if it handles the close-ok before it sees the socket close.
    // RabbitMQ sends close-ok and leaves closing the socket to the client; a broker that hangs
    // up right after close-ok makes lapin record an I/O error ("Socket was readable but we read
    // 0") and end "errored".
    assert!(
        conn.status().closed(),
        "connection state after close-ok: connected={} closing={} errored={}",
        conn.status().connected(),
        conn.status().closing(),
        conn.status().errored()
    );
}
