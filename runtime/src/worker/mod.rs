//! [`Worker`]: a pool that consumes service queues and runs their handlers.
//!
//! Per link generation the worker opens one channel, sets `basic.qos(prefetch)` (per consumer),
//! declares each queue it serves (with its [`QueueOptions`]; [`QueueOptions::rpc`] for an RPC
//! queue without options), binds each RPC queue to `lepus.rpc` (where callers publish, see
//! `envelope`) and starts one consumer per queue.
//! A request is taken from the consumers only once a concurrency slot (a semaphore permit) is
//! free, and runs in its own task ([`delivery::handle`]); the channel's reply publisher
//! ([`replies`]) publishes its reply, then sends the `basic.ack` (with `multiple` over runs of
//! settled requests when only RPC handlers share the channel). When the
//! connection is lost the worker waits for the next link and redeclares everything; requests it
//! had not acked are redelivered by the broker. A consumer the broker cancels (its queue was
//! deleted) makes the worker close its channel and subscribe again, redeclaring the queue,
//! rather than go on silently without it. On shutdown it cancels its consumers
//! (`basic.cancel`), hands the requests the broker had pushed but no handler started back to
//! their queue for the other workers (`basic.nack` with requeue), lets the running handlers
//! finish (reply + ack), and closes the channel. An RPC queue this worker was the last to
//! consume is deleted instead, its unstarted requests answered "not run": calls from then on
//! fail at once with `NoRoute` rather than wait for a worker that is gone (the rule is in the
//! README, "Nobody serving: fail fast"). Handlers run scoped with what the worker serves
//! (`served`), so that their calls to the worker's own methods run in place.

mod delivery;
mod handle;
pub(crate) mod handler;
mod queue_options;
mod replies;
pub(crate) mod served;
pub(crate) mod settle;

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::stream::{self, StreamExt};
use lapin::options::{
    BasicCancelOptions, BasicConsumeOptions, BasicQosOptions, ConfirmSelectOptions,
    QueueBindOptions, QueueDeleteOptions,
};
use lapin::types::FieldTable;
use tokio::sync::{mpsc, Semaphore};
use tokio::task::JoinSet;
use tracing::{debug, info, warn};

pub use handle::WorkerHandle;
pub use handler::{Handler, IntoHandlers};
pub use queue_options::{QueueOptions, RPC_QUEUE_EXPIRES};

use crate::backoff::Backoff;
use crate::client::declare_exchanges;
use crate::connection::{Connection, Link};
use crate::envelope::RPC_EXCHANGE;
use crate::error::{Error, Result};
use crate::state::States;
use delivery::Routes;

/// The default number of handlers a worker runs at once.
pub const DEFAULT_CONCURRENCY: usize = 16;

/// A worker pool: serves handlers on their queues with bounded concurrency.
#[derive(Debug)]
pub struct Worker {
    conn: Connection,
    prefetch: Option<u16>,
    concurrency: usize,
    queue_prefix: String,
    queues: BTreeMap<String, QueueSpec>,
    /// The states every handler of this worker may take (`State<T>`), under each handler's own.
    states: States,
    /// Set by `spawn`: counts the generations on which the worker consumes (the receiver is
    /// the `WorkerHandle`'s).
    consuming: Option<tokio::sync::watch::Sender<u64>>,
}

#[derive(Debug, Default)]
struct QueueSpec {
    /// `None`: not set, [`QueueOptions::rpc`] for an RPC queue.
    options: Option<QueueOptions>,
    routes: Routes,
}

/// One consumer of the current session.
struct Consumed {
    consumer: lapin::Consumer,
    routes: Arc<Routes>,
}

impl Worker {
    /// A worker on `conn` serving nothing yet.
    pub fn new(conn: &Connection) -> Self {
        Worker {
            conn: conn.clone(),
            prefetch: None,
            concurrency: DEFAULT_CONCURRENCY,
            queue_prefix: String::new(),
            queues: BTreeMap::new(),
            states: States::default(),
            consuming: None,
        }
    }

