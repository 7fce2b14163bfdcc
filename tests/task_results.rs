//! Task results (issue 21): `submit` keeps a task's result on the broker; `TaskHandle::result`
//! gives it typed, `status` says where the task is, and another process gets the same handle
//! from the task id. Runs on the bundled broker, and on RabbitMQ with `LEPUS_TEST_AMQP_URL`.
//!
//! Covered: a typed output; the task's own error, typed (serde) and rebuilt from its text
//! (`io::Error`); a task that fails, is retried and then succeeds; a dead-lettered task (panic,
//! time limit) is an error; a result read by a child process from the id alone; a result that
//! expires (TTL per submit and per task attribute); `enqueue` keeps no result; a task on a
//! quorum queue; thousands of concurrent readers on one client, some timing out or dropped
//! mid-wait, without losing the connection.
#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

mod common;

use std::collections::HashMap;
use std::process::Stdio;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use lepus::task::Outcome;
use lepus::{EnqueueOptions, TaskHandle, TaskResultError, TaskStatus};

/// The longest any test waits for a result (the machine may be loaded).
const WAIT: Duration = Duration::from_secs(30);

/// The environment variable that makes `child_reader` run: `<url> <prefix> <task id>`.
const CHILD_VAR: &str = "LEPUS_RESULT_CHILD";

#[lepus::task(queue = "results_add", retries = 0)]
async fn add(a: u64, b: u64) -> u64 {
    a + b
}

/// A typed application error.
#[derive(Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize, thiserror::Error)]
enum MathError {
    #[error("{0} has no square root in u64")]
    Negative(i64),
}

#[lepus::task(queue = "results_sqrt", retries = 1, backoff = "10ms..20ms")]
async fn checked_sqrt(n: i64) -> Result<u64, MathError> {
    if n < 0 {
        return Err(MathError::Negative(n));
    }
    Ok((n as f64).sqrt() as u64)
}

#[lepus::task(queue = "results_io", retries = 0)]
async fn read_config(path: String) -> std::io::Result<String> {
    Err(std::io::Error::other(format!("{path}: permission denied")))
}

/// Attempts of `flaky`, per key.
fn attempts() -> &'static Mutex<HashMap<String, u32>> {
    static ATTEMPTS: OnceLock<Mutex<HashMap<String, u32>>> = OnceLock::new();
    ATTEMPTS.get_or_init(Default::default)
}

#[lepus::task(queue = "results_flaky", retries = 4, backoff = "20ms..40ms")]
async fn flaky(ctx: lepus::Context, key: String, fail_times: u32) -> Result<String, String> {
    *attempts().lock().unwrap().entry(key.clone()).or_default() += 1;
    if ctx.attempt() <= fail_times {
        return Err(format!("attempt {} failed", ctx.attempt()));
    }
    Ok(format!("{key} done at attempt {}", ctx.attempt()))
}

#[lepus::task(queue = "results_panic", retries = 1, backoff = "10ms..20ms")]
async fn panics() -> u32 {
    panic!("boom")
}

#[lepus::task(queue = "results_slow", retries = 0, time_limit = "100ms")]
async fn too_slow() -> u32 {
    tokio::time::sleep(Duration::from_secs(5)).await;
    1
}

#[lepus::task(queue = "results_short", retries = 0, result_ttl = "800ms")]
async fn short_lived(n: u32) -> u32 {
    n
}

#[lepus::task(queue = "results_gate", retries = 0)]
async fn gated(n: u32) -> u32 {
    n * 2
}

