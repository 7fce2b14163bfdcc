//! [`Consumers`]: the consumers of a worker's channel, one per served queue, and their pause and
//! resume for the byte budget (`byte_budget`).
//!
//! All deliveries come out of one stream, tagged with their queue's index; each consumer's
//! stream ends with an end marker, so that a consumer that ends is noticed: expected after the
//! worker paused it (`basic.cancel`), a broker cancellation otherwise (its queue was deleted),
//! which makes the worker rebuild its channel.

use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::stream::{self, SelectAll, Stream, StreamExt};
use lapin::message::Delivery;
use lapin::options::{BasicCancelOptions, BasicConsumeOptions, BasicQosOptions};
use lapin::types::{FieldTable, ShortString};
use tracing::debug;

use crate::worker::delivery::Routes;
use crate::worker::QueueOptions;

/// A served queue: its name (prefixed), how it is declared, and its handlers.
#[derive(Debug)]
pub(crate) struct ServedQueue {
    pub(crate) name: String,
    pub(crate) options: QueueOptions,
    pub(crate) routes: Arc<Routes>,
}

/// One item of the delivery stream: the queue's index, and a delivery, a consumer error, or
/// `None` when that queue's consumer ended.
pub(crate) type Item = (usize, Option<lapin::Result<Delivery>>);

type Deliveries = SelectAll<Pin<Box<dyn Stream<Item = Item> + Send>>>;

/// How long after an adjustment the prefetch count may be raised again.
const RAISE_AFTER: Duration = Duration::from_secs(10);

/// The consumers of one channel.
pub(crate) struct Consumers {
    /// The worker's channel of this link generation (shared with the handler tasks).
    channel: Arc<lapin::Channel>,
    /// The consumer tag of each queue (by index); `None` while paused.
    tags: Vec<Option<ShortString>>,
    /// Paused queues whose consumer stream has ended (their in-flight deliveries are all in).
    ended: Vec<bool>,
    /// Every delivery of every consumer.
    pub(crate) deliveries: Deliveries,
    paused: bool,
    /// The prefetch count the consumers were started with.
    prefetch: u16,
    /// The largest body seen since the last adjustment of the prefetch count.
    largest: usize,
    adjusted_at: Instant,
}

impl Consumers {
    /// Sets `basic.qos(prefetch)` and starts one consumer per queue of `served`.
    pub(crate) async fn start(
        channel: Arc<lapin::Channel>,
        served: &[ServedQueue],
        prefetch: u16,
    ) -> lapin::Result<Consumers> {
        let mut consumers = Consumers {
            channel,
            tags: vec![None; served.len()],
            ended: vec![false; served.len()],
            deliveries: SelectAll::new(),
            paused: true,
            prefetch,
            largest: 0,
            adjusted_at: Instant::now(),
        };
        consumers.resume(served, prefetch).await?;
        Ok(consumers)
    }

    /// True when queue `index` has a consumer now (not paused, not cancelled).
    pub(crate) fn consumes(&self, index: usize) -> bool {
        self.tags[index].is_some()
    }

    /// True while the consumers are cancelled for the byte budget.
    pub(crate) fn paused(&self) -> bool {
        self.paused
    }

    /// The prefetch count the consumers run with now.
    pub(crate) fn prefetch(&self) -> u16 {
        self.prefetch
    }

    /// Records the size of a delivery taken off the consumers.
    pub(crate) fn saw(&mut self, bytes: usize) {
        self.largest = self.largest.max(bytes);
    }

    /// The largest body seen since the last adjustment.
    pub(crate) fn largest(&self) -> usize {
        self.largest
    }

    /// True when the last adjustment is old enough to raise the prefetch count again.
    pub(crate) fn may_raise(&self) -> bool {
        self.adjusted_at.elapsed() >= RAISE_AFTER
    }

    /// Notes that queue `index`'s consumer ended; true when the worker paused it (expected),
    /// false for a broker cancellation.
    pub(crate) fn ended(&mut self, index: usize) -> bool {
        if self.tags[index].is_none() {
            self.ended[index] = true;
            true
        } else {
            false
        }
    }

    /// True when every paused consumer's stream has ended: resuming cannot mix them up.
    pub(crate) fn drained(&self) -> bool {
        self.tags
            .iter()
            .zip(&self.ended)
            .all(|(tag, ended)| tag.is_some() || *ended)
    }

    /// Cancels every consumer except those of `auto_delete` queues (which the broker would
    /// delete with their last consumer); deliveries already sent still arrive.
    pub(crate) async fn pause(&mut self, served: &[ServedQueue]) -> lapin::Result<()> {
        for (index, queue) in served.iter().enumerate() {
            if queue.options.is_auto_delete() {
                continue;
            }
            if let Some(tag) = self.tags[index].take() {
                self.ended[index] = false;
                self.channel
                    .basic_cancel(tag, BasicCancelOptions::default())
                    .await?;
            }
        }
        self.paused = true;
        Ok(())
    }

    /// Consumes again, with `prefetch`, every queue without a consumer.
    pub(crate) async fn resume(
        &mut self,
        served: &[ServedQueue],
        prefetch: u16,
    ) -> lapin::Result<()> {
        self.channel
            .basic_qos(prefetch, BasicQosOptions { global: false })
            .await?;
        for (index, queue) in served.iter().enumerate() {
            if self.tags[index].is_some() {
                continue;
            }
            let consumer = self
                .channel
                .basic_consume(
                    queue.name.as_str().into(),
                    "".into(),
                    BasicConsumeOptions::default(),
                    FieldTable::default(),
                )
                .await?;
            self.tags[index] = Some(consumer.tag());
            self.ended[index] = false;
            let stream = consumer
                .map(Some)
                .chain(stream::once(std::future::ready(None)))
                .map(move |item| (index, item));
            self.deliveries.push(Box::pin(stream));
        }
        debug!(prefetch, "consuming");
        self.paused = false;
        self.prefetch = prefetch;
        self.largest = 0;
        self.adjusted_at = Instant::now();
        Ok(())
    }

    /// While paused, redeclares every paused queue that expires when unused (`x-expires`, as
    /// RPC queues do): a redeclaration renews its lease on RabbitMQ and the bundled broker
    /// alike, so a pause longer than the expiry does not delete the queue and the requests in
    /// it. The worker calls it every third of the shortest expiry while paused.
    pub(crate) async fn renew_leases(&mut self, served: &[ServedQueue]) -> lapin::Result<()> {
        if !self.paused {
            return Ok(());
        }
        for (index, queue) in served.iter().enumerate() {
            if self.tags[index].is_none() && queue.options.expiry().is_some() {
                self.channel
                    .queue_declare(
                        queue.name.as_str().into(),
                        queue.options.declare_options(),
                        queue.options.arguments(),
                    )
                    .await?;
            }
        }
        Ok(())
    }

    /// Cancels every consumer (graceful shutdown); errors are logged only.
    pub(crate) async fn cancel_all(&mut self) {
        for tag in self.tags.iter_mut().filter_map(Option::take) {
            if let Err(err) = self
                .channel
                .basic_cancel(tag.clone(), BasicCancelOptions::default())
                .await
            {
                debug!(consumer_tag = %tag, cause = %err, "basic.cancel failed");
            }
        }
    }
}
