//! Workers that survive poison messages (issue 23): messages built to crash, wedge or bloat a
//! worker, published straight to its queues with lapin, the way a hostile or careless client
//! would. After each, the worker must still be up and serve a well-formed call.
//!
//! - nested MessagePack bodies (1,000 and 100,000 levels) as an RPC request, a task, an event
//!   and a reply decoded by a caller: a clean error or dead letter, in the debug profile;
//! - a retry copy too large for a frame: dead-lettered with a truncated reason, the connection
//!   stays up, unrelated calls run once; a huge error text is cut;
//! - hung handlers: stopped at the caller's deadline or their time limit;
//! - unknown task names and foreign `type` properties: dead-lettered, never dropped;
//! - blocking handlers: a blocking task past its limit is a failed attempt; `blocking = true`
//!   keeps them from stalling other calls;
//! - oversized bodies refused before decoding, and the prefetch-by-bytes guard;
//! - `connection.blocked`: acks keep flowing and shutdown is bounded (bundled broker only).
//!
//! The delivery limit with real process crashes, and SIGTERM with hung handlers, are in
//! `worker_crash.rs`; the random-input property test in `worker_fuzz.rs`.
#![allow(clippy::unwrap_used)] // in tests a failed unwrap is a failed test

mod amqp;
mod common;
mod task_util;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use common::background::BackgroundWorker;
use common::queued::Queued;
use futures::StreamExt;
use lapin::options::BasicPublishOptions;
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::BasicProperties;
use lepus::task::{observe, Completions, DeadLetters, Outcome};
use lepus::{CallOptions, Error, FailureKind};
use serde::{Deserialize, Serialize};
use task_util::eventually;

/// Data whose decoding recurses once per level (serde's untagged enums buffer and recurse).
#[derive(Debug, Serialize, Deserialize, lepus::Plain)]
#[serde(untagged)]
pub enum Tree {
    /// An inner node.
    Node(Vec<Tree>),
    /// A leaf.
    Leaf(u32),
}

impl Tree {
    fn leaves(&self) -> u32 {
        match self {
            Tree::Leaf(_) => 1,
            Tree::Node(children) => children.iter().map(Tree::leaves).sum(),
        }
    }
}

/// A struct argument: unknown fields are skipped, which recurses through whatever they hold.
#[derive(Debug, Serialize, Deserialize)]
pub struct Job {
    /// The job's id.
    pub id: u32,
}

#[lepus::rpc(queue = "poison_rpc")]
async fn tree_leaves(tree: Tree) -> u32 {
    tree.leaves()
}

#[lepus::rpc(queue = "poison_rpc")]
async fn job_id(job: Job) -> u32 {
    job.id
}

#[lepus::rpc(queue = "poison_rpc")]
async fn echo(n: u32) -> u32 {
    n
}

#[lepus::task(queue = "poison_tasks", retries = 0)]
async fn job_task(job: Job) {
    let _ = job;
}

#[lepus::event(exchange = "poison_events", kind = "fanout")]
async fn job_event(job: Job) {
    let _ = job;
}

/// Never served by a Lepus worker: a raw lapin server answers it in `a_nested_reply_...`.
#[lepus::rpc(queue = "poison_fake")]
async fn fake_tree() -> Tree {
    Tree::Leaf(0)
}

/// `depth` nested one-element arrays around `1`.
fn nested(depth: usize) -> Vec<u8> {
    let mut body = vec![0x91; depth];
    body.push(0x01);
    body
}

/// The body of a call with one `Tree` argument nesting `depth` levels.
fn tree_body(depth: usize) -> Vec<u8> {
    let mut body = vec![0x91];
    body.extend(nested(depth));
    body
}

/// The body of a call with one `Job` argument `{"id": 7, "x": <nested depth>}`.
fn job_body(depth: usize) -> Vec<u8> {
    let mut body = vec![0x91];
    body.extend(job_map(depth));
    body
}

/// A `Job` payload (an event's body) `{"id": 7, "x": <nested depth>}`.
fn job_map(depth: usize) -> Vec<u8> {
    let mut body = vec![0x82, 0xa2, b'i', b'd', 0x07, 0xa1, b'x'];
    body.extend(nested(depth));
    body
}

/// A lapin connection and channel to `url`.
async fn raw(url: &str) -> (lapin::Connection, lapin::Channel) {
    let conn = amqp::connect_url(url).await;
    let channel = conn.create_channel().await.unwrap();
    (conn, channel)
}

