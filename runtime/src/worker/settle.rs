//! [`Settle`]: the seam through which task and event handlers run on the shared worker pool.
//!
//! An RPC handler turns a request body into a reply body and the worker does the rest (publish
//! the reply, `basic.ack`). Task and event handlers settle their deliveries themselves: a task
//! acks after success, republishes to a delay queue or a dead-letter queue after a failure; an
//! event handler acks or rejects. They share everything else with RPC handlers: the consumer
//! loop, `basic.qos`, the concurrency slots, graceful shutdown and reconnection. A handler that
//! carries a `Settle` gets the whole `basic.deliver` and the worker's channel; the worker only
//! declares its queue with [`Settle::queue_options`], calls [`Settle::declare`] after
//! `queue.declare` (exchanges, bindings), and puts the channel in confirm mode when
//! [`Settle::needs_confirms`] says so.

use std::sync::Arc;

use futures::future::BoxFuture;
use lapin::message::Delivery;

use crate::state::States;
use crate::task::Observer;
use crate::worker::QueueOptions;

/// What a self-settling handler gets besides the delivery.
#[derive(Debug, Clone)]
pub(crate) struct SettleContext {
    /// The worker's channel of the current link generation (in confirm mode when the handler
    /// asked for it); the worker closes it on shutdown or loses it with the connection.
    pub(crate) channel: lapin::Channel,
    /// The queue the delivery came from, with the worker's queue prefix applied.
    pub(crate) queue: Arc<str>,
    /// The handler's states (its own over the worker's), for the delivery's `Context`.
    pub(crate) states: Arc<States>,
}

/// A handler that acknowledges its own deliveries (task and event handlers).
pub(crate) trait Settle: Send + Sync + 'static {
    /// How the handler's queue is declared (durable task queues, exclusive broadcast queues).
    fn queue_options(&self) -> QueueOptions;

    /// True when the handler publishes and must know the broker took the message before it
    /// acks the delivery (`confirm.select` on the worker's channel).
    fn needs_confirms(&self) -> bool;

    /// Declares what the handler needs besides its queue (exchange, bindings), on the worker's
    /// channel, after `queue.declare` and before `basic.consume`.
    fn declare<'a>(
        &'a self,
        channel: &'a lapin::Channel,
        queue: &'a str,
    ) -> BoxFuture<'a, lapin::Result<()>>;

    /// The same handler, reporting each settled delivery to `observer` (see `task::observe`).
    fn observed(&self, observer: Observer) -> Arc<dyn Settle>;

    /// Runs the handler on one delivery and settles it (ack, reject, or republish then ack).
    fn handle(&self, delivery: Delivery, context: SettleContext) -> BoxFuture<'static, ()>;
}
