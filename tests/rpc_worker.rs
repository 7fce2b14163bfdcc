//! The worker pool: prefetch and concurrency limits, a worker killed mid-call, graceful
//! shutdown with calls in flight.
#![allow(clippy::unwrap_used)] // in tests a failed unwrap is a failed test

mod amqp;
mod common;
mod rpc_util;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::background::BackgroundWorker;
use futures::future::join_all;
use lepus::Error;
use rpc_util::{client, eventually};
use tokio::sync::Semaphore;

/// A handler that records how many copies of itself run at once and waits at a gate.
macro_rules! gated_rpc {
    ($name:ident, $queue:literal, $running:ident, $max:ident, $gate:ident) => {
        static $running: AtomicUsize = AtomicUsize::new(0);
        static $max: AtomicUsize = AtomicUsize::new(0);
        static $gate: Semaphore = Semaphore::const_new(0);

        #[lepus::rpc(queue = $queue)]
        async fn $name(i: u32) -> u32 {
            let now = $running.fetch_add(1, Ordering::SeqCst) + 1;
            $max.fetch_max(now, Ordering::SeqCst);
            $gate.acquire().await.expect("gate open").forget();
            $running.fetch_sub(1, Ordering::SeqCst);
            i
        }
    };
}

gated_rpc!(gated_p, "gated_p", P_RUNNING, P_MAX, P_GATE);
gated_rpc!(gated_c, "gated_c", C_RUNNING, C_MAX, C_GATE);

/// The ready-message count of `queue`, by a passive `queue.declare`.
async fn ready_count(url: &str, queue: &str) -> u32 {
    let conn = amqp::connect_url(url).await;
    let channel = conn.create_channel().await.unwrap();
    let q = amqp::passive_queue(&channel, queue).await.unwrap();
    let _ = conn.close(200, "bye".into()).await;
    q.message_count()
}

#[tokio::test]
async fn prefetch_bounds_what_a_worker_holds_even_with_spare_concurrency() {
    let broker = common::broker().await;
    let prefix = common::unique("rpc");
    let worker = BackgroundWorker::start(broker.url(), &prefix, |w| {
        w.prefetch(2).concurrency(10).serve(gated_p::handler())
    })
    .await;
    let client = client(broker.url(), &prefix).await;
    let queue = format!("{prefix}gated_p");

    let calls: Vec<_> = (0..10u32)
        .map(|i| {
            let client = client.clone();
            tokio::spawn(async move {
                // Retry while the worker is still declaring its queue.
                loop {
                    match gated_p::call(&client, i).await {
                        Err(Error::NoRoute { .. }) => {
                            tokio::time::sleep(Duration::from_millis(20)).await
                        }
                        other => return other,
                    }
                }
            })
        })
        .collect();
    // Two requests run (the prefetch), eight wait in the queue, not in the worker.
    eventually("2 running and 8 ready", || async {
        (P_RUNNING.load(Ordering::SeqCst) == 2 && ready_count(broker.url(), &queue).await == 8)
            .then_some(())
    })
    .await;
    P_GATE.add_permits(10);
    for (i, call) in calls.into_iter().enumerate() {
        assert_eq!(call.await.unwrap().unwrap(), i as u32);
    }
    assert_eq!(
        P_MAX.load(Ordering::SeqCst),
        2,
        "never more than prefetch at once"
    );

    worker.shutdown().await;
    broker.stop().await;
}

#[tokio::test]
async fn concurrency_bounds_running_handlers_below_the_prefetch() {
    let broker = common::broker().await;
    let prefix = common::unique("rpc");
    let worker = BackgroundWorker::start(broker.url(), &prefix, |w| {
        w.prefetch(10).concurrency(3).serve(gated_c::handler())
    })
    .await;
    let client = client(broker.url(), &prefix).await;
    let calls: Vec<_> = (1..=10u32)
        .map(|i| {
            let client = client.clone();
            tokio::spawn(async move {
                loop {
                    match gated_c::call(&client, i).await {
                        Err(Error::NoRoute { .. }) => {
                            tokio::time::sleep(Duration::from_millis(20)).await
                        }
                        other => return other,
                    }
                }
            })
        })
        .collect();
    eventually("3 running", || async {
        (C_RUNNING.load(Ordering::SeqCst) == 3).then_some(())
    })
    .await;
    C_GATE.add_permits(10);
    for (i, call) in calls.into_iter().enumerate() {
        assert_eq!(call.await.unwrap().unwrap(), i as u32 + 1);
    }
    assert_eq!(
        C_MAX.load(Ordering::SeqCst),
        3,
        "never more than concurrency at once"
    );

    worker.shutdown().await;
    broker.stop().await;
}

