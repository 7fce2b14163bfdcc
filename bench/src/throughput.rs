//! The `throughput` scenario and the producer/consumer run that `fanout` shares: declare the
//! topology, start consumers, publish for a duration (or a count), wait for the consumers to
//! drain what was published, measure, delete the topology.

use std::collections::BTreeMap;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use lapin::options::{ExchangeDeleteOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use lapin::ExchangeKind;
use tokio::sync::watch;

use crate::amqp::{connect, delete_queues, run_prefix};
use crate::cli::{Cli, FlowArgs, ThroughputArgs};
use crate::consumer::{AnyConsumer, ConsumerOutcome, ConsumerPlan};
use crate::error::{BenchError, Result};
use crate::proc_stat::ResourceProbe;
use crate::producer::{run_producer, BacklogBound, ProducerJob, Target};
use crate::report::{Report, Tally};
use crate::stats::{now_ns, spawn_progress, stop_after, Counters, Latency};

/// The queues and routes of one run.
#[derive(Debug, Clone)]
pub(crate) struct Topology {
    /// Queues to declare (and delete at the end).
    pub(crate) queues: Vec<String>,
    /// A fanout exchange every queue is bound to, if any.
    pub(crate) fanout: Option<String>,
    /// One target per producer.
    pub(crate) producers: Vec<Target>,
    /// One queue per consumer.
    pub(crate) consumers: Vec<String>,
    /// Deliveries per publish.
    pub(crate) copies: u64,
}

/// Checks the options that would make a run hang or meaningless.
pub(crate) fn validate(flow: &FlowArgs) -> Result<()> {
    if flow.multi_ack == 0 {
        return Err(BenchError::BadOptions(
            "--multi-ack must be at least 1".into(),
        ));
    }
    if !flow.autoack && flow.multi_ack > u64::from(flow.prefetch) && flow.prefetch > 0 {
        return Err(BenchError::BadOptions(format!(
            "--multi-ack {} above --prefetch {} would stall the consumer",
            flow.multi_ack, flow.prefetch
        )));
    }
    if !(flow.duration > 0.0 && flow.duration <= 3600.0) && flow.count.is_none() {
        return Err(BenchError::BadOptions(
            "--duration must be in (0, 3600]".into(),
        ));
    }
    Ok(())
}

/// Runs `throughput`.
pub(crate) async fn throughput(cli: &Cli, args: &ThroughputArgs) -> Result<Report> {
    if args.producers == 0 || args.consumers == 0 || args.queues == 0 {
        return Err(BenchError::BadOptions(
            "producers, consumers and queues must be ≥ 1".into(),
        ));
    }
    let prefix = run_prefix();
    let queues: Vec<String> = (0..args.queues).map(|i| format!("{prefix}-q{i}")).collect();
    let topo = Topology {
        producers: (0..args.producers)
            .map(|i| Target {
                exchange: String::new(),
                routing_key: queues[i % queues.len()].clone(),
            })
            .collect(),
        consumers: (0..args.consumers)
            .map(|j| queues[j % queues.len()].clone())
            .collect(),
        queues,
        fanout: None,
        copies: 1,
    };
    run_flow(
        cli,
        "throughput",
        serde_json::to_value(args)?,
        &args.flow,
        topo,
        false,
    )
    .await
}

/// Declares `topo`, runs producers and consumers as `flow` says, and reports.
pub(crate) async fn run_flow(
    cli: &Cli,
    scenario: &'static str,
    params: serde_json::Value,
    flow: &FlowArgs,
    topo: Topology,
    check_order: bool,
) -> Result<Report> {
    validate(flow)?;
    let setup = connect(&cli.url, "setup").await?;
    let ch = setup.create_channel().await?;
    let durable = flow.persistent;
    for q in &topo.queues {
        ch.queue_declare(
            q.as_str().into(),
            QueueDeclareOptions {
                durable,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await?;
    }
    if let Some(fx) = &topo.fanout {
        ch.exchange_declare(
            fx.as_str().into(),
            ExchangeKind::Fanout,
            lapin::options::ExchangeDeclareOptions {
                durable,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await?;
        for q in &topo.queues {
            ch.queue_bind(
                q.as_str().into(),
                fx.as_str().into(),
                "".into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await?;
        }
    }
    let result = drive(cli, flow, &topo, check_order).await;
    delete_queues(&ch, &topo.queues).await;
    if let Some(fx) = &topo.fanout {
        let _ = ch
            .exchange_delete(fx.as_str().into(), ExchangeDeleteOptions::default())
            .await;
    }
    let _ = setup.close(200, "bench done".into()).await;
    let (mut report, outcomes) = result?;
    report.scenario = scenario;
    report.params = params;
    let out_of_order: u64 = outcomes.iter().map(|o| o.out_of_order).sum();
    let redelivered: u64 = outcomes.iter().map(|o| o.redelivered).sum();
    if check_order {
        report.extra.insert("out_of_order", out_of_order.into());
    }
    report.extra.insert("redelivered", redelivered.into());
    Ok(report)
}

/// The measured part of a run (topology already declared).
async fn drive(
    cli: &Cli,
    flow: &FlowArgs,
    topo: &Topology,
    check_order: bool,
) -> Result<(Report, Vec<ConsumerOutcome>)> {
    let counters = Arc::new(Counters::default());
    let latency = Arc::new(Mutex::new(Latency::new()));
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut consumers = Vec::new();
    for (j, q) in topo.consumers.iter().enumerate() {
        let plan = ConsumerPlan {
            queue: q.clone(),
            autoack: flow.autoack,
            prefetch: flow.prefetch,
            multi_ack: flow.multi_ack,
            check_order,
        };
        consumers.push(AnyConsumer::start(flow.client, &cli.url, j, plan).await?);
    }
    let probe = ResourceProbe::start(cli.broker_pid);
    let progress = spawn_progress("flow", Arc::clone(&counters), cli.broker_pid, cli.quiet);
    let t0 = now_ns();
    let started = Instant::now();
    let consumer_tasks: Vec<_> = consumers
        .into_iter()
        .map(|c| tokio::spawn(c.run(Arc::clone(&counters), Arc::clone(&latency), stop_rx.clone())))
        .collect();
    let stop = Arc::new(AtomicBool::new(false));
    let bound = BacklogBound {
        copies: topo.copies,
        max: flow.max_backlog,
    };
    let producer_tasks: Vec<_> = topo
        .producers
        .iter()
        .enumerate()
        .map(|(i, t)| {
            tokio::spawn(run_producer(ProducerJob {
                url: cli.url.clone(),
                id: i,
                target: t.clone(),
                flow: flow.clone(),
                bound,
                counters: Arc::clone(&counters),
                stop: Arc::clone(&stop),
            }))
        })
        .collect();
    if flow.count.is_none() {
        stop_after(&stop, flow.duration);
    }
    let mut published = 0;
    let mut first_err = None;
    for t in producer_tasks {
        match t.await? {
            Ok(o) => published += o.published,
            Err(e) => {
                // Stop the others; report the first failure after the consumers are stopped.
                stop.store(true, std::sync::atomic::Ordering::Relaxed);
                first_err.get_or_insert(e);
            }
        }
    }
    let in_secs = started.elapsed().as_secs_f64();
    // Drain: wait until every published copy arrived, or until deliveries stall for 5 s.
    let expected = published * topo.copies;
    if first_err.is_none() {
        counters
            .wait_for_deliveries(expected, Duration::from_millis(5), Duration::from_secs(5))
            .await;
    }
    stop_tx.send_replace(true);
    let mut outcomes = Vec::new();
    for t in consumer_tasks {
        match t.await? {
            Ok(o) => outcomes.push(o),
            Err(e) => {
                first_err.get_or_insert(e);
            }
        }
    }
    progress.abort();
    let resources = probe.finish();
    if let Some(e) = first_err {
        return Err(e);
    }
    let received: u64 = outcomes.iter().map(|o| o.received).sum();
    let out_secs = Counters::get(&counters.last_consume_ns).saturating_sub(t0) as f64 / 1e9;
    let latency = latency.lock().unwrap_or_else(|p| p.into_inner()).summary();
    let mut extra = BTreeMap::new();
    extra.insert("expected", expected.into());
    let tally = Tally {
        sent: published,
        received,
        confirmed: Counters::get(&counters.confirmed),
        in_secs,
        out_secs,
    };
    let report = Report::new("", "msgs", tally, resources)
        .with_latency(latency)
        .with_extra(extra);
    Ok((report, outcomes))
}
