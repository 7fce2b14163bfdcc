//! Failover: tasks and RPC calls while brokers die.
//!
//! With env `LEPUS_CLUSTER_URLS` (comma-separated AMQP URLs of a RabbitMQ cluster started by
//! `cluster/start`): 4 workers and 2 callers, each given the URL list rotated so that they start
//! on different nodes; quorum queues; `LEPUS_FAILOVER_TASKS` (default 20,000) tasks enqueued
//! with confirms while both callers also make a stream of RPC calls with a 5 s timeout. Mid-run
//! node 2 is killed with SIGKILL (`cluster/node 2 kill`) and restarted, then node 1.
//!
//! Without it: the same run against one bundled broker with a data directory and durable
//! queues, shut down and restarted on the same port twice mid-run (4,000 tasks by default).
//!
//! Either way, at the end: every confirmed task ran at least once (counted by `message_id`,
//! duplicates reported), every RPC call returned a result or an error before its timeout plus a
//! grace period (none hangs), and every worker consumes again from both queues.
//!
//! A third test cuts a client's link (through a proxy) while 2,000 enqueues are in flight: each
//! is published again with its `message_id` after the reconnection, and every one returns `Ok`.
#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

mod common;
mod rpc_util;
mod task_util;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::background::BackgroundWorker;
use futures::StreamExt;
use lepus::broker::{Broker, BrokerHandle};
use lepus::task::queue_status;
use lepus::{Backoff, CallOptions, Client, ConnectOptions, Connection, QueueOptions};
use rpc_util::CuttableProxy;

/// Runs per `message_id`, written by the task bodies of every worker in this process.
static RUNS: Mutex<BTreeMap<String, u32>> = Mutex::new(BTreeMap::new());

const TASK_QUEUE: &str = "failover.tasks";
const RPC_QUEUE: &str = "failover.rpc";
/// The timeout of each RPC call.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);
/// How long past its timeout a call may take before it counts as hung.
const HANG_GRACE: Duration = Duration::from_secs(5);

fn record_run() {
    let id = lepus::Context::current().and_then(|cx| cx.message_id().map(str::to_owned));
    if let Some(id) = id {
        *RUNS.lock().unwrap().entry(id).or_default() += 1;
    }
}

/// The cluster variant's task: on a quorum queue.
#[lepus::task(queue = "failover.tasks", quorum = true)]
async fn quorum_work(n: u64) {
    let _ = n;
    record_run();
}

/// The bundled variant's task: on a durable classic queue.
#[lepus::task(queue = "failover.tasks")]
async fn durable_work(n: u64) {
    let _ = n;
    record_run();
}

/// The RPC method the callers call.
#[lepus::rpc(queue = "failover.rpc")]
async fn echo(n: u64) -> u64 {
    n
}

/// A client calling queues under `prefix` with the default `timeout`, on a connection named
/// `name` through `options(urls, start, name)`.
async fn caller(
    urls: &[String],
    start: usize,
    name: &str,
    prefix: &str,
    timeout: Duration,
) -> (Connection, Client) {
    let conn = options(urls, start, name).connect().await.unwrap();
    let client = Client::builder(&conn)
        .queue_prefix(prefix)
        .timeout(timeout)
        .build()
        .await
        .unwrap();
    (conn, client)
}

/// The URL list rotated by `start`, with a quick backoff.
fn options(urls: &[String], start: usize, name: &str) -> ConnectOptions {
    let n = urls.len();
    let mut options = ConnectOptions::new(urls[start % n].clone());
    for i in 1..n {
        options = options.url(urls[(start + i) % n].clone());
    }
    options
        .backoff(Backoff::new(
            Duration::from_millis(100),
            Duration::from_secs(1),
        ))
        .connect_timeout(Duration::from_secs(3))
        .connection_name(name)
}

