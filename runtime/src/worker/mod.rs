//! [`Worker`]: a pool that consumes service queues and runs their handlers.
//!
//! Per link generation the worker opens one channel, sets `basic.qos(prefetch)` (per consumer),
//! declares each queue it serves (with its [`QueueOptions`]) and starts one consumer per queue
//! (`consumers`). It takes each delivery off its consumers as it arrives (counting its bytes,
//! `byte_budget`) and starts it once a concurrency slot (a semaphore permit) is free, in its own
//! task ([`delivery::handle`]). Replies, retry copies and bounced redeliveries are published on
//! a connection of their own (`publisher`); the channel's reply publisher ([`replies`])
//! publishes each reply, then sends the `basic.ack` (with `multiple` over runs of settled
//! requests when only RPC handlers share the channel). When the connection is lost the worker
//! waits for the next link and redeclares everything; requests it had not acked are
//! redelivered by the broker. A consumer the broker cancels (its queue was deleted) makes the
//! worker close its channel and subscribe again, redeclaring the queue, rather than go on
//! silently without it. On shutdown it cancels its consumers (`basic.cancel`), lets the running
//! handlers finish (reply + ack) within the shutdown timeout, abandons those still running then,
//! and closes the channel, which hands prefetched-but-unstarted and abandoned requests back to
//! the broker for other workers.
//!
//! # Limits
//! Each bounds what one message can do to the worker; all are set on the [`Worker`] (and the
//! per-handler ones on the [`Handler`]):
//! - nesting: bodies nesting deeper than [`MAX_DEPTH`](crate::envelope::MAX_DEPTH) (128)
//!   levels are refused before decoding, as undecodable;
//! - size: a body larger than the handler's maximum message size (default
//!   [`DEFAULT_MAX_MESSAGE_SIZE`], 64 MiB) is refused before decoding; the bodies a worker holds
//!   are bounded by [`Worker::prefetch_bytes`] (default [`DEFAULT_PREFETCH_BYTES`], 128 MiB);
//! - time: a handler is stopped at its time limit, and an RPC handler at its caller's deadline
//!   (`limits` says what can and cannot be stopped);
//! - deliveries: a message delivered [`DEFAULT_DELIVERY_LIMIT`] (10) times without being
//!   settled is not run again (`redelivery`);
//! - shutdown: `run_until` returns within [`DEFAULT_SHUTDOWN_TIMEOUT`] (25 s) of the signal.

mod byte_budget;
mod consumers;
mod delivery;
pub(crate) mod handler;
pub(crate) mod limits;
mod publisher;
mod queue_options;
pub(crate) mod redelivery;
mod replies;
pub(crate) mod settle;

use std::collections::{BTreeMap, VecDeque};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::stream::StreamExt;
use lapin::message::Delivery;
use tokio::sync::{mpsc, Semaphore};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tracing::{debug, info, warn};

pub use handler::Handler;
pub use queue_options::QueueOptions;
pub use redelivery::{
    DEFAULT_DELIVERY_LIMIT, HEADER_DELIVERY_COUNT, HEADER_EXCHANGE, HEADER_ROUTING_KEY,
};

use crate::backoff::Backoff;
use crate::connection::{Connection, Link};
use crate::error::{Error, Result};
use byte_budget::{ByteBudget, Held};
use consumers::{Consumers, Served};
use delivery::{Routes, Session};
use limits::HandlerLimits;
use publisher::WorkerPublisher;
pub(crate) use replies::RETRY_PAUSE;

/// The default number of handlers a worker runs at once.
pub const DEFAULT_CONCURRENCY: usize = 16;

/// The default largest message body a handler accepts (64 MiB).
pub const DEFAULT_MAX_MESSAGE_SIZE: usize = 64 << 20;

/// The default bound on the message bytes a worker holds (128 MiB).
pub const DEFAULT_PREFETCH_BYTES: usize = 128 << 20;

/// The default time `run_until` takes at most to shut down after its signal (25 s: inside
/// Kubernetes' default grace period of 30 s).
pub const DEFAULT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(25);

/// How often a worker whose prefetch count the byte budget lowered checks whether to raise it.
const RAISE_CHECK: Duration = Duration::from_secs(5);