static FRAGILE_RUNS: AtomicUsize = AtomicUsize::new(0);

/// Hangs on its first run (the worker running it gets killed); answers on the next.
#[lepus::rpc(queue = "fragile")]
async fn fragile(x: u32) -> u32 {
    if FRAGILE_RUNS.fetch_add(1, Ordering::SeqCst) == 0 {
        std::future::pending::<()>().await;
    }
    x * 2
}

#[tokio::test]
async fn a_call_whose_worker_is_killed_is_redelivered_to_another_and_answered() {
    let broker = common::broker().await;
    let prefix = common::unique("rpc");
    let doomed = BackgroundWorker::start(broker.url(), &prefix, |w| {
        w.prefetch(1).serve(fragile::handler())
    })
    .await;
    let client = client(broker.url(), &prefix).await;
    let call = {
        let client = client.clone();
        tokio::spawn(async move {
            loop {
                match fragile::call(&client, 21).await {
                    Err(Error::NoRoute { .. }) => {
                        tokio::time::sleep(Duration::from_millis(20)).await
                    }
                    other => return other,
                }
            }
        })
    };
    eventually("the first run to start", || async {
        (FRAGILE_RUNS.load(Ordering::SeqCst) == 1).then_some(())
    })
    .await;

    // The worker dies holding the unacked request; the broker requeues it for the next one.
    doomed.kill().await;
    let rescuer = BackgroundWorker::start(broker.url(), &prefix, |w| {
        w.prefetch(1).serve(fragile::handler())
    })
    .await;
    let answer = tokio::time::timeout(Duration::from_secs(20), call)
        .await
        .expect("answered within 20 s")
        .unwrap();
    assert_eq!(answer.unwrap(), 42);
    assert_eq!(
        FRAGILE_RUNS.load(Ordering::SeqCst),
        2,
        "ran once per worker"
    );

    rescuer.shutdown().await;
    broker.stop().await;
}

static STEADY_RUNS: AtomicUsize = AtomicUsize::new(0);

/// Takes a little time.
#[lepus::rpc(queue = "steady")]
async fn steady(x: u64) -> u64 {
    tokio::time::sleep(Duration::from_millis(20)).await;
    STEADY_RUNS.fetch_add(1, Ordering::SeqCst);
    x + 1
}

#[tokio::test]
async fn graceful_shutdown_with_calls_in_flight_loses_none() {
    let broker = common::broker().await;
    let prefix = common::unique("rpc");
    let leaving = BackgroundWorker::start(broker.url(), &prefix, |w| {
        w.prefetch(8).concurrency(4).serve(steady::handler())
    })
    .await;
    let staying = BackgroundWorker::start(broker.url(), &prefix, |w| {
        w.prefetch(8).concurrency(4).serve(steady::handler())
    })
    .await;
    let client = client(broker.url(), &prefix).await;
    eventually("the steady workers", || async {
        match steady::call(&client, 0).await {
            Err(Error::NoRoute { .. }) => None,
            other => Some(other.expect("steady(0) answers")),
        }
    })
    .await;
    let base = STEADY_RUNS.load(Ordering::SeqCst);

    const CALLS: u64 = 200;
    let calls = tokio::spawn({
        let client = client.clone();
        async move {
            join_all((0..CALLS).map(|x| {
                let client = client.clone();
                async move { (x, steady::call(&client, x).await) }
            }))
            .await
        }
    });
    eventually("some calls done", || async {
        (STEADY_RUNS.load(Ordering::SeqCst) - base >= 20).then_some(())
    })
    .await;
    // Mid-stream: one worker leaves, finishing what it started and handing back the rest.
    leaving.shutdown().await;

    let results = tokio::time::timeout(Duration::from_secs(60), calls)
        .await
        .expect("all calls answered within 60 s")
        .unwrap();
    for (x, result) in results {
        assert_eq!(result.unwrap(), x + 1, "call {x}");
    }
    assert_eq!(
        STEADY_RUNS.load(Ordering::SeqCst) - base,
        CALLS as usize,
        "every call ran exactly once"
    );

    staying.shutdown().await;
    broker.stop().await;
}

static PRIO_ORDER: std::sync::Mutex<Vec<u8>> = std::sync::Mutex::new(Vec::new());
static PRIO_GATE: Semaphore = Semaphore::const_new(0);

/// Records the order it runs in; tag 0 holds the worker until the gate opens.
#[lepus::rpc(queue = "prio")]
async fn prio(tag: u8) -> u8 {
    PRIO_ORDER.lock().unwrap().push(tag);
    if tag == 0 {
        PRIO_GATE.acquire().await.expect("gate open").forget();
    }
    tag
}

