//! Worker processes that die or hang (issue 23): the delivery limit with real process crashes,
//! and SIGTERM with hung handlers.
//!
//! The workers are child processes: this test binary runs itself again with
//! `LEPUS_CRASH_CHILD` set, which makes the ignored test `child_worker` serve the handlers below
//! on the parent's broker (the in-process bundled broker, or `LEPUS_TEST_AMQP_URL`). A handler
//! given the poison id calls `std::process::abort()`: no ack, no goodbye, the connection just
//! drops, as with any crash. The parent restarts the worker after each death, as a supervisor
//! (systemd, Kubernetes) would, and checks that the poison message stops coming back after the
//! delivery limit: a task is dead-lettered with the reason, an RPC request answered with an
//! error, and the other messages are all served.
#![allow(clippy::unwrap_used)] // in tests a failed unwrap is a failed test

mod common;
mod task_util;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use lepus::task::{queue_status, DeadLetters};
use lepus::{CallOptions, Error, FailureKind};

/// The environment variable that makes `child_worker` run: `<url> <prefix> <mode>`.
const CHILD_VAR: &str = "LEPUS_CRASH_CHILD";

/// The argument that crashes the worker.
const POISON: u32 = 666;

/// The child workers' delivery limit.
const LIMIT: u32 = 3;

/// The child workers' shutdown timeout.
const SHUTDOWN: Duration = Duration::from_secs(2);

#[lepus::task(queue = "crash_tasks", retries = 3)]
async fn crash_task(id: u32) {
    if id == POISON {
        std::process::abort();
    }
}

#[lepus::task(queue = "crash_quorum_tasks", retries = 3, quorum = true)]
async fn crash_quorum_task(id: u32) {
    if id == POISON {
        std::process::abort();
    }
}

#[lepus::rpc(queue = "crash_rpc")]
async fn crash_call(id: u32) -> u32 {
    if id == POISON {
        std::process::abort();
    }
    id
}

#[lepus::rpc(queue = "hung_rpc")]
async fn hung_call() -> u32 {
    std::future::pending::<()>().await;
    0
}

#[lepus::task(queue = "hung_tasks")]
async fn hung_task() {
    std::future::pending::<()>().await;
}

/// The worker process: serves the handlers of `mode` until SIGTERM.
#[test]
#[ignore = "run by the tests of this file as a child process"]
fn child_worker() {
    common::run_child(CHILD_VAR, |conn, [prefix, mode]| async move {
        let worker = lepus::Worker::new(&conn)
            .queue_prefix(prefix)
            .delivery_limit(LIMIT)
            .shutdown_timeout(SHUTDOWN);
        let worker = match mode.as_str() {
            "crash" => worker
                .prefetch(1)
                .serve(crash_task::handler())
                .serve(crash_quorum_task::handler())
                .serve(crash_call::handler()),
            "hung" => worker
                .concurrency(4)
                .serve(hung_call::handler())
                .serve(hung_task::handler()),
            other => panic!("unknown mode {other}"),
        };
        let mut terminate =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).unwrap();
        worker
            .run_until(async move {
                terminate.recv().await;
            })
            .await
            .unwrap();
        conn.close().await;
    });
}

/// Starts a worker process in `mode` on `url`, queues under `prefix`.
fn spawn_worker(url: &str, prefix: &str, mode: &str) -> Child {
    common::test_child("child_worker")
        .env(CHILD_VAR, format!("{url} {prefix} {mode}"))
        .stdout(Stdio::null())
        .spawn()
        .unwrap()
}