    /// How many unacknowledged requests the broker may push to each consumer of this worker
    /// (`basic.qos` prefetch-count; 1 gives the fairest dispatch). Default: the concurrency.
    pub fn prefetch(mut self, prefetch: u16) -> Self {
        self.prefetch = Some(prefetch.max(1));
        self
    }

    /// How many handlers may run at once (default 16).
    pub fn concurrency(mut self, concurrency: usize) -> Self {
        self.concurrency = concurrency.clamp(1, Semaphore::MAX_PERMITS);
        self
    }

    /// Serves `handlers` on their queues: one handler (`fib::handler()`), or every method of a
    /// service (`AccountsServer::new(implementation)`). Several handlers may share a queue;
    /// requests are routed by method name.
    pub fn serve(mut self, handlers: impl IntoHandlers) -> Self {
        for handler in handlers.into_handlers() {
            let spec = self.queues.entry(handler.queue().to_owned()).or_default();
            if let Some(settle) = handler.settle() {
                // Task and event queues are declared the way their handler needs.
                spec.options = Some(settle.queue_options());
            }
            spec.routes
                .by_method
                .insert(handler.method().as_bytes().to_vec(), handler);
        }
        self
    }

    /// Gives every handler of this worker a state for its `State<T>` parameters (a database
    /// pool, a config, a client of another service), as axum's `Router::with_state` does. One
    /// value per type (a later one replaces it); a handler's own
    /// ([`Handler::state`]) wins. Each request gets a clone of `T`: hold what must be shared
    /// in an `Arc`. [`Worker::run_until`] fails with [`Error::Config`] before consuming if a
    /// handler takes a state nobody gave.
    pub fn state<T: Clone + Send + Sync + 'static>(mut self, value: T) -> Self {
        self.states.insert(value);
        self
    }

    /// Declares `queue` with `options` (durable, quorum, priorities, TTL...). An RPC queue
    /// without options set is declared with [`QueueOptions::rpc`].
    pub fn queue_options(mut self, queue: impl Into<String>, options: QueueOptions) -> Self {
        self.queues.entry(queue.into()).or_default().options = Some(options);
        self
    }

    /// Prepends `prefix` to every queue this worker serves (see
    /// [`ClientBuilder::queue_prefix`](crate::ClientBuilder::queue_prefix)).
    pub fn queue_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.queue_prefix = prefix.into();
        self
    }

    /// Serves until the connection is closed.
    pub async fn run(self) -> Result<()> {
        self.run_until(std::future::pending::<()>()).await
    }

    /// Serves until `shutdown` completes (e.g. `tokio::signal::ctrl_c()`), then shuts down
    /// gracefully: no request that was started is lost, none that was not is kept.
    pub async fn run_until<F: Future>(mut self, shutdown: F) -> Result<()> {
        // Each handler gets the worker's states under its own; a missing one stops us here.
        for spec in self.queues.values_mut() {
            for handler in spec.routes.by_method.values_mut() {
                handler.resolve(&self.states)?;
            }
        }
        let queues: Vec<(String, QueueOptions, Arc<Routes>)> = self
            .queues
            .into_iter()
            .filter(|(_, spec)| !spec.routes.by_method.is_empty())
            .map(|(name, spec)| {
                let name = format!("{}{}", self.queue_prefix, name);
                let mut routes = spec.routes;
                routes.queue = Arc::from(name.as_str());
                let options = spec.options.unwrap_or_else(QueueOptions::rpc);
                (name, options, Arc::new(routes))
            })
            .collect();
        if queues.is_empty() {
            return Err(Error::Config("the worker serves no handler".into()));
        }
        // Acks may use `multiple` when every delivery is settled by the reply publisher, i.e.
        // no task or event handler (which settle their own) shares the worker's channel.
        let multiple_acks = queues.iter().all(|(_, _, routes)| {
            routes
                .by_method
                .values()
                .all(|handler| handler.settle().is_none())
        });
        let concurrency = self.concurrency;
        let prefetch = self
            .prefetch
            .unwrap_or_else(|| u16::try_from(concurrency).unwrap_or(u16::MAX));
        // What this worker serves, for calls its handlers make to it (see `served`); shared by
        // every handler task.
        let served = Arc::new(served::Served::new(
            self.conn.clone(),
            queues.iter().map(|(name, _, routes)| (name, routes)),
        ));
        // One permit per running handler; held by the handler's task, returned when it ends.
        let slots = Arc::new(Semaphore::new(concurrency));
        // Every handler task: owned here, so that shutdown can wait for them and dropping the
        // worker's future (a crash, as tests simulate it) aborts them.
        let mut running: JoinSet<()> = JoinSet::new();
        let backoff = Backoff::default();
        let shutdown = shutdown;
        tokio::pin!(shutdown);

        let mut after = 0;
        let mut attempt = 0u32;
        loop {
            let link = tokio::select! {
                link = self.conn.link_after(after) => link?,
                _ = &mut shutdown => return Ok(()),
            };
            let (channel, consumed) = match open(&link, prefetch, &queues).await {
                Ok(opened) => {
                    attempt = 0;
                    opened
                }
                Err(err) => {
                    let delay = backoff.delay(attempt);
                    attempt = attempt.saturating_add(1);
                    warn!(generation = link.generation, cause = %err, ?delay, "worker setup failed");
                    after = retry_after(&link);
                    tokio::select! {
                        _ = tokio::time::sleep(delay) => continue,
                        _ = &mut shutdown => return Ok(()),
                    }
                }
            };
            info!(
                generation = link.generation,
                queues = queues.len(),
                prefetch,
                concurrency,
                "worker consuming"
            );
            if let Some(consuming) = &self.consuming {
                consuming.send_modify(|n| *n += 1);
            }
            // Shared with every handler task of this generation (see `delivery::handle`).
            let channel = Arc::new(channel);
            // The reply publisher of this channel; it ends once this sender and every handler
            // task's clone are gone, after acking what it was handed (see `replies`).
            let (settled, settled_rx) = mpsc::unbounded_channel();
            let replier = tokio::spawn(replies::run(channel.clone(), settled_rx, multiple_acks));
            let tags: Vec<_> = consumed.iter().map(|c| c.consumer.tag()).collect();
            // Each consumer's stream ends with a `None` marker, so that one consumer cancelled
            // by the broker (its queue was deleted) is noticed, not silently dropped.
            let mut deliveries = stream::select_all(consumed.into_iter().map(|c| {
                let routes = c.routes;
                c.consumer
                    .map(Some)
                    .chain(stream::once(std::future::ready(None)))
                    .map(move |d| (routes.clone(), d))
            }));

            let shutting_down = loop {
                // Finished handler tasks; `try_join_next` registers no waker, so finishing
                // handlers never wake this loop.
                while let Some(done) = running.try_join_next() {
                    if let Err(err) = done {
                        warn!(cause = %err, "handler task failed");
                    }
                }
                let permit = tokio::select! {
                    biased;
                    _ = &mut shutdown => break true,
                    permit = slots.clone().acquire_owned() => match permit {
                        Ok(permit) => permit,
                        Err(_) => break true, // never closed; treat as shutdown
                    },
                };
                let next = tokio::select! {
                    biased;
                    _ = &mut shutdown => break true,
                    next = deliveries.next() => next,
                };
                match next {
                    Some((routes, Some(Ok(delivery)))) => {
                        // Scoped with what this worker serves: see `served`.
                        running.spawn(served::SERVED.scope(
                            served.clone(),
                            delivery::handle(
                                delivery,
                                routes,
                                channel.clone(),
                                settled.clone(),
                                permit,
                            ),
                        ));
                    }
                    Some((_, Some(Err(err)))) => {
                        warn!(generation = link.generation, cause = %err, "consumer failed");
                        break false;
                    }
                    Some((routes, None)) => {
                        warn!(
                            generation = link.generation,
                            queue = %routes.queue,
                            "consumer ended (cancelled by the broker?); resubscribing"
                        );
                        break false;
                    }
                    None => break false,
                }
            };

            if shutting_down {
                info!(in_flight = running.len(), "worker shutting down");
                // The RPC queues nobody else serves: deleted below, so that calls made from now
                // on fail at once with `NoRoute` instead of waiting for a worker that is gone.
                let alone = rpc_queues_served_alone(&link, &queues).await;
                for tag in tags {
                    if let Err(err) = channel
                        .basic_cancel(tag.clone(), BasicCancelOptions::default())
                        .await
                    {
                        debug!(consumer_tag = %tag, cause = %err, "basic.cancel failed");
                    }
                }
                // Requests the broker pushed (prefetch) that no handler started: handed back
                // for the other workers, or, where none is left, answered "not run".
                for (routes, delivery) in unstarted(&mut deliveries).await {
                    let alone_here = alone.iter().any(|q| **q == *routes.queue);
                    delivery::settle_unstarted(delivery, &routes, &channel, &settled, alone_here)
                        .await;
                }
                delete_queues(&link, &alone).await;
                while let Some(done) = running.join_next().await {
                    if let Err(err) = done {
                        warn!(cause = %err, "handler task failed");
                    }
                }
                // The reply publisher ends once it published and acked everything the handlers
                // handed it.
                drop(settled);
                if let Err(err) = replier.await {
                    warn!(cause = %err, "reply publisher failed");
                }
                drop(deliveries);
                if channel.status().connected() {
                    let _ = channel.close(200, "worker shut down".into()).await;
                }
                info!("worker stopped");
                return Ok(());
            }
            // Rebuilding: a channel still open (one consumer was cancelled) is closed first,
            // so the requests it holds go back to the queue instead of waiting on it. The reply
            // publisher drains what the running handlers still hand it (on a dead channel its
            // publishes fail at once) and ends with the last of them.
            drop(settled);
            drop(deliveries);
            if channel.status().connected() {
                let _ = channel.close(200, "worker resubscribing".into()).await;
            }
            after = retry_after(&link);
        }
    }
}

