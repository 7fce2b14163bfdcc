//! The `backlog` scenario: one producer fills one queue with `--bytes` (or `--count`) of
//! messages while nobody consumes, then one consumer drains it, checking that every sequence
//! number arrives once and in order. The broker's peak RSS over both phases is the figure that
//! matters (issue 7 "Done means" 5: under the broker's memory budget).

use std::collections::BTreeMap;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use lapin::options::QueueDeclareOptions;
use lapin::types::FieldTable;
use tokio::sync::watch;

use crate::amqp::{connect, delete_queues, run_prefix};
use crate::cli::{BacklogArgs, Cli, FlowArgs};
use crate::consumer::{AnyConsumer, ConsumerPlan};
use crate::error::{BenchError, Result};
use crate::proc_stat::ResourceProbe;
use crate::producer::{run_producer, BacklogBound, ProducerJob, Target};
use crate::report::{Report, Tally};
use crate::stats::{spawn_progress, Counters, Latency};

/// Runs `backlog`.
pub(crate) async fn backlog(cli: &Cli, args: &BacklogArgs) -> Result<Report> {
    let count = args.count.unwrap_or(args.bytes / args.size.max(1) as u64);
    if count == 0 || args.multi_ack == 0 || args.multi_ack > u64::from(args.prefetch) {
        return Err(BenchError::BadOptions(
            "need count ≥ 1 and 1 ≤ --multi-ack ≤ --prefetch".into(),
        ));
    }
    let queue = format!("{}-backlog", run_prefix());
    let setup = connect(&cli.url, "setup").await?;
    let ch = setup.create_channel().await?;
    ch.queue_declare(
        queue.as_str().into(),
        QueueDeclareOptions {
            durable: !args.transient,
            ..QueueDeclareOptions::default()
        },
        FieldTable::default(),
    )
    .await?;
    let deadline = Duration::from_secs(args.timeout);
    let result = tokio::time::timeout(deadline, fill_and_drain(cli, args, &queue, count)).await;
    delete_queues(&ch, std::slice::from_ref(&queue)).await;
    let _ = setup.close(200, "bench done".into()).await;
    let mut report =
        result.map_err(|_| BenchError::Timeout(format!("backlog after {} s", args.timeout)))??;
    report.params = serde_json::to_value(args)?;
    Ok(report)
}

async fn fill_and_drain(cli: &Cli, args: &BacklogArgs, queue: &str, count: u64) -> Result<Report> {
    let counters = Arc::new(Counters::default());
    let probe = ResourceProbe::start(cli.broker_pid);
    let progress = spawn_progress("backlog", Arc::clone(&counters), cli.broker_pid, cli.quiet);
    let flow = FlowArgs {
        size: args.size,
        prefetch: args.prefetch,
        autoack: false,
        multi_ack: args.multi_ack,
        confirm: args.confirm,
        persistent: !args.transient,
        duration: 0.0,
        count: Some(count),
        max_backlog: 0,
        pipeline: 256,
        client: args.client,
    };
    let fill_start = Instant::now();
    let produced = run_producer(ProducerJob {
        url: cli.url.clone(),
        id: 0,
        target: Target {
            exchange: String::new(),
            routing_key: queue.to_owned(),
        },
        flow,
        bound: BacklogBound { copies: 1, max: 0 },
        counters: Arc::clone(&counters),
        stop: Arc::new(AtomicBool::new(false)),
    })
    .await?;
    let fill_secs = fill_start.elapsed().as_secs_f64();
    let rss_after_fill = cli
        .broker_pid
        .and_then(|p| crate::proc_stat::Proc::Pid(p).status_bytes("VmRSS:"));

    let latency = Arc::new(Mutex::new(Latency::new()));
    let (stop_tx, stop_rx) = watch::channel(false);
    let drain_start = Instant::now();
    let consumer = AnyConsumer::start(
        args.client,
        &cli.url,
        0,
        ConsumerPlan {
            queue: queue.to_owned(),
            autoack: false,
            prefetch: args.prefetch,
            multi_ack: args.multi_ack,
            check_order: true,
        },
    )
    .await?;
    let task = tokio::spawn(consumer.run(Arc::clone(&counters), latency, stop_rx));
    counters
        .wait_for_deliveries(
            produced.published,
            Duration::from_millis(10),
            Duration::from_secs(10),
        )
        .await;
    stop_tx.send_replace(true);
    let outcome = task.await??;
    let drain_secs = drain_start.elapsed().as_secs_f64();
    progress.abort();
    let resources = probe.finish();
    let mut extra = BTreeMap::new();
    extra.insert("count", count.into());
    extra.insert("fill_secs", fill_secs.into());
    extra.insert("drain_secs", drain_secs.into());
    extra.insert("out_of_order", outcome.out_of_order.into());
    extra.insert(
        "missing",
        produced.published.saturating_sub(outcome.received).into(),
    );
    extra.insert(
        "order_ok",
        (outcome.out_of_order == 0 && outcome.received == produced.published).into(),
    );
    if let Some(rss) = rss_after_fill {
        extra.insert("broker_rss_after_fill", rss.into());
    }
    let tally = Tally {
        sent: produced.published,
        received: outcome.received,
        confirmed: Counters::get(&counters.confirmed),
        in_secs: fill_secs,
        out_secs: drain_secs,
    };
    // No latency: queueing time of a backlog is not a figure anyone compares.
    Ok(Report::new("backlog", "msgs", tally, resources).with_extra(extra))
}
