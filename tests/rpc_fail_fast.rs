//! Issue 14, item 3: callers do not hang for their whole timeout after a deploy.
//!
//! The rule (README, "RPC in one screen"): a service's request queue exists while a worker
//! serves it. The last worker to shut down cleanly deletes it, answering the requests it had
//! received but not started with "not run"; from then on a call fails at once with `NoRoute`
//! (the request comes back through `lepus.rpc`'s alternate exchange). A worker that crashed
//! leaves the queue for `RPC_QUEUE_EXPIRES`, so that a restarted worker still finds the
//! requests waiting in it. A rolling restart (the new worker consumes before the old one stops)
//! loses no call.
//!
//! Runs on the bundled broker, or on the one `LEPUS_TEST_AMQP_URL` names (`.ci/run`: RabbitMQ).
#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

mod common;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use lepus::{Client, Error, FailureKind, State, Worker, WorkerHandle};

/// Says which build answered, after `delay_ms`.
#[lepus::rpc(queue = "accounts")]
async fn whoami(delay_ms: u64) -> String {
    tokio::time::sleep(Duration::from_millis(delay_ms)).await;
    "v1".to_owned()
}

/// A slow operation, counted when it starts (in its state: how many have started).
#[lepus::rpc(queue = "slow_ops")]
async fn slow_op(State(started): State<Arc<AtomicUsize>>, ms: u64) -> u64 {
    started.fetch_add(1, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(ms)).await;
    ms
}

/// The same method, answered by "the second build" in the rolling restart.
#[lepus::rpc(queue = "accounts", name = "whoami")]
async fn whoami_v2(delay_ms: u64) -> String {
    tokio::time::sleep(Duration::from_millis(delay_ms)).await;
    "v2".to_owned()
}

/// A client and workers on their own connections, isolated by a prefix.
struct Service {
    url: String,
    prefix: String,
    client: Client,
    _broker: common::TestBroker,
}

impl Service {
    async fn start() -> Service {
        let broker = common::broker().await;
        let url = broker.url().to_owned();
        let prefix = common::unique("ff");
        let conn = lepus::connect(&url).await.unwrap();
        let client = Client::builder(&conn)
            .queue_prefix(prefix.clone())
            .build()
            .await
            .unwrap();
        Service {
            url,
            prefix,
            client,
            _broker: broker,
        }
    }

    /// A worker consuming (ready) for `handler`.
    async fn worker(
        &self,
        handler: lepus::Handler,
        configure: fn(Worker) -> Worker,
    ) -> WorkerHandle {
        let conn = lepus::connect(&self.url).await.unwrap();
        let mut worker = configure(
            Worker::new(&conn)
                .queue_prefix(self.prefix.clone())
                .serve(handler),
        )
        .spawn();
        worker.ready(Duration::from_secs(10)).await.unwrap();
        worker
    }
}

fn plain(w: Worker) -> Worker {
    w
}

#[tokio::test]
async fn the_next_call_after_the_only_worker_stopped_fails_at_once() {
    let service = Service::start().await;
    let worker = service.worker(whoami::handler(), plain).await;
    for _ in 0..3 {
        whoami::call(&service.client, 0).await.unwrap();
    }
    worker.shutdown().await.unwrap();

    // The client's default timeout is 30 s; the answer must come well before.
    let started = Instant::now();
    let next = whoami::call(&service.client, 0).await;
    let elapsed = started.elapsed();
    match next {
        Err(Error::NoRoute { queue, .. }) => {
            assert_eq!(queue, format!("{}{}", service.prefix, whoami::QUEUE))
        }
        other => panic!("expected NoRoute, got {other:?} after {elapsed:?}"),
    }
    assert!(elapsed < Duration::from_secs(1), "NoRoute took {elapsed:?}");

    // A new worker serves again, and calls succeed again.
    let worker = service.worker(whoami::handler(), plain).await;
    whoami::call(&service.client, 0).await.unwrap();
    worker.shutdown().await.unwrap();
}

#[tokio::test]
async fn requests_the_last_worker_received_but_did_not_start_are_answered_not_run() {
    let service = Service::start().await;
    // One request at a time, eight pushed ahead: when it stops, up to seven are unstarted.
    let started = Arc::new(AtomicUsize::new(0));
    let worker = service
        .worker(slow_op::handler().state(started.clone()), |w| {
            w.concurrency(1).prefetch(8)
        })
        .await;
    let calls: Vec<_> = (0..6)
        .map(|_| {
            let client = service.client.clone();
            tokio::spawn(async move {
                let started = Instant::now();
                (slow_op::call(&client, 300).await, started.elapsed())
            })
        })
        .collect();
    // Stop while the first one runs.
    let deadline = Instant::now() + Duration::from_secs(10);
    while started.load(Ordering::SeqCst) == 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    worker.shutdown().await.unwrap();
    let mut ran = 0;
    let mut not_run = 0;
    for call in calls {
        let (result, elapsed) = call.await.unwrap();
        match result {
            Ok(_) => ran += 1,
            Err(Error::Failed {
                kind: FailureKind::NotRun,
                ..
            }) => not_run += 1,
            Err(err @ Error::NoRoute { .. }) => {
                // Published after the queue was deleted: refused at once as well.
                assert!(err.is_retryable());
                not_run += 1;
            }
            other => panic!("expected an answer or NotRun, got {other:?} after {elapsed:?}"),
        }
        assert!(
            elapsed < Duration::from_secs(5),
            "a call waited {elapsed:?}"
        );
    }
    assert!(ran >= 1, "the running request finished ({ran} ran)");
    assert!(
        not_run >= 1,
        "the unstarted ones were answered ({not_run} not run)"
    );
}