/// Binds `queue` to `lepus.rpc` (declared as callers and workers declare it), where callers
/// publish their requests: a stand-in server of a Lepus method.
async fn serve_rpc_queue(channel: &lapin::Channel, queue: &str) {
    use lapin::options::{ExchangeDeclareOptions, QueueBindOptions};
    let durable = ExchangeDeclareOptions {
        durable: true,
        ..ExchangeDeclareOptions::default()
    };
    channel
        .exchange_declare(
            lepus::envelope::UNROUTED_EXCHANGE.into(),
            lapin::ExchangeKind::Headers,
            durable,
            FieldTable::default(),
        )
        .await
        .unwrap();
    let mut args = FieldTable::default();
    args.insert(
        "alternate-exchange".into(),
        AMQPValue::LongString(lepus::envelope::UNROUTED_EXCHANGE.into()),
    );
    channel
        .exchange_declare(
            lepus::envelope::RPC_EXCHANGE.into(),
            lapin::ExchangeKind::Direct,
            durable,
            args,
        )
        .await
        .unwrap();
    channel
        .queue_bind(
            queue.into(),
            lepus::envelope::RPC_EXCHANGE.into(),
            queue.into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
}

/// Sends one request to `queue` for `method` with `body`, as a foreign client would (direct
/// reply-to), and returns the reply body.
async fn raw_call(url: &str, queue: &str, method: &str, body: &[u8]) -> Vec<u8> {
    let (conn, channel) = raw(url).await;
    let mut replies = amqp::consume(&channel, "amq.rabbitmq.reply-to", true).await;
    let properties = BasicProperties::default()
        .with_content_type("application/msgpack".into())
        .with_correlation_id("0123456789abcdef0123456789abcdef".into())
        .with_reply_to("amq.rabbitmq.reply-to".into())
        .with_type(method.into());
    amqp::publish_with(&channel, "", queue, body, properties).await;
    let reply = tokio::time::timeout(Duration::from_secs(20), replies.next())
        .await
        .expect("a reply within 20 s")
        .unwrap()
        .unwrap();
    let _ = conn.close(200, "bye".into()).await;
    reply.data
}

/// The properties of a task message for `method` with a fresh `message_id`.
fn task_properties(method: &str, extra: FieldTable) -> BasicProperties {
    let mut headers = extra;
    headers.insert(
        "x-lepus-method".into(),
        AMQPValue::LongString(LongString::from(method)),
    );
    BasicProperties::default()
        .with_content_type("application/msgpack".into())
        .with_delivery_mode(2)
        .with_message_id(uuid::Uuid::new_v4().simple().to_string().into())
        .with_headers(headers)
}

/// The RPC handlers above (`tree_leaves`, `job_id`, `echo`) served by `worker`.
fn serve_rpc(worker: lepus::Worker) -> lepus::Worker {
    worker
        .serve(tree_leaves::handler())
        .serve(job_id::handler())
        .serve(echo::handler())
}

/// A worker serving `job_task` and `job_event`, each made by `adjust`, observed, and `configure`d
/// further; returns once both handlers are declared, with their completions.
async fn job_worker(
    fx: &Queued,
    adjust: impl Fn(lepus::Handler) -> lepus::Handler,
    configure: impl FnOnce(lepus::Worker) -> lepus::Worker,
) -> (BackgroundWorker, Completions, Completions) {
    let (task, mut tasks) = observe(adjust(job_task::handler()));
    let (event, mut events) = observe(adjust(job_event::handler()));
    let worker = fx.worker(|w| configure(w.serve(task).serve(event))).await;
    tasks.declared(Duration::from_secs(10)).await.unwrap();
    events.declared(Duration::from_secs(10)).await.unwrap();
    (worker, tasks, events)
}

/// A worker serving `handler` observed (after `configure`); returns once it is declared.
async fn declared_worker(
    fx: &Queued,
    handler: lepus::Handler,
    configure: impl FnOnce(lepus::Worker) -> lepus::Worker,
) -> (BackgroundWorker, Completions) {
    let (worker, mut done) = fx.observed(handler, configure).await;
    done.declared(Duration::from_secs(10)).await.unwrap();
    (worker, done)
}

/// Publishes `body` straight to the prefixed task queue `queue`, as a foreign client would.
async fn publish_task(
    fx: &Queued,
    channel: &lapin::Channel,
    queue: &str,
    body: &[u8],
    properties: BasicProperties,
) {
    amqp::publish_with(channel, "", &fx.queue(queue), body, properties).await;
}

/// Publishes `body` straight to the prefixed `poison_events` exchange.
async fn publish_event(
    fx: &Queued,
    channel: &lapin::Channel,
    body: &[u8],
    properties: BasicProperties,
) {
    amqp::publish_with(channel, &fx.queue("poison_events"), "", body, properties).await;
}

/// The message of `reply`, a failure of `kind`; fails the test (naming `what`) on any other
/// reply.
fn failed_reply(reply: &[u8], kind: FailureKind, what: &str) -> String {
    match lepus::envelope::decode_reply::<u32, String>(reply) {
        Err(Error::Failed { kind: got, message }) if got == kind => message,
        other => panic!("{what}: {other:?}"),
    }
}

/// The outcome of the next completion (within 10 s).
async fn next_outcome(done: &mut Completions) -> Outcome {
    done.next_within(Duration::from_secs(10))
        .await
        .unwrap()
        .outcome
}

/// The next completion's error if it was dead-lettered; fails the test (naming `what`) if not.
async fn next_dead_lettered(done: &mut Completions, what: &str) -> String {
    match next_outcome(done).await {
        Outcome::DeadLettered { error } => error,
        other => panic!("{what}: {other:?}"),
    }
}

/// The next completion's error if it failed (an event); fails the test (naming `what`) if not.
async fn next_failed(done: &mut Completions, what: &str) -> String {
    match next_outcome(done).await {
        Outcome::Failed { error } => error,
        other => panic!("{what}: {other:?}"),
    }
}

/// Up to ten dead letters of the prefixed queue `queue` (listed, left in place).
async fn dead_letters(fx: &Queued, queue: &str) -> Vec<lepus::task::DeadLetter> {
    DeadLetters::new(&fx.conn, fx.queue(&format!("{queue}.dead")))
        .list(10)
        .await
        .unwrap()
}

/// Calls `echo(n)` until it answers (the worker may still be declaring its queue).
async fn echo_answers(client: &lepus::Client, n: u32) {
    let options = CallOptions::default().timeout(Duration::from_secs(10));
    let started = Instant::now();
    loop {
        match echo::call_with(client, n, options.clone()).await {
            Ok(v) => {
                assert_eq!(v, n);
                return;
            }
            Err(Error::NoRoute { .. }) if started.elapsed() < Duration::from_secs(10) => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(err) => panic!("echo({n}) failed: {err}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nested_requests_get_a_bad_request_reply_and_the_worker_lives() {
    let fx = Queued::start("poison").await;
    let worker = fx.worker(serve_rpc).await;
    echo_answers(&fx.client, 1).await;
    let queue = fx.queue("poison_rpc");
    for depth in [1_000, 100_000] {
        for (method, body) in [
            ("tree_leaves", tree_body(depth)),
            ("job_id", job_body(depth)),
        ] {
            let reply = raw_call(fx.url(), &queue, method, &body).await;
            let what = format!("{method} at depth {depth}");
            let message = failed_reply(&reply, FailureKind::BadRequest, &what);
            assert!(message.contains("deeper than 128"), "{message}");
            echo_answers(&fx.client, depth as u32).await;
        }
    }
    // Within the limit, nested data still decodes.
    let reply = raw_call(fx.url(), &queue, "tree_leaves", &tree_body(100)).await;
    assert_eq!(
        lepus::envelope::decode_reply::<u32, String>(&reply).unwrap(),
        1
    );
    fx.stop([worker]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nested_tasks_are_dead_lettered_and_nested_events_rejected() {
    let fx = Queued::start("poison").await;
    let (worker, mut tasks, mut events) = job_worker(&fx, |h| h, |w| w).await;
    let (conn, channel) = raw(fx.url()).await;
    let job = || task_properties("job_task", FieldTable::default());
    for depth in [1_000, 100_000] {
        publish_task(&fx, &channel, "poison_tasks", &job_body(depth), job()).await;
        let error = next_dead_lettered(&mut tasks, &format!("task at depth {depth}")).await;
        assert!(error.contains("deeper"), "{error}");
        publish_event(&fx, &channel, &job_map(depth), BasicProperties::default()).await;
        let error = next_failed(&mut events, &format!("event at depth {depth}")).await;
        assert!(error.contains("deeper"), "{error}");
    }
    // Both kinds still run well-formed messages.
    publish_task(&fx, &channel, "poison_tasks", &job_body(3), job()).await;
    let done = tasks.next_within(Duration::from_secs(10)).await.unwrap();
    assert_eq!(done.outcome, Outcome::Succeeded);
    let letters = dead_letters(&fx, "poison_tasks").await;
    assert_eq!(letters.len(), 2);
    assert!(letters[0].error.as_deref().unwrap().contains("deeper"));
    let _ = conn.close(200, "bye".into()).await;
    fx.stop([worker]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nested_reply_is_a_decode_error_for_the_caller() {
    let fx = Queued::start("poison").await;
    let queue = fx.queue("poison_fake");
    // A server that answers every call with a reply nesting 100,000 levels.
    let (server_conn, server) = raw(fx.url()).await;
    amqp::declare_queue(&server, &queue, FieldTable::default()).await;
    serve_rpc_queue(&server, &queue).await;
    let mut requests = amqp::consume(&server, &queue, true).await;
    let answering = tokio::spawn(async move {
        while let Some(Ok(request)) = requests.next().await {
            let mut body = vec![0x92, 0x00];
            body.extend(nested(100_000));
            let mut properties = BasicProperties::default();
            if let Some(id) = request.properties.correlation_id() {
                properties = properties.with_correlation_id(id.clone());
            }
            let reply_to = request.properties.reply_to().clone().unwrap();
            amqp::publish_with(&server, "", reply_to.as_str(), &body, properties).await;
        }
    });
    for _ in 0..2 {
        match fake_tree::call(&fx.client).await {
            Err(Error::Decode(message)) => assert!(message.contains("deeper"), "{message}"),
            other => panic!("unexpected {other:?}"),
        }
    }
    answering.abort();
    let _ = server_conn.close(200, "bye".into()).await;
    fx.stop([]).await;
}

/// Runs of `counted`, per (test prefix, call id).
fn counted_runs() -> &'static Mutex<HashMap<(String, u32), u32>> {
    static RUNS: OnceLock<Mutex<HashMap<(String, u32), u32>>> = OnceLock::new();
    RUNS.get_or_init(Default::default)
}

/// Counts its runs and takes a moment, so that calls are in flight when a copy is published.
#[lepus::rpc(queue = "poison_counted")]
async fn counted(key: String, id: u32) -> u32 {
    *counted_runs().lock().unwrap().entry((key, id)).or_default() += 1;
    tokio::time::sleep(Duration::from_millis(300)).await;
    id
}

#[lepus::task(queue = "poison_failing", retries = 3, backoff = "50ms..100ms")]
async fn always_fails(text: String) -> Result<(), String> {
    Err(text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_retry_copy_is_dead_lettered_and_the_connection_survives() {
    let fx = Queued::start("poison").await;
    let prefix = &fx.prefix;
    let (worker, mut done) = declared_worker(&fx, always_fails::handler(), |w| {
        w.serve(counted::handler())
    })
    .await;
    // Calls in flight on the worker's connection while the oversized copy is made.
    let calls: Vec<_> = (0..6)
        .map(|id| {
            let client = fx.client.clone();
            let key = prefix.clone();
            tokio::spawn(async move {
                let options = CallOptions::default().timeout(Duration::from_secs(20));
                loop {
                    match counted::call_with(&client, key.clone(), id, options.clone()).await {
                        Err(Error::NoRoute { .. }) => {
                            tokio::time::sleep(Duration::from_millis(20)).await
                        }
                        other => return other,
                    }
                }
            })
        })
        .collect();
    // A task whose own headers nearly fill a frame (131,072 bytes): the original fits, its
    // copy with the failure record does not.
    let mut big = FieldTable::default();
    big.insert(
        "big".into(),
        AMQPValue::LongString(LongString::from(vec![b'x'; 130_900])),
    );
    big.insert("small".into(), AMQPValue::LongString("kept".into()));
    let (conn, channel) = raw(fx.url()).await;
    publish_task(
        &fx,
        &channel,
        "poison_failing",
        &lepus::envelope::encode_request(&("boom".to_owned(),)).unwrap(),
        task_properties("always_fails", big),
    )
    .await;
    let error = next_dead_lettered(&mut done, "unexpected").await;
    assert!(error.starts_with("boom"), "{error}");
    assert!(error.contains("did not fit a frame"), "{error}");
    assert!(error.len() <= lepus::task::headers::MAX_ERROR_LEN);
    for (id, call) in calls.into_iter().enumerate() {
        assert_eq!(call.await.unwrap().unwrap(), id as u32);
    }
    for id in 0..6 {
        let runs = counted_runs().lock().unwrap()[&(prefix.clone(), id)];
        assert_eq!(runs, 1, "call {id} ran {runs} times");
    }
    assert_eq!(worker.conn.generation(), 1, "the worker never reconnected");
    let letters = dead_letters(&fx, "poison_failing").await;
    assert_eq!(letters.len(), 1);
    let letter = &letters[0];
    assert!(!letter.headers.contains_key("big"));
    let dropped =
        lepus::task::headers::string(Some(&letter.headers), lepus::task::headers::DROPPED_HEADERS);
    assert_eq!(dropped.as_deref(), Some("big"));
    assert_eq!(
        lepus::task::headers::string(Some(&letter.headers), "small").as_deref(),
        Some("kept")
    );
    // A huge error text is cut; the task is retried as usual.
    always_fails::enqueue(&fx.client, "e".repeat(300_000))
        .await
        .unwrap();
    let retried = done.next_within(Duration::from_secs(10)).await.unwrap();
    match retried.outcome {
        Outcome::Retrying { error, .. } => {
            assert!(error.len() <= lepus::task::headers::MAX_ERROR_LEN);
            assert!(
                error.ends_with("more bytes cut)"),
                "{}",
                &error[error.len() - 40..]
            );
        }
        other => panic!("unexpected {other:?}"),
    }
    let _ = conn.close(200, "bye".into()).await;
    fx.stop([worker]).await;
}

#[lepus::rpc(queue = "poison_hung")]
async fn hang() -> u32 {
    std::future::pending::<()>().await;
    0
}

#[lepus::rpc(queue = "poison_hung", time_limit = "200ms")]
async fn hang_limited() -> u32 {
    std::future::pending::<()>().await;
    0
}

#[lepus::rpc(queue = "poison_hung")]
async fn ping() -> u32 {
    7
}

#[lepus::task(queue = "poison_hung_tasks", retries = 0)]
async fn hung_task() {
    std::future::pending::<()>().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hung_handlers_are_stopped_at_the_deadline_or_their_time_limit() {
    let fx = Queued::start("poison").await;
    let worker = fx
        .worker(|w| {
            w.concurrency(2)
                .serve(hang::handler())
                .serve(hang_limited::handler())
                .serve(ping::handler())
        })
        .await;
    let (task_worker, mut tasks) = declared_worker(&fx, hung_task::handler(), |w| {
        w.time_limit(Duration::from_millis(300))
    })
    .await;
    eventually(Duration::from_secs(10), || true).await;
    // Four calls to a handler that never returns, at concurrency 2: each is stopped at its
    // caller's deadline, so the pool is free again for the next.
    let short = CallOptions::default().timeout(Duration::from_millis(400));
    for _ in 0..4 {
        loop {
            match hang::call_with(&fx.client, short.clone()).await {
                Err(Error::NoRoute { .. }) => tokio::time::sleep(Duration::from_millis(20)).await,
                Err(Error::Timeout(_)) => break,
                other => panic!("unexpected {other:?}"),
            }
        }
    }
    let options = CallOptions::default().timeout(Duration::from_secs(5));
    assert_eq!(
        ping::call_with(&fx.client, options.clone()).await.unwrap(),
        7
    );
    // A handler's own time limit answers the caller before its deadline.
    match hang_limited::call_with(&fx.client, options).await {
        Err(Error::Failed {
            kind: FailureKind::TimeLimit,
            message,
        }) => assert!(message.contains("200ms"), "{message}"),
        other => panic!("unexpected {other:?}"),
    }
    // A task without a time limit of its own gets the worker's.
    hung_task::enqueue(&fx.client).await.unwrap();
    let error = next_dead_lettered(&mut tasks, "unexpected").await;
    assert!(error.contains("time limit"), "{error}");
    fx.stop([task_worker, worker]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_task_names_and_foreign_types_are_dead_lettered_not_dropped() {
    let fx = Queued::start("poison").await;
    let (worker, mut done, mut events) = job_worker(&fx, |h| h, |w| w).await;
    let (conn, channel) = raw(fx.url()).await;
    let job = job_body(1);
    // An old task name, as during a rolling deploy.
    let renamed = task_properties("renamed_task", FieldTable::default());
    publish_task(&fx, &channel, "poison_tasks", &job, renamed).await;
    let first = done.next_within(Duration::from_secs(10)).await.unwrap();
    assert_eq!(first.name, "renamed_task");
    match &first.outcome {
        Outcome::DeadLettered { error } => {
            assert!(error.contains("no handler for \"renamed_task\""), "{error}")
        }
        other => panic!("unexpected {other:?}"),
    }
    // A foreign `type` does not hide the task's own name...
    let typed = task_properties("job_task", FieldTable::default()).with_type("celery.task".into());
    publish_task(&fx, &channel, "poison_tasks", &job, typed).await;
    let second = done.next_within(Duration::from_secs(10)).await.unwrap();
    assert_eq!(second.outcome, Outcome::Succeeded);
    // ...and a message naming nothing this queue serves is kept.
    let foreign = BasicProperties::default().with_type("foreign".into());
    publish_task(&fx, &channel, "poison_tasks", &job, foreign).await;
    let third = done.next_within(Duration::from_secs(10)).await.unwrap();
    assert!(matches!(third.outcome, Outcome::DeadLettered { .. }));
    // An event handler takes what its queue receives, whatever `type` says.
    let user_created = BasicProperties::default().with_type("user.created".into());
    publish_event(&fx, &channel, &job_map(1), user_created).await;
    let event = events.next_within(Duration::from_secs(10)).await.unwrap();
    assert_eq!(event.outcome, Outcome::Succeeded);
    let letters = dead_letters(&fx, "poison_tasks").await;
    assert_eq!(letters.len(), 2, "both unknown messages are kept");
    assert_eq!(letters[0].task.as_deref(), Some("renamed_task"));
    let _ = conn.close(200, "bye".into()).await;
    fx.stop([worker]).await;
}

#[lepus::task(queue = "poison_blocking", time_limit = "500ms", retries = 0)]
async fn blocks_past_its_limit() {
    std::thread::sleep(Duration::from_millis(1_500));
}

#[lepus::rpc(queue = "poison_blocking_rpc", blocking = true)]
async fn sleepy(ms: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(ms));
    ms
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_blocking_past_its_time_limit_is_a_failed_attempt() {
    let fx = Queued::start("poison").await;
    let (worker, mut done) = declared_worker(&fx, blocks_past_its_limit::handler(), |w| w).await;
    blocks_past_its_limit::enqueue(&fx.client).await.unwrap();
    let what = "a task that blocked 1.5 s with a 500 ms limit";
    let error = next_dead_lettered(&mut done, what).await;
    assert!(error.contains("time limit of 500ms exceeded"), "{error}");
    fx.stop([worker]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocking_handlers_run_on_the_blocking_pool_and_do_not_stall_others() {
    let fx = Queued::start("poison").await;
    let client = &fx.client;
    let worker = fx
        .worker(|w| serve_rpc(w).concurrency(4).serve(sleepy::handler()))
        .await;
    echo_answers(client, 1).await;
    // Two handlers that block their thread for 3 s, on a runtime of two threads.
    let sleepers: Vec<_> = (0..2)
        .map(|_| {
            let client = client.clone();
            tokio::spawn(async move { sleepy::call(&client, 3_000).await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = Instant::now();
    echo_answers(client, 2).await;
    let took = started.elapsed();
    assert!(
        took < Duration::from_millis(1_500),
        "an unrelated call took {took:?} while blocking handlers slept"
    );
    for sleeper in sleepers {
        assert_eq!(sleeper.await.unwrap().unwrap(), 3_000);
    }
    fx.stop([worker]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_body_is_refused_before_decoding() {
    let fx = Queued::start("poison").await;
    let (worker, mut tasks, mut events) = job_worker(
        &fx,
        |h| h.max_message_size(1024),
        |w| serve_rpc(w.max_message_size(1024)),
    )
    .await;
    echo_answers(&fx.client, 1).await;
    // 4 KiB that are not MessagePack at all: refused for their size, never decoded.
    let garbage = vec![0xc1; 4096];
    let reply = raw_call(fx.url(), &fx.queue("poison_rpc"), "job_id", &garbage).await;
    let message = failed_reply(&reply, FailureKind::TooLarge, "unexpected");
    assert!(message.contains("4096 bytes"), "{message}");
    let (conn, channel) = raw(fx.url()).await;
    let job = task_properties("job_task", FieldTable::default());
    publish_task(&fx, &channel, "poison_tasks", &garbage, job).await;
    let error = next_dead_lettered(&mut tasks, "unexpected").await;
    assert!(error.contains("not decoded"), "{error}");
    publish_event(&fx, &channel, &garbage, BasicProperties::default()).await;
    let error = next_failed(&mut events, "unexpected").await;
    assert!(error.contains("not decoded"), "{error}");
    echo_answers(&fx.client, 2).await;
    let _ = conn.close(200, "bye".into()).await;
    fx.stop([worker]).await;
}

/// Tasks of `big_task` done, per test prefix.
fn big_done() -> &'static Mutex<HashMap<String, u32>> {
    static DONE: OnceLock<Mutex<HashMap<String, u32>>> = OnceLock::new();
    DONE.get_or_init(Default::default)
}

#[lepus::task(queue = "poison_big")]
async fn big_task(key: String, payload: String) {
    let _ = payload;
    tokio::time::sleep(Duration::from_millis(30)).await;
    *big_done().lock().unwrap().entry(key).or_default() += 1;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bytes_a_worker_holds_are_bounded_by_prefetch_bytes() {
    let fx = Queued::start("poison").await;
    let prefix = &fx.prefix;
    const TASKS: u32 = 60;
    let payload = "p".repeat(256 * 1024);
    for _ in 0..TASKS {
        big_task::enqueue(&fx.client, prefix.clone(), payload.clone())
            .await
            .unwrap();
    }
    // Prefetch 16 of 256 KiB messages would be 4 MiB in the worker; the budget is 1 MiB.
    let worker = fx
        .worker(|w| {
            w.prefetch(16)
                .concurrency(1)
                .prefetch_bytes(1 << 20)
                .serve(big_task::handler())
        })
        .await;
    let queue = fx.queue("poison_big");
    let done = || big_done().lock().unwrap().get(prefix).copied().unwrap_or(0);
    // Messages the worker holds = enqueued - still ready - done (within a delivery or two).
    let mut held_after_the_first_burst = Vec::new();
    let started = Instant::now();
    while done() < TASKS {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "done: {}",
            done()
        );
        let before = done();
        let ready = lepus::task::queue_status(&fx.conn, &queue)
            .await
            .unwrap()
            .map_or(0, |s| s.messages);
        let after = done();
        if (20..=40).contains(&before) && before == after {
            held_after_the_first_burst.push(TASKS - ready - after);
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(!held_after_the_first_burst.is_empty());
    let most = held_after_the_first_burst.iter().copied().max().unwrap();
    assert!(
        most <= 6,
        "the worker held up to {most} messages of 256 KiB with a 1 MiB budget: {held_after_the_first_burst:?}"
    );
    fx.stop([worker]).await;
}

#[lepus::rpc(queue = "poison_lease")]
async fn slow_len(body: String) -> u32 {
    tokio::time::sleep(Duration::from_millis(500)).await;
    u32::try_from(body.len()).unwrap()
}

/// An RPC queue expires when nobody consumes it (`x-expires`), so a worker whose byte budget
/// paused its consumer renews the queue's lease (a redeclaration) while paused: the requests
/// waiting in it are not lost with it. Here the pause (about 1.5 s: three handlers of 500 ms
/// to get under half the budget) outlasts the queue's expiry of 1 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_rpc_queue_keeps_its_lease() {
    let fx = Queued::start("poison").await;
    let client = &fx.client;
    // Prefetch 4 of 32 KiB bodies is 128 KiB, twice the budget: the worker pauses at once.
    let worker = fx
        .worker(|w| {
            w.prefetch(4)
                .concurrency(1)
                .prefetch_bytes(64 << 10)
                .queue_options(
                    "poison_lease",
                    lepus::QueueOptions::rpc().expires(Duration::from_secs(1)),
                )
                .serve(slow_len::handler())
        })
        .await;
    // Until the worker consumes, calls fail with NoRoute.
    let options = CallOptions::default().timeout(Duration::from_secs(30));
    assert!(
        eventually_async(Duration::from_secs(10), || async {
            slow_len::call_with(client, String::new(), options.clone())
                .await
                .is_ok()
        })
        .await
    );
    let body = "b".repeat(32 << 10);
    let calls: Vec<_> = (0..10)
        .map(|_| {
            let client = client.clone();
            let body = body.clone();
            let options = options.clone();
            tokio::spawn(async move { slow_len::call_with(&client, body, options).await })
        })
        .collect();
    for call in calls {
        assert_eq!(call.await.unwrap().unwrap(), 32 << 10);
    }
    fx.stop([worker]).await;
}

/// Polls the async `check` every 50 ms until it is true or `timeout` passes.
async fn eventually_async<F, Fut>(timeout: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if check().await {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Requests `blocked_echo` answered, per test prefix.
static BLOCKED_RUNS: AtomicU32 = AtomicU32::new(0);

#[lepus::rpc(queue = "poison_blocked")]
async fn blocked_echo(n: u32) -> u32 {
    BLOCKED_RUNS.fetch_add(1, Ordering::SeqCst);
    n
}

/// Bundled broker only: raising RabbitMQ's memory alarm would block every other test sharing
/// the node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blocked_connection_stalls_neither_acks_nor_shutdown() {
    if std::env::var(common::EXTERNAL_URL_VAR).is_ok() {
        return;
    }
    common::init_tracing();
    let broker = lepus::broker::Broker::builder()
        .listen("127.0.0.1:0")
        .memory_high_watermark(4 << 20)
        .start()
        .await
        .unwrap();
    let url = broker.amqp_url();
    let prefix = common::unique("poison");
    let queue = format!("{prefix}poison_blocked");
    // Requests queued before the alarm.
    let (conn, channel) = raw(&url).await;
    // Declared as the worker will declare it (an RPC queue's options).
    let lepus_conn = lepus::connect(&url).await.unwrap();
    lepus::task::wait_for_queue_consumers(
        &lepus_conn,
        &queue,
        &lepus::QueueOptions::rpc(),
        0,
        Duration::from_secs(10),
    )
    .await
    .unwrap();
    for n in 0..5u32 {
        let body = lepus::envelope::encode_request(&(n,)).unwrap();
        let properties = BasicProperties::default()
            .with_type("blocked_echo".into())
            .with_reply_to("nobody-listens".into());
        amqp::publish_with(&channel, "", &queue, &body, properties).await;
    }
    // The alarm: transient messages in another queue, until the broker blocks this publisher
    // (lapin then holds its frames: the publishing task waits, and is dropped at the end).
    let filler = format!("{prefix}filler");
    amqp::declare_queue(&channel, &filler, FieldTable::default()).await;
    let filling = tokio::spawn({
        let channel = channel.clone();
        async move {
            for _ in 0..8 {
                let _ = channel
                    .basic_publish(
                        "".into(),
                        filler.as_str().into(),
                        BasicPublishOptions::default(),
                        &vec![0u8; 1 << 20],
                        BasicProperties::default(),
                    )
                    .await;
            }
        }
    });
    assert!(
        eventually(Duration::from_secs(10), || conn.status().blocked()).await,
        "the broker blocks a publisher past its memory high-watermark"
    );
    // A worker started now, with prefetch 1: the next request comes only once the last one is
    // acked. Its replies wait on a blocked connection; its acks must not.
    let before = BLOCKED_RUNS.load(Ordering::SeqCst);
    let worker_conn = lepus::connect(&url).await.unwrap();
    let worker = lepus::Worker::new(&worker_conn)
        .queue_prefix(prefix.clone())
        .prefetch(1)
        .shutdown_timeout(Duration::from_secs(2))
        .serve(blocked_echo::handler());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(worker.run_until(async move {
        let _ = stopped.await;
    }));
    let all_acked = eventually(Duration::from_secs(10), || {
        BLOCKED_RUNS.load(Ordering::SeqCst) - before == 5
    })
    .await;
    assert!(
        all_acked,
        "only {} of 5 requests ran: acks stalled behind blocked replies",
        BLOCKED_RUNS.load(Ordering::SeqCst) - before
    );
    let stopping = Instant::now();
    let _ = stop.send(());
    tokio::time::timeout(Duration::from_secs(10), running)
        .await
        .expect("run_until returns despite the blocked connection")
        .unwrap()
        .unwrap();
    assert!(
        stopping.elapsed() < Duration::from_secs(5),
        "{:?}",
        stopping.elapsed()
    );
    filling.abort();
    drop(conn);
    broker.shutdown().await;
}

/// Where `hangs_once` saw its event come from, once it ran.
fn event_origin() -> &'static Mutex<Option<lepus::Context>> {
    static ORIGIN: OnceLock<Mutex<Option<lepus::Context>>> = OnceLock::new();
    ORIGIN.get_or_init(Default::default)
}

/// Set by the first run of `hangs_once`, which then never returns.
static HUNG: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

#[lepus::event(exchange = "poison_topic", kind = "topic", binding = "kern.*")]
async fn hangs_once(n: u32, ctx: lepus::Context) {
    let _ = n;
    if !HUNG.swap(true, Ordering::SeqCst) {
        std::future::pending::<()>().await;
    }
    *event_origin().lock().unwrap() = Some(ctx);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redelivered_event_is_counted_and_keeps_its_origin() {
    let fx = Queued::start("poison").await;
    let (a, _first) = declared_worker(&fx, hangs_once::handler(), |w| w).await;
    hangs_once::publish(&fx.client, "kern.error", &7)
        .await
        .unwrap();
    assert!(eventually(Duration::from_secs(10), || HUNG.load(Ordering::SeqCst)).await);
    // The worker dies holding the event; the next one counts the return and runs it.
    a.kill().await;
    let (b, mut second) = fx.observed(hangs_once::handler(), |w| w).await;
    let done = second.next_within(Duration::from_secs(10)).await.unwrap();
    assert_eq!(done.outcome, Outcome::Succeeded);
    assert!(done.redelivered);
    let origin = event_origin().lock().unwrap().clone().unwrap();
    assert_eq!(origin.exchange(), Some(fx.queue("poison_topic").as_str()));
    assert_eq!(origin.routing_key(), Some("kern.error"));
    assert!(origin.redelivered());
    fx.stop([b]).await;
}
