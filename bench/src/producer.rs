//! A producer: one connection and channel publishing stamped bodies as fast as the window,
//! the confirm window and the backlog bound allow.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::{BasicProperties, Confirmation};

use crate::amqp::{connect, stamp_body};
use crate::cli::{ClientImpl, FlowArgs};
use crate::error::{BenchError, Result};
use crate::raw_client::run_raw_producer;
use crate::stats::Counters;
use crate::window::Window;

/// Where one producer publishes.
#[derive(Debug, Clone)]
pub(crate) struct Target {
    /// Exchange name (`""` = the default exchange).
    pub(crate) exchange: String,
    /// Routing key (the queue name on the default exchange).
    pub(crate) routing_key: String,
}

/// What a finished producer reports.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ProducerOutcome {
    /// Messages published.
    pub(crate) published: u64,
}

/// The shared bound on queued-but-unconsumed messages.
#[derive(Debug, Clone, Copy)]
pub(crate) struct BacklogBound {
    /// Deliveries each publish turns into (1, or N for a fanout to N queues).
    pub(crate) copies: u64,
    /// Pause while `published × copies − consumed` exceeds this (0 = never pause).
    pub(crate) max: u64,
}

impl BacklogBound {
    /// Messages queued and not yet consumed: every publish counted `copies` times, less the
    /// deliveries consumed.
    pub(crate) fn queued(&self, counters: &Counters) -> u64 {
        (Counters::get(&counters.published) * self.copies)
            .saturating_sub(Counters::get(&counters.consumed))
    }
}

/// One producer's job: where it connects and publishes, how, and what it shares with the run.
#[derive(Debug)]
pub(crate) struct ProducerJob {
    /// The broker's AMQP URL.
    pub(crate) url: String,
    /// The producer's number (names its connection).
    pub(crate) id: usize,
    /// Where it publishes.
    pub(crate) target: Target,
    /// Message size, windows, count or duration, and the client.
    pub(crate) flow: FlowArgs,
    /// The backlog it must not exceed.
    pub(crate) bound: BacklogBound,
    /// The run's counters (shared with consumers and the progress line).
    pub(crate) counters: Arc<Counters>,
    /// Set by the run to stop every producer.
    pub(crate) stop: Arc<AtomicBool>,
}

/// Publishes until `stop` is set or `flow.count` messages are out, then waits for every
/// outstanding publish (and confirm), with the client `flow.client` names.
pub(crate) async fn run_producer(job: ProducerJob) -> Result<ProducerOutcome> {
    match job.flow.client {
        ClientImpl::Raw => run_raw_producer(job).await,
        ClientImpl::Lapin => run_lapin_producer(job).await,
    }
}

/// [`run_producer`] through lapin.
async fn run_lapin_producer(job: ProducerJob) -> Result<ProducerOutcome> {
    let ProducerJob {
        url,
        id,
        target,
        flow,
        bound,
        counters,
        stop,
    } = job;
    let conn = connect(&url, &format!("producer {id}")).await?;
    let channel = conn.create_channel().await?;
    let confirms = flow.confirm > 0;
    if confirms {
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
    }
    let props = if flow.persistent {
        BasicProperties::default().with_delivery_mode(2)
    } else {
        BasicProperties::default()
    };
    let mut window = Window::new(if confirms {
        flow.confirm
    } else {
        flow.pipeline
    });
    let mut seq = 0u64;
    let limit = flow.count.unwrap_or(u64::MAX);
    while seq < limit && !stop.load(Ordering::Relaxed) {
        while bound.max > 0 && bound.queued(&counters) > bound.max {
            if stop.load(Ordering::Relaxed) && flow.count.is_none() {
                break;
            }
            tokio::time::sleep(Duration::from_micros(500)).await;
        }
        let body = stamp_body(flow.size, seq);
        let ch = channel.clone();
        let (ex, rk, props) = (
            target.exchange.clone(),
            target.routing_key.clone(),
            props.clone(),
        );
        let counters2 = &*counters;
        window
            .push(async move {
                let confirm = ch
                    .basic_publish(
                        ex.into(),
                        rk.into(),
                        BasicPublishOptions::default(),
                        &body,
                        props,
                    )
                    .await?;
                if confirms {
                    match confirm.await? {
                        Confirmation::Nack(_) => return Err(BenchError::Nacked),
                        Confirmation::Ack(_) | Confirmation::NotRequested => {
                            counters2.confirmed.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
                Ok(())
            })
            .await?;
        counters.published.fetch_add(1, Ordering::Relaxed);
        seq += 1;
    }
    window.drain().await?;
    let _ = conn.close(200, "bench done".into()).await;
    Ok(ProducerOutcome { published: seq })
}