/// How long a shutting-down worker waits for the consumers it cancelled to hand over the
/// deliveries the broker had already pushed.
const UNSTARTED_DRAIN: Duration = Duration::from_secs(2);

/// The RPC-only queues of `queues` that this worker is the only consumer of (a redeclaration
/// with the same options reports the consumer count; on a side channel, so that a refusal
/// cannot close the worker's). Queues shared with task or event handlers are never deleted.
async fn rpc_queues_served_alone(
    link: &Link,
    queues: &[(String, QueueOptions, Arc<Routes>)],
) -> Vec<String> {
    let mut alone = Vec::new();
    let candidates: Vec<_> = queues
        .iter()
        .filter(|(_, _, routes)| routes.rpc_only())
        .collect();
    if candidates.is_empty() {
        return alone;
    }
    let Ok(side) = link.conn.create_channel().await else {
        return alone;
    };
    for (queue, options, _) in candidates {
        match side
            .queue_declare(
                queue.as_str().into(),
                options.declare_options(),
                options.arguments(),
            )
            .await
        {
            Ok(declared) if declared.consumer_count() <= 1 => alone.push(queue.clone()),
            Ok(_) => {}
            Err(err) => {
                debug!(queue = %queue, cause = %err, "cannot count the consumers of a queue");
                break;
            }
        }
    }
    if side.status().connected() {
        let _ = side.close(200, "counted".into()).await;
    }
    alone
}

