//! Task workers and publishers through a lost connection: the link is cut while tasks run;
//! the worker reconnects, redeclares its queue and consumes again, the tasks it was running
//! are redelivered, and every task enqueued before and after the cut runs (at least once).
#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

mod common;
mod rpc_util;
mod task_util;

use std::collections::BTreeSet;
use std::time::Duration;

use common::background::BackgroundWorker;
use lepus::task::{observe, Outcome};
use lepus::{Backoff, Client, ConnectOptions};
use rpc_util::CuttableProxy;

/// Sleeps `ms`.
#[lepus::task(queue = "naps")]
async fn nap(ms: u64) {
    tokio::time::sleep(Duration::from_millis(ms)).await;
}

fn options(url: &str) -> ConnectOptions {
    ConnectOptions::new(url).backoff(Backoff::new(
        Duration::from_millis(50),
        Duration::from_millis(300),
    ))
}

#[tokio::test]
async fn a_cut_link_redelivers_running_tasks_and_the_worker_resumes() {
    let broker = common::broker().await;
    let proxy = CuttableProxy::start(broker.url()).await;
    let prefix = common::unique("tr");
    // The worker goes through the proxy; the producer's client too (it must reconnect as well).
    let worker_conn = options(&proxy.url(broker.url())).connect().await.unwrap();
    let (handler, mut done) = observe(nap::handler());
    let worker = BackgroundWorker::start_on(worker_conn, &prefix, |w| {
        w.prefetch(2).concurrency(2).serve(handler)
    });
    let client_conn = options(&proxy.url(broker.url())).connect().await.unwrap();
    let client = Client::builder(&client_conn)
        .queue_prefix(&prefix)
        .build()
        .await
        .unwrap();
    let mut ids = BTreeSet::new();
    for _ in 0..6 {
        ids.insert(nap::enqueue(&client, 300).await.unwrap().0);
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    proxy.cut_for(Duration::from_millis(300)).await;
    // Enqueue again; the client waits for its session to come back.
    for _ in 0..4 {
        ids.insert(nap::enqueue(&client, 10).await.unwrap().0);
    }
    let mut succeeded = BTreeSet::new();
    let mut unsettled = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while succeeded.len() < ids.len() {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let c = done.next_within(left).await.expect("every task completes");
        match c.outcome {
            Outcome::Succeeded => {
                succeeded.insert(c.message_id.unwrap());
            }
            Outcome::Unsettled { .. } => unsettled += 1,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(succeeded, ids, "every confirmed task ran");
    // The two tasks running at the cut could not be acked; they ran again after the reconnect.
    assert!(unsettled >= 1, "a task was running when the link was cut");
    eprintln!("attempts that lost their ack to the cut: {unsettled}");
    worker.stop().await;
    client_conn.close().await;
    broker.stop().await;
}
