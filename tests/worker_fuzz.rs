//! A property test for workers (issue 23, "Done means" 2): random bytes, random MessagePack of
//! any depth and of any size up to past the handler's limit, and random header tables and
//! properties, published with lapin straight to a running worker's RPC queue, task queue and
//! event exchange. After every message a well-formed call must still be answered, and the
//! worker must still be running.
//!
//! The budget is `LEPUS_FUZZ_SECS` seconds (default 10; `.ci/run` gives it 60); the generator
//! is seeded from `LEPUS_FUZZ_SEED` (default: the clock), printed so that a failure replays:
//! ```sh
//! LEPUS_FUZZ_SECS=600 cargo test --test worker_fuzz -- --nocapture
//! LEPUS_FUZZ_SEED=1234 cargo test --test worker_fuzz -- --nocapture
//! ```
#![allow(clippy::unwrap_used)] // in tests a failed unwrap is a failed test

mod amqp;
mod common;
mod task_util;

use std::time::{Duration, Instant};

use common::background::BackgroundWorker;
use common::Rng;
use futures::StreamExt;
use lapin::options::BasicPublishOptions;
use lapin::types::{AMQPValue, DecimalValue, FieldArray, FieldTable, LongString};
use lapin::BasicProperties;
use lepus::CallOptions;
use serde::{Deserialize, Serialize};

/// The handlers' maximum message size here (the default is 64 MiB; this keeps the bodies
/// around and past the limit cheap to make).
const MAX_MESSAGE: usize = 256 * 1024;

/// Panics seen in this process (counted by the hook the test installs).
static PANICS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Nested data: decoding recurses per level.
#[derive(Debug, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Tree {
    /// An inner node.
    Node(Vec<Tree>),
    /// A leaf.
    Leaf(u64),
    /// A map node.
    Map(std::collections::BTreeMap<String, Tree>),
}

/// A struct argument (unknown fields are skipped).
#[derive(Debug, Serialize, Deserialize)]
pub struct Job {
    /// An id.
    pub id: u32,
    /// A name.
    pub name: String,
}

#[lepus::rpc(queue = "fuzz_rpc")]
async fn fuzz_tree(tree: Tree) -> usize {
    format!("{tree:?}").len()
}

#[lepus::rpc(queue = "fuzz_rpc")]
async fn fuzz_pair(job: Job, n: i64) -> String {
    format!("{}:{}:{n}", job.id, job.name)
}

#[lepus::rpc(queue = "fuzz_rpc")]
async fn fuzz_echo(n: u64) -> u64 {
    n
}

#[lepus::task(queue = "fuzz_tasks", retries = 1, backoff = "10ms..20ms")]
async fn fuzz_task(job: Job) -> Result<(), String> {
    if job.id.is_multiple_of(2) {
        Ok(())
    } else {
        Err(job.name)
    }
}

#[lepus::event(exchange = "fuzz_events", kind = "fanout")]
async fn fuzz_event(tree: Tree) {
    let _ = tree;
}

/// One MessagePack scalar.
fn scalar(rng: &mut Rng, out: &mut Vec<u8>, big: usize) {
    match rng.below(12) {
        0 => out.push(rng.below(128) as u8),       // positive fixint
        1 => out.push(0xe0 | rng.below(32) as u8), // negative fixint
        2 => out.push([0xc0, 0xc2, 0xc3][rng.below(3) as usize]), // nil, false, true
        3 => {
            let n = rng.next();
            out.push(0xcf);
            out.extend_from_slice(&n.to_be_bytes());
        }
        4 => {
            out.push(0xcb);
            out.extend_from_slice(&f64::from_bits(rng.next()).to_be_bytes());
        }
        5 | 6 => {
            let len = rng.below(40) as usize;
            out.push(0xd9);
            out.push(len as u8);
            out.extend(rng.text(len).bytes());
        }
        7 => {
            let len = rng.below(300) as usize;
            out.push(0xc5);
            out.extend_from_slice(&(len as u16).to_be_bytes());
            out.extend(rng.bytes(len));
        }
        8 => {
            // fixext 4 with random contents
            out.push(0xd6);
            out.extend(rng.bytes(5));
        }
        9 if big > 0 => {
            // a str32 of up to `big` bytes
            let len = rng.below(big as u64) as usize;
            out.push(0xdb);
            out.extend_from_slice(&(len as u32).to_be_bytes());
            out.extend(std::iter::repeat_n(b'z', len));
        }
        10 => out.push(0xc1), // never used: invalid
        _ => {
            // a length that claims more than there is
            out.push(0xdd);
            out.extend_from_slice(&u32::MAX.to_be_bytes());
        }
    }
}

