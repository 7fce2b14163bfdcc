//! The worker pool: prefetch and concurrency limits, a worker killed mid-call, graceful
//! shutdown with calls in flight.
#![allow(clippy::unwrap_used)] // in tests a failed unwrap is a failed test

mod amqp;
mod common;
mod rpc_util;

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::background::BackgroundWorker;
use common::served::Served;
use futures::future::join_all;
use rpc_util::{eventually, routed};
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;

/// The runs of one gated handler: how many run now and at most at once, and the gate each
/// waits at until the test opens it.
struct Gated {
    running: AtomicUsize,
    max: AtomicUsize,
    gate: Semaphore,
}

impl Gated {
    const fn new() -> Gated {
        Gated {
            running: AtomicUsize::new(0),
            max: AtomicUsize::new(0),
            gate: Semaphore::const_new(0),
        }
    }

    /// One run of the handler: counted while it waits at the gate.
    async fn pass(&self) {
        let now = self.running.fetch_add(1, Ordering::SeqCst) + 1;
        self.max.fetch_max(now, Ordering::SeqCst);
        self.gate.acquire().await.expect("gate open").forget();
        self.running.fetch_sub(1, Ordering::SeqCst);
    }

    /// How many runs are waiting at the gate.
    fn running(&self) -> usize {
        self.running.load(Ordering::SeqCst)
    }
}

static P: Gated = Gated::new();
static C: Gated = Gated::new();

/// Waits at [`P`]'s gate, then answers `i`.
#[lepus::rpc(queue = "gated_p")]
async fn gated_p(i: u32) -> u32 {
    P.pass().await;
    i
}

/// Waits at [`C`]'s gate, then answers `i`.
#[lepus::rpc(queue = "gated_c")]
async fn gated_c(i: u32) -> u32 {
    C.pass().await;
    i
}

/// A call spawned by [`spawn_gated`]: its argument, and the task that returns its answer.
type GatedCall<E> = (u32, JoinHandle<Result<u32, lepus::Error<E>>>);

/// Calls a gated handler through `call` once for each of `args`, each on a task of its own
/// with its own clone of `served`'s client, retrying while the worker is still declaring its
/// queue: the calls with the argument each must answer.
fn spawn_gated<E, Fut>(
    served: &Served,
    args: std::ops::RangeInclusive<u32>,
    call: fn(lepus::Client, u32) -> Fut,
) -> Vec<GatedCall<E>>
where
    E: Send + 'static,
    Fut: Future<Output = Result<u32, lepus::Error<E>>> + Send + 'static,
{
    args.map(|i| {
        let client = served.client.clone();
        let answer =
            tokio::spawn(
                async move { routed("the gated worker", || call(client.clone(), i)).await },
            );
        (i, answer)
    })
    .collect()
}

/// Opens `gated`'s gate for every one of `calls`, checks that each answers its own argument,
/// and that at most `limit` ran at once (`what` names the limit).
async fn open_and_answer<E: std::fmt::Debug>(
    gated: &Gated,
    calls: Vec<GatedCall<E>>,
    limit: usize,
    what: &str,
) {
    gated.gate.add_permits(calls.len());
    for (i, call) in calls {
        assert_eq!(call.await.unwrap().unwrap(), i);
    }
    assert_eq!(gated.max.load(Ordering::SeqCst), limit, "{what}");
}

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
    let served = Served::start("rpc", |w| {
        w.prefetch(2).concurrency(10).serve(gated_p::handler())
    })
    .await;
    let queue = format!("{}gated_p", served.prefix);

    let calls = spawn_gated(&served, 0..=9, |client, i| async move {
        gated_p::call(&client, i).await
    });
    // Two requests run (the prefetch), eight wait in the queue, not in the worker.
    eventually("2 running and 8 ready", || async {
        (P.running() == 2 && ready_count(served.url(), &queue).await == 8).then_some(())
    })
    .await;
    open_and_answer(&P, calls, 2, "never more than prefetch at once").await;

    served.stop().await;
}

