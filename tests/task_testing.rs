//! The user-facing test helpers, `lepus::testing`: one idiom for every kind of handler.
//!
//! With a broker, `TestBed::serve` serves an RPC handler, a task or an event handler the same
//! way (it returns once the worker consumes), and its `Completions` report each request, task
//! or event the handler settled. Without a broker, `call_local`, `run_task_local` and
//! `deliver_local` run one handler in-process as a worker would, with the delivery state it
//! sees given by the test (nameko's `worker_factory`).
#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

mod common;

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use lepus::event::EventInfo;
use lepus::task::TaskInfo;
use lepus::testing::{call_local, deliver_local, run_task_local, Completions, Outcome};
use serde::{Deserialize, Serialize};

static GREETED: AtomicUsize = AtomicUsize::new(0);

#[lepus::task(queue = "greetings", retries = 1, backoff = "10ms..10ms")]
async fn greet(name: String) -> Result<(), String> {
    if name.is_empty() {
        return Err("no name".into());
    }
    GREETED.fetch_add(1, Ordering::SeqCst);
    Ok(())
}

#[lepus::event(exchange = "greeted", kind = "fanout", delivery = "broadcast")]
async fn on_greeted(name: String) -> Result<(), String> {
    if name == "mallory" {
        return Err("not welcome".into());
    }
    Ok(())
}

#[derive(Debug, PartialEq, Serialize, Deserialize, thiserror::Error)]
enum MathError {
    #[error("fib({0}) overflows")]
    Overflow(u32),
}

/// Fibonacci by the closed recursion, checked against u64 overflow.
#[lepus::rpc(queue = "testing.math")]
async fn fib(n: u32) -> Result<u64, MathError> {
    (0..n)
        .try_fold((0u64, 1u64), |(a, b), _| Some((b, a.checked_add(b)?)))
        .map(|(a, _)| a)
        .ok_or(MathError::Overflow(n))
}

const WAIT: Duration = Duration::from_secs(10);

async fn next_outcome(done: &mut Completions) -> Outcome {
    done.next_within(WAIT).await.unwrap().outcome
}

/// The same four lines for each kind: serve, act, wait for the completion, check its outcome.
#[tokio::test]
async fn one_idiom_tests_an_rpc_handler_a_task_and_an_event() {
    let mut bed = common::test_bed("bed").await;

    let mut rpc = bed.serve(fib::handler()).await.unwrap();
    assert_eq!(fib::call(bed.client(), 10).await.unwrap(), 55);
    assert_eq!(next_outcome(&mut rpc).await, Outcome::Succeeded);

    let mut task = bed.serve(greet::handler()).await.unwrap();
    let before = GREETED.load(Ordering::SeqCst);
    greet::enqueue(bed.client(), "ann".into()).await.unwrap();
    assert_eq!(next_outcome(&mut task).await, Outcome::Succeeded);
    assert!(GREETED.load(Ordering::SeqCst) > before);

    let mut event = bed.serve(on_greeted::handler()).await.unwrap();
    on_greeted::publish(bed.client(), "", &"ann".to_owned())
        .await
        .unwrap();
    assert_eq!(next_outcome(&mut event).await, Outcome::Succeeded);

    // Failures, the same way.
    assert!(matches!(
        fib::call(bed.client(), 100).await,
        Err(lepus::Error::Remote(MathError::Overflow(100)))
    ));
    assert_eq!(
        next_outcome(&mut rpc).await,
        Outcome::Failed {
            error: "fib(100) overflows".into()
        }
    );
    greet::enqueue(bed.client(), String::new()).await.unwrap();
    let seen = task
        .wait_until(WAIT, |c| matches!(c.outcome, Outcome::DeadLettered { .. }))
        .await
        .unwrap();
    assert!(matches!(&seen[0].outcome, Outcome::Retrying { error, .. } if error == "no name"));
    assert_eq!(seen.len(), 2);
    on_greeted::publish(bed.client(), "", &"mallory".to_owned())
        .await
        .unwrap();
    assert_eq!(
        next_outcome(&mut event).await,
        Outcome::Failed {
            error: "not welcome".into()
        }
    );
    bed.stop().await;
}

#[tokio::test]
async fn serve_returns_once_the_handler_is_served() {
    let mut bed = common::test_bed("bed").await;
    // No retry loop: the first call after `serve` is served (no NoRoute), and the first event
    // published reaches the handler's queue.
    let _rpc = bed.serve(fib::handler()).await.unwrap();
    assert_eq!(fib::call(bed.client(), 1).await.unwrap(), 1);
    let mut event = bed.serve(on_greeted::handler()).await.unwrap();
    on_greeted::publish(bed.client(), "", &"ann".to_owned())
        .await
        .unwrap();
    assert_eq!(next_outcome(&mut event).await, Outcome::Succeeded);
    bed.stop().await;
}