/// A worker pool: serves handlers on their queues with bounded concurrency.
#[derive(Debug)]
pub struct Worker {
    conn: Connection,
    prefetch: Option<u16>,
    concurrency: usize,
    queue_prefix: String,
    queues: BTreeMap<String, QueueSpec>,
    /// Limits for handlers that set none of their own.
    defaults: HandlerLimits,
    prefetch_bytes: usize,
    delivery_limit: u32,
    shutdown_timeout: Duration,
    separate_publisher: bool,
}

#[derive(Debug, Default)]
struct QueueSpec {
    options: QueueOptions,
    routes: Routes,
}

/// Why the consuming loop of one link generation ended.
enum Stop {
    /// The shutdown signal came.
    Shutdown,
    /// The channel or a consumer failed: open everything again.
    Rebuild,
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
            defaults: HandlerLimits {
                time_limit: None,
                blocking: false,
                max_message_size: Some(DEFAULT_MAX_MESSAGE_SIZE),
            },
            prefetch_bytes: DEFAULT_PREFETCH_BYTES,
            delivery_limit: DEFAULT_DELIVERY_LIMIT,
            shutdown_timeout: DEFAULT_SHUTDOWN_TIMEOUT,
            separate_publisher: true,
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

    /// The time limit of every handler that has none of its own (default: none; an RPC
    /// handler is still stopped at its caller's deadline). See [`Handler::time_limit`].
    pub fn time_limit(mut self, limit: Duration) -> Self {
        self.defaults.time_limit = Some(limit);
        self
    }

    /// The largest message body a handler accepts unless it sets its own (default
    /// [`DEFAULT_MAX_MESSAGE_SIZE`], 64 MiB). See [`Handler::max_message_size`].
    pub fn max_message_size(mut self, bytes: usize) -> Self {
        self.defaults.max_message_size = Some(bytes);
        self
    }

    /// Bounds the message bytes this worker holds, running or waiting for a slot (default
    /// [`DEFAULT_PREFETCH_BYTES`], 128 MiB): past it the worker stops consuming until its
    /// handlers bring the bytes under half of it, then consumes with a prefetch count sized for
    /// the largest message it saw (see the module `byte_budget`). Queues declared
    /// `auto_delete` are never paused.
    pub fn prefetch_bytes(mut self, bytes: usize) -> Self {
        self.prefetch_bytes = bytes.max(1);
        self
    }

    /// How many times a message may be delivered without being settled (its worker crashed,
    /// hung past the shutdown timeout, or lost its connection while holding it) before it is
    /// given up on (default [`DEFAULT_DELIVERY_LIMIT`], 10): a task is dead-lettered, an RPC
    /// request answered with [`FailureKind::DeliveryLimit`](crate::FailureKind::DeliveryLimit),
    /// an event rejected. Every message a dying worker holds counts one delivery, started or
    /// not (see the module `redelivery`).
    pub fn delivery_limit(mut self, limit: u32) -> Self {
        self.delivery_limit = limit.max(1);
        self
    }

    /// How long `run_until` may take to shut down after its signal (default
    /// [`DEFAULT_SHUTDOWN_TIMEOUT`], 25 s). Handlers still running when three quarters of it
    /// (at most all but 2 s) have passed are abandoned: dropped at their next await point,
    /// their requests left unacked, so the broker delivers them again (counting a delivery).
    /// A handler that blocks its thread cannot be dropped; the worker returns without it.
    pub fn shutdown_timeout(mut self, timeout: Duration) -> Self {
        self.shutdown_timeout = timeout;
        self
    }

    /// Publish replies and copies on the connection the worker consumes from, rather than on
    /// a second connection of its own (the default). A broker that blocks a publishing
    /// connection (`connection.blocked`, memory alarm) then stalls this worker's acks too.
    pub fn separate_publisher(mut self, separate: bool) -> Self {
        self.separate_publisher = separate;
        self
    }

    /// Serves `handler` (e.g. `fib::handler()`) on its queue. Several handlers may share a
    /// queue; requests are routed by method name.
    pub fn serve(mut self, handler: Handler) -> Self {
        let spec = self.queues.entry(handler.queue().to_owned()).or_default();
        if let Some(settle) = handler.settle() {
            // Task and event queues are declared the way their handler needs.
            spec.options = settle.queue_options();
        }
        spec.routes
            .by_method
            .insert(handler.method().as_bytes().to_vec(), handler);
        self
    }

