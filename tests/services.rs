//! Issue 16: `#[lepus::service]` traits. A caller holding only the contract calls every method,
//! gets typed remote errors, times out cleanly and gets `NoRoute` when nobody serves; an
//! implementation holds its state (`&self`) and serves concurrently; two servers with
//! different state in one process (and in tests running in parallel) keep apart; a trait
//! method and a `#[lepus::rpc]` function of the same shape are the same thing on the wire.
//!
//! Runs on the bundled broker, or on the one `LEPUS_TEST_AMQP_URL` names.
#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use lepus::{CallOptions, Context, Error, FailureKind};
use serde::{Deserialize, Serialize};
use tokio::sync::Barrier;

/// The contract's error type, typed on both sides.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum CounterError {
    /// The amount and the limit.
    #[error("{0} is over the limit of {1}")]
    OverLimit(u64, u64),
}

/// What a handler saw of its request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, lepus::Plain)]
pub struct Seen {
    /// `Context::correlation_id`.
    pub correlation_id: Option<String>,
    /// `Context::trace_id`.
    pub trace_id: Option<String>,
    /// `Context::time_left`, in ms.
    pub millis_left: Option<u64>,
    /// `Context::attempt`.
    pub attempt: u32,
}

/// The contract: no bodies, no implementation.
#[lepus::service(queue = "svc.counter")]
pub trait Counter {
    /// Adds `n` to the total and returns it; over the limit it is a typed error.
    async fn add(&self, n: u64) -> Result<u64, CounterError>;
    /// The instance's name (its state).
    async fn name(&self) -> String;
    /// Sleeps, then answers.
    async fn nap(&self, millis: u64) -> u64;
    /// Waits until `n` calls of `rendezvous` run at once (proves concurrency).
    async fn rendezvous(&self) -> bool;
    /// What the handler's context says.
    async fn seen(&self, ctx: &Context) -> Seen;
    /// A method whose name on the wire is not its Rust name.
    #[lepus(name = "total_v2")]
    async fn total(&self) -> u64;
}

/// An implementation with state.
struct Tally {
    name: String,
    limit: u64,
    total: AtomicU64,
    /// Shared by the `rendezvous` calls; sized by the test.
    barrier: Arc<Barrier>,
}

impl Tally {
    fn new(name: &str, limit: u64, parties: usize) -> Tally {
        Tally {
            name: name.to_owned(),
            limit,
            total: AtomicU64::new(0),
            barrier: Arc::new(Barrier::new(parties)),
        }
    }
}

impl Counter for Tally {
    async fn add(&self, n: u64) -> Result<u64, CounterError> {
        if n > self.limit {
            return Err(CounterError::OverLimit(n, self.limit));
        }
        Ok(self.total.fetch_add(n, Ordering::SeqCst) + n)
    }

    async fn name(&self) -> String {
        self.name.clone()
    }

    async fn nap(&self, millis: u64) -> u64 {
        tokio::time::sleep(Duration::from_millis(millis)).await;
        millis
    }

    async fn rendezvous(&self) -> bool {
        self.barrier.wait().await;
        true
    }

    async fn seen(&self, ctx: &Context) -> Seen {
        Seen {
            correlation_id: ctx.correlation_id().map(str::to_owned),
            trace_id: ctx.trace_id().map(str::to_owned),
            millis_left: ctx.time_left().map(|d| d.as_millis() as u64),
            attempt: ctx.attempt(),
        }
    }

    async fn total(&self) -> u64 {
        self.total.load(Ordering::SeqCst)
    }
}

/// The same wire shape as `Counter::add`, as a free function on the same queue.
#[lepus::rpc(queue = "svc.counter")]
async fn add(n: u64) -> Result<u64, CounterError> {
    Ok(n + 1000)
}