/// A random MessagePack value nesting up to `max_depth` levels, built without recursion.
fn msgpack(rng: &mut Rng, max_depth: usize, big: usize) -> Vec<u8> {
    let mut out = Vec::new();
    // Items left in each open container.
    let mut open: Vec<u64> = Vec::new();
    loop {
        let deeper = open.len() < max_depth && rng.below(3) > 0;
        if deeper {
            let n = rng.below(4);
            if rng.below(2) == 0 {
                out.push(0x90 | n as u8);
                if n > 0 {
                    open.push(n);
                    continue;
                }
            } else {
                out.push(0x80 | n as u8);
                if n > 0 {
                    open.push(2 * n);
                    continue;
                }
            }
        } else {
            scalar(rng, &mut out, big);
        }
        loop {
            match open.last_mut() {
                None => return out,
                Some(left) => {
                    *left -= 1;
                    if *left > 0 {
                        break;
                    }
                    open.pop();
                }
            }
        }
        if out.len() > MAX_MESSAGE * 2 {
            return out; // cut: a truncated body is fine input too
        }
    }
}

/// A random message body.
fn body(rng: &mut Rng) -> Vec<u8> {
    match rng.below(10) {
        0 | 1 => {
            let len = rng.below(2048) as usize;
            rng.bytes(len)
        }
        2 => {
            // a chain of one-element arrays, around the depth limit or far past it
            let depth = match rng.below(3) {
                0 => 100 + rng.below(60) as usize,
                1 => 1_000 + rng.below(10_000) as usize,
                _ => 100_000,
            };
            let mut out = vec![0x91; depth];
            out.extend(msgpack(rng, 2, 0));
            out
        }
        3 => {
            // around the size limit
            let len = MAX_MESSAGE - 512 + rng.below(1024) as usize;
            let mut out = vec![0x91, 0xc6];
            out.extend_from_slice(&(len as u32).to_be_bytes());
            out.extend(std::iter::repeat_n(0u8, len));
            out
        }
        4 => {
            // an arguments array of random values
            let n = rng.below(4) as u8;
            let mut out = vec![0x90 | n];
            for _ in 0..n {
                out.extend(msgpack(rng, 6, 1024));
            }
            out
        }
        _ => {
            let depth = rng.below(12) as usize;
            msgpack(rng, depth, 4096)
        }
    }
}

/// A random header value nesting at most `depth` more levels (lapin's own frame parser
/// recurses per level, without a bound: kept shallow here, see the README). Only the field
/// values RabbitMQ 3.10 parses: it closes the connection (541) on `u` (short unsigned) and `i`
/// (long unsigned) fields, which lapin can send, and on NaN and infinite floats.
fn header_value(rng: &mut Rng, depth: usize) -> AMQPValue {
    let nested = if depth > 0 { 2 } else { 0 };
    match rng.below(15 + nested) {
        0 => AMQPValue::Boolean(rng.below(2) == 0),
        1 => AMQPValue::ShortShortInt(rng.next() as i8),
        2 => AMQPValue::ShortShortUInt(rng.next() as u8),
        3 | 4 => AMQPValue::ShortInt(rng.next() as i16),
        5 | 6 => AMQPValue::LongInt(rng.next() as i32),
        7 => AMQPValue::LongLongInt(rng.next() as i64),
        8 => AMQPValue::Float(rng.next() as i32 as f32 / 7.0),
        9 => AMQPValue::Double(rng.next() as i64 as f64 / 3.0),
        10 => AMQPValue::DecimalValue(DecimalValue {
            scale: rng.next() as u8,
            value: rng.next() as u32,
        }),
        11 => {
            // Past 255 bytes now and then: names read from headers must not reach a short
            // string unchecked.
            let len = rng.below(400) as usize;
            AMQPValue::LongString(LongString::from(rng.bytes(len)))
        }
        12 => AMQPValue::Timestamp(rng.next()),
        13 => {
            let len = rng.below(100) as usize;
            AMQPValue::ByteArray(rng.bytes(len).into())
        }
        14 => AMQPValue::Void,
        15 => {
            let n = rng.below(5);
            AMQPValue::FieldArray(FieldArray::from(
                (0..n)
                    .map(|_| header_value(rng, depth - 1))
                    .collect::<Vec<_>>(),
            ))
        }
        _ => AMQPValue::FieldTable(header_table(rng, depth - 1)),
    }
}