    /// Declares `queue` with `options` (durable, quorum, priorities, TTL...).
    pub fn queue_options(mut self, queue: impl Into<String>, options: QueueOptions) -> Self {
        self.queues.entry(queue.into()).or_default().options = options;
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
    /// gracefully, within the shutdown timeout: no request that was started and finished in
    /// time is lost, none that was not is kept.
    pub async fn run_until<F: Future>(self, shutdown: F) -> Result<()> {
        let served: Vec<Served> = self
            .queues
            .into_iter()
            .filter(|(_, spec)| !spec.routes.by_method.is_empty())
            .map(|(name, spec)| {
                let name = format!("{}{}", self.queue_prefix, name);
                let mut routes = spec.routes;
                routes.queue = Arc::from(name.as_str());
                Served {
                    name,
                    options: spec.options,
                    routes: Arc::new(routes),
                }
            })
            .collect();
        if served.is_empty() {
            return Err(Error::Config("the worker serves no handler".into()));
        }
        // Acks may use `multiple` when every delivery is settled by the reply publisher, i.e.
        // no task or event handler (which settle their own) shares the worker's channel.
        let multiple_acks = served.iter().all(|queue| {
            queue
                .routes
                .by_method
                .values()
                .all(|handler| handler.settle().is_none())
        });
        let concurrency = self.concurrency;
        let prefetch = self
            .prefetch
            .unwrap_or_else(|| u16::try_from(concurrency).unwrap_or(u16::MAX));
        let config = LoopConfig {
            prefetch,
            prefetch_bytes: self.prefetch_bytes,
            multiple_acks,
            defaults: self.defaults,
            delivery_limit: self.delivery_limit,
            shutdown_timeout: self.shutdown_timeout,
        };
        // Replies and copies go out here; closed when the worker stops (dropping it closes its
        // sibling connection too).
        let publisher = Arc::new(WorkerPublisher::new(
            self.conn.clone(),
            self.separate_publisher,
        ));
        // One permit per running handler; held by the handler's task (or a blocking
        // handler's thread), returned when it ends.
        let slots = Arc::new(Semaphore::new(concurrency));
        // Every handler task: owned here, so that shutdown can wait for them and dropping the
        // worker's future (a crash, as tests simulate it) aborts them.
        let mut running: JoinSet<()> = JoinSet::new();
        // The bytes of the deliveries taken and not settled; each handler task holds its part.
        let budget = Arc::new(ByteBudget::default());
        let backoff = Backoff::default();
        let shutdown = shutdown;
        tokio::pin!(shutdown);

        let mut after = 0;
        let mut attempt = 0u32;
        loop {
            let link = tokio::select! {
                link = self.conn.link_after(after) => link?,
                _ = &mut shutdown => {
                    publisher.close(Instant::now() + self.shutdown_timeout).await;
                    return Ok(());
                }
            };
            let opened = match open(&link, &served, prefetch).await {
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
                        _ = &mut shutdown => {
                            publisher.close(Instant::now() + self.shutdown_timeout).await;
                            return Ok(());
                        }
                    }
                }
            };
            info!(
                generation = link.generation,
                queues = served.len(),
                prefetch,
                concurrency,
                "worker consuming"
            );
            let (channel, consumers) = opened;
            let stop = consume(
                &config,
                &served,
                &channel,
                consumers,
                &publisher,
                &slots,
                &mut running,
                &budget,
                &mut shutdown,
            )
            .await;
            if let Some(generation) = stop {
                shut_down(&config, &channel, &publisher, &mut running, generation).await;
                return Ok(());
            }
            // Rebuilding: a channel still open (one consumer was cancelled) is closed first,
            // so the requests it holds go back to the queue instead of waiting on it. The reply
            // publisher drains what the running handlers still hand it (on a dead channel its
            // acks fail at once) and ends with the last of them.
            if channel.status().connected() {
                let _ = channel.close(200, "worker resubscribing".into()).await;
            }
            after = retry_after(&link);
        }
    }
}

/// The generation to wait past: the same one again if only the channel died.
fn retry_after(link: &Link) -> u64 {
    if link.conn.status().connected() {
        link.generation - 1
    } else {
        link.generation
    }
}