#[tokio::test]
async fn queue_options_declare_a_priority_queue_and_high_priority_calls_go_first() {
    let broker = common::broker().await;
    let prefix = common::unique("rpc");
    let options = lepus::QueueOptions::new()
        .max_priority(10)
        .message_ttl(Duration::from_secs(60))
        .auto_delete(true);
    let worker = BackgroundWorker::start(broker.url(), &prefix, |w| {
        w.prefetch(1)
            .concurrency(1)
            .queue_options("prio", options)
            .serve(prio::handler())
    })
    .await;
    let client = client(broker.url(), &prefix).await;
    eventually("the prio worker", || async {
        match prio::call(&client, 100).await {
            Err(Error::NoRoute { .. }) => None,
            other => Some(other.expect("prio(100) answers")),
        }
    })
    .await;
    PRIO_ORDER.lock().unwrap().clear();
    let queue = format!("{prefix}prio");

    let spawn = |tag: u8, priority: u8| {
        let client = client.clone();
        tokio::spawn(async move {
            let options = lepus::CallOptions::default().priority(priority);
            prio::call_with(&client, tag, options).await
        })
    };
    let blocker = spawn(0, 0);
    eventually("the blocker to run", || async {
        (PRIO_ORDER.lock().unwrap().as_slice() == [0]).then_some(())
    })
    .await;
    let mut calls = Vec::new();
    for tag in 1..=3 {
        calls.push(spawn(tag, 1));
        let waiting = u32::from(tag);
        eventually("the low-priority call to wait in the queue", || async {
            (ready_count(broker.url(), &queue).await == waiting).then_some(())
        })
        .await;
    }
    calls.push(spawn(9, 9));
    eventually("the high-priority call to wait in the queue", || async {
        (ready_count(broker.url(), &queue).await == 4).then_some(())
    })
    .await;

    PRIO_GATE.add_permits(1);
    assert_eq!(blocker.await.unwrap().unwrap(), 0);
    for call in calls {
        call.await.unwrap().unwrap();
    }
    assert_eq!(PRIO_ORDER.lock().unwrap().as_slice(), [0, 9, 1, 2, 3]);

    worker.shutdown().await;
    broker.stop().await;
}

/// Quorum is one option away; against RabbitMQ this declares a real quorum queue.
#[lepus::rpc(queue = "replicated")]
async fn replicated(x: u32) -> u32 {
    x + 1
}

#[tokio::test]
async fn a_quorum_queue_serves_calls() {
    let broker = common::broker().await;
    let prefix = common::unique("rpc");
    let worker = BackgroundWorker::start(broker.url(), &prefix, |w| {
        w.queue_options(
            "replicated",
            lepus::QueueOptions::new()
                .quorum()
                .delivery_limit(5)
                .expires(Duration::from_secs(60)),
        )
        .serve(replicated::handler())
    })
    .await;
    let client = client(broker.url(), &prefix).await;
    let answer = eventually("the quorum queue to be served", || async {
        match replicated::call(&client, 41).await {
            Err(Error::NoRoute { .. }) => None,
            other => Some(other.expect("replicated(41) answers")),
        }
    })
    .await;
    assert_eq!(answer, 42);

    worker.shutdown().await;
    broker.stop().await;
}

/// Answers at once.
#[lepus::rpc(queue = "phoenix")]
async fn phoenix(x: u32) -> u32 {
    x
}

#[tokio::test]
async fn a_worker_whose_queue_is_deleted_redeclares_it_and_serves_on() {
    let broker = common::broker().await;
    let prefix = common::unique("rpc");
    let worker =
        BackgroundWorker::start(broker.url(), &prefix, |w| w.serve(phoenix::handler())).await;
    let client = client(broker.url(), &prefix).await;
    let served = || async {
        match phoenix::call(&client, 5).await {
            Err(Error::NoRoute { .. }) => None,
            other => Some(other.expect("phoenix(5) answers")),
        }
    };
    assert_eq!(eventually("the phoenix worker", served).await, 5);

    // Someone deletes the queue: the broker cancels the worker's consumer (basic.cancel).
    let raw = lapin::Connection::connect(broker.url(), lapin::ConnectionProperties::default())
        .await
        .unwrap();
    let channel = raw.create_channel().await.unwrap();
    channel
        .queue_delete(
            format!("{prefix}phoenix").into(),
            lapin::options::QueueDeleteOptions::default(),
        )
        .await
        .unwrap();
    let _ = raw.close(200, "bye".into()).await;

    // The worker notices, redeclares and consumes again: calls are answered, not lost.
    assert_eq!(eventually("the queue to be back", served).await, 5);

    worker.shutdown().await;
    broker.stop().await;
}