/// Remembers the message ids it handled: a handler whose behaviour depends on its delivery
/// state (here, deduplication of at-least-once deliveries).
static SEEN: Mutex<Option<HashSet<String>>> = Mutex::new(None);

#[lepus::task(queue = "testing.charges", retries = 2)]
async fn charge(cents: u64) -> Result<(), String> {
    let info = lepus::task::current().ok_or("not run by a worker")?;
    if let Some(id) = &info.message_id {
        let mut seen = SEEN.lock().unwrap();
        if !seen.get_or_insert_with(HashSet::new).insert(id.clone()) {
            return Ok(()); // already charged: a redelivery
        }
    }
    if info.attempt >= 2 && cents > 10_000 {
        return Err(format!("card declined on attempt {}", info.attempt));
    }
    if cents == 0 {
        return Err("nothing to charge".into());
    }
    Ok(())
}

#[lepus::event(exchange = "testing.audit", kind = "topic", binding = "#")]
async fn audit(line: String) -> Result<(), String> {
    let info = lepus::event::current().ok_or("not run by a worker")?;
    if info.routing_key.ends_with(".error") && line.is_empty() {
        return Err(format!("empty line on {}", info.routing_key));
    }
    Ok(())
}

/// No broker: each handler runs in this process as a worker would run it, with the delivery
/// state (`task::current()`, `event::current()`) faked by the test.
#[tokio::test]
async fn handlers_are_unit_tested_without_a_broker() {
    // An RPC handler: typed result and typed error, as a caller would get them.
    assert_eq!(call_local::<fib>((10,)).await.unwrap(), 55);
    assert!(matches!(
        call_local::<fib>((100,)).await,
        Err(lepus::Error::Remote(MathError::Overflow(100)))
    ));

    // A task: the fake attempt number and message id drive the handler and the retry decision.
    let first = TaskInfo {
        message_id: Some("charge-1".into()),
        ..TaskInfo::default()
    };
    assert_eq!(
        run_task_local::<charge>((500,), first.clone()).await,
        Outcome::Succeeded
    );
    // Delivered again with the same id: deduplicated.
    assert_eq!(
        run_task_local::<charge>((0,), first).await,
        Outcome::Succeeded
    );
    let retry = run_task_local::<charge>(
        (0,),
        TaskInfo {
            message_id: Some("charge-2".into()),
            ..TaskInfo::default()
        },
    )
    .await;
    assert!(
        matches!(&retry, Outcome::Retrying { error, .. } if error == "nothing to charge"),
        "{retry:?}"
    );
    let last = run_task_local::<charge>(
        (20_000,),
        TaskInfo {
            message_id: Some("charge-3".into()),
            attempt: 3,
            ..TaskInfo::default()
        },
    )
    .await;
    assert_eq!(
        last,
        Outcome::DeadLettered {
            error: "card declined on attempt 3".into()
        }
    );

    // An event handler, with a fake routing key.
    let on = |key: &str| EventInfo {
        routing_key: key.into(),
        ..EventInfo::default()
    };
    assert_eq!(
        deliver_local::<audit>("disk full".into(), on("kern.error")).await,
        Outcome::Succeeded
    );
    assert_eq!(
        deliver_local::<audit>(String::new(), on("kern.error")).await,
        Outcome::Failed {
            error: "empty line on kern.error".into()
        }
    );
    assert_eq!(
        deliver_local::<audit>(String::new(), on("kern.info")).await,
        Outcome::Succeeded
    );
}

/// A queue chosen at run time (from configuration, say): the worker serves the handler there
/// (`on_queue`), callers call and enqueue there (`CallOptions::queue`, `EnqueueOptions::queue`).
#[tokio::test]
async fn queues_can_be_chosen_at_run_time() {
    let mut bed = common::test_bed("bed").await;
    let configured = format!("{}.eu", fib::QUEUE);
    let _rpc = bed
        // The bed's worker adds the bed's prefix, as the client does.
        .serve(fib::handler().on_queue(configured.clone()))
        .await
        .unwrap();
    let there = lepus::CallOptions::default().queue(configured.as_str());
    assert_eq!(fib::call_with(bed.client(), 10, there).await.unwrap(), 55);
    // The queue named in the attribute is not served.
    assert!(matches!(
        fib::call(bed.client(), 10).await,
        Err(lepus::Error::NoRoute { .. })
    ));

    let tasks = format!("{}.eu", greet::QUEUE);
    let mut done = bed
        .serve(greet::handler().on_queue(tasks.clone()))
        .await
        .unwrap();
    greet::enqueue_with(
        bed.client(),
        "eve".into(),
        lepus::EnqueueOptions::new().queue(tasks.as_str()),
    )
    .await
    .unwrap();
    assert_eq!(next_outcome(&mut done).await, Outcome::Succeeded);
    bed.stop().await;
}