/// Names the runtime reads, given random values now and then.
const KNOWN_HEADERS: &[&str] = &[
    "x-lepus-method",
    "x-lepus-deadline",
    "x-lepus-attempts",
    "x-lepus-delivery-count",
    "x-delivery-count",
    "x-lepus-first-failed-at",
    "x-lepus-exchange",
    "x-lepus-routing-key",
    "x-lepus-origin-queue",
    "x-lepus-result-queue",
    "x-lepus-result-ttl",
    "x-lepus-retry-delay",
    "x-lepus-enqueued-at",
    "x-lepus-last-failed-at",
    "x-lepus-error",
    "x-lepus-status",
    "x-lepus-caller",
    "x-lepus-trace-id",
    "x-lepus-chain",
    "x-lepus-chord-queue",
    "x-lepus-chord-index",
    "x-lepus-chord-size",
    "traceparent",
    "tracestate",
    "x-death",
];

/// A random header table.
fn header_table(rng: &mut Rng, depth: usize) -> FieldTable {
    let mut table = FieldTable::default();
    for _ in 0..rng.below(12) {
        let key = if rng.below(3) == 0 {
            KNOWN_HEADERS[rng.below(KNOWN_HEADERS.len() as u64) as usize].to_owned()
        } else {
            let len = 1 + rng.below(30) as usize;
            rng.text(len)
        };
        table.insert(key.into(), header_value(rng, depth));
    }
    table
}

/// Random properties; `reply` asks for a reply on this channel's direct reply-to.
fn properties(rng: &mut Rng, methods: &[&str], reply: bool) -> BasicProperties {
    let mut properties = BasicProperties::default();
    if rng.below(3) > 0 {
        properties = properties.with_content_type("application/msgpack".into());
    }
    match rng.below(4) {
        0 => {}
        1 => {
            let len = 1 + rng.below(20) as usize;
            properties = properties.with_type(rng.text(len).into());
        }
        _ => {
            let method = methods[rng.below(methods.len() as u64) as usize];
            properties = properties.with_type(method.into());
        }
    }
    if rng.below(2) == 0 {
        let depth = rng.below(4) as usize;
        properties = properties.with_headers(header_table(rng, depth));
    }
    if reply {
        properties = properties
            .with_reply_to("amq.rabbitmq.reply-to".into())
            .with_correlation_id(rng.text(32).into());
    }
    if rng.below(4) == 0 {
        properties = properties.with_expiration((1 + rng.below(60_000)).to_string().into());
    }
    if rng.below(4) == 0 {
        properties = properties.with_priority(rng.next() as u8);
    }
    if rng.below(2) == 0 {
        properties = properties.with_delivery_mode(1 + rng.below(2) as u8);
    }
    if rng.below(3) == 0 {
        properties = properties.with_message_id(rng.text(16).into());
    }
    properties
}

