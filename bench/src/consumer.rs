//! A consumer: one connection and channel draining one queue, recording latency from the body's
//! timestamp and, optionally, checking that sequence numbers arrive in order.

use std::sync::Arc;

use futures::StreamExt;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicQosOptions};
use lapin::types::FieldTable;
use lapin::{Channel, Connection};
use tokio::sync::watch;

use crate::amqp::{body_seq, body_time, connect};
use crate::cli::ClientImpl;
use crate::error::Result;
use crate::raw_client::RawConsumer;
use crate::stats::{merge_into, Counters, Latency, SharedLatency};
use crate::window::Window;

/// How one consumer consumes.
#[derive(Debug, Clone)]
pub(crate) struct ConsumerPlan {
    /// The queue to consume.
    pub(crate) queue: String,
    /// `no_ack` consume.
    pub(crate) autoack: bool,
    /// `basic.qos` prefetch count (manual ack only).
    pub(crate) prefetch: u16,
    /// Ack with `multiple = true` every N deliveries (1 = each).
    pub(crate) multi_ack: u64,
    /// Check that sequence numbers arrive 0, 1, 2, ... (one producer, one queue).
    pub(crate) check_order: bool,
}

/// What a finished consumer reports.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct ConsumerOutcome {
    /// Deliveries received.
    pub(crate) received: u64,
    /// Deliveries whose sequence number was not the one expected (with `check_order`).
    pub(crate) out_of_order: u64,
    /// Deliveries flagged `redelivered`.
    pub(crate) redelivered: u64,
}

/// What a consumer keeps per delivery, whichever client received it: the latency from the
/// body's timestamp, the order check, the counts, and when to ack.
#[derive(Debug)]
pub(crate) struct DeliveryTally {
    /// Latencies seen so far; merged into the run's histogram when the consumer ends.
    pub(crate) latency: Latency,
    /// The counts the consumer reports.
    pub(crate) outcome: ConsumerOutcome,
    /// The sequence number expected next (with `check_order`).
    next_seq: u64,
    /// Deliveries not acked yet (manual ack).
    unacked: u64,
    /// The newest delivery tag (manual ack).
    last_tag: u64,
}

impl DeliveryTally {
    /// Nothing received yet.
    pub(crate) fn new() -> Self {
        DeliveryTally {
            latency: Latency::new(),
            outcome: ConsumerOutcome::default(),
            next_seq: 0,
            unacked: 0,
            last_tag: 0,
        }
    }

    /// Records delivery `tag`, whose body starts with `head` (its first 16 bytes suffice).
    /// Returns `Some(multiple)` when the plan wants an ack of `tag` now (manual ack, every
    /// `multi_ack` deliveries), the `multiple` flag to send it with.
    pub(crate) fn record(
        &mut self,
        plan: &ConsumerPlan,
        head: &[u8],
        tag: u64,
        redelivered: bool,
    ) -> Option<bool> {
        if let Some(ts) = body_time(head) {
            self.latency.record_since(ts);
        }
        if plan.check_order {
            let seq = body_seq(head);
            if seq != Some(self.next_seq) {
                self.outcome.out_of_order += 1;
            }
            self.next_seq = seq.map_or(self.next_seq + 1, |s| s + 1);
        }
        self.outcome.redelivered += u64::from(redelivered);
        self.outcome.received += 1;
        if plan.autoack {
            return None;
        }
        self.unacked += 1;
        self.last_tag = tag;
        if self.unacked < plan.multi_ack {
            return None;
        }
        self.unacked = 0;
        Some(plan.multi_ack > 1)
    }

    /// The tag to ack with `multiple = true` when the consumer stops: the newest delivery, if
    /// any is not acked yet.
    pub(crate) fn last_unacked(&self) -> Option<u64> {
        (self.unacked > 0).then_some(self.last_tag)
    }
}