/// Deletes the RPC queues this worker served alone, once it stopped consuming them.
async fn delete_queues(link: &Link, queues: &[String]) {
    if queues.is_empty() {
        return;
    }
    let Ok(side) = link.conn.create_channel().await else {
        return;
    };
    // `if_unused`: a worker that started consuming since we counted keeps its queue (the broker
    // refuses with 406, which closes only this side channel).
    let unused = QueueDeleteOptions {
        if_unused: true,
        ..QueueDeleteOptions::default()
    };
    for queue in queues {
        match side.queue_delete(queue.as_str().into(), unused).await {
            Ok(_) => debug!(queue = %queue, "last worker of the queue: deleted it"),
            Err(err) => {
                debug!(queue = %queue, cause = %err, "cannot delete the queue");
                break;
            }
        }
    }
    if side.status().connected() {
        let _ = side.close(200, "deleted".into()).await;
    }
}

/// The deliveries still in the cancelled consumers' buffers (never started), until every
/// consumer stream ended or [`UNSTARTED_DRAIN`] passed.
async fn unstarted<S>(deliveries: &mut S) -> Vec<(Arc<Routes>, lapin::message::Delivery)>
where
    S: futures::Stream<Item = (Arc<Routes>, Option<lapin::Result<lapin::message::Delivery>>)>
        + Unpin,
{
    let mut out = Vec::new();
    let deadline = tokio::time::Instant::now() + UNSTARTED_DRAIN;
    while let Ok(Some((routes, next))) = tokio::time::timeout_at(deadline, deliveries.next()).await
    {
        if let Some(Ok(delivery)) = next {
            out.push((routes, delivery));
        }
    }
    out
}