#[tokio::test]
async fn concurrency_bounds_running_handlers_below_the_prefetch() {
    let served = Served::start("rpc", |w| {
        w.prefetch(10).concurrency(3).serve(gated_c::handler())
    })
    .await;
    let calls = spawn_gated(&served, 1..=10, |client, i| async move {
        gated_c::call(&client, i).await
    });
    eventually("3 running", || async { (C.running() == 3).then_some(()) }).await;
    open_and_answer(&C, calls, 3, "never more than concurrency at once").await;

    served.stop().await;
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
    let Served {
        broker,
        prefix,
        worker: doomed,
        client,
    } = Served::start("rpc", |w| w.prefetch(1).serve(fragile::handler())).await;
    let call =
        tokio::spawn(
            async move { routed("the fragile worker", || fragile::call(&client, 21)).await },
        );
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
    let steady_pool = |w: lepus::Worker| w.prefetch(8).concurrency(4).serve(steady::handler());
    let Served {
        broker,
        prefix,
        worker: leaving,
        client,
    } = Served::start("rpc", steady_pool).await;
    let staying = BackgroundWorker::start(broker.url(), &prefix, steady_pool).await;
    let answer = routed("the steady workers", || steady::call(&client, 0)).await;
    answer.expect("steady(0) answers");
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
    let options = lepus::QueueOptions::new()
        .max_priority(10)
        .message_ttl(Duration::from_secs(60))
        .auto_delete(true);
    let served = Served::start("rpc", |w| {
        w.prefetch(1)
            .concurrency(1)
            .queue_options("prio", options)
            .serve(prio::handler())
    })
    .await;
    let answer = routed("the prio worker", || prio::call(&served.client, 100)).await;
    answer.expect("prio(100) answers");
    PRIO_ORDER.lock().unwrap().clear();
    let queue = format!("{}prio", served.prefix);

    let spawn = |tag: u8, priority: u8| {
        let client = served.client.clone();
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
            (ready_count(served.url(), &queue).await == waiting).then_some(())
        })
        .await;
    }
    calls.push(spawn(9, 9));
    eventually("the high-priority call to wait in the queue", || async {
        (ready_count(served.url(), &queue).await == 4).then_some(())
    })
    .await;

    PRIO_GATE.add_permits(1);
    assert_eq!(blocker.await.unwrap().unwrap(), 0);
    for call in calls {
        call.await.unwrap().unwrap();
    }
    assert_eq!(PRIO_ORDER.lock().unwrap().as_slice(), [0, 9, 1, 2, 3]);

    served.stop().await;
}

/// Quorum is one option away; against RabbitMQ this declares a real quorum queue.
#[lepus::rpc(queue = "replicated")]
async fn replicated(x: u32) -> u32 {
    x + 1
}

#[tokio::test]
async fn a_quorum_queue_serves_calls() {
    let served = Served::start("rpc", |w| {
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
    let answer = routed("the quorum queue to be served", || {
        replicated::call(&served.client, 41)
    })
    .await;
    assert_eq!(answer.expect("replicated(41) answers"), 42);

    served.stop().await;
}

/// Answers at once.
#[lepus::rpc(queue = "phoenix")]
async fn phoenix(x: u32) -> u32 {
    x
}

#[tokio::test]
async fn a_worker_whose_queue_is_deleted_redeclares_it_and_serves_on() {
    let served = Served::start("rpc", |w| w.serve(phoenix::handler())).await;
    let call = || phoenix::call(&served.client, 5);
    let answer = routed("the phoenix worker", call).await;
    assert_eq!(answer.expect("phoenix(5) answers"), 5);

    // Someone deletes the queue: the broker cancels the worker's consumer (basic.cancel).
    let raw = amqp::connect_url(served.url()).await;
    let channel = raw.create_channel().await.unwrap();
    channel
        .queue_delete(
            format!("{}phoenix", served.prefix).into(),
            lapin::options::QueueDeleteOptions::default(),
        )
        .await
        .unwrap();
    let _ = raw.close(200, "bye".into()).await;

    // The worker notices, redeclares and consumes again: calls are answered, not lost.
    let answer = routed("the queue to be back", call).await;
    assert_eq!(answer.expect("phoenix(5) answers"), 5);

    served.stop().await;
}