#[tokio::test]
async fn a_contract_client_calls_every_method_with_typed_errors_timeouts_and_no_route() {
    let mut bed = common::test_bed("svc").await;
    let counter = CounterClient::new(bed.client());
    // Nobody serves yet: NoRoute at once, not a 30 s wait.
    let started = Instant::now();
    match counter.name().await {
        Err(Error::NoRoute { .. }) => {}
        other => panic!("expected NoRoute, got {other:?}"),
    }
    assert!(started.elapsed() < Duration::from_secs(5));

    let mut done = bed
        .serve(CounterServer::new(Tally::new("a", 100, 1)))
        .await
        .unwrap();
    assert_eq!(counter.add(5).await.unwrap(), 5);
    assert_eq!(counter.add(7).await.unwrap(), 12);
    match counter.add(500).await {
        Err(Error::Remote(CounterError::OverLimit(500, 100))) => {}
        other => panic!("expected the typed remote error, got {other:?}"),
    }
    assert_eq!(counter.name().await.unwrap(), "a");
    assert_eq!(counter.total().await.unwrap(), 12);
    assert!(counter.rendezvous().await.unwrap());
    let seen = counter.seen().await.unwrap();
    assert_eq!(seen.attempt, 1);
    assert!(seen.correlation_id.is_some());
    // The first handler of a chain names it after its request.
    assert_eq!(seen.trace_id, seen.correlation_id);
    let left = seen.millis_left.unwrap();
    assert!(
        left > 20_000 && left <= 30_000,
        "{left} ms left of the default 30 s"
    );

    // A per-client timeout: a clean Timeout, not a hang.
    let hasty = counter.with_options(CallOptions::default().timeout(Duration::from_millis(200)));
    let started = Instant::now();
    match hasty.nap(3_000).await {
        Err(Error::Timeout(d)) => assert_eq!(d, Duration::from_millis(200)),
        other => panic!("expected a timeout, got {other:?}"),
    }
    assert!(started.elapsed() < Duration::from_secs(2));
    // Every call was seen by the server's handlers (the timed-out nap finishes later).
    let completions = done.wait_for(8, Duration::from_secs(10)).await.unwrap();
    assert!(completions.iter().any(|c| c.name == "total_v2"));
    bed.stop().await;
}

#[tokio::test]
async fn a_trait_method_and_an_rpc_function_of_the_same_shape_are_one_on_the_wire() {
    let mut bed = common::test_bed("svcwire").await;
    // The free function serves the trait's client...
    bed.serve(add::handler()).await.unwrap();
    let counter = CounterClient::new(bed.client());
    assert_eq!(counter.add(1).await.unwrap(), 1001);
    // ...and a method the function's worker does not serve is an unknown method, not a hang.
    match counter.name().await {
        Err(Error::Failed {
            kind: FailureKind::UnknownMethod,
            ..
        }) => {}
        other => panic!("expected UnknownMethod, got {other:?}"),
    }
    bed.stop().await;

    // ...and the trait's server serves the function's stub.
    let mut bed = common::test_bed("svcwire2").await;
    bed.serve(CounterServer::new(Tally::new("b", 100, 1)))
        .await
        .unwrap();
    assert_eq!(add::call(bed.client(), 3).await.unwrap(), 3);
    bed.stop().await;
}

#[tokio::test]
async fn an_implementation_with_state_serves_concurrently_with_prefetch() {
    let mut bed = common::test_bed("svcconc").await;
    const PARTIES: usize = 8;
    // Each rendezvous call waits until PARTIES of them run at once: served one at a time, they
    // would wait forever (the calls would time out).
    let tally = Tally::new("c", 100, PARTIES);
    bed.worker(|w| {
        w.prefetch(PARTIES as u16)
            .concurrency(PARTIES)
            .serve(CounterServer::new(tally))
    })
    .await
    .unwrap();
    let counter = CounterClient::new(bed.client())
        .with_options(CallOptions::default().timeout(Duration::from_secs(20)));
    let calls = (0..PARTIES).map(|_| counter.rendezvous());
    let answers = futures::future::join_all(calls).await;
    assert!(answers.iter().all(|a| matches!(a, Ok(true))), "{answers:?}");
    // The shared state saw every concurrent add.
    let adds = (0..40).map(|_| counter.add(1));
    futures::future::join_all(adds).await;
    assert_eq!(counter.total().await.unwrap(), 40);
    bed.stop().await;
}

