//! Durability of the bundled broker with a data directory: what survives a restart (durable
//! topology and persistent messages; not transient ones), and a crash test that kills the broker
//! process with SIGKILL at random moments while publishers and a consumer run.
//!
//! Bundled broker only (restarts and kills are ours to do); each test uses its own data
//! directory under the system temp dir.

#![allow(clippy::unwrap_used)]

mod common;

use common::DataDir;

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use lapin::options::*;
use lapin::types::FieldTable;
use lapin::{BasicProperties, Connection, ConnectionProperties, ExchangeKind};
use lepus::broker::{Broker, BrokerHandle};

async fn start(dir: &Path) -> BrokerHandle {
    Broker::builder()
        .listen("127.0.0.1:0")
        .data_dir(dir)
        .start()
        .await
        .expect("the broker starts with a data directory")
}

async fn connect(url: &str) -> Connection {
    Connection::connect(url, ConnectionProperties::default())
        .await
        .expect("connect")
}

fn persistent() -> BasicProperties {
    BasicProperties::default().with_delivery_mode(2)
}

#[tokio::test]
async fn restart_keeps_durable_topology_and_persistent_messages_only() {
    let dir = DataDir::new("durability.restart");
    let broker = start(dir.path()).await;
    let conn = connect(&broker.amqp_url()).await;
    let ch = conn.create_channel().await.unwrap();
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    let durable = QueueDeclareOptions {
        durable: true,
        ..QueueDeclareOptions::default()
    };
    ch.exchange_declare(
        "jobs".into(),
        ExchangeKind::Direct,
        ExchangeDeclareOptions {
            durable: true,
            ..ExchangeDeclareOptions::default()
        },
        FieldTable::default(),
    )
    .await
    .unwrap();
    ch.queue_declare("work".into(), durable, FieldTable::default())
        .await
        .unwrap();
    ch.queue_bind(
        "work".into(),
        "jobs".into(),
        "run".into(),
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    ch.queue_declare(
        "scratch".into(),
        QueueDeclareOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    let publish = |exchange: &'static str, key: &'static str, body: &'static [u8], props| {
        let ch = ch.clone();
        async move {
            let confirm = ch
                .basic_publish(
                    exchange.into(),
                    key.into(),
                    BasicPublishOptions::default(),
                    body,
                    props,
                )
                .await
                .unwrap()
                .await
                .unwrap();
            assert!(confirm.is_ack());
        }
    };
    publish("jobs", "run", b"p1", persistent()).await;
    publish("jobs", "run", b"transient", BasicProperties::default()).await;
    publish("jobs", "run", b"p2", persistent()).await;
    publish("", "work", b"p3", persistent()).await;
    publish("", "scratch", b"lost with its queue", persistent()).await;
    // Consume and ack p1: it must not come back.
    let got = ch
        .basic_get("work".into(), BasicGetOptions::default())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got.delivery.data, b"p1");
    got.delivery.ack(BasicAckOptions::default()).await.unwrap();
    conn.close(200, "bye".into()).await.unwrap();
    broker.shutdown().await;

    let broker = start(dir.path()).await;
    let conn = connect(&broker.amqp_url()).await;
    let ch = conn.create_channel().await.unwrap();
    let passive = QueueDeclareOptions {
        passive: true,
        ..QueueDeclareOptions::default()
    };
    let work = ch
        .queue_declare("work".into(), passive, FieldTable::default())
        .await
        .unwrap();
    assert_eq!(
        work.message_count(),
        2,
        "p2 and p3; p1 was acked, the transient one is gone"
    );
    for want in [&b"p2"[..], b"p3"] {
        let got = ch
            .basic_get("work".into(), BasicGetOptions::default())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(got.delivery.data, want);
        assert!(
            got.delivery.redelivered,
            "recovered messages may have been delivered"
        );
        assert_eq!(got.delivery.properties.delivery_mode(), &Some(2));
        got.delivery.ack(BasicAckOptions::default()).await.unwrap();
    }
    // The durable binding came back with the exchange.
    ch.basic_publish(
        "jobs".into(),
        "run".into(),
        BasicPublishOptions::default(),
        b"after restart",
        persistent(),
    )
    .await
    .unwrap();
    let got = ch
        .basic_get("work".into(), BasicGetOptions::default())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got.delivery.data, b"after restart");
    assert!(!got.delivery.redelivered);
    got.delivery.ack(BasicAckOptions::default()).await.unwrap();
    // The non-durable queue is gone.
    let err = ch
        .queue_declare("scratch".into(), passive, FieldTable::default())
        .await;
    assert!(err.is_err(), "non-durable queue survived a restart");
    let _ = conn.close(200, "bye".into()).await;
    broker.shutdown().await;
}