/// What the RPC streams saw.
#[derive(Default)]
struct CallFigures {
    ok: AtomicU64,
    failed: AtomicU64,
    hung: AtomicU64,
    /// Set at every successful call: milliseconds since the run started.
    last_ok_ms: AtomicU64,
    /// Error texts and how often each was seen.
    errors: Mutex<BTreeMap<String, u64>>,
}

/// How the run disturbs the broker(s): kills and restarts, each returning once done.
enum Disruption {
    /// `cluster/node N kill` then `cluster/node N start`, for each N in turn.
    Cluster(Vec<u32>),
    /// Shut the bundled broker down and start it again on the same port, this many times.
    Bundled {
        broker: BrokerHandle,
        dir: PathBuf,
        times: u32,
    },
}

fn cluster_node(n: u32, action: &str) {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/cluster/node");
    let status = std::process::Command::new(script)
        .arg(n.to_string())
        .arg(action)
        .status()
        .unwrap();
    assert!(status.success(), "cluster/node {n} {action} failed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn confirmed_tasks_survive_node_failures_on_a_cluster() {
    let Ok(urls) = std::env::var("LEPUS_CLUSTER_URLS") else {
        eprintln!("LEPUS_CLUSTER_URLS not set: cluster variant skipped");
        return;
    };
    let urls: Vec<String> = urls.split(',').map(|u| u.trim().to_owned()).collect();
    assert!(urls.len() >= 3, "the cluster variant needs 3 node URLs");
    let tasks = task_count(20_000);
    run(urls, tasks, true, Disruption::Cluster(vec![2, 1])).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn confirmed_tasks_survive_a_bundled_broker_restart() {
    if std::env::var("LEPUS_CLUSTER_URLS").is_ok() {
        eprintln!("LEPUS_CLUSTER_URLS set: bundled variant skipped");
        return;
    }
    let dir = std::env::temp_dir().join(format!(
        "{}-{}",
        common::unique("failover"),
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    let broker = Broker::builder()
        .listen("127.0.0.1:0")
        .data_dir(&dir)
        .start()
        .await
        .unwrap();
    let url = broker.amqp_url();
    let tasks = task_count(4_000);
    run(
        vec![url],
        tasks,
        false,
        Disruption::Bundled {
            broker,
            dir: dir.clone(),
            times: 2,
        },
    )
    .await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// Enqueues in flight when the link is cut are published again (same `message_id`) once the
/// connection is back, instead of failing with `ConnectionLost`: every one returns `Ok`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enqueues_in_flight_at_a_cut_are_published_again() {
    let broker = common::broker().await;
    let proxy = CuttableProxy::start(broker.url()).await;
    let prefix = common::unique("fo-cut");
    let urls = [proxy.url(broker.url())];
    let (conn, client) = caller(&urls, 0, "cut-client", &prefix, Duration::from_secs(30)).await;
    // Declare the queue first, so that the enqueues below are plain publishes.
    durable_work::enqueue(&client, 0).await.unwrap();
    let enqueues = tokio::spawn({
        let client = client.clone();
        async move {
            futures::stream::iter(0..2_000u64)
                .map(|n| {
                    let client = client.clone();
                    async move { durable_work::enqueue(&client, n).await }
                })
                .buffer_unordered(100)
                .collect::<Vec<_>>()
                .await
        }
    });
    tokio::time::sleep(Duration::from_millis(30)).await;
    proxy.cut_for(Duration::from_millis(300)).await;
    let results = enqueues.await.unwrap();
    let failed: Vec<_> = results.iter().filter_map(|r| r.as_ref().err()).collect();
    assert!(
        failed.is_empty(),
        "enqueues failed across the cut: {failed:?}"
    );
    assert!(conn.generation() > 1, "the link was cut while enqueueing");
    client.close().await;
    conn.close().await;
    broker.stop().await;
}

fn task_count(default: usize) -> usize {
    std::env::var("LEPUS_FAILOVER_TASKS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

async fn run(urls: Vec<String>, tasks: usize, quorum: bool, disruption: Disruption) {
    let started = Instant::now();
    let prefix = common::unique("fo");
    let rpc_options = if quorum {
        QueueOptions::new().quorum()
    } else {
        QueueOptions::new().durable(true)
    };

    // 4 workers, each serving the task queue and the RPC queue, starting on nodes 0,1,2,0.
    let mut workers = Vec::new();
    for i in 0..4 {
        let conn = options(&urls, i, &format!("{prefix}-worker-{i}"))
            .connect()
            .await
            .unwrap();
        let rpc_options = rpc_options.clone();
        workers.push(BackgroundWorker::start_on(conn, &prefix, move |w| {
            let w = w.prefetch(100).concurrency(16);
            let w = if quorum {
                w.serve(quorum_work::handler())
            } else {
                w.serve(durable_work::handler())
            };
            w.serve(echo::handler())
                .queue_options(RPC_QUEUE, rpc_options)
        }));
    }
    // 2 callers, starting on nodes 1 and 2.
    let mut callers = Vec::new();
    for i in 0..2 {
        let name = format!("{prefix}-caller-{i}");
        callers.push(caller(&urls, i + 1, &name, &prefix, Duration::from_secs(60)).await);
    }
    let status_conn = callers[0].0.clone();
    wait_consumers(&status_conn, &prefix, 4, Duration::from_secs(30)).await;

    // RPC streams, one per caller, until `stop`.
    let stop = Arc::new(AtomicBool::new(false));
    let figures = Arc::new(CallFigures::default());
    let mut streams = Vec::new();
    for (_, client) in &callers {
        let client = client.clone();
        let stop = stop.clone();
        let figures = figures.clone();
        streams.push(tokio::spawn(async move {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let call =
                    echo::call_with(&client, n, CallOptions::default().timeout(CALL_TIMEOUT));
                match tokio::time::timeout(CALL_TIMEOUT + HANG_GRACE, call).await {
                    Ok(Ok(v)) => {
                        assert_eq!(v, n, "echo returns its argument");
                        figures.ok.fetch_add(1, Ordering::Relaxed);
                        let ms = u64::try_from(started.elapsed().as_millis()).unwrap();
                        figures.last_ok_ms.fetch_max(ms, Ordering::Relaxed);
                    }
                    Ok(Err(e)) => {
                        figures.failed.fetch_add(1, Ordering::Relaxed);
                        *figures
                            .errors
                            .lock()
                            .unwrap()
                            .entry(e.to_string())
                            .or_default() += 1;
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                    Err(_) => {
                        figures.hung.fetch_add(1, Ordering::Relaxed);
                    }
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }));
    }

    // Enqueue: each caller half the tasks, 50 in flight at a time, paced at 10 chunks/s so the
    // enqueue spans the disruptions.
    let confirmed = Arc::new(Mutex::new(BTreeSet::<String>::new()));
    let enqueue_errors = Arc::new(Mutex::new(BTreeMap::<String, u64>::new()));
    let mut producers = Vec::new();
    for (c, (_, client)) in callers.iter().enumerate() {
        let client = client.clone();
        let confirmed = confirmed.clone();
        let enqueue_errors = enqueue_errors.clone();
        let share = tasks / 2 + if c == 0 { tasks % 2 } else { 0 };
        producers.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(100));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut sent = 0;
            while sent < share {
                tick.tick().await;
                let chunk = (share - sent).min(50);
                let results: Vec<_> = futures::stream::iter(0..chunk)
                    .map(|k| {
                        let client = client.clone();
                        let n = u64::try_from(sent + k).unwrap();
                        async move {
                            if quorum {
                                quorum_work::enqueue(&client, n).await
                            } else {
                                durable_work::enqueue(&client, n).await
                            }
                        }
                    })
                    .buffer_unordered(50)
                    .collect()
                    .await;
                for r in results {
                    match r {
                        Ok(id) => {
                            confirmed.lock().unwrap().insert(id.0);
                        }
                        Err(e) => {
                            *enqueue_errors
                                .lock()
                                .unwrap()
                                .entry(e.to_string())
                                .or_default() += 1;
                        }
                    }
                }
                sent += chunk;
            }
        }));
    }

    // Let a tenth of the tasks in, then disrupt.
    while confirmed.lock().unwrap().len() < tasks / 10 {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut recoveries = Vec::new();
    // The restarted bundled broker, shut down at the end.
    let mut restarted = None;
    match disruption {
        Disruption::Cluster(nodes) => {
            for n in nodes {
                let killed_at = Instant::now();
                eprintln!("[{:?}] killing node {n}", started.elapsed());
                tokio::task::spawn_blocking(move || cluster_node(n, "kill"))
                    .await
                    .unwrap();
                recoveries.push(recovery(&workers, &callers, &figures, started, killed_at).await);
                tokio::time::sleep(Duration::from_secs(3)).await;
                eprintln!("[{:?}] restarting node {n}", started.elapsed());
                tokio::task::spawn_blocking(move || cluster_node(n, "start"))
                    .await
                    .unwrap();
                eprintln!("[{:?}] node {n} is back", started.elapsed());
                tokio::time::sleep(Duration::from_secs(3)).await;
            }
        }
        Disruption::Bundled {
            mut broker,
            dir,
            times,
        } => {
            let addr = broker.local_addr();
            for _ in 0..times {
                let killed_at = Instant::now();
                eprintln!("[{:?}] stopping the broker", started.elapsed());
                broker.shutdown().await;
                tokio::time::sleep(Duration::from_millis(500)).await;
                broker = Broker::builder()
                    .listen(addr.to_string())
                    .data_dir(&dir)
                    .start()
                    .await
                    .unwrap();
                eprintln!("[{:?}] broker restarted", started.elapsed());
                recoveries.push(recovery(&workers, &callers, &figures, started, killed_at).await);
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
            restarted = Some(broker);
        }
    }

    for p in producers {
        p.await.unwrap();
    }
    eprintln!("[{:?}] enqueue finished", started.elapsed());
    // Every confirmed task runs at least once.
    let confirmed: BTreeSet<String> = confirmed.lock().unwrap().clone();
    let deadline = Instant::now() + Duration::from_secs(180);
    let missing = loop {
        let missing = {
            let runs = RUNS.lock().unwrap();
            confirmed
                .iter()
                .filter(|id| !runs.contains_key(*id))
                .count()
        };
        if missing == 0 || Instant::now() > deadline {
            break missing;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    // Keep the RPC stream going a little after the last task, then stop it.
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, Ordering::Relaxed);
    for s in streams {
        s.await.unwrap();
    }

    let runs = RUNS.lock().unwrap().clone();
    let ran = confirmed.iter().filter(|id| runs.contains_key(*id)).count();
    let duplicates = confirmed
        .iter()
        .filter(|id| runs.get(*id).is_some_and(|&r| r > 1))
        .count();
    let extra_runs: u32 = confirmed
        .iter()
        .filter_map(|id| runs.get(id).map(|r| r - 1))
        .sum();
    let enqueue_errors = enqueue_errors.lock().unwrap().clone();
    let call_errors = figures.errors.lock().unwrap().clone();
    eprintln!(
        "== failover figures ({}) ==",
        if quorum {
            "cluster, quorum queues"
        } else {
            "bundled broker, durable queues"
        }
    );
    eprintln!(
        "tasks enqueued: {tasks}, confirmed: {}, enqueue errors: {enqueue_errors:?}",
        confirmed.len()
    );
    eprintln!("confirmed tasks run: {ran}, missing: {missing}, run more than once: {duplicates} ({extra_runs} extra runs)");
    eprintln!(
        "rpc calls ok: {}, failed with an error: {}, hung: {}; errors: {call_errors:?}",
        figures.ok.load(Ordering::Relaxed),
        figures.failed.load(Ordering::Relaxed),
        figures.hung.load(Ordering::Relaxed)
    );
    eprintln!("time to recover after each disruption: {recoveries:?}");
    eprintln!("total: {:?}", started.elapsed());

    if missing > 0 {
        // Where the missing tasks are: still queued (ready), held unacked by a consumer, or gone.
        let status = queue_status(&callers[0].0, &format!("{prefix}{TASK_QUEUE}")).await;
        let ids: Vec<&String> = confirmed
            .iter()
            .filter(|id| !runs.contains_key(*id))
            .take(10)
            .collect();
        eprintln!("missing task ids (first 10): {ids:?}; task queue now: {status:?}");
    }
    assert_eq!(missing, 0, "every confirmed task ran at least once");
    assert_eq!(figures.hung.load(Ordering::Relaxed), 0, "no RPC call hangs");
    assert!(figures.ok.load(Ordering::Relaxed) > 0);
    // All workers consume again: the broker counts 4 consumers on each queue.
    let status_conn = callers[0].0.clone();
    wait_consumers(&status_conn, &prefix, 4, Duration::from_secs(60)).await;
    if quorum {
        let listed = list_consumers(&prefix);
        eprintln!("rabbitmqctl list_consumers: {listed:?}");
        assert_eq!(listed.get(&format!("{prefix}{TASK_QUEUE}")), Some(&4));
        assert_eq!(listed.get(&format!("{prefix}{RPC_QUEUE}")), Some(&4));
    }
    for w in workers {
        w.stop().await;
    }
    for (conn, client) in callers {
        client.close().await;
        conn.close().await;
    }
    if let Some(broker) = restarted {
        broker.shutdown().await;
    }
}

/// How long after `killed_at` every connection is up again and an RPC call succeeded.
async fn recovery(
    workers: &[BackgroundWorker],
    callers: &[(Connection, Client)],
    figures: &CallFigures,
    started: Instant,
    killed_at: Instant,
) -> Duration {
    let killed_ms = u64::try_from(killed_at.duration_since(started).as_millis()).unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let all_up = workers.iter().all(|w| w.conn.is_connected())
            && callers.iter().all(|(c, _)| c.is_connected());
        // A call that succeeded clearly after the kill (not one already in flight).
        let called = figures.last_ok_ms.load(Ordering::Relaxed) > killed_ms + 200;
        if all_up && called {
            return killed_at.elapsed();
        }
        assert!(Instant::now() < deadline, "no recovery within 120 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until both queues have `n` consumers (through `queue.declare` passive).
async fn wait_consumers(conn: &Connection, prefix: &str, n: u32, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let mut ok = true;
        for queue in [TASK_QUEUE, RPC_QUEUE] {
            let status = queue_status(conn, &format!("{prefix}{queue}")).await;
            let consumers = status.ok().flatten().map(|s| s.consumers);
            ok &= consumers == Some(n);
        }
        if ok {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the queues did not get {n} consumers each"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// `rabbitmqctl list_consumers` on every running node: consumers per queue with `prefix`.
fn list_consumers(prefix: &str) -> BTreeMap<String, u32> {
    let output = std::process::Command::new("rabbitmqctl")
        .env(
            "PATH",
            format!(
                "/usr/lib/rabbitmq/bin:{}",
                std::env::var("PATH").unwrap_or_default()
            ),
        )
        .args([
            "-n",
            "lepus-1@localhost",
            "-q",
            "list_consumers",
            "--no-table-headers",
            "queue_name",
        ])
        .output()
        .unwrap();
    assert!(output.status.success(), "rabbitmqctl list_consumers failed");
    let mut counts = BTreeMap::new();
    for line in String::from_utf8_lossy(&output.stdout).lines() {
        let name = line.trim();
        if name.starts_with(prefix) {
            *counts.entry(name.to_owned()).or_default() += 1;
        }
    }
    counts
}
