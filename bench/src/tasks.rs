//! `tasks`: background tasks end to end through `#[lepus::task]` — enqueue with publisher
//! confirms → the task runs in a `lepus::Worker` → acked — the same shape as
//! `bench/celery` measures for Celery (issue 4 "Done means" 3).
//!
//! `--producers` clients (each on its own connection) enqueue `--tasks` tasks between them with
//! `--window` enqueues in flight each; one worker connection runs them with `--prefetch` and
//! `--concurrency`. The clock runs from the first enqueue until every task has run; the report
//! also checks each task ran exactly once. The run's queues are deleted at the end.
//!
//! `--results` submits each task with its result kept (`noop::submit`) and waits for the
//! result (`handle.result`) inside the window: the clock then runs until every result was read.
//! The result queues are left to the broker, which deletes them 60 s after their last use.
//!
//! `--chord N` runs one chord instead: `N` `noop` members and a callback (`sum_ids`) adding
//! their outputs; the clock runs from `submit` until the chord's result was read, with the
//! worker already consuming.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use futures::stream::{self, StreamExt};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::amqp::{connect, delete_queues, run_prefix};
use crate::cli::{Cli, TasksArgs};
use crate::error::{BenchError, Result};
use crate::proc_stat::ResourceProbe;
use crate::report::{Report, Tally};
use crate::stats::{spawn_progress, Counters};

/// Runs of each task id in the current run (one byte per id), and the counters the progress
/// line reads. Set once per process: the bench runs one scenario per process.
struct Ledger {
    runs: Vec<AtomicU8>,
    counters: Arc<Counters>,
}

static LEDGER: OnceLock<Ledger> = OnceLock::new();

/// The task under test: records that `id` ran, and returns it (the result `--results` reads).
#[lepus::task(queue = "noop", retries = 0)]
async fn noop(id: u64) -> u64 {
    if let Some(ledger) = LEDGER.get() {
        if let Some(slot) = usize::try_from(id).ok().and_then(|i| ledger.runs.get(i)) {
            slot.fetch_add(1, Ordering::Relaxed);
        }
        ledger.counters.delivered(1);
    }
    id
}

/// The chord's callback: the sum of the members' outputs.
#[lepus::task(queue = "noop_sum", retries = 0)]
async fn sum_ids(ids: Vec<u64>) -> u64 {
    ids.iter().sum()
}

/// The worker of a run, on its own connection: serves its handlers from [`TaskWorker::start`]
/// until [`TaskWorker::finish`] shuts it down gracefully.
struct TaskWorker {
    conn: lepus::Connection,
    prefix: String,
    stop: oneshot::Sender<()>,
    task: JoinHandle<lepus::Result<()>>,
}

impl TaskWorker {
    /// Connects and starts serving `handlers` on the run's `prefix`ed queues with `--prefetch`
    /// and `--concurrency`.
    async fn start(
        cli: &Cli,
        args: &TasksArgs,
        prefix: &str,
        handlers: impl lepus::IntoHandlers,
    ) -> Result<Self> {
        let conn = lepus::connect(&cli.url).await?;
        let worker = lepus::Worker::new(&conn)
            .queue_prefix(prefix)
            .prefetch(args.prefetch)
            .concurrency(args.concurrency)
            .serve(handlers);
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(worker.run_until(async move {
            let _ = stopped.await;
        }));
        Ok(TaskWorker {
            conn,
            prefix: prefix.to_owned(),
            stop,
            task,
        })
    }

    /// Shuts the worker down, deletes the run's `queues` (named without the prefix) with their
    /// dead-letter queues, and closes the worker's connection.
    async fn finish(self, cli: &Cli, queues: &[&str]) -> Result<()> {
        let _ = self.stop.send(());
        self.task.await??;
        let cleanup = connect(&cli.url, "cleanup").await?;
        let channel = cleanup.create_channel().await?;
        let prefix = &self.prefix;
        let names: Vec<String> = queues
            .iter()
            .flat_map(|q| [format!("{prefix}{q}"), format!("{prefix}{q}.dead")])
            .collect();
        delete_queues(&channel, &names).await;
        let _ = cleanup.close(200, "done".into()).await;
        self.conn.close().await;
        Ok(())
    }
}

/// A client connection enqueueing on the run's `prefix`ed queues.
async fn task_client(cli: &Cli, prefix: &str) -> Result<(lepus::Connection, lepus::Client)> {
    let conn = lepus::connect(&cli.url).await?;
    let client = lepus::Client::builder(&conn)
        .queue_prefix(prefix)
        .build()
        .await?;
    Ok((conn, client))
}

/// `--chord n`: one chord of `n` members; the wall time from submit to result.
async fn chord_run(cli: &Cli, args: &TasksArgs, members: u64) -> Result<Report> {
    let prefix = format!("{}-", run_prefix());
    let worker =
        TaskWorker::start(cli, args, &prefix, [noop::handler(), sum_ids::handler()]).await?;
    let (conn, client) = task_client(cli, &prefix).await?;
    // The worker consumes before the clock starts.
    lepus::task::wait_for_queue_consumers(
        &conn,
        &format!("{prefix}noop_sum"),
        &lepus::QueueOptions::new().durable(true),
        1,
        Duration::from_secs(30),
    )
    .await?;
    let probe = ResourceProbe::start(cli.broker_pid);
    let started = Instant::now();
    let flow = lepus::chord(
        lepus::group((0..members).map(noop::signature)),
        sum_ids::partial(),
    )
    .result_ttl(RESULT_TTL)
    .submit(&client)
    .await?;
    let submit_secs = started.elapsed().as_secs_f64();
    let got = flow
        .result(Duration::from_secs_f64(args.timeout))
        .await
        .map_err(|e| BenchError::Timeout(format!("chord result: {e}")))?;
    let secs = started.elapsed().as_secs_f64();
    let resources = probe.finish();
    let expected: u64 = (0..members).sum();
    if got != expected {
        return Err(BenchError::Protocol(format!(
            "chord gave {got}, expected {expected}"
        )));
    }
    conn.close().await;
    worker.finish(cli, &["noop", "noop_sum"]).await?;
    let mut extra = BTreeMap::new();
    extra.insert("chord_members", serde_json::json!(members));
    extra.insert("chord_wall_secs", serde_json::json!(secs));
    extra.insert("chord_submit_secs", serde_json::json!(submit_secs));
    let tally = Tally {
        sent: members,
        received: members,
        confirmed: members,
        in_secs: submit_secs,
        out_secs: secs,
    };
    Ok(Report::new("tasks", "tasks", tally, resources).with_extra(extra))
}