#[tokio::test]
async fn messages_that_left_for_good_stay_gone_after_restart() {
    let dir = DataDir::new("durability.gone");
    let broker = start(dir.path()).await;
    let conn = connect(&broker.amqp_url()).await;
    let ch = conn.create_channel().await.unwrap();
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    let durable = QueueDeclareOptions {
        durable: true,
        ..QueueDeclareOptions::default()
    };
    for q in ["kept", "doomed"] {
        ch.queue_declare(q.into(), durable, FieldTable::default())
            .await
            .unwrap();
    }
    let publish = |queue: &'static str, body: Vec<u8>| {
        let ch = ch.clone();
        async move {
            ch.basic_publish(
                "".into(),
                queue.into(),
                BasicPublishOptions::default(),
                &body,
                persistent(),
            )
            .await
            .unwrap()
            .await
            .unwrap()
        }
    };
    for i in 0..4u8 {
        publish("kept", vec![i]).await;
    }
    publish("doomed", vec![9]).await;
    let get = |no_ack: bool| {
        let ch = ch.clone();
        async move {
            ch.basic_get("kept".into(), BasicGetOptions { no_ack })
                .await
                .unwrap()
                .unwrap()
        }
    };
    // 0: taken with no-ack; 1: rejected without requeue; 2 and 3: purged.
    assert_eq!(get(true).await.delivery.data, [0]);
    let rejected = get(false).await;
    assert_eq!(rejected.delivery.data, [1]);
    rejected
        .delivery
        .reject(BasicRejectOptions { requeue: false })
        .await
        .unwrap();
    ch.queue_purge("kept".into(), QueuePurgeOptions::default())
        .await
        .unwrap();
    // 4: published after the purge, stays.
    publish("kept", vec![4]).await;
    ch.queue_delete("doomed".into(), QueueDeleteOptions::default())
        .await
        .unwrap();
    conn.close(200, "bye".into()).await.unwrap();
    broker.shutdown().await;

    let broker = start(dir.path()).await;
    let conn = connect(&broker.amqp_url()).await;
    let ch = conn.create_channel().await.unwrap();
    let passive = QueueDeclareOptions {
        passive: true,
        ..QueueDeclareOptions::default()
    };
    let kept = ch
        .queue_declare("kept".into(), passive, FieldTable::default())
        .await
        .unwrap();
    assert_eq!(kept.message_count(), 1);
    let got = ch
        .basic_get("kept".into(), BasicGetOptions { no_ack: true })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got.delivery.data, [4]);
    assert!(ch
        .queue_declare("doomed".into(), passive, FieldTable::default())
        .await
        .is_err());
    let _ = conn.close(200, "bye".into()).await;
    broker.shutdown().await;
}

#[tokio::test]
async fn a_damaged_data_directory_stops_the_start() {
    let dir = DataDir::new("durability.damaged");
    let broker = start(dir.path()).await;
    let conn = connect(&broker.amqp_url()).await;
    let ch = conn.create_channel().await.unwrap();
    ch.queue_declare(
        "q".into(),
        QueueDeclareOptions {
            durable: true,
            ..QueueDeclareOptions::default()
        },
        FieldTable::default(),
    )
    .await
    .unwrap();
    conn.close(200, "bye".into()).await.unwrap();
    broker.shutdown().await;
    // Flip one byte of the topology snapshot: its checksum no longer matches.
    let path = dir.path().join("definitions");
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[10] ^= 0x40;
    std::fs::write(&path, bytes).unwrap();
    let err = Broker::builder()
        .listen("127.0.0.1:0")
        .data_dir(dir.path())
        .start()
        .await
        .expect_err("a broker must not start on damaged files");
    assert!(
        err.to_string().contains("corrupt definitions file"),
        "{err}"
    );
}

