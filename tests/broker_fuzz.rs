//! Nothing a client sends may panic the broker or disturb another client: connections send
//! random frames (well-framed, with random class/method ids and argument bytes, and random
//! content frames) while a panic hook watches every thread of this process, then a
//! well-behaved client must still publish and consume. Bundled broker only.
//!
//! (Was `tests/core_fuzz.rs`.)

#![allow(clippy::unwrap_used)]

mod amqp;
mod common;
mod raw;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use amqp::{consume, declare_queue, get_body, next, publish};
use lapin::options::*;
use lapin::types::FieldTable;
use lapin::{BasicProperties, Connection, ConnectionProperties};
use raw::{
    channel_open, connection_open, raw_frame, start_ok, tune_ok, FRAME_END, PROTOCOL_HEADER,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use common::Rng;

/// A connection that writes the client side of the handshake (PLAIN guest/guest, vhost "/",
/// channels 1 to 3) in one go, without waiting for the broker's replies.
async fn open(addr: &str) -> TcpStream {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let mut hello = PROTOCOL_HEADER.to_vec();
    hello.extend(start_ok(FieldTable::default(), "PLAIN", b"\0guest\0guest"));
    hello.extend(tune_ok(2047, 131_072, 0));
    hello.extend(connection_open("/"));
    for ch in 1..=3u16 {
        hello.extend(channel_open(ch));
    }
    s.write_all(&hello).await.unwrap();
    s
}

/// Counts the panics of every thread of this process from now on (the broker runs in it).
fn count_panics() -> Arc<AtomicUsize> {
    let panics = Arc::new(AtomicUsize::new(0));
    let seen = panics.clone();
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        seen.fetch_add(1, Ordering::SeqCst);
        previous(info);
    }));
    panics
}