#[tokio::test]
async fn a_rolling_restart_loses_no_call() {
    let service = Arc::new(Service::start().await);
    let old = service.worker(whoami::handler(), plain).await;
    // Four callers call without pause during the whole restart.
    let stop = Arc::new(AtomicBool::new(false));
    let v2_answers = Arc::new(AtomicUsize::new(0));
    let callers: Vec<_> = (0..4)
        .map(|_| {
            let service = service.clone();
            let stop = stop.clone();
            let v2_answers = v2_answers.clone();
            tokio::spawn(async move {
                let mut calls = 0usize;
                while !stop.load(Ordering::SeqCst) {
                    match whoami::call(&service.client, 5).await {
                        Ok(who) => {
                            if who == "v2" {
                                v2_answers.fetch_add(1, Ordering::SeqCst);
                            }
                        }
                        Err(err) => panic!("call {calls} failed during the restart: {err:?}"),
                    }
                    calls += 1;
                }
                calls
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    // The new build comes up first, then the old one stops.
    let new = service.worker(whoami_v2::handler(), plain).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    old.shutdown().await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::SeqCst);
    let mut total = 0;
    for caller in callers {
        total += caller.await.expect("no call failed");
    }
    assert!(total > 20, "the callers kept calling ({total} calls)");
    assert!(
        v2_answers.load(Ordering::SeqCst) > 0,
        "the new worker took over"
    );
    // Only the new worker serves now.
    assert_eq!(whoami::call(&service.client, 0).await.unwrap(), "v2");
    new.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_crashed_worker_leaves_its_queue_for_a_restarted_one() {
    let service = Service::start().await;
    let worker = service.worker(whoami::handler(), plain).await;
    whoami::call(&service.client, 0).await.unwrap();
    worker.abort().await;
    // Nobody consumes now, but the queue is kept for `RPC_QUEUE_EXPIRES`: this call waits in
    // it for the worker that comes back.
    let client = service.client.clone();
    let pending = tokio::spawn(async move { whoami::call(&client, 0).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let worker = service.worker(whoami::handler(), plain).await;
    assert!(pending.await.unwrap().is_ok());
    worker.shutdown().await.unwrap();
}

/// `whoami`'s queue as a quorum queue (removed by the broker a minute after its last consumer).
fn quorum_queue(w: Worker) -> Worker {
    w.queue_options(
        whoami::QUEUE,
        lepus::QueueOptions::new()
            .quorum()
            .expires(Duration::from_secs(60)),
    )
}

/// A quorum queue outlives its last worker, and the worker's shutdown leaves the connection it
/// shares with the process's clients alone: RabbitMQ answers `queue.delete` with `if-unused` on
/// a quorum queue by closing the whole connection (540 NOT_IMPLEMENTED), and an unconditional
/// delete could drop the requests of a worker that began consuming since the count.
#[tokio::test]
async fn the_last_worker_leaves_a_quorum_queue_and_the_connection_it_shares() {
    let service = Service::start().await;
    let conn = lepus::connect(&service.url).await.unwrap();
    let client = Client::builder(&conn)
        .queue_prefix(service.prefix.clone())
        .build()
        .await
        .unwrap();
    let mut worker = quorum_queue(Worker::new(&conn).queue_prefix(service.prefix.clone()))
        .serve(whoami::handler())
        .spawn();
    worker.ready(Duration::from_secs(10)).await.unwrap();
    assert_eq!(whoami::call(&client, 0).await.unwrap(), "v1");
    worker.shutdown().await.unwrap();

    // The queue is still there, with nobody consuming it.
    let observer = lapin::Connection::connect(&service.url, lapin::ConnectionProperties::default())
        .await
        .unwrap();
    let channel = observer.create_channel().await.unwrap();
    let passive = lapin::options::QueueDeclareOptions {
        passive: true,
        ..Default::default()
    };
    let queue = format!("{}{}", service.prefix, whoami::QUEUE);
    let declared = channel
        .queue_declare(queue.as_str().into(), passive, Default::default())
        .await
        .unwrap_or_else(|e| panic!("the quorum queue {queue} was deleted: {e}"));
    assert_eq!(declared.consumer_count(), 0);

    // A call made now waits in it for the next worker, on the connection the stopped worker
    // shared: never closed under the client (a close would be a reconnection, generation 2).
    let pending = tokio::spawn({
        let client = client.clone();
        async move { whoami::call(&client, 0).await }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let next = service.worker(whoami::handler(), quorum_queue).await;
    assert_eq!(pending.await.unwrap().unwrap(), "v1");
    assert_eq!(conn.generation(), 1, "the shared connection was closed");
    next.shutdown().await.unwrap();
    channel
        .queue_delete(queue.as_str().into(), Default::default())
        .await
        .unwrap();
    let _ = observer.close(200, "done".into()).await;
}