/// Keeps a worker process running, restarting it each time it dies, until `done` says so;
/// returns how many times it died.
async fn supervise<F, Fut>(url: &str, prefix: &str, mut done: F) -> u32
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let started = Instant::now();
    let mut deaths = 0;
    let mut child = spawn_worker(url, prefix, "crash");
    loop {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "still going after {deaths} deaths"
        );
        if done().await {
            // Stopped with SIGTERM, not killed: `done` sees no ready message, but the last
            // task may still be delivered and unacked (prefetch 1); a SIGKILL would hand it
            // back to the queue, a graceful stop lets the worker finish and ack it.
            let signalled = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status()
                .unwrap();
            assert!(signalled.success());
            let stopping = Instant::now();
            while child.try_wait().unwrap().is_none() {
                if stopping.elapsed() > Duration::from_secs(30) {
                    let _ = child.kill();
                    panic!("the worker did not exit within 30 s of SIGTERM");
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            return deaths;
        }
        if let Some(status) = child.try_wait().unwrap() {
            assert!(!status.success(), "the worker only stops by crashing");
            deaths += 1;
            assert!(deaths <= LIMIT + 2, "the poison keeps coming back");
            child = spawn_worker(url, prefix, "crash");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The ready messages of `queue` (0 when it does not exist).
async fn ready(conn: &lepus::Connection, queue: &str) -> u32 {
    queue_status(conn, queue)
        .await
        .unwrap()
        .map_or(0, |s| s.messages)
}

/// Enqueues ten tasks with the poison among them through `enqueue`, keeps workers running
/// until the poison is dead-lettered and the rest ran, and checks the dead letter.
async fn poison_task_is_dead_lettered(queue: &str, poison_first: bool) {
    let broker = common::broker().await;
    let prefix = common::unique("crash");
    let (conn, client) = task_util::client(broker.url(), &prefix).await;
    let ids: Vec<u32> = if poison_first {
        std::iter::once(POISON).chain(1..10).collect()
    } else {
        (1..5).chain(std::iter::once(POISON)).chain(5..10).collect()
    };
    for id in ids {
        if queue == "crash_tasks" {
            crash_task::enqueue(&client, id).await.unwrap();
        } else {
            crash_quorum_task::enqueue(&client, id).await.unwrap();
        }
    }
    let task_queue = format!("{prefix}{queue}");
    let dead = DeadLetters::new(&conn, format!("{task_queue}.dead"));
    let deaths = supervise(broker.url(), &prefix, || {
        let (conn, task_queue, dead) = (conn.clone(), task_queue.clone(), dead.clone());
        async move { ready(&conn, &task_queue).await == 0 && ready(&conn, dead.queue()).await == 1 }
    })
    .await;
    assert_eq!(deaths, LIMIT, "the poison ran {LIMIT} times, then no more");
    let letters = dead.list(10).await.unwrap();
    assert_eq!(letters.len(), 1);
    let error = letters[0].error.clone().unwrap();
    assert!(
        error.contains(&format!("delivered {LIMIT} times")),
        "{error}"
    );
    assert_eq!(letters[0].args::<(u32,)>().unwrap(), (POISON,));
    // Nothing else is left unacked or ready: the nine other tasks ran.
    let status = queue_status(&conn, &task_queue).await.unwrap().unwrap();
    assert_eq!(status.messages, 0);
    conn.close().await;
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_that_crashes_its_worker_is_dead_lettered_after_the_delivery_limit() {
    poison_task_is_dead_lettered("crash_tasks", false).await;
}

/// On RabbitMQ this queue counts deliveries itself (`x-delivery-count`); on the bundled broker
/// the worker counts them as for a classic queue.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_on_a_quorum_queue_that_crashes_its_worker_is_dead_lettered_too() {
    poison_task_is_dead_lettered("crash_quorum_tasks", true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_rpc_request_that_crashes_its_worker_is_answered_with_an_error() {
    let broker = common::broker().await;
    let prefix = common::unique("crash");
    let (conn, client) = task_util::client(broker.url(), &prefix).await;
    let call = tokio::spawn({
        let client = client.clone();
        async move {
            let options = CallOptions::default().timeout(Duration::from_secs(90));
            loop {
                match crash_call::call_with(&client, POISON, options.clone()).await {
                    Err(Error::NoRoute { .. }) => {
                        tokio::time::sleep(Duration::from_millis(50)).await
                    }
                    other => return other,
                }
            }
        }
    });
    let deaths = supervise(broker.url(), &prefix, || {
        std::future::ready(call.is_finished())
    })
    .await;
    match call.await.unwrap() {
        Err(Error::Failed {
            kind: FailureKind::DeliveryLimit,
            message,
        }) => assert!(
            message.contains(&format!("delivered {LIMIT} times")),
            "{message}"
        ),
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(deaths, LIMIT);
    conn.close().await;
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_with_hung_handlers_exits_within_the_shutdown_timeout() {
    let broker = common::broker().await;
    let prefix = common::unique("crash");
    let (conn, client) = task_util::client(broker.url(), &prefix).await;
    let mut child = spawn_worker(broker.url(), &prefix, "hung");
    let tasks = format!("{prefix}hung_tasks");
    let task_handler = hung_task::handler().on_queue(tasks.clone());
    lepus::task::wait_for_consumers(&conn, &task_handler, 1, Duration::from_secs(30))
        .await
        .unwrap();
    let rpc_handler = hung_call::handler().on_queue(format!("{prefix}hung_rpc"));
    lepus::task::wait_for_consumers(&conn, &rpc_handler, 1, Duration::from_secs(30))
        .await
        .unwrap();
    // Four handlers that never return: two calls, two tasks.
    let calls: Vec<_> = (0..2)
        .map(|_| {
            let client = client.clone();
            tokio::spawn(async move {
                hung_call::call_with(
                    &client,
                    CallOptions::default().timeout(Duration::from_secs(60)),
                )
                .await
            })
        })
        .collect();
    for _ in 0..2 {
        hung_task::enqueue(&client).await.unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while ready(&conn, &tasks).await > 0 {
        assert!(Instant::now() < deadline, "the worker takes the tasks");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let signalled = Instant::now();
    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let exited = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if signalled.elapsed() > Duration::from_secs(30) {
            let _ = child.kill();
            panic!("the worker did not exit within 30 s of SIGTERM");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let took = signalled.elapsed();
    assert!(exited.success(), "{exited:?}");
    // The shutdown timeout (2 s), then closing the connection and the process.
    assert!(
        took < SHUTDOWN + Duration::from_secs(3),
        "exit took {took:?}"
    );
    // The abandoned tasks are back in their queue for another worker.
    let deadline = Instant::now() + Duration::from_secs(10);
    while ready(&conn, &tasks).await < 2 {
        assert!(Instant::now() < deadline, "the hung tasks were handed back");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for call in calls {
        call.abort();
    }
    conn.close().await;
    broker.stop().await;
}