/// Two servers of the same contract with different state, in one process, on one broker.
async fn two_instances_keep_their_state(tag: &str) {
    let mut bed = common::test_bed(&format!("svcstate{tag}")).await;
    let (qa, qb) = (
        format!("svc.counter.{tag}.a"),
        format!("svc.counter.{tag}.b"),
    );
    bed.worker(|w| {
        w.serve(CounterServer::new(Tally::new(&format!("{tag}-a"), 10, 1)).on_queue(qa.clone()))
            .serve(
                CounterServer::new(Tally::new(&format!("{tag}-b"), 1000, 1)).on_queue(qb.clone()),
            )
    })
    .await
    .unwrap();
    let a = CounterClient::new(bed.client()).with_options(CallOptions::default().queue(qa));
    let b = CounterClient::new(bed.client()).with_options(CallOptions::default().queue(qb));
    for _ in 0..5 {
        a.add(2).await.unwrap();
        b.add(100).await.unwrap();
    }
    assert_eq!(a.name().await.unwrap(), format!("{tag}-a"));
    assert_eq!(b.name().await.unwrap(), format!("{tag}-b"));
    assert_eq!(a.total().await.unwrap(), 10);
    assert_eq!(b.total().await.unwrap(), 500);
    assert!(matches!(
        a.add(11).await,
        Err(Error::Remote(CounterError::OverLimit(11, 10)))
    ));
    assert_eq!(b.add(11).await.unwrap(), 511);
    bed.stop().await;
}

// Several tests of one binary run in parallel threads: each has servers of its own state.
#[tokio::test]
async fn two_instances_in_one_process_keep_their_state_1() {
    two_instances_keep_their_state("one").await;
}

#[tokio::test]
async fn two_instances_in_one_process_keep_their_state_2() {
    two_instances_keep_their_state("two").await;
}

#[tokio::test]
async fn two_instances_in_one_process_keep_their_state_3() {
    two_instances_keep_their_state("three").await;
}

/// A contract with limits: every method stopped after 300 ms unless it sets its own.
#[lepus::service(queue = "svc.limited", time_limit = "300ms")]
pub trait Limited {
    /// Sleeps `millis`: stopped at the service's 300 ms.
    async fn nap(&self, millis: u64) -> u64;
    /// Sleeps `millis`: its own limit, 2 s, overrides the service's.
    #[lepus(time_limit = "2s")]
    async fn long_nap(&self, millis: u64) -> u64;
    /// Blocks its thread for `millis` (`std::thread::sleep`): on tokio's blocking pool, so the
    /// worker's other handlers keep running; still stopped (answered) at 300 ms.
    #[lepus(blocking = true, name = "block_v2")]
    async fn block(&self, millis: u64) -> u64;
}

struct Sleeper;

impl Limited for Sleeper {
    async fn nap(&self, millis: u64) -> u64 {
        tokio::time::sleep(Duration::from_millis(millis)).await;
        millis
    }

    async fn long_nap(&self, millis: u64) -> u64 {
        tokio::time::sleep(Duration::from_millis(millis)).await;
        millis
    }

    async fn block(&self, millis: u64) -> u64 {
        std::thread::sleep(Duration::from_millis(millis));
        millis
    }
}

fn expect_time_limit<T: std::fmt::Debug>(result: Result<T, Error<lepus::Never>>, limit: &str) {
    match result {
        Err(Error::Failed {
            kind: FailureKind::TimeLimit,
            message,
        }) => assert!(message.contains(limit), "{message}"),
        other => panic!("expected the {limit} time limit, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_and_method_limits_apply_to_the_methods_they_name() {
    let mut bed = common::test_bed("svc_limits").await;
    let limited = LimitedClient::new(bed.client())
        .with_options(CallOptions::default().timeout(Duration::from_secs(20)));
    let _done = bed.serve(LimitedServer::new(Sleeper)).await.unwrap();
    // Under the limits: answered.
    assert_eq!(limited.nap(10).await.unwrap(), 10);
    assert_eq!(limited.long_nap(10).await.unwrap(), 10);
    assert_eq!(limited.block(10).await.unwrap(), 10);
    // The service's limit, well before the caller's 20 s deadline.
    expect_time_limit(limited.nap(10_000).await, "300ms");
    // The method's own limit replaces the service's: 1 s is fine, 10 s is stopped at 2 s.
    assert_eq!(limited.long_nap(1_000).await.unwrap(), 1_000);
    expect_time_limit(limited.long_nap(10_000).await, "2s");
    // A blocking method past the limit is answered at the limit too, and while its thread is
    // still blocked the other methods of the worker answer.
    let blocked = tokio::spawn({
        let limited = limited.clone();
        async move { limited.block(3_000).await }
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(limited.nap(1).await.unwrap(), 1);
    expect_time_limit(blocked.await.unwrap(), "300ms");
    bed.stop().await;
}