#[tokio::test]
async fn a_submitted_task_gives_its_typed_output() {
    let mut bed = common::test_bed("results_typed").await;
    let mut done = bed.serve(add::handler()).await.unwrap();
    let handle = add::submit(bed.client(), 2, 3).await.unwrap();
    assert_eq!(handle.result(WAIT).await.unwrap(), 5);
    // Read again (by a second reader): the result stays until it expires.
    assert_eq!(handle.clone().result(WAIT).await.unwrap(), 5);
    assert_eq!(handle.status().await.unwrap(), TaskStatus::Succeeded);
    // The handle is the task id too.
    let completion = done.next_within(WAIT).await.unwrap();
    assert_eq!(
        completion.message_id.as_deref(),
        Some(handle.id().0.as_str())
    );
    assert_eq!(handle.0, handle.id().0);
    bed.stop().await;
}

#[tokio::test]
async fn the_tasks_own_error_comes_back_typed_or_rebuilt_from_its_text() {
    let mut bed = common::test_bed("results_error").await;
    bed.serve(checked_sqrt::handler()).await.unwrap();
    bed.serve(read_config::handler()).await.unwrap();

    let ok = checked_sqrt::submit(bed.client(), 81).await.unwrap();
    assert_eq!(ok.result(WAIT).await.unwrap(), 9);

    let failing = checked_sqrt::submit(bed.client(), -4).await.unwrap();
    match failing.result(WAIT).await {
        // One retry: two attempts, the error of the last.
        Err(TaskResultError::Failed { error, attempts }) => {
            assert_eq!(error, MathError::Negative(-4));
            assert_eq!(attempts, 2);
        }
        other => panic!("expected the typed error, got {other:?}"),
    }
    assert!(matches!(
        failing.status().await.unwrap(),
        TaskStatus::Failed { attempts: 2, .. }
    ));

    let io = read_config::submit(bed.client(), "/etc/app.toml".into())
        .await
        .unwrap();
    match io.result(WAIT).await {
        Err(TaskResultError::Failed { error, attempts: 1 }) => {
            assert_eq!(error.to_string(), "/etc/app.toml: permission denied");
        }
        other => panic!("expected the rebuilt io::Error, got {other:?}"),
    }
    bed.stop().await;
}

#[tokio::test]
async fn a_task_retried_then_succeeding_gives_the_last_attempts_output() {
    let mut bed = common::test_bed("results_retry").await;
    let mut done = bed.serve(flaky::handler()).await.unwrap();
    let key = common::unique("flaky");
    let handle = flaky::submit(bed.client(), key.clone(), 2).await.unwrap();
    assert_eq!(
        handle.result(WAIT).await.unwrap(),
        format!("{key} done at attempt 3")
    );
    assert_eq!(attempts().lock().unwrap()[&key], 3);
    let seen = done.wait_for(3, WAIT).await.unwrap();
    assert!(matches!(seen[0].outcome, Outcome::Retrying { .. }));
    assert_eq!(seen[2].outcome, Outcome::Succeeded);
    bed.stop().await;
}

#[tokio::test]
async fn a_dead_lettered_task_has_an_error_for_its_result() {
    let mut bed = common::test_bed("results_dead").await;
    bed.serve(panics::handler()).await.unwrap();
    bed.serve(too_slow::handler()).await.unwrap();

    let panicked = panics::submit(bed.client()).await.unwrap();
    match panicked.result(WAIT).await {
        Err(TaskResultError::DeadLettered { error, attempts }) => {
            assert!(error.contains("boom"), "{error}");
            assert_eq!(attempts, 2);
        }
        other => panic!("expected a dead letter, got {other:?}"),
    }
    let slow = too_slow::submit(bed.client()).await.unwrap();
    match slow.result(WAIT).await {
        Err(TaskResultError::DeadLettered { error, attempts: 1 }) => {
            assert!(error.contains("time limit"), "{error}");
        }
        other => panic!("expected a dead letter, got {other:?}"),
    }
    assert!(matches!(
        slow.status().await.unwrap(),
        TaskStatus::Failed { attempts: 1, .. }
    ));
    bed.stop().await;
}

