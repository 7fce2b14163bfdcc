//! [`Settle`]: the seam through which task and event handlers run on the shared worker pool.
//!
//! An RPC handler turns a request body into a reply body and the worker does the rest (publish
//! the reply, `basic.ack`). Task and event handlers settle their deliveries themselves: a task
//! acks after success, republishes to a delay queue or a dead-letter queue after a failure; an
//! event handler acks or rejects. They share everything else with RPC handlers: the consumer
//! loop, `basic.qos`, the concurrency slots, graceful shutdown and reconnection. A handler that
//! carries a `Settle` gets the whole `basic.deliver` (whose `acker` settles it on the worker's
//! consuming channel) and the worker's publisher (`publisher`) for the copies it publishes; the
//! worker only declares its queue with [`Settle::queue_options`] and calls [`Settle::declare`]
//! after `queue.declare` (exchanges, bindings). Deliveries the worker will not run (too large,
//! delivered too often, no handler of that name) go to [`Settle::refuse`].

use std::sync::Arc;

use futures::future::BoxFuture;
use lapin::message::Delivery;
use tokio::sync::OwnedSemaphorePermit;

use crate::control::registry::Registry;
use crate::state::States;
use crate::task::{Completion, Observer, Outcome};
use crate::worker::limits::HandlerLimits;
use crate::worker::publisher::Publisher;
use crate::worker::QueueOptions;

/// What a self-settling handler gets besides the delivery.
#[derive(Debug)]
pub(crate) struct SettleContext {
    /// Where the handler publishes copies (retries, dead letters): the worker's confirm-mode
    /// publishing channel, on a connection of its own.
    pub(crate) publisher: Publisher,
    /// The queue the delivery came from, with the worker's queue prefix applied.
    pub(crate) queue: Arc<str>,
    /// The handler's states (its own over the worker's), for the delivery's `Context`.
    pub(crate) states: Arc<States>,
    /// The handler's limits, with the worker's defaults filled in.
    pub(crate) limits: HandlerLimits,
    /// The worker's concurrency slot of this delivery: released when the handler is done, or
    /// kept by a blocking handler's thread until that returns (see `limits::run`).
    pub(crate) slot: Option<OwnedSemaphorePermit>,
    /// The worker's control-plane registry, which counts outcomes (`None`: control off).
    pub(crate) control: Option<Arc<Registry>>,
    /// The handler's observer (see `task::observe`), told how each delivery ended (`None`: not
    /// observed).
    pub(crate) observer: Option<Observer>,
}

impl SettleContext {
    /// Tells the observer, if any, how `delivery` ended (`name`: the task or event name
    /// reported, `attempt`: 1 for an event).
    pub(crate) fn report(&self, delivery: &Delivery, name: String, attempt: u32, outcome: Outcome) {
        if let Some(observer) = &self.observer {
            observer.report(Completion::of(
                delivery,
                &self.queue,
                name,
                attempt,
                outcome,
            ));
        }
    }
}

/// Why the worker settles a delivery without running its handler.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Refusal {
    /// The handler name the message asked for (the task or event name reported).
    pub(crate) name: String,
    /// What to record (`x-lepus-error`) and log.
    pub(crate) reason: String,
}

/// A handler that acknowledges its own deliveries (task and event handlers).
pub(crate) trait Settle: Send + Sync + 'static {
    /// How the handler's queue is declared (durable task queues, exclusive broadcast queues).
    fn queue_options(&self) -> QueueOptions;

    /// True when the handler keeps failed and refused deliveries in a dead-letter queue
    /// (tasks); the worker then refuses unknown task names through it.
    fn dead_letters(&self) -> bool;

    /// Declares what the handler needs besides its queue (exchange, bindings), on the worker's
    /// channel, after `queue.declare` and before `basic.consume`.
    fn declare<'a>(
        &'a self,
        channel: &'a lapin::Channel,
        queue: &'a str,
    ) -> BoxFuture<'a, lapin::Result<()>>;

    /// Runs the handler on one delivery and settles it (ack, reject, or republish then ack).
    fn handle(&self, delivery: Delivery, context: SettleContext) -> BoxFuture<'static, ()>;

    /// Settles a delivery without running the handler: a task is dead-lettered with the
    /// reason, an event rejected.
    fn refuse(
        &self,
        delivery: Delivery,
        context: SettleContext,
        refusal: Refusal,
    ) -> BoxFuture<'static, ()>;
}