// ----- crash test -------------------------------------------------------------------------

const CHILD_DIR_ENV: &str = "LEPUS_CRASH_BROKER_DIR";
const QUEUE: &str = "crash.work";
const PUBLISHERS: usize = 3;
const CYCLES: usize = 20;

/// The child process: a broker on a data directory, printing its address, until killed.
#[test]
#[ignore = "child process of broker_survives_sigkill_at_random_moments"]
fn crash_broker_child() {
    let Ok(dir) = std::env::var(CHILD_DIR_ENV) else {
        return;
    };
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async move {
        let broker = start(Path::new(&dir)).await;
        println!("LISTENING {}", broker.amqp_url());
        std::future::pending::<()>().await;
    });
}

fn spawn_broker(dir: &Path) -> (Child, String) {
    let mut command = common::test_child("crash_broker_child");
    command.env(CHILD_DIR_ENV, dir).stderr(Stdio::null());
    common::spawn_announcing(command, "LISTENING ")
}

/// The body of message `id`: the id, `|`, then a filler derived from it (any damage shows).
fn body_for(id: &str) -> Vec<u8> {
    let mut body = format!("{id}|").into_bytes();
    let n = 16 + id.len() * 7 % 500;
    body.extend(id.bytes().cycle().take(n));
    body
}

fn id_of(body: &[u8]) -> Option<String> {
    let end = body.iter().position(|&b| b == b'|')?;
    let id = String::from_utf8(body[..end].to_vec()).ok()?;
    (body_for(&id) == body).then_some(id)
}

/// What one cycle saw before the kill.
#[derive(Default)]
struct Seen {
    /// Published and confirmed (`basic.ack` from the broker).
    confirmed: HashSet<String>,
    /// Acked by our consumer (they may come back: the ack may not have been persisted).
    acked: HashSet<String>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_survives_sigkill_at_random_moments() {
    let dir = DataDir::new("durability.crash");
    // Kill moments from a fixed-seed xorshift, so a failing run can be replayed.
    let mut state: u64 = 0xc4a5_4001_9e37_79b9;
    let mut next_kill_ms = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        150 + state % 750
    };
    let mut published: HashSet<String> = HashSet::new();
    let (mut total_confirmed, mut total_recovered, mut total_redelivered) = (0, 0, 0);
    // Messages confirmed and not acked, still owed by the broker.
    let mut owed: HashSet<String> = HashSet::new();