#[tokio::test]
async fn status_follows_a_task_from_queued_to_succeeded_and_result_times_out_meanwhile() {
    let mut bed = common::test_bed("results_status").await;
    // No worker yet: the task waits.
    let handle = gated::submit(bed.client(), 21).await.unwrap();
    assert_eq!(handle.status().await.unwrap(), TaskStatus::Queued);
    let started = std::time::Instant::now();
    match handle.result(Duration::from_millis(300)).await {
        Err(TaskResultError::Timeout(t)) => assert_eq!(t, Duration::from_millis(300)),
        other => panic!("expected a timeout, got {other:?}"),
    }
    assert!(started.elapsed() < Duration::from_secs(10));
    bed.serve(gated::handler()).await.unwrap();
    assert_eq!(handle.result(WAIT).await.unwrap(), 42);
    assert_eq!(handle.status().await.unwrap(), TaskStatus::Succeeded);
    bed.stop().await;
}

#[tokio::test]
async fn enqueue_keeps_no_result_and_an_unknown_id_says_so() {
    let mut bed = common::test_bed("results_none").await;
    let mut done = bed.serve(gated::handler()).await.unwrap();
    let id = gated::enqueue(bed.client(), 1).await.unwrap();
    assert_eq!(
        done.next_within(WAIT).await.unwrap().outcome,
        Outcome::Succeeded
    );
    // No result queue was made for it.
    let handle = TaskHandle::<gated>::from_id(bed.client(), id.0.clone());
    assert_eq!(handle.status().await.unwrap(), TaskStatus::Unknown);
    assert!(matches!(
        handle.result(WAIT).await,
        Err(TaskResultError::Unknown)
    ));
    bed.stop().await;
}

#[tokio::test]
async fn a_result_expires_after_its_ttl() {
    let mut bed = common::test_bed("results_expiry").await;
    bed.serve(add::handler()).await.unwrap();
    bed.serve(short_lived::handler()).await.unwrap();
    // The TTL of one submit, and the TTL of the task's attribute.
    let by_option = add::submit_with(
        bed.client(),
        20,
        22,
        EnqueueOptions::new().result_ttl(Duration::from_millis(800)),
    )
    .await
    .unwrap();
    assert_eq!(by_option.result(WAIT).await.unwrap(), 42);
    let by_attribute = short_lived::submit(bed.client(), 7).await.unwrap();
    assert_eq!(by_attribute.result(WAIT).await.unwrap(), 7);
    // Unused for longer than its TTL, a result queue is deleted by the broker.
    expire(&by_option).await;
    expire(&by_attribute).await;
    assert!(matches!(
        by_option.result(WAIT).await,
        Err(TaskResultError::Expired)
    ));
    let other = TaskHandle::<add>::from_id(bed.client(), by_option.id().0.clone());
    assert!(matches!(
        other.result(WAIT).await,
        Err(TaskResultError::Unknown)
    ));
    bed.stop().await;
}

