//! The user-facing test helpers, `lepus::testing`: one idiom for every kind of handler.
//!
//! With a broker, `TestBed::serve` serves an RPC handler, a task or an event handler the same
//! way (it returns once the worker consumes), and its `Completions` report each request, task
//! or event the handler settled. Without a broker, `call_local`, `run_task_local` and
//! `deliver_local` run one handler in-process as a worker would, with the delivery state it
//! sees (its `Context`) and the state it takes (`State<T>`) given by the test (nameko's
//! `worker_factory`); no `static` holds a handler's state.
#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

mod common;

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use lepus::event::EventInfo;
use lepus::task::TaskInfo;
use lepus::testing::{
    call_local, call_local_with, deliver_local, run_task_local, Completions, Outcome,
};
use lepus::{Context, State};
use serde::{Deserialize, Serialize};

/// How many greetings were sent: the greeter's state, given by each test.
type Greeted = Arc<AtomicUsize>;

#[lepus::task(queue = "greetings", retries = 1, backoff = "10ms..10ms")]
async fn greet(State(greeted): State<Greeted>, name: String) -> Result<(), String> {
    if name.is_empty() {
        return Err("no name".into());
    }
    greeted.fetch_add(1, Ordering::SeqCst);
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

    // The handler's state is the test's: a fresh counter, given to this handler only.
    let greeted = Greeted::default();
    let mut task = bed
        .serve(greet::handler().state(greeted.clone()))
        .await
        .unwrap();
    greet::enqueue(bed.client(), "ann".into()).await.unwrap();
    assert_eq!(next_outcome(&mut task).await, Outcome::Succeeded);
    assert_eq!(greeted.load(Ordering::SeqCst), 1);

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

/// The message ids a charge handler has seen: its state (deduplication of at-least-once
/// deliveries), given by the test.
type Ledger = Arc<Mutex<HashSet<String>>>;

#[lepus::task(queue = "testing.charges", retries = 2)]
async fn charge(ctx: Context, State(ledger): State<Ledger>, cents: u64) -> Result<(), String> {
    if let Some(id) = ctx.message_id() {
        if !ledger.lock().unwrap().insert(id.to_owned()) {
            return Ok(()); // already charged: a redelivery
        }
    }
    if ctx.attempt() >= 2 && cents > 10_000 {
        return Err(format!("card declined on attempt {}", ctx.attempt()));
    }
    if cents == 0 {
        return Err("nothing to charge".into());
    }
    Ok(())
}

#[lepus::event(exchange = "testing.audit", kind = "topic", binding = "#")]
async fn audit(ctx: &Context, line: String) -> Result<(), String> {
    let key = ctx.routing_key().ok_or("not an event")?;
    if key.ends_with(".error") && line.is_empty() {
        return Err(format!("empty line on {key}"));
    }
    Ok(())
}

/// Written before the context: `task::current()` still answers (deprecated).
#[lepus::task(queue = "testing.legacy")]
async fn legacy(expected_attempt: u32) -> Result<(), String> {
    #[allow(deprecated)]
    let info = lepus::task::current().ok_or("not run by a worker")?;
    if info.attempt == expected_attempt && info.name == "legacy" {
        Ok(())
    } else {
        Err(format!("saw {info:?}"))
    }
}

#[derive(Clone)]
struct Rates {
    eur_per_usd: f64,
}

#[lepus::rpc(queue = "testing.fx")]
async fn to_eur(usd: f64, State(rates): State<Rates>, ctx: Context) -> Result<f64, String> {
    if ctx.is_expired() {
        return Err("the caller gave up".into());
    }
    Ok(usd * rates.eur_per_usd)
}

/// No broker: each handler runs in this process as a worker would run it, with its context
/// and its state faked by the test.
#[tokio::test]
async fn handlers_are_unit_tested_without_a_broker() {
    // An RPC handler: typed result and typed error, as a caller would get them.
    assert_eq!(call_local::<fib>((10,)).await.unwrap(), 55);
    assert!(matches!(
        call_local::<fib>((100,)).await,
        Err(lepus::Error::Remote(MathError::Overflow(100)))
    ));

    // An RPC handler with state: the test gives a fake one, and the context it runs in.
    let rates = Context::new().with_state(Rates { eur_per_usd: 2.0 });
    assert_eq!(
        call_local_with::<to_eur>((10.0,), rates.clone())
            .await
            .unwrap(),
        20.0
    );
    let expired = rates.with_timeout(Duration::ZERO);
    assert!(matches!(
        call_local_with::<to_eur>((10.0,), expired).await,
        Err(lepus::Error::Remote(e)) if e == "the caller gave up"
    ));
    // Without the state it needs: the error a worker would give before starting.
    match call_local::<to_eur>((10.0,)).await {
        Err(lepus::Error::Config(message)) => {
            assert!(message.contains("State<task_testing::Rates>"), "{message}")
        }
        other => panic!("expected a configuration error, got {other:?}"),
    }

    // A task: the fake attempt number and message id drive the handler and the retry decision;
    // its ledger is the test's.
    let ledger = Ledger::default();
    let with = |info: TaskInfo| Context::from(info).with_state(ledger.clone());
    let first = TaskInfo {
        message_id: Some("charge-1".into()),
        ..TaskInfo::default()
    };
    assert_eq!(
        run_task_local::<charge>((500,), with(first.clone())).await,
        Outcome::Succeeded
    );
    // Delivered again with the same id: deduplicated.
    assert_eq!(
        run_task_local::<charge>((0,), with(first)).await,
        Outcome::Succeeded
    );
    let retry = run_task_local::<charge>(
        (0,),
        with(TaskInfo {
            message_id: Some("charge-2".into()),
            ..TaskInfo::default()
        }),
    )
    .await;
    assert!(
        matches!(&retry, Outcome::Retrying { error, .. } if error == "nothing to charge"),
        "{retry:?}"
    );
    let last = run_task_local::<charge>(
        (20_000,),
        with(TaskInfo {
            message_id: Some("charge-3".into()),
            attempt: 3,
            ..TaskInfo::default()
        }),
    )
    .await;
    assert_eq!(
        last,
        Outcome::DeadLettered {
            error: "card declined on attempt 3".into()
        }
    );
    assert_eq!(ledger.lock().unwrap().len(), 3);
    // No ledger given: dead-lettered with the reason, as a worker would refuse to start.
    match run_task_local::<charge>((1,), TaskInfo::default()).await {
        Outcome::DeadLettered { error } => assert!(error.contains("State<"), "{error}"),
        other => panic!("expected a dead letter, got {other:?}"),
    }
    // `task::current()` (deprecated) still reads the task's context.
    let fourth = TaskInfo {
        attempt: 4,
        ..TaskInfo::default()
    };
    assert_eq!(
        run_task_local::<legacy>((4,), fourth).await,
        Outcome::Succeeded
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
        .serve(
            greet::handler()
                .on_queue(tasks.clone())
                .state(Greeted::default()),
        )
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

/// A handler taking a state nobody gave: the worker refuses to start, naming it, instead of
/// failing request after request.
#[tokio::test]
async fn a_worker_missing_a_state_refuses_to_start() {
    let mut bed = common::test_bed("bed").await;
    match bed.worker(|w| w.serve(greet::handler())).await {
        Err(lepus::Error::Config(message)) => {
            assert!(message.contains("greet"), "{message}");
            assert!(message.contains("AtomicUsize"), "{message}");
        }
        other => panic!("expected a configuration error, got {other:?}"),
    }
    // Given to the worker (every handler of it), it starts; a handler's own state wins.
    let workers = Greeted::default();
    let own = Greeted::default();
    let mut done = bed
        .serve(greet::handler().state(own.clone()))
        .await
        .unwrap();
    bed.worker(|w| w.state(workers.clone()).serve(fib::handler()))
        .await
        .unwrap();
    greet::enqueue(bed.client(), "bo".into()).await.unwrap();
    assert_eq!(next_outcome(&mut done).await, Outcome::Succeeded);
    assert_eq!(own.load(Ordering::SeqCst), 1);
    assert_eq!(workers.load(Ordering::SeqCst), 0);
    bed.stop().await;
}
