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
        let mut local = Latency::new();
        let mut out = ConsumerOutcome::default();
        let mut acks = Window::new(1024);
        let mut unacked = 0u64;
        let mut last_tag = 0;
        let mut next_seq = 0u64;
        loop {
            let delivery = tokio::select! {
                biased;
                _ = stop.wait_for(|s| *s) => break,
                d = consumer.next() => d,
            };
            let Some(delivery) = delivery else { break };
            let delivery = delivery?;
            if let Some(ts) = body_time(&delivery.data) {
                local.record_since(ts);
            }
            if plan.check_order {
                if body_seq(&delivery.data) != Some(next_seq) {
                    out.out_of_order += 1;
                }
                next_seq = body_seq(&delivery.data).map_or(next_seq + 1, |s| s + 1);
            }
            if delivery.redelivered {
                out.redelivered += 1;
            }
            out.received += 1;
            counters.delivered(1);
            if !plan.autoack {
                unacked += 1;
                last_tag = delivery.delivery_tag;
                if unacked >= plan.multi_ack {
                    let ch = &channel;
                    let multiple = plan.multi_ack > 1;
                    acks.push(async move {
                        ch.basic_ack(last_tag, BasicAckOptions { multiple }).await?;
                        Ok(())
                    })
                    .await?;
                    unacked = 0;
                }
            }
        }
        if unacked > 0 {
            channel
                .basic_ack(last_tag, BasicAckOptions { multiple: true })
                .await?;
        }
        acks.drain().await?;
        merge_into(&latency, &local);
        let _ = conn.close(200, "bench done".into()).await;
        Ok(out)
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