/// One random frame: mostly methods of real classes with random arguments.
fn random_frame(rng: &mut Rng) -> Vec<u8> {
    const METHODS: &[(u16, &[u16])] = &[
        (10, &[10, 11, 20, 21, 30, 31, 40, 41, 50, 51, 60, 61]),
        (20, &[10, 11, 20, 21, 40, 41]),
        (40, &[10, 11, 20, 21, 30, 31, 40, 51]),
        (50, &[10, 11, 20, 21, 30, 31, 40, 41, 50, 51]),
        (
            60,
            &[
                10, 11, 20, 21, 30, 31, 40, 50, 60, 70, 71, 72, 80, 90, 100, 110, 111, 120,
            ],
        ),
        (85, &[10, 11]),
        (90, &[10, 11, 20, 21, 30, 31]),
    ];
    let channel = rng.below(5) as u16;
    match rng.below(10) {
        0 => {
            let mut p = vec![0, 60, 0, 0];
            p.extend_from_slice(&rng.below(64).to_be_bytes());
            p.extend_from_slice(&[0, 0]);
            raw_frame(2, channel, &p, FRAME_END)
        }
        1 => {
            let len = rng.below(40) as usize;
            raw_frame(3, channel, &vec![0xAB; len], FRAME_END)
        }
        _ => {
            let (class, ids) = METHODS[rng.below(METHODS.len() as u64) as usize];
            let id = ids[rng.below(ids.len() as u64) as usize];
            let mut p = class.to_be_bytes().to_vec();
            p.extend_from_slice(&id.to_be_bytes());
            let len = rng.below(48) as usize;
            for _ in 0..len {
                // Small bytes make plausible lengths, flags and names.
                p.push(if rng.below(3) == 0 {
                    rng.below(256) as u8
                } else {
                    rng.below(6) as u8
                });
            }
            raw_frame(1, channel, &p, FRAME_END)
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_frames_never_panic_the_broker_or_disturb_others() {
    let panics = count_panics();
    let broker = common::bundled_broker(|b| b).await;
    let addr = raw::addr(&broker);
    let mut fuzzers = Vec::new();
    for seed in 1..=300u64 {
        let addr = addr.clone();
        fuzzers.push(tokio::spawn(async move {
            let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
            let mut s = open(&addr).await;
            let mut out = Vec::new();
            for _ in 0..(1 + rng.below(30)) {
                out.extend(random_frame(&mut rng));
            }
            let _ = s.write_all(&out).await;
            let mut sink = [0u8; 4096];
            let _ = tokio::time::timeout(Duration::from_millis(500), async {
                while let Ok(n) = s.read(&mut sink).await {
                    if n == 0 {
                        break;
                    }
                }
            })
            .await;
        }));
    }
    // Meanwhile a well-behaved client works as usual.
    let (conn, ch) = amqp::open(&broker).await;
    declare_queue(&ch, "fuzz.bystander", FieldTable::default()).await;
    let mut consumer = consume(&ch, "fuzz.bystander", true).await;
    for i in 0..50u8 {
        publish(&ch, "", "fuzz.bystander", &[i]).await;
        assert_eq!(next(&mut consumer).await.data, vec![i]);
    }
    for f in fuzzers {
        f.await.unwrap();
    }
    conn.close(200, "bye".into()).await.unwrap();
    broker.stop().await;
    assert_eq!(panics.load(Ordering::SeqCst), 0, "a broker thread panicked");
}

/// Random but well-formed operations through lapin: declares, binds, deletes, publishes with
/// random properties, consumes, gets, acks/nacks with random tags, qos, tx and confirm mode on
/// a handful of names, so method handlers (not just the decoder) see odd combinations.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_valid_operations_never_panic_the_broker() {
    use lapin::types::AMQPValue;
    use lapin::ExchangeKind;

    let panics = count_panics();
    let broker = common::bundled_broker(|b| b).await;
    let url = broker.url().to_owned();
    let mut workers = Vec::new();
    for seed in 1..=6u64 {
        let url = url.clone();
        workers.push(tokio::spawn(async move {
            let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
            let conn = Connection::connect(&url, ConnectionProperties::default())
                .await
                .unwrap();
            let mut ch = conn.create_channel().await.unwrap();
            let mut consumers = Vec::new();
            for _ in 0..300 {
                if !ch.status().connected() {
                    match conn.create_channel().await {
                        Ok(c) => ch = c,
                        Err(_) => break,
                    }
                }
                let q = format!("fz.q{}", rng.below(4));
                let x = format!("fz.x{}", rng.below(3));
                let kinds = [
                    ExchangeKind::Direct,
                    ExchangeKind::Fanout,
                    ExchangeKind::Topic,
                    ExchangeKind::Headers,
                ];
                let key = ["", "a", "a.b", "#", "*.b", "a.#.c"][rng.below(6) as usize];
                let flag = |r: &mut Rng| r.below(2) == 0;
                let mut args = FieldTable::default();
                for (name, value) in [
                    ("x-message-ttl", AMQPValue::LongInt(rng.below(50) as i32)),
                    ("x-max-length", AMQPValue::LongInt(rng.below(4) as i32)),
                    (
                        "x-overflow",
                        AMQPValue::LongString(
                            ["drop-head", "reject-publish", "reject-publish-dlx", "bogus"]
                                [rng.below(4) as usize]
                                .into(),
                        ),
                    ),
                    (
                        "x-dead-letter-exchange",
                        AMQPValue::LongString(format!("fz.x{}", rng.below(3)).into()),
                    ),
                    (
                        "x-max-priority",
                        AMQPValue::LongInt(rng.below(300) as i32 - 20),
                    ),
                    ("x-expires", AMQPValue::LongInt(rng.below(100) as i32)),
                    (
                        "x-match",
                        AMQPValue::LongString(
                            ["any", "all", "weird"][rng.below(3) as usize].into(),
                        ),
                    ),
                ] {
                    if rng.below(4) == 0 {
                        args.insert(name.into(), value);
                    }
                }
                let _ = match rng.below(16) {
                    0 => ch
                        .queue_declare(
                            q.as_str().into(),
                            QueueDeclareOptions {
                                durable: flag(&mut rng),
                                exclusive: flag(&mut rng),
                                auto_delete: flag(&mut rng),
                                passive: rng.below(5) == 0,
                                nowait: false,
                            },
                            args,
                        )
                        .await
                        .map(|_| ()),
                    1 => {
                        ch.exchange_declare(
                            x.as_str().into(),
                            kinds[rng.below(4) as usize].clone(),
                            ExchangeDeclareOptions {
                                auto_delete: flag(&mut rng),
                                internal: rng.below(4) == 0,
                                ..Default::default()
                            },
                            args,
                        )
                        .await
                    }
                    2 => {
                        ch.queue_bind(
                            q.as_str().into(),
                            x.as_str().into(),
                            key.into(),
                            QueueBindOptions::default(),
                            args,
                        )
                        .await
                    }
                    3 => {
                        ch.exchange_bind(
                            x.as_str().into(),
                            format!("fz.x{}", rng.below(3)).as_str().into(),
                            key.into(),
                            ExchangeBindOptions::default(),
                            args,
                        )
                        .await
                    }
                    4 => ch
                        .queue_delete(
                            q.as_str().into(),
                            QueueDeleteOptions {
                                if_unused: flag(&mut rng),
                                if_empty: flag(&mut rng),
                                nowait: false,
                            },
                        )
                        .await
                        .map(|_| ()),
                    5 => {
                        ch.exchange_delete(
                            x.as_str().into(),
                            ExchangeDeleteOptions {
                                if_unused: flag(&mut rng),
                                nowait: false,
                            },
                        )
                        .await
                    }
                    6 => ch
                        .queue_purge(q.as_str().into(), QueuePurgeOptions::default())
                        .await
                        .map(|_| ()),
                    7..=9 => {
                        let mut props =
                            BasicProperties::default().with_priority(rng.below(256) as u8);
                        if flag(&mut rng) {
                            props = props.with_expiration(
                                ["0", "5", "-1", "x", "99999999999999999999"]
                                    [rng.below(5) as usize]
                                    .into(),
                            );
                        }
                        if rng.below(4) == 0 {
                            props = props.with_reply_to("amq.rabbitmq.reply-to".into());
                        }
                        let (exchange, rk) = if flag(&mut rng) {
                            (x.clone(), key.to_owned())
                        } else {
                            (String::new(), q.clone())
                        };
                        ch.basic_publish(
                            exchange.as_str().into(),
                            rk.as_str().into(),
                            BasicPublishOptions {
                                mandatory: flag(&mut rng),
                                immediate: false,
                            },
                            &vec![7u8; rng.below(300) as usize],
                            props,
                        )
                        .await
                        .map(|_| ())
                    }
                    10 => {
                        let source = if rng.below(4) == 0 {
                            "amq.rabbitmq.reply-to".to_owned()
                        } else {
                            q.clone()
                        };
                        match ch
                            .basic_consume(
                                source.as_str().into(),
                                "".into(),
                                BasicConsumeOptions {
                                    no_ack: flag(&mut rng),
                                    exclusive: rng.below(4) == 0,
                                    ..Default::default()
                                },
                                args,
                            )
                            .await
                        {
                            Ok(c) => {
                                consumers.push(c);
                                Ok(())
                            }
                            Err(e) => Err(e),
                        }
                    }
                    11 => ch
                        .basic_get(
                            q.as_str().into(),
                            BasicGetOptions {
                                no_ack: flag(&mut rng),
                            },
                        )
                        .await
                        .map(|_| ()),
                    12 => {
                        ch.basic_ack(
                            rng.below(20),
                            BasicAckOptions {
                                multiple: flag(&mut rng),
                            },
                        )
                        .await
                    }
                    13 => {
                        ch.basic_nack(
                            rng.below(20),
                            BasicNackOptions {
                                multiple: flag(&mut rng),
                                requeue: flag(&mut rng),
                            },
                        )
                        .await
                    }
                    14 => {
                        ch.basic_qos(
                            rng.below(5) as u16,
                            BasicQosOptions {
                                global: flag(&mut rng),
                            },
                        )
                        .await
                    }
                    _ => match rng.below(5) {
                        0 => ch.tx_select().await,
                        1 => ch.tx_commit().await,
                        2 => ch.tx_rollback().await,
                        3 => ch.confirm_select(ConfirmSelectOptions::default()).await,
                        _ => {
                            ch.basic_recover(BasicRecoverOptions { requeue: true })
                                .await
                        }
                    },
                };
            }
            let _ = conn.close(200, "bye".into()).await;
        }));
    }
    for w in workers {
        w.await.unwrap();
    }
    // The broker still serves a well-behaved client.
    let (conn, ch) = amqp::open(&broker).await;
    declare_queue(&ch, "fz.after", FieldTable::default()).await;
    publish(&ch, "", "fz.after", b"ok").await;
    let got = get_body(&ch, "fz.after").await.expect("the message");
    assert_eq!(got, b"ok");
    conn.close(200, "bye".into()).await.unwrap();
    broker.stop().await;
    assert_eq!(panics.load(Ordering::SeqCst), 0, "a broker thread panicked");
}
