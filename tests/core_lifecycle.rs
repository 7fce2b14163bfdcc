//! Broker-core lifecycle checks on raw sockets and lapin: handshake timeout, heartbeats sent
//! and missed, graceful shutdown with 320, and queue lifecycle arguments (auto-delete,
//! x-expires). Bundled broker only where a broker option is needed.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use futures::StreamExt;
use lapin::options::*;
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Connection, ConnectionProperties};
use lepus::broker::Broker;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn frame(kind: u8, channel: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = vec![kind];
    f.extend_from_slice(&channel.to_be_bytes());
    f.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    f.extend_from_slice(payload);
    f.push(0xCE);
    f
}

fn method(channel: u16, class: u16, id: u16, args: &[u8]) -> Vec<u8> {
    let mut p = class.to_be_bytes().to_vec();
    p.extend_from_slice(&id.to_be_bytes());
    p.extend_from_slice(args);
    frame(1, channel, &p)
}

fn short(s: &str) -> Vec<u8> {
    let mut v = vec![s.len() as u8];
    v.extend_from_slice(s.as_bytes());
    v
}

/// Reads frames until `want` (class, method) shows up; returns its arguments.
async fn expect_method(sock: &mut TcpStream, buf: &mut Vec<u8>, want: (u16, u16)) -> Vec<u8> {
    loop {
        while buf.len() >= 7 {
            let size = u32::from_be_bytes([buf[3], buf[4], buf[5], buf[6]]) as usize;
            if buf.len() < size + 8 {
                break;
            }
            let f: Vec<u8> = buf.drain(..size + 8).collect();
            if f[0] == 1 {
                let class = u16::from_be_bytes([f[7], f[8]]);
                let id = u16::from_be_bytes([f[9], f[10]]);
                if (class, id) == want {
                    return f[11..7 + size].to_vec();
                }
            }
        }
        let mut chunk = [0u8; 4096];
        let n = tokio::time::timeout(Duration::from_secs(10), sock.read(&mut chunk))
            .await
            .expect("frame within 10 s")
            .unwrap();
        assert!(n > 0, "socket closed while waiting for {want:?}");
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// Opens a connection by hand, asking for `heartbeat` seconds.
async fn raw_open(addr: std::net::SocketAddr, heartbeat: u16) -> (TcpStream, Vec<u8>) {
    let mut sock = TcpStream::connect(addr).await.unwrap();
    let mut buf = Vec::new();
    sock.write_all(b"AMQP\x00\x00\x09\x01").await.unwrap();
    expect_method(&mut sock, &mut buf, (10, 10)).await;
    let mut start_ok = 0u32.to_be_bytes().to_vec();
    start_ok.extend(short("PLAIN"));
    start_ok.extend_from_slice(&12u32.to_be_bytes());
    start_ok.extend_from_slice(b"\0guest\0guest");
    start_ok.extend(short("en_US"));
    sock.write_all(&method(0, 10, 11, &start_ok)).await.unwrap();
    expect_method(&mut sock, &mut buf, (10, 30)).await;
    let mut tune_ok = 2047u16.to_be_bytes().to_vec();
    tune_ok.extend_from_slice(&131072u32.to_be_bytes());
    tune_ok.extend_from_slice(&heartbeat.to_be_bytes());
    sock.write_all(&method(0, 10, 31, &tune_ok)).await.unwrap();
    let mut open = short("/");
    open.extend(short(""));
    open.push(0);
    sock.write_all(&method(0, 10, 40, &open)).await.unwrap();
    expect_method(&mut sock, &mut buf, (10, 41)).await;
    (sock, buf)
}

async fn read_to_eof(sock: &mut TcpStream) -> Vec<u8> {
    let mut all = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        match sock.read(&mut chunk).await {
            Ok(0) | Err(_) => return all,
            Ok(n) => all.extend_from_slice(&chunk[..n]),
        }
    }
}

#[tokio::test]
async fn handshake_timeout_drops_a_silent_client() {
    let handle = Broker::builder()
        .listen("127.0.0.1:0")
        .handshake_timeout(Duration::from_millis(200))
        .start()
        .await
        .unwrap();
    let mut sock = TcpStream::connect(handle.local_addr()).await.unwrap();
    let started = std::time::Instant::now();
    let got = tokio::time::timeout(Duration::from_secs(5), read_to_eof(&mut sock))
        .await
        .expect("closed by the broker");
    assert!(got.is_empty());
    assert!(started.elapsed() >= Duration::from_millis(150));
    handle.shutdown().await;
}

#[tokio::test]
async fn heartbeats_are_sent_and_a_silent_client_is_dropped() {
    let handle = Broker::builder()
        .listen("127.0.0.1:0")
        .start()
        .await
        .unwrap();
    let (mut sock, _) = raw_open(handle.local_addr(), 1).await;
    // We stay silent: the broker sends heartbeats (type 8) and, after two missed intervals,
    // closes the socket.
    let got = tokio::time::timeout(Duration::from_secs(10), read_to_eof(&mut sock))
        .await
        .expect("dropped within 10 s");
    assert!(got.len() >= 8 && got[0] == 8 && got[7] == 0xCE, "{got:?}");
    handle.shutdown().await;
}

#[tokio::test]
async fn bad_protocol_header_gets_ours_back() {
    let handle = Broker::builder()
        .listen("127.0.0.1:0")
        .start()
        .await
        .unwrap();
    let mut sock = TcpStream::connect(handle.local_addr()).await.unwrap();
    sock.write_all(b"HTTP/1.1").await.unwrap();
    let got = tokio::time::timeout(Duration::from_secs(5), read_to_eof(&mut sock))
        .await
        .unwrap();
    assert_eq!(got, b"AMQP\x00\x00\x09\x01");
    handle.shutdown().await;
}

#[tokio::test]
async fn shutdown_closes_connections_with_320() {
    let handle = Broker::builder()
        .listen("127.0.0.1:0")
        .start()
        .await
        .unwrap();
    let (mut sock, mut buf) = raw_open(handle.local_addr(), 0).await;
    let url = handle.amqp_url();
    let conn = Connection::connect(&url, ConnectionProperties::default())
        .await
        .unwrap();
    let ch = conn.create_channel().await.unwrap();
    ch.queue_declare(
        "inflight".into(),
        QueueDeclareOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    for _ in 0..100 {
        ch.basic_publish(
            "".into(),
            "inflight".into(),
            BasicPublishOptions::default(),
            b"x",
            BasicProperties::default(),
        )
        .await
        .unwrap();
    }
    let stopping = tokio::spawn(handle.shutdown());
    let close = expect_method(&mut sock, &mut buf, (10, 50)).await;
    assert_eq!(u16::from_be_bytes([close[0], close[1]]), 320);
    sock.write_all(&method(0, 10, 51, &[])).await.unwrap();
    tokio::time::timeout(Duration::from_secs(10), stopping)
        .await
        .expect("shutdown finishes")
        .unwrap();
    assert!(!conn.status().connected());
}

#[tokio::test]
async fn auto_delete_and_expires() {
    let broker = common::broker().await;
    let conn = Connection::connect(broker.url(), ConnectionProperties::default())
        .await
        .unwrap();
    let ch = conn.create_channel().await.unwrap();
    let auto = common::unique("core.auto");
    ch.queue_declare(
        auto.as_str().into(),
        QueueDeclareOptions {
            auto_delete: true,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await
    .unwrap();
    let mut consumer = ch
        .basic_consume(
            auto.as_str().into(),
            "c".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    ch.basic_cancel("c".into(), BasicCancelOptions::default())
        .await
        .unwrap();
    assert!(consumer.next().await.is_none());
    let expiring = common::unique("core.expires");
    let mut args = FieldTable::default();
    args.insert("x-expires".into(), AMQPValue::LongInt(200));
    ch.queue_declare(
        expiring.as_str().into(),
        QueueDeclareOptions::default(),
        args,
    )
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(800)).await;
    for q in [&auto, &expiring] {
        let probe = conn.create_channel().await.unwrap();
        let err = probe
            .queue_declare(
                q.as_str().into(),
                QueueDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .unwrap_err();
        assert!(
            matches!(err.kind(), lapin::ErrorKind::ProtocolError(e) if e.get_id() == 404),
            "{q}: {err:?}"
        );
    }
    conn.close(200, "bye".into()).await.unwrap();
    broker.stop().await;
}

#[tokio::test]
async fn global_qos_limits_the_channel_and_delete_preconditions_hold() {
    let broker = common::broker().await;
    let conn = Connection::connect(broker.url(), ConnectionProperties::default())
        .await
        .unwrap();
    let ch = conn.create_channel().await.unwrap();
    let (q1, q2) = (common::unique("core.g1"), common::unique("core.g2"));
    for q in [&q1, &q2] {
        ch.queue_declare(
            q.as_str().into(),
            QueueDeclareOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
        for _ in 0..5 {
            ch.basic_publish(
                "".into(),
                q.as_str().into(),
                BasicPublishOptions::default(),
                b"m",
                BasicProperties::default(),
            )
            .await
            .unwrap();
        }
    }
    let cch = conn.create_channel().await.unwrap();
    cch.basic_qos(3, BasicQosOptions { global: true })
        .await
        .unwrap();
    let mut a = cch
        .basic_consume(
            q1.as_str().into(),
            "a".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    let mut b = cch
        .basic_consume(
            q2.as_str().into(),
            "b".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    let mut got = 0;
    loop {
        tokio::select! {
            Some(_) = a.next() => got += 1,
            Some(_) = b.next() => got += 1,
            _ = tokio::time::sleep(Duration::from_millis(300)) => break,
        }
    }
    assert_eq!(got, 3, "global prefetch 3 across both consumers");
    // if-unused refuses while a consumer exists; if-empty refuses while messages wait.
    let err = ch
        .queue_delete(
            q1.as_str().into(),
            QueueDeleteOptions {
                if_unused: true,
                ..Default::default()
            },
        )
        .await
        .unwrap_err();
    assert!(matches!(err.kind(), lapin::ErrorKind::ProtocolError(e) if e.get_id() == 406));
    cch.close(200, "bye".into()).await.unwrap();
    let ch = conn.create_channel().await.unwrap();
    let err = ch
        .queue_delete(
            q2.as_str().into(),
            QueueDeleteOptions {
                if_empty: true,
                ..Default::default()
            },
        )
        .await
        .unwrap_err();
    assert!(matches!(err.kind(), lapin::ErrorKind::ProtocolError(e) if e.get_id() == 406));
    let ch = conn.create_channel().await.unwrap();
    assert_eq!(
        ch.queue_purge(q1.as_str().into(), QueuePurgeOptions::default())
            .await
            .unwrap(),
        5
    );
    assert_eq!(
        ch.queue_delete(q2.as_str().into(), QueueDeleteOptions::default())
            .await
            .unwrap(),
        5
    );
    ch.queue_delete(q1.as_str().into(), QueueDeleteOptions::default())
        .await
        .unwrap();
    conn.close(200, "bye".into()).await.unwrap();
    broker.stop().await;
}