/// A consumer that has registered with the broker (`basic.consume-ok` received) and not yet run.
pub(crate) struct ReadyConsumer {
    conn: Connection,
    channel: Channel,
    consumer: lapin::Consumer,
    plan: ConsumerPlan,
}

impl std::fmt::Debug for ReadyConsumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReadyConsumer")
            .field("plan", &self.plan)
            .finish()
    }
}

impl ReadyConsumer {
    /// Connects, sets the prefetch and issues `basic.consume`.
    pub(crate) async fn start(url: &str, id: usize, plan: ConsumerPlan) -> Result<Self> {
        let conn = connect(url, &format!("consumer {id}")).await?;
        let channel = conn.create_channel().await?;
        if !plan.autoack {
            channel
                .basic_qos(plan.prefetch, BasicQosOptions::default())
                .await?;
        }
        let consumer = channel
            .basic_consume(
                plan.queue.as_str().into(),
                format!("lepus-bench-{id}").into(),
                BasicConsumeOptions {
                    no_ack: plan.autoack,
                    ..BasicConsumeOptions::default()
                },
                FieldTable::default(),
            )
            .await?;
        Ok(ReadyConsumer {
            conn,
            channel,
            consumer,
            plan,
        })
    }

    /// Consumes until `stop` turns true (or the consumer is cancelled), then acks what is left,
    /// merges its latency histogram into `latency` and closes its connection.
    pub(crate) async fn run(
        self,
        counters: Arc<Counters>,
        latency: SharedLatency,
        mut stop: watch::Receiver<bool>,
    ) -> Result<ConsumerOutcome> {
        let ReadyConsumer {
            conn,
            channel,
            mut consumer,
            plan,
        } = self;
        let mut tally = DeliveryTally::new();
        let mut acks = Window::new(1024);
        loop {
            let delivery = tokio::select! {
                biased;
                _ = stop.wait_for(|s| *s) => break,
                d = consumer.next() => d,
            };
            let Some(delivery) = delivery else { break };
            let delivery = delivery?;
            let tag = delivery.delivery_tag;
            let ack = tally.record(&plan, &delivery.data, tag, delivery.redelivered);
            counters.delivered(1);
            if let Some(multiple) = ack {
                let ch = &channel;
                acks.push(async move {
                    ch.basic_ack(tag, BasicAckOptions { multiple }).await?;
                    Ok(())
                })
                .await?;
            }
        }
        if let Some(last_tag) = tally.last_unacked() {
            channel
                .basic_ack(last_tag, BasicAckOptions { multiple: true })
                .await?;
        }
        acks.drain().await?;
        merge_into(&latency, &tally.latency);
        let _ = conn.close(200, "bench done".into()).await;
        Ok(tally.outcome)
    }
}

/// A registered consumer of either client.
#[derive(Debug)]
pub(crate) enum AnyConsumer {
    /// Through lapin.
    Lapin(Box<ReadyConsumer>),
    /// Through the bench's own client.
    Raw(RawConsumer),
}

impl AnyConsumer {
    /// Connects and issues `basic.consume` with `client`.
    pub(crate) async fn start(
        client: ClientImpl,
        url: &str,
        id: usize,
        plan: ConsumerPlan,
    ) -> Result<Self> {
        Ok(match client {
            ClientImpl::Lapin => {
                AnyConsumer::Lapin(Box::new(ReadyConsumer::start(url, id, plan).await?))
            }
            ClientImpl::Raw => AnyConsumer::Raw(RawConsumer::start(url, id, plan).await?),
        })
    }

    /// Runs until `stop` (see [`ReadyConsumer::run`]).
    pub(crate) async fn run(
        self,
        counters: Arc<Counters>,
        latency: SharedLatency,
        stop: watch::Receiver<bool>,
    ) -> Result<ConsumerOutcome> {
        match self {
            AnyConsumer::Lapin(c) => c.run(counters, latency, stop).await,
            AnyConsumer::Raw(c) => c.run(counters, latency, stop).await,
        }
    }
}