/// A channel to publish the fuzz on, consuming its own direct reply-to (RabbitMQ refuses a
/// `reply-to` of `amq.rabbitmq.reply-to` on a channel that does not consume it).
async fn fuzz_channel(url: &str) -> (lapin::Connection, lapin::Channel) {
    let conn = amqp::connect_url(url).await;
    let channel = conn.create_channel().await.unwrap();
    let mut replies = amqp::consume(&channel, "amq.rabbitmq.reply-to", true).await;
    // Replies are read and dropped; the stream ends with the channel.
    tokio::spawn(async move { while replies.next().await.is_some() {} });
    (conn, channel)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_input_never_stops_a_worker() {
    let budget = Duration::from_secs(
        std::env::var("LEPUS_FUZZ_SECS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(10),
    );
    let seed = std::env::var("LEPUS_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
                | 1
        });
    println!("worker_fuzz: seed {seed}, budget {budget:?}");
    // A panic anywhere in the process (the framework's code, lapin's, the broker's) is a bug
    // even when a worker survives it: none of the handlers above panics on purpose.
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        PANICS.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        default_hook(info);
    }));
    let mut rng = Rng(seed);
    let broker = common::broker().await;
    let prefix = common::unique("fuzz");
    let (task, mut tasks) = lepus::task::observe(fuzz_task::handler());
    let (event, mut events) = lepus::task::observe(fuzz_event::handler());
    let worker = BackgroundWorker::start(broker.url(), &prefix, |w| {
        w.max_message_size(MAX_MESSAGE)
            .delivery_limit(3)
            .time_limit(Duration::from_secs(5))
            .serve(fuzz_tree::handler())
            .serve(fuzz_pair::handler())
            .serve(fuzz_echo::handler())
            .serve(task)
            .serve(event)
    })
    .await;
    tasks.declared(Duration::from_secs(10)).await.unwrap();
    events.declared(Duration::from_secs(10)).await.unwrap();
    let (_client_conn, client) = task_util::client(broker.url(), &prefix).await;
    let rpc_queue = format!("{prefix}fuzz_rpc");
    let task_queue = format!("{prefix}fuzz_tasks");
    let exchange = format!("{prefix}fuzz_events");
    let (mut conn, mut channel) = fuzz_channel(broker.url()).await;
    let started = Instant::now();
    let mut sent = 0u64;
    let mut reopened = 0u32;
    while started.elapsed() < budget {
        let body = body(&mut rng);
        let (exchange, routing_key, properties) = match rng.below(3) {
            0 => {
                let reply = rng.below(2) == 0;
                let methods = ["fuzz_tree", "fuzz_pair", "fuzz_echo"];
                (
                    "",
                    rpc_queue.as_str(),
                    properties(&mut rng, &methods, reply),
                )
            }
            1 => {
                let mut p = properties(&mut rng, &["fuzz_task"], false);
                if rng.below(2) == 0 {
                    let mut headers = p.headers().clone().unwrap_or_default();
                    headers.insert(
                        "x-lepus-method".into(),
                        AMQPValue::LongString("fuzz_task".into()),
                    );
                    p = p.with_headers(headers);
                }
                ("", task_queue.as_str(), p)
            }
            _ => (
                exchange.as_str(),
                "",
                properties(&mut rng, &["fuzz_event"], false),
            ),
        };
        let published = channel
            .basic_publish(
                exchange.into(),
                routing_key.into(),
                BasicPublishOptions::default(),
                &body,
                properties.clone(),
            )
            .await;
        if let Err(err) = published {
            // The broker refused something about this message (not the worker's doing):
            // note it and go on with a new channel.
            println!("worker_fuzz: publish failed ({err}); properties {properties:?}");
            reopened += 1;
            assert!(reopened < 20, "the broker keeps refusing the fuzz");
            let _ = conn.close(200, "bye".into()).await;
            (conn, channel) = fuzz_channel(broker.url()).await;
            continue;
        }
        sent += 1;
        // The worker still answers a well-formed call, and is still running.
        let options = CallOptions::default().timeout(Duration::from_secs(15));
        match fuzz_echo::call_with(&client, sent, options).await {
            Ok(n) => assert_eq!(n, sent),
            Err(err) => panic!(
                "after message {sent} (seed {seed}), a well-formed call failed: {err}; \
                 last body {} bytes, properties {properties:?}",
                body.len()
            ),
        }
        assert!(!worker.is_finished(), "the worker stopped (seed {seed})");
        assert_eq!(
            PANICS.load(std::sync::atomic::Ordering::SeqCst),
            0,
            "message {sent} (seed {seed}) made something panic (see above); properties {properties:?}"
        );
    }
    // Observed handlers report every settled delivery: none of them is stuck unsettled.
    let settled = tasks.drain().len() + events.drain().len();
    println!(
        "worker_fuzz: {sent} messages in {:?}, {settled} task/event deliveries settled, {reopened} channels reopened",
        started.elapsed()
    );
    assert!(sent > 0);
    let _ = conn.close(200, "bye".into()).await;
    worker.stop().await;
    broker.stop().await;
}
