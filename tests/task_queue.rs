//! Task queues end to end: enqueue with confirms, fair at-least-once delivery across workers,
//! a worker killed mid-task, retries with growing delays and dead letters, delayed tasks,
//! panics and time limits, and 10,000 tasks over 4 workers run exactly once.
//!
//! Every test isolates itself with a unique queue prefix; task functions record what they did
//! in per-test maps keyed by that prefix (the prefix travels in the arguments).
#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

mod common;
mod task_util;

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use common::background::BackgroundWorker;
use common::queued::Queued;
use futures::stream::{self, StreamExt};
use lepus::task::{observe, Completions, DeadLetters, Outcome};
use lepus::EnqueueOptions;
use task_util::{eventually, message_count, raw};

/// Runs per (test key, task id).
fn runs() -> &'static Mutex<HashMap<(String, u64), u32>> {
    static RUNS: OnceLock<Mutex<HashMap<(String, u64), u32>>> = OnceLock::new();
    RUNS.get_or_init(Default::default)
}

fn run_count(key: &str, id: u64) -> u32 {
    runs()
        .lock()
        .unwrap()
        .get(&(key.to_owned(), id))
        .copied()
        .unwrap_or(0)
}

fn distinct_runs(key: &str) -> Vec<u32> {
    runs()
        .lock()
        .unwrap()
        .iter()
        .filter(|((k, _), _)| k == key)
        .map(|(_, n)| *n)
        .collect()
}

/// Counts one run of `id`.
#[lepus::task(queue = "count")]
async fn count(key: String, id: u64) {
    *runs().lock().unwrap().entry((key, id)).or_default() += 1;
}

/// Tasks of `slow` that have started, per test key.
fn starts() -> &'static Mutex<HashMap<String, u32>> {
    static STARTS: OnceLock<Mutex<HashMap<String, u32>>> = OnceLock::new();
    STARTS.get_or_init(Default::default)
}

fn started(key: &str) -> u32 {
    starts().lock().unwrap().get(key).copied().unwrap_or(0)
}

/// Sleeps, then counts: long enough to be killed in the middle.
#[lepus::task(queue = "slow", retries = 0)]
async fn slow(key: String, id: u64, millis: u64) {
    *starts().lock().unwrap().entry(key.clone()).or_default() += 1;
    tokio::time::sleep(Duration::from_millis(millis)).await;
    *runs().lock().unwrap().entry((key, id)).or_default() += 1;
}

/// Always fails.
#[lepus::task(queue = "flaky", retries = 3, backoff = "100ms..400ms")]
async fn always_fails(ctx: lepus::Context, key: String) -> Result<(), String> {
    *runs().lock().unwrap().entry((key, 0)).or_default() += 1;
    Err(format!("attempt {} failed", ctx.attempt()))
}

/// Fails twice, then succeeds.
#[lepus::task(queue = "flaky2", retries = 5, backoff = "20ms..40ms")]
async fn fails_twice(key: String) -> Result<(), String> {
    let mut runs = runs().lock().unwrap();
    let n = runs.entry((key, 0)).or_default();
    *n += 1;
    if *n <= 2 {
        Err("not yet".into())
    } else {
        Ok(())
    }
}

/// Panics every time.
#[lepus::task(queue = "panics", retries = 1, backoff = "10ms..10ms")]
async fn panics(_key: String) {
    panic!("boom");
}

/// Runs past its time limit.
#[lepus::task(queue = "sleepy", retries = 0, time_limit = "100ms")]
async fn too_slow(_key: String) {
    tokio::time::sleep(Duration::from_secs(5)).await;
}

/// Records when it ran.
#[lepus::task(queue = "delayed")]
async fn record_time(key: String, id: u64) {
    *runs().lock().unwrap().entry((key, id)).or_default() += 1;
}

/// Records the order it ran in.
#[lepus::task(queue = "prioritised", max_priority = 9)]
async fn ordered(key: String, id: u64) {
    let mut runs = runs().lock().unwrap();
    let position = runs.iter().filter(|((k, _), _)| *k == key).count() as u32;
    runs.insert((key, id), position + 1); // 1-based run order
}