/// How long `--results` keeps each result (the broker deletes the result queues after it).
const RESULT_TTL: Duration = Duration::from_secs(60);

/// One task of the run: enqueued, or (`--results`) submitted and its result awaited.
async fn one_task(client: &lepus::Client, id: u64, results: bool, timeout: Duration) -> Result<()> {
    if !results {
        noop::enqueue(client, id).await?;
        return Ok(());
    }
    let options = lepus::EnqueueOptions::new().result_ttl(RESULT_TTL);
    let handle = noop::submit_with(client, id, options).await?;
    match handle.result(timeout).await {
        Ok(got) if got == id => Ok(()),
        Ok(got) => Err(BenchError::Protocol(format!("task {id} returned {got}"))),
        Err(err) => Err(BenchError::Timeout(format!("result of task {id}: {err}"))),
    }
}

/// Runs the scenario.
pub(crate) async fn tasks(cli: &Cli, args: &TasksArgs) -> Result<Report> {
    let mut report = match args.chord {
        Some(members) => chord_run(cli, args, members).await?,
        None => tasks_run(cli, args).await?,
    };
    report.params = serde_json::to_value(args)?;
    Ok(report)
}

/// `--tasks n`: `n` tasks enqueued by `--producers` clients; the wall time until all ran.
async fn tasks_run(cli: &Cli, args: &TasksArgs) -> Result<Report> {
    let total = args.tasks;
    let ledger = LEDGER.get_or_init(|| Ledger {
        runs: (0..total).map(|_| AtomicU8::new(0)).collect(),
        counters: Arc::new(Counters::default()),
    });
    let counters = Arc::clone(&ledger.counters);
    let prefix = format!("{}-", run_prefix());

    let worker = TaskWorker::start(cli, args, &prefix, noop::handler()).await?;
    let mut producers = Vec::new();
    for _ in 0..args.producers.max(1) {
        producers.push(task_client(cli, &prefix).await?);
    }

    let probe = ResourceProbe::start(cli.broker_pid);
    let progress = spawn_progress("tasks", Arc::clone(&counters), cli.broker_pid, cli.quiet);
    let started = Instant::now();
    let next_id = Arc::new(AtomicU64::new(0));
    let enqueue_all = producers.iter().map(|(_, client)| {
        let (next_id, counters) = (Arc::clone(&next_id), Arc::clone(&counters));
        let window = args.window.max(1);
        let (results, timeout) = (args.results, Duration::from_secs_f64(args.timeout));
        async move {
            let ids = std::iter::from_fn(|| {
                let id = next_id.fetch_add(1, Ordering::Relaxed);
                (id < total).then_some(id)
            });
            let results: Vec<_> = stream::iter(ids)
                .map(|id| {
                    counters.published.fetch_add(1, Ordering::Relaxed);
                    one_task(client, id, results, timeout)
                })
                .buffer_unordered(window)
                .collect()
                .await;
            let confirmed = results.iter().filter(|r| r.is_ok()).count() as u64;
            counters.confirmed.fetch_add(confirmed, Ordering::Relaxed);
            results.into_iter().find_map(|r| r.err())
        }
    });
    let errors: Vec<Option<BenchError>> = futures::future::join_all(enqueue_all).await;
    let enqueue_secs = started.elapsed().as_secs_f64();
    if let Some(err) = errors.into_iter().flatten().next() {
        return Err(err);
    }

    // Every task ran, or the timeout says otherwise.
    let deadline = Instant::now() + Duration::from_secs_f64(args.timeout);
    while Counters::get(&counters.consumed) < total && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let secs = started.elapsed().as_secs_f64();
    progress.abort();
    let resources = probe.finish();

    for (conn, _) in producers {
        conn.close().await;
    }
    worker.finish(cli, &["noop"]).await?;

    let ran = ledger.runs.iter().filter(|r| r.load(Ordering::Relaxed) > 0);
    let distinct = ran.clone().count() as u64;
    let duplicates = ran.filter(|r| r.load(Ordering::Relaxed) > 1).count() as u64;
    if distinct < total {
        return Err(BenchError::Timeout(format!(
            "{distinct} of {total} tasks ran within {}s",
            args.timeout
        )));
    }
    let mut extra = BTreeMap::new();
    extra.insert("tasks_per_s", serde_json::json!(total as f64 / secs));
    extra.insert(
        "enqueue_per_s",
        serde_json::json!(total as f64 / enqueue_secs),
    );
    extra.insert("duplicates", serde_json::json!(duplicates));
    let tally = Tally {
        sent: Counters::get(&counters.published),
        received: Counters::get(&counters.consumed),
        confirmed: Counters::get(&counters.confirmed),
        in_secs: enqueue_secs,
        out_secs: secs,
    };
    Ok(Report::new("tasks", "tasks", tally, resources).with_extra(extra))
}