/// Waits (polling less often than the TTL, which each poll renews) until the result expired.
async fn expire<T: lepus::task::Task>(handle: &TaskHandle<T>) {
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        match handle.status().await.unwrap() {
            TaskStatus::Expired => return,
            TaskStatus::Succeeded if std::time::Instant::now() < deadline => continue,
            other => panic!("expected the result to expire, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn another_process_reads_the_result_from_the_task_id() {
    let mut bed = common::test_bed("results_child").await;
    bed.serve(checked_sqrt::handler()).await.unwrap();
    let ok = checked_sqrt::submit(bed.client(), 144).await.unwrap();
    let failing = checked_sqrt::submit(bed.client(), -1).await.unwrap();
    for (handle, expected) in [(ok, "ok 12"), (failing, "failed Negative(-1)")] {
        let mut child = common::test_child("child_reader");
        child
            .env(
                CHILD_VAR,
                format!("{} {} {}", bed.url(), bed.prefix(), handle.id()),
            )
            .stderr(Stdio::inherit());
        // Off the test's runtime, which runs the bundled broker the child talks to.
        let output = tokio::task::spawn_blocking(move || child.output())
            .await
            .unwrap()
            .unwrap();
        assert!(output.status.success(), "the child failed");
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            stdout.contains(&format!("result: {expected}\n")),
            "child said: {stdout}"
        );
    }
    bed.stop().await;
}

/// The reading process: a handle from the id alone, on a connection of its own.
#[test]
#[ignore = "run by another_process_reads_the_result_from_the_task_id as a child process"]
fn child_reader() {
    // An empty prefix leaves an empty argument in the middle.
    common::run_child(CHILD_VAR, |conn, [prefix, id]| async move {
        let client = lepus::Client::builder(&conn)
            .queue_prefix(prefix)
            .build()
            .await
            .unwrap();
        let handle = TaskHandle::<checked_sqrt>::from_id(&client, id);
        match handle.result(WAIT).await {
            Ok(n) => println!("result: ok {n}"),
            Err(TaskResultError::Failed { error, .. }) => println!("result: failed {error:?}"),
            Err(other) => println!("result: other {other}"),
        }
        conn.close().await;
    });
}

#[lepus::task(
    queue = "results_quorum",
    retries = 1,
    backoff = "10ms..20ms",
    quorum = true
)]
async fn quorum_double(n: u32) -> Result<u32, String> {
    if n == 0 {
        return Err("zero".into());
    }
    Ok(n * 2)
}

#[tokio::test]
async fn a_task_on_a_quorum_queue_keeps_its_result_in_a_quorum_queue() {
    let mut bed = common::test_bed("results_quorum").await;
    bed.serve(quorum_double::handler()).await.unwrap();
    let ok = quorum_double::submit(bed.client(), 4).await.unwrap();
    assert_eq!(ok.result(WAIT).await.unwrap(), 8);
    let failing = quorum_double::submit(bed.client(), 0).await.unwrap();
    match failing.result(WAIT).await {
        Err(TaskResultError::Failed { error, attempts: 2 }) => assert_eq!(error, "zero"),
        other => panic!("expected the task's error, got {other:?}"),
    }
    bed.stop().await;
}

/// Many `result()` calls at once on one client, as `lepus-bench tasks --results` makes them:
/// each opens a channel, consumes its result queue and closes the channel, so channel numbers
/// are reused all the time. The consumer must be gone before its channel number is: a
/// `basic.cancel` sent after the channel's `channel.close` (lapin cancels a dropped consumer
/// from a task of its own) is a 504 "expected 'channel.open'" that closes the whole connection
/// and fails every result in flight. Results that time out and results whose future is dropped
/// mid-wait take the same path. On a multi-threaded runtime, where lapin's task runs beside
/// ours.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn many_concurrent_results_on_one_client_keep_the_connection() {
    const READERS: u64 = 64;
    const ROUNDS: u64 = 40;
    let mut bed = common::test_bed("results_many").await;
    bed.serve(add::handler()).await.unwrap();
    let client = bed.client().clone();
    let mut readers = tokio::task::JoinSet::new();
    for reader in 0..READERS {
        let client = client.clone();
        readers.spawn(async move {
            for round in 0..ROUNDS {
                let handle = add::submit(&client, reader, round).await.unwrap();
                match round % 5 {
                    // A reader that gives up at once (it may or may not have consumed yet).
                    0 => {
                        let _ = handle.result(Duration::from_millis(1)).await;
                    }
                    // A reader whose future is dropped mid-wait.
                    1 => {
                        let _ = tokio::time::timeout(Duration::from_millis(2), handle.result(WAIT))
                            .await;
                    }
                    _ => {}
                }
                assert_eq!(
                    handle.result(WAIT).await.unwrap(),
                    reader + round,
                    "reader {reader} round {round}"
                );
            }
        });
    }
    while let Some(done) = readers.join_next().await {
        done.unwrap();
    }
    bed.stop().await;
}
