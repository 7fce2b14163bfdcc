//! Issue 13, Done means 3: another connection's `queue.declare` latency while one client
//! publishes the worst topic routing it can construct, against the release broker.
//!
//! Run: `cargo bench -p lepus-broker --features fuzzing --bench topic_stall`
//! (`-- --seconds N --patterns N`; defaults 20 s per phase, 1,000 patterns).
//!
//! It starts `lepus-broker` (`cargo bench` builds it with the bench profile, that is release;
//! `bench/results/2026-12-07-topic-routing.txt` says how its figures were built) on
//! 127.0.0.1:0 with a temporary data directory and no management listener; binds
//! `--patterns` random 255-byte patterns over `#`, `*` and `a` (the costliest set
//! `topic_route` found) plus five structured ones (`#.#...#.b`, `#.a.#.a...`, ...) from
//! `amq.topic` to 100 queues (`x-max-length` 10, so memory stays flat); then measures, for
//! `--seconds` each:
//!
//! 1. idle: one connection loops `queue.declare` (server-named, exclusive) and
//!    `queue.delete`; the latency of each declare and of each declare + delete.
//! 2. loaded: the same while one other connection publishes 255-byte keys (`a.a...a`,
//!    128 words, and 127 words then `b`) to `amq.topic` as fast as confirms come back (256 in
//!    flight).
//!
//! Prints p50 / p99 / max of both, the publisher's routes per second and the load average.
//! Figures, not assertions: the machine may be loaded (say so with them).

use std::collections::VecDeque;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use lapin::options::{
    BasicPublishOptions, ConfirmSelectOptions, QueueBindOptions, QueueDeclareOptions,
    QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Connection, ConnectionProperties};
use tokio::io::{AsyncBufReadExt, BufReader};

mod common;
use common::Rng;

const QUEUES: usize = 100;
const IN_FLIGHT: usize = 256;