/// Opens the worker's channel: queue declarations, then `basic.qos` and one consumer per queue.
async fn open(
    link: &Link,
    served: &[Served],
    prefetch: u16,
) -> std::result::Result<(Arc<lapin::Channel>, Consumers), lapin::Error> {
    let channel = link.conn.create_channel().await?;
    for queue in served {
        channel
            .queue_declare(
                queue.name.as_str().into(),
                queue.options.declare_options(),
                queue.options.arguments(),
            )
            .await?;
        for settle in queue.routes.by_method.values().filter_map(Handler::settle) {
            settle.declare(&channel, &queue.name).await?;
        }
    }
    // Shared with every handler task of this generation (cloning a `lapin::Channel` copies a
    // dozen `Arc`s).
    let channel = Arc::new(channel);
    let consumers = Consumers::start(channel.clone(), served, prefetch).await?;
    Ok((channel, consumers))
}

/// The worker's settings the consuming loop needs.
struct LoopConfig {
    prefetch: u16,
    prefetch_bytes: usize,
    multiple_acks: bool,
    defaults: HandlerLimits,
    delivery_limit: u32,
    shutdown_timeout: Duration,
}

/// What a shutdown takes over from the consuming loop.
struct Generation {
    consumers: Consumers,
    /// The loop's handle on the session; the reply publisher ends once this and every handler
    /// task's are dropped.
    session: Arc<Session>,
    replier: tokio::task::JoinHandle<()>,
}

/// Consumes one link generation until the shutdown signal (returns what shutting down needs) or
/// a failure of the channel or a consumer (`None`: rebuild).
#[allow(clippy::too_many_arguments)] // the loop's state, owned by `run_until`
async fn consume<F: Future>(
    config: &LoopConfig,
    served: &[Served],
    channel: &Arc<lapin::Channel>,
    mut consumers: Consumers,
    publisher: &Arc<WorkerPublisher>,
    slots: &Arc<Semaphore>,
    running: &mut JoinSet<()>,
    budget: &Arc<ByteBudget>,
    shutdown: &mut std::pin::Pin<&mut F>,
) -> Option<Generation> {
    // The reply publisher of this channel; it ends once every handle on the session is gone,
    // after settling what it was handed (see `replies`).
    let (settled, settled_rx) = mpsc::unbounded_channel();
    let replier = tokio::spawn(replies::run(
        channel.clone(),
        publisher.clone(),
        settled_rx,
        config.multiple_acks,
    ));
    let session = Arc::new(Session {
        settled,
        publisher: publisher.clone(),
        defaults: config.defaults,
        delivery_limit: config.delivery_limit,
    });
    // Deliveries taken off the consumers, waiting for a concurrency slot (at most the prefetch
    // count per consumer: the broker sends no more).
    let mut backlog: VecDeque<(usize, Delivery, Held)> = VecDeque::new();
    let mut raise_check = tokio::time::interval(RAISE_CHECK);
    raise_check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    budget.set_paused(false);
    let stop = loop {
        // Finished handler tasks; `try_join_next` registers no waker, so finishing handlers
        // never wake this loop.
        while let Some(done) = running.try_join_next() {
            if let Err(err) = done {
                warn!(cause = %err, "handler task failed");
            }
        }
        // Start what waits, while slots are free.
        while !backlog.is_empty() {
            let Ok(permit) = slots.clone().try_acquire_owned() else {
                break;
            };
            if let Some((index, delivery, held)) = backlog.pop_front() {
                let routes = served[index].routes.clone();
                running.spawn(delivery::handle(
                    delivery,
                    routes,
                    session.clone(),
                    permit,
                    held,
                ));
            }
        }
        if let Err(err) = budget_step(config, served, &mut consumers, budget).await {
            warn!(cause = %err, "pausing or resuming the consumers failed");
            break Stop::Rebuild;
        }
        let consuming = !consumers.deliveries.is_empty();
        tokio::select! {
            biased;
            _ = shutdown.as_mut() => break Stop::Shutdown,
            permit = slots.clone().acquire_owned(), if !backlog.is_empty() => {
                if let (Ok(permit), Some((index, delivery, held))) = (permit, backlog.pop_front()) {
                    let routes = served[index].routes.clone();
                    running.spawn(delivery::handle(delivery, routes, session.clone(), permit, held));
                }
            }
            next = consumers.deliveries.next(), if consuming => match next {
                Some((index, Some(Ok(delivery)))) => {
                    consumers.saw(delivery.data.len());
                    let held = budget.hold(delivery.data.len());
                    backlog.push_back((index, delivery, held));
                }
                Some((_, Some(Err(err)))) => {
                    warn!(cause = %err, "consumer failed");
                    break Stop::Rebuild;
                }
                Some((index, None)) if !consumers.ended(index) => {
                    warn!(
                        queue = %served[index].name,
                        "consumer ended (cancelled by the broker?); resubscribing"
                    );
                    break Stop::Rebuild;
                }
                Some((_, None)) => {} // paused by the byte budget
                None => {}
            },
            _ = budget.released(), if consumers.paused() => {}
            _ = raise_check.tick(), if consumers.prefetch() < config.prefetch => {}
        }
    };
    budget.set_paused(false);
    // Deliveries that never started go back to the queue when the channel closes.
    drop(backlog);
    match stop {
        Stop::Shutdown => Some(Generation {
            consumers,
            session,
            replier,
        }),
        Stop::Rebuild => None,
    }
}