/// The generation to wait past: the same one again if only the channel died.
fn retry_after(link: &Link) -> u64 {
    if link.conn.status().connected() {
        link.generation - 1
    } else {
        link.generation
    }
}

/// Opens the worker's channel: qos, queue declarations, one consumer per queue.
async fn open(
    link: &Link,
    prefetch: u16,
    queues: &[(String, QueueOptions, Arc<Routes>)],
) -> std::result::Result<(lapin::Channel, Vec<Consumed>), lapin::Error> {
    let channel = link.conn.create_channel().await?;
    channel
        .basic_qos(prefetch, BasicQosOptions { global: false })
        .await?;
    // Task handlers publish retries and dead letters and ack only once the broker has them.
    let needs_confirms = queues.iter().any(|(_, _, routes)| {
        routes
            .by_method
            .values()
            .filter_map(Handler::settle)
            .any(|settle| settle.needs_confirms())
    });
    if needs_confirms {
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
    }
    if queues.iter().any(|(_, _, routes)| routes.serves_rpc()) {
        declare_exchanges(&channel).await?;
    }
    let mut consumed = Vec::with_capacity(queues.len());
    for (queue, options, routes) in queues {
        channel
            .queue_declare(
                queue.as_str().into(),
                options.declare_options(),
                options.arguments(),
            )
            .await?;
        if routes.serves_rpc() {
            // Callers publish requests to `lepus.rpc` (see `envelope`).
            channel
                .queue_bind(
                    queue.as_str().into(),
                    RPC_EXCHANGE.into(),
                    queue.as_str().into(),
                    QueueBindOptions::default(),
                    FieldTable::default(),
                )
                .await?;
        }
        for settle in routes.by_method.values().filter_map(Handler::settle) {
            settle.declare(&channel, queue).await?;
        }
        let consumer = channel
            .basic_consume(
                queue.as_str().into(),
                "".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await?;
        consumed.push(Consumed {
            consumer,
            routes: routes.clone(),
        });
    }
    // Observed handlers (tests) hear that they are served from now on.
    for routes in queues.iter().map(|(_, _, routes)| routes) {
        for observer in routes.by_method.values().filter_map(Handler::observer) {
            observer.declared();
        }
    }
    Ok((channel, consumed))
}
