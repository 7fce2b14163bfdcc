//! Seeds the fuzz corpus (`broker/fuzz/corpus/`) with real client traffic: lapin runs a few
//! sessions through a recording TCP proxy in front of an in-process broker, and every
//! connection's client-to-broker bytes become one seed (`connection` target: the whole
//! stream; `frames` target: the stream after the 8-byte protocol header).
//!
//! Ignored by default because it writes into the source tree:
//! `cargo test -p lepus-broker --test fuzz_corpus_capture -- --ignored`.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use std::sync::{Arc, Mutex};

use lapin::options::*;
use lapin::types::FieldTable;
use lapin::{BasicProperties, Connection, ConnectionProperties, ExchangeKind};
use lepus_broker::Broker;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// One byte log per proxied connection, in accept order.
type Recordings = Arc<Mutex<Vec<Arc<Mutex<Vec<u8>>>>>>;

/// Starts a proxy to `target`; each accepted connection's client bytes are appended to a new
/// entry of the returned log.
async fn recording_proxy(target: std::net::SocketAddr) -> (std::net::SocketAddr, Recordings) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let log: Recordings = Arc::default();
    let log2 = log.clone();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let server = TcpStream::connect(target).await.unwrap();
            let record: Arc<Mutex<Vec<u8>>> = Arc::default();
            log2.lock().unwrap().push(record.clone());
            let (mut cr, mut cw) = client.into_split();
            let (mut sr, mut sw) = server.into_split();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 64 * 1024];
                while let Ok(n) = cr.read(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                    record.lock().unwrap().extend_from_slice(&buf[..n]);
                    if sw.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
                let _ = sw.shutdown().await;
            });
            tokio::spawn(async move {
                let _ = tokio::io::copy(&mut sr, &mut cw).await;
            });
        }
    });
    (addr, log)
}

async fn session(url: &str, kind: usize) {
    let conn = Connection::connect(url, ConnectionProperties::default())
        .await
        .unwrap();
    let ch = conn.create_channel().await.unwrap();
    match kind {
        0 => {}
        1 => {
            ch.confirm_select(ConfirmSelectOptions::default())
                .await
                .unwrap();
            ch.exchange_declare(
                "fx".into(),
                ExchangeKind::Topic,
                ExchangeDeclareOptions::default(),
                FieldTable::default(),
            )
            .await
            .unwrap();
            ch.queue_declare(
                "fq".into(),
                QueueDeclareOptions::default(),
                FieldTable::default(),
            )
            .await
            .unwrap();
            ch.queue_bind(
                "fq".into(),
                "fx".into(),
                "a.#".into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .unwrap();
            for i in 0..3u8 {
                ch.basic_publish(
                    "fx".into(),
                    "a.b".into(),
                    BasicPublishOptions::default(),
                    &vec![i; 5000],
                    BasicProperties::default().with_delivery_mode(2),
                )
                .await
                .unwrap()
                .await
                .unwrap();
            }
            ch.basic_qos(10, BasicQosOptions::default()).await.unwrap();
            let mut consumer = common::amqp::consume_tagged(&ch, "fq", "fc", false).await;
            use futures::StreamExt;
            for _ in 0..2 {
                let d = consumer.next().await.unwrap().unwrap();
                d.ack(BasicAckOptions::default()).await.unwrap();
            }
            let d = consumer.next().await.unwrap().unwrap();
            d.nack(BasicNackOptions {
                requeue: true,
                ..Default::default()
            })
            .await
            .unwrap();
            ch.basic_cancel("fc".into(), BasicCancelOptions::default())
                .await
                .unwrap();
            ch.queue_purge("fq".into(), QueuePurgeOptions::default())
                .await
                .unwrap();
            ch.queue_unbind(
                "fq".into(),
                "fx".into(),
                "a.#".into(),
                FieldTable::default(),
            )
            .await
            .unwrap();
            ch.queue_delete("fq".into(), QueueDeleteOptions::default())
                .await
                .unwrap();
            ch.exchange_delete("fx".into(), ExchangeDeleteOptions::default())
                .await
                .unwrap();
        }
        _ => {
            let q = common::amqp::declare_exclusive(&ch).await;
            ch.tx_select().await.unwrap();
            ch.basic_publish(
                "".into(),
                q.name().as_str().into(),
                BasicPublishOptions::default(),
                b"tx",
                BasicProperties::default(),
            )
            .await
            .unwrap();
            ch.tx_commit().await.unwrap();
            let got = ch
                .basic_get(q.name().as_str().into(), BasicGetOptions { no_ack: true })
                .await
                .unwrap();
            assert!(got.is_some());
            ch.close(200, "bye".into()).await.unwrap();
        }
    }
    conn.close(200, "bye".into()).await.unwrap();
}

#[tokio::test]
#[ignore = "writes seeds into broker/fuzz/corpus"]
async fn capture_lapin_sessions_as_seeds() {
    let broker = Broker::builder()
        .listen("127.0.0.1:0")
        .start()
        .await
        .unwrap();
    let (proxy, log) = recording_proxy(broker.local_addr()).await;
    let url = format!("amqp://guest:guest@{proxy}/%2f");
    for kind in 0..3 {
        session(&url, kind).await;
    }
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus");
    let names = ["handshake-close", "topology-publish-consume", "tx-get"];
    let records = log.lock().unwrap().clone();
    assert_eq!(records.len(), 3);
    for (record, name) in records.iter().zip(names) {
        let bytes = record.lock().unwrap().clone();
        assert!(
            bytes.starts_with(b"AMQP\x00\x00\x09\x01"),
            "{name} starts with the header"
        );
        for (target, data) in [("connection", &bytes[..]), ("frames", &bytes[8..])] {
            let dir = root.join(target);
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join(format!("seed-{name}")), data).unwrap();
        }
    }
    broker.shutdown().await;
}