/// Pauses the consumers when the bytes held reach the budget, resumes them once the handlers
/// brought it under half (with a prefetch count for the largest message seen), and raises a
/// lowered prefetch count again once messages are small (see `byte_budget`).
async fn budget_step(
    config: &LoopConfig,
    served: &[Served],
    consumers: &mut Consumers,
    budget: &ByteBudget,
) -> lapin::Result<()> {
    let held = budget.held();
    if !consumers.paused() {
        // Messages seen since the count was lowered are small enough for a higher one.
        let raise = consumers.prefetch() < config.prefetch
            && consumers.may_raise()
            && consumers.largest() > 0
            && held < config.prefetch_bytes / 2
            && byte_budget::prefetch_for(
                config.prefetch_bytes,
                consumers.largest(),
                config.prefetch,
            ) > consumers.prefetch();
        if held >= config.prefetch_bytes || raise {
            debug!(
                held,
                budget = config.prefetch_bytes,
                raise,
                "pausing the consumers"
            );
            budget.set_paused(true);
            consumers.pause(served).await?;
        }
    } else if consumers.drained() && held <= config.prefetch_bytes / 2 {
        let prefetch =
            byte_budget::prefetch_for(config.prefetch_bytes, consumers.largest(), config.prefetch);
        budget.set_paused(false);
        consumers.resume(served, prefetch).await?;
    }
    Ok(())
}

/// Graceful shutdown within `config.shutdown_timeout`: cancel the consumers, let the running
/// handlers finish until a quarter of the time (at most 2 s) is left, abandon the rest, let the
/// reply publisher settle what finished, close the channel and the publisher.
async fn shut_down(
    config: &LoopConfig,
    channel: &lapin::Channel,
    publisher: &WorkerPublisher,
    running: &mut JoinSet<()>,
    generation: Generation,
) {
    let deadline = Instant::now() + config.shutdown_timeout;
    let reserve = (config.shutdown_timeout / 4).min(Duration::from_secs(2));
    let Generation {
        mut consumers,
        session,
        mut replier,
    } = generation;
    info!(in_flight = running.len(), "worker shutting down");
    let _ = tokio::time::timeout_at(deadline - reserve, consumers.cancel_all()).await;
    let drained = tokio::time::timeout_at(deadline - reserve, async {
        while let Some(done) = running.join_next().await {
            if let Err(err) = done {
                warn!(cause = %err, "handler task failed");
            }
        }
    })
    .await;
    if drained.is_err() {
        warn!(
            abandoned = running.len(),
            timeout = ?config.shutdown_timeout,
            "handlers still running at the shutdown timeout; abandoned (their messages will be delivered again)"
        );
        running.abort_all();
        // Aborted tasks end at their next await point; one blocking its thread does not.
        let _ = tokio::time::timeout_at(deadline - reserve / 2, async {
            while running.join_next().await.is_some() {}
        })
        .await;
    }
    // The reply publisher ends once it settled everything the handlers handed it.
    drop(session);
    if tokio::time::timeout_at(deadline - reserve / 2, &mut replier)
        .await
        .is_err()
    {
        warn!(
            "replies still unsent at the shutdown timeout; their requests will be delivered again"
        );
        replier.abort();
    }
    drop(consumers);
    if channel.status().connected() {
        let _ =
            tokio::time::timeout_at(deadline, channel.close(200, "worker shut down".into())).await;
    }
    publisher.close(deadline).await;
    info!("worker stopped");
}