fn arg(name: &str, default: u64) -> u64 {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .map_or(default, |v| v.parse().expect("a number"))
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

/// p50 / p99 / max in milliseconds.
fn summary(samples: &mut [Duration]) -> String {
    samples.sort_unstable();
    let at = |q: f64| {
        let i = ((samples.len() as f64 * q) as usize).min(samples.len() - 1);
        samples[i].as_secs_f64() * 1e3
    };
    format!(
        "n {:>6}  p50 {:>7.3} ms  p99 {:>7.3} ms  max {:>8.3} ms",
        samples.len(),
        at(0.5),
        at(0.99),
        samples[samples.len() - 1].as_secs_f64() * 1e3
    )
}

/// Declares and deletes server-named queues for `seconds`: (declare, declare + delete).
async fn declare_loop(url: &str, seconds: u64) -> (Vec<Duration>, Vec<Duration>) {
    let conn = Connection::connect(url, ConnectionProperties::default())
        .await
        .expect("declarer connects");
    let ch = conn.create_channel().await.expect("channel");
    let (mut declares, mut rounds) = (Vec::new(), Vec::new());
    let end = Instant::now() + Duration::from_secs(seconds);
    while Instant::now() < end {
        let t = Instant::now();
        let q = ch
            .queue_declare(
                "".into(),
                QueueDeclareOptions::exclusive(),
                FieldTable::default(),
            )
            .await
            .expect("queue.declare");
        declares.push(t.elapsed());
        ch.queue_delete(q.name().clone(), QueueDeleteOptions::default())
            .await
            .expect("queue.delete");
        rounds.push(t.elapsed());
    }
    let _ = conn.close(200, "done".into()).await;
    (declares, rounds)
}

/// Publishes the worst keys to `amq.topic` with `IN_FLIGHT` confirms outstanding until `stop`.
async fn publish_loop(url: String, stop: Arc<AtomicBool>, routed: Arc<AtomicU64>) {
    let conn = Connection::connect(&url, ConnectionProperties::default())
        .await
        .expect("publisher connects");
    let ch = conn.create_channel().await.expect("channel");
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .expect("confirm.select");
    let keys = [vec!["a"; 128].join("."), vec!["a"; 127].join(".") + ".b"];
    assert!(keys.iter().all(|k| k.len() == 255));
    let mut pending = VecDeque::new();
    let mut i = 0usize;
    while !stop.load(Ordering::Relaxed) {
        if pending.len() >= IN_FLIGHT {
            let confirm: lapin::PublisherConfirm = pending.pop_front().expect("non-empty");
            confirm.await.expect("confirm");
            routed.fetch_add(1, Ordering::Relaxed);
        }
        let confirm = ch
            .basic_publish(
                "amq.topic".into(),
                keys[i % 2].as_str().into(),
                BasicPublishOptions::default(),
                b"x",
                BasicProperties::default(),
            )
            .await
            .expect("basic.publish");
        pending.push_back(confirm);
        i += 1;
    }
    // The confirms still in flight are not awaited: with costly routes they would take
    // minutes; the broker is killed right after.
    drop(pending);
    drop(conn);
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let seconds = arg("--seconds", 20);
    let patterns = arg("--patterns", 1000) as usize;
    let data_dir = tempfile::tempdir().expect("temp dir");
    let mut broker = tokio::process::Command::new(env!("CARGO_BIN_EXE_lepus-broker"))
        .args(["--listen", "127.0.0.1:0", "--management-listen", ""])
        .arg("--data-dir")
        .arg(data_dir.path())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start lepus-broker");
    let mut lines = BufReader::new(broker.stdout.take().expect("piped")).lines();
    let line = lines
        .next_line()
        .await
        .expect("read the broker's stdout")
        .expect("a listening line");
    let addr = line
        .strip_prefix("lepus-broker listening on ")
        .expect("the listening line")
        .to_owned();
    let url = format!("amqp://guest:guest@{addr}/%2f");

    // Topology: the patterns bound from amq.topic to QUEUES bounded queues.
    let setup = Connection::connect(&url, ConnectionProperties::default())
        .await
        .expect("connect");
    let ch = setup.create_channel().await.expect("channel");
    let mut bounded = FieldTable::default();
    bounded.insert("x-max-length".into(), AMQPValue::LongInt(10));
    for q in 0..QUEUES {
        ch.queue_declare(
            format!("stall.q{q}").as_str().into(),
            QueueDeclareOptions::default(),
            bounded.clone(),
        )
        .await
        .expect("declare");
    }
    let mut all = vec![
        "#.".repeat(127) + "b",
        "#.".repeat(127) + "#",
        "#.a.".repeat(63) + "#.a",
        "#.*.".repeat(63) + "#.*",
        "*.#.".repeat(63) + "*.#",
    ];
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    all.extend((0..patterns).map(|_| rng.pattern(&["#", "*", "a"])));
    let bind_started = Instant::now();
    for (i, p) in all.iter().enumerate() {
        ch.queue_bind(
            format!("stall.q{}", i % QUEUES).as_str().into(),
            "amq.topic".into(),
            p.as_str().into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect("bind");
    }
    println!(
        "broker {addr}: {} patterns bound from amq.topic to {QUEUES} queues in {:.1} s; load average {}",
        all.len(),
        bind_started.elapsed().as_secs_f64(),
        load_average()
    );

    let (mut d, mut r) = declare_loop(&url, seconds).await;
    println!("idle    queue.declare          {}", summary(&mut d));
    println!("idle    queue.declare + delete {}", summary(&mut r));
    println!("        load average {}", load_average());

    let stop = Arc::new(AtomicBool::new(false));
    let routed = Arc::new(AtomicU64::new(0));
    let publisher = tokio::spawn(publish_loop(url.clone(), stop.clone(), routed.clone()));
    // Let the publisher fill its window first.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = routed.load(Ordering::Relaxed);
    let started = Instant::now();
    let (mut d, mut r) = declare_loop(&url, seconds).await;
    let rate = (routed.load(Ordering::Relaxed) - before) as f64 / started.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    publisher.await.expect("publisher");
    println!("loaded  queue.declare          {}", summary(&mut d));
    println!("loaded  queue.declare + delete {}", summary(&mut r));
    println!(
        "        publisher: {rate:.1} routes/s confirmed ({} in all, keys of 255 bytes); load average {}",
        routed.load(Ordering::Relaxed),
        load_average()
    );
    drop(setup);
    let _ = broker.start_kill();
    let _ = broker.wait().await;
}