    for cycle in 0..CYCLES {
        let (mut child, url) = spawn_broker(dir.path());
        // After a restart: drain what the broker kept, check it, ack it all.
        let conn = connect(&url).await;
        let ch = conn.create_channel().await.unwrap();
        ch.queue_declare(
            QUEUE.into(),
            QueueDeclareOptions {
                durable: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
        let mut recovered: HashMap<String, usize> = HashMap::new();
        while let Some(got) = ch
            .basic_get(QUEUE.into(), BasicGetOptions::default())
            .await
            .unwrap()
        {
            let id = id_of(&got.delivery.data).expect("a recovered message is intact");
            assert!(
                published.contains(&id),
                "cycle {cycle}: invented message {id}"
            );
            assert!(
                got.delivery.redelivered,
                "cycle {cycle}: {id} not marked redelivered"
            );
            *recovered.entry(id).or_default() += 1;
            total_redelivered += 1;
            got.delivery.ack(BasicAckOptions::default()).await.unwrap();
        }
        let lost: Vec<&String> = owed
            .iter()
            .filter(|id| !recovered.contains_key(*id))
            .collect();
        assert!(
            lost.is_empty(),
            "cycle {cycle}: lost confirmed messages {lost:?}"
        );
        total_recovered += recovered.len();
        owed.clear();
        let _ = conn.close(200, "drained".into()).await;

        // Now the load: publishers with confirms, a consumer acking every other message.
        let seen = Arc::new(Mutex::new(Seen::default()));
        let mut tasks = Vec::new();
        for p in 0..PUBLISHERS {
            let (url, seen) = (url.clone(), seen.clone());
            let ids: Vec<String> = (0..20_000).map(|n| format!("c{cycle}-p{p}-n{n}")).collect();
            published.extend(ids.iter().cloned());
            tasks.push(tokio::spawn(async move {
                let Ok(conn) = Connection::connect(&url, ConnectionProperties::default()).await
                else {
                    return;
                };
                let Ok(ch) = conn.create_channel().await else {
                    return;
                };
                if ch
                    .confirm_select(ConfirmSelectOptions::default())
                    .await
                    .is_err()
                {
                    return;
                }
                for id in ids {
                    let confirm = match ch
                        .basic_publish(
                            "".into(),
                            QUEUE.into(),
                            BasicPublishOptions::default(),
                            &body_for(&id),
                            persistent(),
                        )
                        .await
                    {
                        Ok(confirm) => confirm,
                        Err(_) => return,
                    };
                    match confirm.await {
                        Ok(c) if c.is_ack() => {
                            seen.lock().unwrap().confirmed.insert(id);
                        }
                        _ => return,
                    }
                }
            }));
        }
        {
            let (url, seen) = (url.clone(), seen.clone());
            tasks.push(tokio::spawn(async move {
                let Ok(conn) = Connection::connect(&url, ConnectionProperties::default()).await
                else {
                    return;
                };
                let Ok(ch) = conn.create_channel().await else {
                    return;
                };
                let _ = ch.basic_qos(50, BasicQosOptions::default()).await;
                let Ok(mut consumer) = ch
                    .basic_consume(
                        QUEUE.into(),
                        "acker".into(),
                        BasicConsumeOptions::default(),
                        FieldTable::default(),
                    )
                    .await
                else {
                    return;
                };
                let mut n = 0u64;
                while let Some(Ok(delivery)) = consumer.next().await {
                    n += 1;
                    let id = id_of(&delivery.data).expect("a delivered message is intact");
                    if n % 2 == 0 {
                        seen.lock().unwrap().acked.insert(id);
                        if delivery.ack(BasicAckOptions::default()).await.is_err() {
                            return;
                        }
                    }
                    // Odd ones stay unacked: after the crash they must come back.
                }
            }));
        }
        tokio::time::sleep(Duration::from_millis(next_kill_ms())).await;
        child.kill().unwrap(); // SIGKILL, mid-flight
        child.wait().unwrap();
        for task in tasks {
            let _ = tokio::time::timeout(Duration::from_secs(10), task).await;
        }
        let seen = seen.lock().unwrap();
        total_confirmed += seen.confirmed.len();
        owed.extend(seen.confirmed.difference(&seen.acked).cloned());
    }

    // A last restart settles the final cycle's debts.
    let (mut child, url) = spawn_broker(dir.path());
    let conn = connect(&url).await;
    let ch = conn.create_channel().await.unwrap();
    let mut recovered = HashSet::new();
    while let Some(got) = ch
        .basic_get(QUEUE.into(), BasicGetOptions::default())
        .await
        .unwrap()
    {
        let id = id_of(&got.delivery.data).expect("a recovered message is intact");
        assert!(published.contains(&id), "invented message {id}");
        recovered.insert(id);
        got.delivery.ack(BasicAckOptions::default()).await.unwrap();
    }
    let lost: Vec<&String> = owed.iter().filter(|id| !recovered.contains(*id)).collect();
    total_recovered += recovered.len();
    child.kill().unwrap();
    child.wait().unwrap();
    println!(
        "crash test: {CYCLES} cycles, {total_confirmed} confirmed, {total_recovered} recovered \
         ({total_redelivered} redelivered), lost = {}",
        lost.len()
    );
    assert!(lost.is_empty(), "lost confirmed messages {lost:?}");
    assert!(
        total_confirmed > CYCLES,
        "the publishers must have made progress"
    );
}