/// Polls until `queue` has exactly `ready` messages ready for delivery.
async fn wait_for_ready_messages(conn: &lepus::Connection, queue: &str, ready: u32) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let status = lepus::task::queue_status(conn, queue).await.unwrap();
        if status.map(|s| s.messages) == Some(ready) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{queue}: {status:?}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn higher_priority_tasks_run_first() {
    let fx = Queued::start("tq").await;
    // Queue everything before any worker runs, the urgent task last.
    for (id, priority) in (0..5).map(|id| (id, 1)).chain([(99, 9)]) {
        ordered::enqueue_with(
            &fx.client,
            fx.prefix.clone(),
            id,
            EnqueueOptions::new().priority(priority),
        )
        .await
        .unwrap();
    }
    let (worker, mut done) = fx
        .observed(ordered::handler(), |w| w.prefetch(1).concurrency(1))
        .await;
    done.wait_for(6, Duration::from_secs(10)).await.unwrap();
    assert_eq!(
        run_count(&fx.prefix, 99),
        1,
        "the priority 9 task ran first"
    );
    for id in 0..5 {
        assert_eq!(
            run_count(&fx.prefix, id),
            id as u32 + 2,
            "then the others in order"
        );
    }
    fx.stop([worker]).await;
}

#[tokio::test]
async fn graceful_shutdown_finishes_running_tasks_and_keeps_the_rest() {
    let fx = Queued::start("tq").await;
    // Stop once the worker holds two tasks and runs both: a delivery the worker has received
    // but not yet started goes back to the queue at shutdown, which is not what this checks.
    let (worker, mut done) = holding_two_slow_tasks(&fx, 6, 800).await;
    assert!(
        eventually(Duration::from_secs(5), || started(&fx.prefix) == 2).await,
        "two tasks started"
    );
    worker.stop().await;
    // The two running tasks finished and were acked; the other four wait in the queue.
    let finished = done.drain();
    assert_eq!(finished.len(), 2, "{finished:?}");
    assert!(finished.iter().all(|c| c.outcome == Outcome::Succeeded));
    let status = lepus::task::queue_status(&fx.conn, &fx.queue("slow"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!((status.messages, status.consumers), (4, 0));
    fx.stop([]).await;
}

/// Starts a worker running `slow` with prefetch 2 = concurrency 2, enqueues `slow` tasks
/// `0..tasks` (each sleeping `millis`) and returns once the worker holds two of them.
async fn holding_two_slow_tasks(
    fx: &Queued,
    tasks: u64,
    millis: u64,
) -> (BackgroundWorker, Completions) {
    let (worker, done) = fx
        .observed(slow::handler(), |w| w.prefetch(2).concurrency(2))
        .await;
    for id in 0..tasks {
        slow::enqueue(&fx.client, fx.prefix.clone(), id, millis)
            .await
            .unwrap();
    }
    wait_for_ready_messages(&fx.conn, &fx.queue("slow"), tasks as u32 - 2).await;
    (worker, done)
}

#[tokio::test]
async fn enqueue_returns_after_the_broker_has_the_task() {
    let fx = Queued::start("tq").await;
    let raw = raw(fx.url()).await;
    for n in 1..=5u32 {
        let id = count::enqueue(&fx.client, fx.prefix.clone(), u64::from(n))
            .await
            .expect("enqueue is confirmed");
        assert_eq!(id.0.len(), 32, "a fresh uuid message_id: {id}");
        // The confirm came back: the broker holds the task (no consumer takes it yet).
        assert_eq!(message_count(&raw, &fx.queue("count")).await, n);
    }
    let id = count::enqueue_with(
        &fx.client,
        fx.prefix.clone(),
        9,
        EnqueueOptions::new().message_id("order-42"),
    )
    .await
    .unwrap();
    assert_eq!(id.0, "order-42");
    let _ = raw.close(200, "".into()).await;
    fx.stop([]).await;
}

#[tokio::test]
async fn tasks_run_once_and_see_their_message_id() {
    let fx = Queued::start("tq").await;
    let (worker, mut done) = fx.observed(count::handler(), |w| w.prefetch(1)).await;
    let mut ids = Vec::new();
    for n in 0..20 {
        ids.push(
            count::enqueue(&fx.client, fx.prefix.clone(), n)
                .await
                .unwrap(),
        );
    }
    let completions = done.wait_for(20, Duration::from_secs(20)).await.unwrap();
    assert!(completions
        .iter()
        .all(|c| c.outcome == Outcome::Succeeded && c.attempt == 1));
    let mut seen: Vec<String> = completions
        .into_iter()
        .filter_map(|c| c.message_id)
        .collect();
    let mut sent: Vec<String> = ids.into_iter().map(|id| id.0).collect();
    seen.sort();
    sent.sort();
    assert_eq!(seen, sent);
    for n in 0..20 {
        assert_eq!(run_count(&fx.prefix, n), 1);
    }
    fx.stop([worker]).await;
}

#[tokio::test]
async fn a_worker_killed_mid_task_loses_nothing() {
    let fx = Queued::start("tq").await;
    const TASKS: u64 = 10;
    // Once worker A holds two tasks (prefetch 2 = concurrency 2: both running), kill it.
    let (a, mut done_a) = holding_two_slow_tasks(&fx, TASKS, 600).await;
    a.kill().await;
    assert!(done_a.drain().is_empty(), "A finished nothing before dying");
    let (b, mut done_b) = fx
        .observed(slow::handler(), |w| w.prefetch(4).concurrency(4))
        .await;
    let completions = done_b
        .wait_for(TASKS as usize, Duration::from_secs(30))
        .await
        .expect("worker B runs every task");
    assert!(completions.iter().all(|c| c.outcome == Outcome::Succeeded));
    let redelivered = completions.iter().filter(|c| c.redelivered).count();
    assert_eq!(
        redelivered, 2,
        "the two tasks A was running came back, marked redelivered"
    );
    for id in 0..TASKS {
        assert_eq!(
            run_count(&fx.prefix, id),
            1,
            "task {id} completed exactly once"
        );
    }
    fx.stop([b]).await;
}

#[tokio::test]
async fn retries_back_off_then_dead_letter_with_the_error() {
    let fx = Queued::start("tq").await;
    let prefix = &fx.prefix;
    let (worker, mut done) = fx.observed(always_fails::handler(), |w| w).await;
    let id = always_fails::enqueue(&fx.client, prefix.clone())
        .await
        .unwrap();
    let mut times = Vec::new();
    let mut delays = Vec::new();
    for attempt in 1..=4u32 {
        let c = done.next_within(Duration::from_secs(10)).await.unwrap();
        times.push(Instant::now());
        assert_eq!(c.attempt, attempt);
        assert_eq!(c.message_id.as_deref(), Some(id.0.as_str()));
        match c.outcome {
            Outcome::Retrying { error, delay } => {
                assert!(attempt <= 3);
                assert_eq!(error, format!("attempt {attempt} failed"));
                delays.push(delay);
            }
            Outcome::DeadLettered { error } => {
                assert_eq!(attempt, 4, "3 retries, then the dead-letter queue");
                assert_eq!(error, "attempt 4 failed");
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    // Growing delays: retry n waits within [c/2, c], c = 100 ms · 2^n capped at 400 ms.
    let bands = [(50, 100), (100, 200), (200, 400)];
    for (delay, (lo, hi)) in delays.iter().zip(bands) {
        assert!(
            *delay >= Duration::from_millis(lo) && *delay <= Duration::from_millis(hi),
            "{delay:?} not in [{lo}, {hi}] ms"
        );
    }
    // And the attempts were really that far apart (the delay queue held them).
    for (gap, delay) in times.windows(2).map(|w| w[1] - w[0]).zip(&delays) {
        assert!(
            gap + Duration::from_millis(20) >= *delay,
            "{gap:?} < {delay:?}"
        );
    }
    assert_eq!(run_count(prefix, 0), 4);
    let dead = DeadLetters::new(&fx.conn, fx.queue("flaky.dead"));
    let letters = dead.list(10).await.unwrap();
    assert_eq!(letters.len(), 1);
    let letter = &letters[0];
    assert_eq!(letter.message_id.as_deref(), Some(id.0.as_str()));
    assert_eq!(letter.error.as_deref(), Some("attempt 4 failed"));
    assert_eq!(letter.attempts, 4);
    assert_eq!(letter.task.as_deref(), Some("always_fails"));
    assert_eq!(
        letter.origin_queue.as_deref(),
        Some(fx.queue("flaky").as_str())
    );
    let (first, last) = (
        letter.first_failed_at_ms.unwrap(),
        letter.last_failed_at_ms.unwrap(),
    );
    assert!(
        last - first >= 350 - 20,
        "failures spread over the backoff: {first}..{last}"
    );
    assert!(letter.enqueued_at_ms.unwrap() <= first);
    let (key,): (String,) = letter.args().unwrap();
    assert_eq!(&key, prefix);
    // Listing left it there; show finds it; requeue sends it back for a fresh set of attempts.
    assert!(dead.show(&id.0).await.unwrap().is_some());
    assert_eq!(dead.requeue(Some(&id.0)).await.unwrap(), 1);
    let again = done.next_within(Duration::from_secs(10)).await.unwrap();
    assert_eq!(again.attempt, 1, "a requeued task starts its attempts over");
    fx.stop([worker]).await;
}

#[tokio::test]
async fn a_task_that_fails_twice_succeeds_on_its_third_attempt() {
    let fx = Queued::start("tq").await;
    let (worker, mut done) = fx.observed(fails_twice::handler(), |w| w).await;
    fails_twice::enqueue(&fx.client, fx.prefix.clone())
        .await
        .unwrap();
    let seen = done
        .wait_until(Duration::from_secs(10), |c| c.outcome == Outcome::Succeeded)
        .await
        .unwrap();
    assert_eq!(seen.len(), 3);
    assert_eq!(seen[2].attempt, 3);
    assert_eq!(run_count(&fx.prefix, 0), 3);
    fx.stop([worker]).await;
}

#[tokio::test]
async fn panics_and_time_limits_are_failed_attempts() {
    let fx = Queued::start("tq").await;
    let (panicking, mut panic_done) = observe(panics::handler());
    let (sleepy, mut sleepy_done) = observe(too_slow::handler());
    let worker = fx.worker(|w| w.serve(panicking).serve(sleepy)).await;
    panics::enqueue(&fx.client, fx.prefix.clone())
        .await
        .unwrap();
    too_slow::enqueue(&fx.client, fx.prefix.clone())
        .await
        .unwrap();
    let first = panic_done
        .next_within(Duration::from_secs(10))
        .await
        .unwrap();
    assert!(matches!(&first.outcome, Outcome::Retrying { error, .. } if error == "panicked: boom"));
    let second = panic_done
        .next_within(Duration::from_secs(10))
        .await
        .unwrap();
    assert!(
        matches!(&second.outcome, Outcome::DeadLettered { error } if error == "panicked: boom")
    );
    let started = Instant::now();
    let limited = sleepy_done
        .next_within(Duration::from_secs(4))
        .await
        .unwrap();
    assert!(started.elapsed() < Duration::from_secs(4));
    assert!(
        matches!(&limited.outcome, Outcome::DeadLettered { error } if error.contains("time limit")),
        "{limited:?}"
    );
    // The worker lives on after a panic: it still runs tasks.
    let dead = DeadLetters::new(&fx.conn, fx.queue("panics.dead"));
    assert_eq!(dead.list(10).await.unwrap().len(), 1);
    fx.stop([worker]).await;
}

#[tokio::test]
async fn a_delayed_task_does_not_run_early() {
    let fx = Queued::start("tq").await;
    let (worker, mut done) = fx.observed(record_time::handler(), |w| w).await;
    let delay = Duration::from_millis(400);
    let enqueued = Instant::now();
    record_time::enqueue_with(
        &fx.client,
        fx.prefix.clone(),
        1,
        EnqueueOptions::new().delay(delay),
    )
    .await
    .unwrap();
    record_time::enqueue(&fx.client, fx.prefix.clone(), 2)
        .await
        .unwrap();
    let first = done.next_within(Duration::from_secs(10)).await.unwrap();
    let second = done.next_within(Duration::from_secs(10)).await.unwrap();
    let ran_after = enqueued.elapsed();
    assert!(
        ran_after >= delay,
        "the delayed task ran after {ran_after:?}"
    );
    assert_eq!(run_count(&fx.prefix, 1), 1);
    assert_eq!(run_count(&fx.prefix, 2), 1);
    // The undelayed task, enqueued later, ran first.
    assert!(first.attempt == 1 && second.attempt == 1);
    fx.stop([worker]).await;
}

#[tokio::test]
async fn ten_thousand_tasks_across_four_workers_run_exactly_once() {
    let fx = Queued::start("tq").await;
    let prefix = &fx.prefix;
    const TASKS: u64 = 10_000;
    let mut workers = Vec::new();
    let mut observers = Vec::new();
    for _ in 0..4 {
        let (worker, done) = fx
            .observed(count::handler(), |w| w.prefetch(50).concurrency(16))
            .await;
        workers.push(worker);
        observers.push(done);
    }
    let results: Vec<_> = stream::iter(0..TASKS)
        .map(|id| count::enqueue(&fx.client, prefix.clone(), id))
        .buffer_unordered(256)
        .collect()
        .await;
    assert!(results.iter().all(Result::is_ok), "every enqueue confirmed");
    assert!(
        eventually(Duration::from_secs(120), || distinct_runs(prefix).len()
            == TASKS as usize)
        .await,
        "ran {} of {TASKS}",
        distinct_runs(prefix).len()
    );
    // Let any duplicate show up before counting.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let counts = distinct_runs(prefix);
    assert_eq!(counts.len(), TASKS as usize);
    assert!(counts.iter().all(|&n| n == 1), "a task ran twice");
    let mut per_worker = Vec::new();
    for done in &mut observers {
        per_worker.push(done.drain().len());
    }
    assert_eq!(per_worker.iter().sum::<usize>(), TASKS as usize);
    assert!(
        per_worker.iter().all(|&n| n > 0),
        "every worker took tasks: {per_worker:?}"
    );
    eprintln!("tasks per worker: {per_worker:?}");
    fx.stop(workers).await;
}
