//! [`Worker`]: a pool that consumes service queues and runs their handlers.
//!
//! Per link generation the worker opens one channel, sets `basic.qos(prefetch)` (per consumer),
//! declares each queue it serves (with its [`QueueOptions`]; [`QueueOptions::rpc`] for an RPC
//! queue without options), binds each RPC queue to `lepus.rpc` (where callers publish, see
//! `envelope`) and starts one consumer per queue (`consumers`). It takes each delivery off its consumers as it arrives (counting its bytes,
//! `byte_budget`) and starts it once a concurrency slot (a semaphore permit) is free, in its own
//! task ([`delivery::handle`]). Replies, retry copies and bounced redeliveries are published on
//! a connection of their own (`publisher`); the channel's reply publisher ([`replies`])
//! publishes each reply, then sends the `basic.ack` (with `multiple` over runs of settled
//! requests when only RPC handlers share the channel). When the connection is lost the worker
//! waits for the next link and redeclares everything; requests it had not acked are
//! redelivered by the broker. A consumer the broker cancels (its queue was deleted) makes the
//! worker close its channel and subscribe again, redeclaring the queue, rather than go on
//! silently without it. On shutdown it cancels its consumers (`basic.cancel`), hands the
//! requests the broker had pushed but no handler started back to their queue for the other
//! workers (`basic.nack` with requeue), lets the running handlers finish (reply + ack) within
//! the shutdown timeout, abandons those still running then, and closes the channel, which hands
//! the abandoned requests back to the broker. An RPC queue this worker was the last to consume
//! is deleted instead, its unstarted requests answered "not run": calls from then on fail at
//! once with `NoRoute` rather than wait for a worker that is gone (the rule is in the README,
//! "Nobody serving: fail fast"). Handlers run scoped with what the worker serves (`served`), so
//! that their calls to the worker's own methods run in place.
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
mod handle;
pub(crate) mod handler;
pub(crate) mod limits;
pub(crate) mod publisher;
mod queue_options;
pub(crate) mod rate_limit;
pub(crate) mod redelivery;
mod replies;
pub(crate) mod served;
pub(crate) mod settle;

use std::collections::{BTreeMap, VecDeque};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::stream::StreamExt;
use lapin::message::Delivery;
use lapin::options::{QueueBindOptions, QueueDeleteOptions};
use lapin::types::FieldTable;
use tokio::sync::{mpsc, Semaphore};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tracing::{debug, info, warn};

pub use handle::WorkerHandle;
pub use handler::{Handler, IntoHandlers};
pub use queue_options::{QueueOptions, RPC_QUEUE_EXPIRES};
pub use rate_limit::{ParseRateLimitError, RateLimit};
pub use redelivery::{
    DEFAULT_DELIVERY_LIMIT, HEADER_DELIVERY_COUNT, HEADER_EXCHANGE, HEADER_ROUTING_KEY,
};

use crate::backoff::Backoff;
use crate::client::declare_exchanges;
use crate::connection::{Connection, Link};
use crate::control::listener::Listener;
use crate::control::registry::Registry;
use crate::control::revocations;
use crate::control::HandlerInfo;
use crate::envelope::RPC_EXCHANGE;
use crate::error::{Error, Result};
use crate::state::States;
use byte_budget::{ByteBudget, Held};
use consumers::{Consumers, ServedQueue};
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
    /// The states every handler of this worker may take (`State<T>`), under each handler's own.
    states: States,
    /// Set by `spawn`: counts the generations on which the worker consumes (the receiver is
    /// the `WorkerHandle`'s).
    consuming: Option<tokio::sync::watch::Sender<u64>>,
    /// Answers the control plane (`control`); default true.
    control: bool,
}

#[derive(Debug, Default)]
struct QueueSpec {
    /// `None`: not set, [`QueueOptions::rpc`] for an RPC queue.
    options: Option<QueueOptions>,
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
            states: States::default(),
            consuming: None,
            control: true,
        }
    }

    setters! {
        /// Whether this worker listens on the control plane (default `true`): answers `ping`,
        /// `inspect`, `revoke` and `shutdown` from [`Control`](crate::control::Control) and the
        /// `lepus` tool, and reads the durable revocations before it consumes tasks. Without it the
        /// worker is invisible to operators and runs revoked tasks.
        control(on: bool) => control = on;

        /// How many unacknowledged requests the broker may push to each consumer of this worker
        /// (`basic.qos` prefetch-count; 1 gives the fairest dispatch). Default: the concurrency.
        prefetch(prefetch: u16) => prefetch = Some(prefetch.max(1));

        /// How many handlers may run at once (default 16).
        concurrency(concurrency: usize) =>
            concurrency = concurrency.clamp(1, Semaphore::MAX_PERMITS);

        /// The time limit of every handler that has none of its own (default: none; an RPC handler
        /// is still stopped at its caller's deadline). See [`Handler::time_limit`].
        time_limit(limit: Duration) => defaults.time_limit = Some(limit);

        /// The largest message body a handler accepts unless it sets its own (default
        /// [`DEFAULT_MAX_MESSAGE_SIZE`], 64 MiB). See [`Handler::max_message_size`].
        max_message_size(bytes: usize) => defaults.max_message_size = Some(bytes);

        /// Bounds the message bytes this worker holds, running or waiting for a slot (default
        /// [`DEFAULT_PREFETCH_BYTES`], 128 MiB): past it the worker stops consuming until its
        /// handlers bring the bytes under half of it, then consumes with a prefetch count sized for
        /// the largest message it saw (see the module `byte_budget`). Queues declared `auto_delete`
        /// are never paused.
        prefetch_bytes(bytes: usize) => prefetch_bytes = bytes.max(1);

        /// How many times a message may be delivered without being settled (its worker crashed,
        /// hung past the shutdown timeout, or lost its connection while holding it) before it is
        /// given up on (default [`DEFAULT_DELIVERY_LIMIT`], 10): a task is dead-lettered, an RPC
        /// request answered with [`FailureKind::DeliveryLimit`](crate::FailureKind::DeliveryLimit),
        /// an event rejected. Every message a dying worker holds counts one delivery, started or
        /// not (see the module `redelivery`).
        delivery_limit(limit: u32) => delivery_limit = limit.max(1);

        /// How long `run_until` may take to shut down after its signal (default
        /// [`DEFAULT_SHUTDOWN_TIMEOUT`], 25 s). Handlers still running when three quarters of it
        /// (at most all but 2 s) have passed are abandoned: dropped at their next await point,
        /// their requests left unacked, so the broker delivers them again (counting a delivery). A
        /// handler that blocks its thread cannot be dropped; the worker returns without it.
        shutdown_timeout(timeout: Duration) => shutdown_timeout = timeout;

        /// Publish replies and copies on the connection the worker consumes from, rather than on a
        /// second connection of its own (the default). A broker that blocks a publishing connection
        /// (`connection.blocked`, memory alarm) then stalls this worker's acks too.
        separate_publisher(separate: bool) => separate_publisher = separate;
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
    /// gracefully, within the shutdown timeout: no request that was started and finished in
    /// time is lost, none that was not is kept.
    pub async fn run_until<F: Future>(mut self, shutdown: F) -> Result<()> {
        // Each handler gets the worker's states under its own; a missing one stops us here.
        for spec in self.queues.values_mut() {
            for handler in spec.routes.by_method.values_mut() {
                handler.resolve(&self.states)?;
            }
        }
        let served: Vec<ServedQueue> = self
            .queues
            .into_iter()
            .filter(|(_, spec)| !spec.routes.by_method.is_empty())
            .map(|(name, spec)| {
                let name = format!("{}{}", self.queue_prefix, name);
                let mut routes = spec.routes;
                routes.queue = Arc::from(name.as_str());
                ServedQueue {
                    name,
                    options: spec.options.unwrap_or_else(QueueOptions::rpc),
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
        // The control plane: this worker's registry, and its listener (stopped, and waited
        // for, when the worker shuts down; stopped without waiting when this function returns
        // otherwise or its future is dropped).
        let control = self
            .control
            .then(|| Arc::new(Registry::new(handler_infos(&served), prefetch, concurrency)));
        let listener = control
            .as_ref()
            .map(|registry| Listener::start(self.conn.clone(), registry.clone()));
        let asked = control.clone();
        let shutdown = async move {
            match asked {
                Some(registry) => {
                    tokio::select! {
                        _ = shutdown => {}
                        _ = registry.shutdown_requested() => {}
                    }
                }
                None => {
                    shutdown.await;
                }
            }
        };
        // What this worker serves, for calls its handlers make to it (see `served`); shared by
        // every handler task.
        let here = Arc::new(served::Served::new(
            self.conn.clone(),
            served.iter().map(|queue| (&queue.name, &queue.routes)),
        ));
        let config = LoopConfig {
            prefetch,
            prefetch_bytes: self.prefetch_bytes,
            lease_renewal: served
                .iter()
                .filter_map(|queue| queue.options.expiry())
                .min()
                .map(|expiry| (expiry / 3).max(Duration::from_millis(10))),
            multiple_acks,
            defaults: self.defaults,
            delivery_limit: self.delivery_limit,
            shutdown_timeout: self.shutdown_timeout,
            control: control.clone(),
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
                    stop_listener(listener, self.shutdown_timeout).await;
                    return Ok(());
                }
            };
            let opened = match open(&link, &served, prefetch, control.as_deref()).await {
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
                            stop_listener(listener, self.shutdown_timeout).await;
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
            if let Some(consuming) = &self.consuming {
                consuming.send_modify(|n| *n += 1);
            }
            let (channel, consumers) = opened;
            let stop = consume(
                &config,
                &served,
                &here,
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
                let shutdown = ShutDown {
                    config: &config,
                    link: &link,
                    served: &served,
                    channel: &channel,
                    publisher: &publisher,
                };
                shutdown.run(&mut running, generation).await;
                stop_listener(listener, self.shutdown_timeout).await;
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

/// The longest a shutting-down worker waits for its control listener to close its channel
/// (one round trip; a connection the broker blocks never answers).
const LISTENER_STOP: Duration = Duration::from_secs(5);

/// Stops the control listener (if any) and waits until its channel is closed, for at most
/// [`LISTENER_STOP`] or the shutdown timeout. Waiting matters: whoever owns the connection may
/// close it as soon as the worker returns, and lapin fails a connection whose `channel.close`
/// and `connection.close` cross (see [`Listener`]).
async fn stop_listener(listener: Option<Listener>, shutdown_timeout: Duration) {
    if let Some(listener) = listener {
        listener
            .stop(Instant::now() + shutdown_timeout.min(LISTENER_STOP))
            .await;
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
    served: &[ServedQueue],
    prefetch: u16,
    control: Option<&Registry>,
) -> std::result::Result<(Arc<lapin::Channel>, Consumers), lapin::Error> {
    // Revoked tasks are known before the first task is taken (see `control::revocations`).
    if let Some(registry) = control {
        if served.iter().any(|queue| queue.routes.serves_tasks()) {
            let held = revocations::load(&link.conn, registry).await?;
            debug!(held, "revocations read");
        }
    }
    let channel = link.conn.create_channel().await?;
    if served.iter().any(|queue| queue.routes.serves_rpc()) {
        declare_exchanges(&channel).await?;
    }
    for queue in served {
        channel
            .queue_declare(
                queue.name.as_str().into(),
                queue.options.declare_options(),
                queue.options.arguments(),
            )
            .await?;
        if queue.routes.serves_rpc() {
            // Callers publish requests to `lepus.rpc` (see `envelope`).
            channel
                .queue_bind(
                    queue.name.as_str().into(),
                    RPC_EXCHANGE.into(),
                    queue.name.as_str().into(),
                    QueueBindOptions::default(),
                    FieldTable::default(),
                )
                .await?;
        }
        for settle in queue.routes.by_method.values().filter_map(Handler::settle) {
            settle.declare(&channel, &queue.name).await?;
        }
    }
    // Shared with every handler task of this generation (cloning a `lapin::Channel` copies a
    // dozen `Arc`s).
    let channel = Arc::new(channel);
    let consumers = Consumers::start(channel.clone(), served, prefetch).await?;
    // Observed handlers (tests) hear that they are served from now on.
    for queue in served {
        for observer in queue
            .routes
            .by_method
            .values()
            .filter_map(Handler::observer)
        {
            observer.declared();
        }
    }
    Ok((channel, consumers))
}

/// The worker's settings the consuming loop needs.
struct LoopConfig {
    prefetch: u16,
    prefetch_bytes: usize,
    /// How often a paused queue that expires when unused (`x-expires`: RPC queues) is
    /// redeclared to renew its lease: a third of the shortest expiry (`None`: none expires).
    lease_renewal: Option<Duration>,
    multiple_acks: bool,
    defaults: HandlerLimits,
    delivery_limit: u32,
    shutdown_timeout: Duration,
    /// The worker's control-plane registry (`None`: control off).
    control: Option<Arc<Registry>>,
}

/// What a shutdown takes over from the consuming loop.
struct Generation {
    consumers: Consumers,
    /// The loop's handle on the session; the reply publisher ends once this and every handler
    /// task's are dropped.
    session: Arc<Session>,
    replier: tokio::task::JoinHandle<()>,
    /// Deliveries taken off the consumers that no handler started.
    backlog: VecDeque<(usize, Delivery, Held)>,
}

/// Consumes one link generation until the shutdown signal (returns what shutting down needs) or
/// a failure of the channel or a consumer (`None`: rebuild).
#[allow(clippy::too_many_arguments)] // the loop's state, owned by `run_until`
async fn consume<F: Future>(
    config: &LoopConfig,
    served: &[ServedQueue],
    here: &Arc<served::Served>,
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
        control: config.control.clone(),
    });
    // Deliveries taken off the consumers, waiting for a concurrency slot (at most the prefetch
    // count per consumer: the broker sends no more).
    let mut backlog: VecDeque<(usize, Delivery, Held)> = VecDeque::new();
    let mut raise_check = tokio::time::interval(RAISE_CHECK);
    raise_check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut renew = tokio::time::interval(config.lease_renewal.unwrap_or(RAISE_CHECK));
    renew.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
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
                // Scoped with what this worker serves: see `served`.
                running.spawn(served::SERVED.scope(
                    here.clone(),
                    delivery::handle(delivery, routes, session.clone(), permit, held),
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
                    running.spawn(served::SERVED.scope(
                        here.clone(),
                        delivery::handle(delivery, routes, session.clone(), permit, held),
                    ));
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
            _ = renew.tick(), if consumers.paused() && config.lease_renewal.is_some() => {
                if let Err(err) = consumers.renew_leases(served).await {
                    warn!(cause = %err, "redeclaring a paused queue failed");
                    break Stop::Rebuild;
                }
            }
        }
    };
    budget.set_paused(false);
    match stop {
        Stop::Shutdown => Some(Generation {
            consumers,
            session,
            replier,
            backlog,
        }),
        // Deliveries that never started go back to the queue when the channel closes.
        Stop::Rebuild => None,
    }
}

/// Pauses the consumers when the bytes held reach the budget, resumes them once the handlers
/// brought it under half (with a prefetch count for the largest message seen), and raises a
/// lowered prefetch count again once messages are small (see `byte_budget`).
async fn budget_step(
    config: &LoopConfig,
    served: &[ServedQueue],
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

/// What a graceful shutdown works on.
struct ShutDown<'a> {
    config: &'a LoopConfig,
    link: &'a Link,
    served: &'a [ServedQueue],
    channel: &'a lapin::Channel,
    publisher: &'a WorkerPublisher,
}

impl ShutDown<'_> {
    /// Graceful shutdown within `config.shutdown_timeout`: count the RPC queues this worker
    /// serves alone, cancel the consumers, settle the deliveries no handler started (handed
    /// back, or answered "not run" on a queue served alone, which is then deleted), let the
    /// running handlers finish until a quarter of the time (at most 2 s) is left, abandon the
    /// rest, let the reply publisher settle what finished, close the channel and the
    /// publisher. Every step that talks to the broker is bounded by the same deadline.
    async fn run(&self, running: &mut JoinSet<()>, generation: Generation) {
        let config = self.config;
        let deadline = Instant::now() + config.shutdown_timeout;
        let reserve = (config.shutdown_timeout / 4).min(Duration::from_secs(2));
        let Generation {
            mut consumers,
            session,
            mut replier,
            backlog,
        } = generation;
        info!(in_flight = running.len(), "worker shutting down");
        // The RPC queues nobody else serves: deleted below, so that calls made from now on fail
        // at once with `NoRoute` instead of waiting for a worker that is gone.
        // Our own consumer of each queue counts, unless the byte budget paused it.
        let ours: Vec<u32> = (0..self.served.len())
            .map(|index| u32::from(consumers.consumes(index)))
            .collect();
        let alone = tokio::time::timeout_at(
            deadline - reserve,
            rpc_queues_served_alone(self.link, self.served, &ours),
        )
        .await
        .unwrap_or_default();
        let _ = tokio::time::timeout_at(deadline - reserve, consumers.cancel_all()).await;
        // Requests the broker pushed (prefetch) that no handler started: handed back for the
        // other workers, or, where none is left, answered "not run".
        let mut unstarted: Vec<(usize, Delivery)> = backlog
            .into_iter()
            .map(|(index, delivery, _held)| (index, delivery))
            .collect();
        let drain_until = (Instant::now() + UNSTARTED_DRAIN).min(deadline - reserve);
        while let Ok(Some((index, next))) =
            tokio::time::timeout_at(drain_until, consumers.deliveries.next()).await
        {
            if let Some(Ok(delivery)) = next {
                unstarted.push((index, delivery));
            }
        }
        let _ = tokio::time::timeout_at(deadline - reserve, async {
            for (index, delivery) in unstarted {
                let queue = &self.served[index];
                let alone_here = alone.contains(&queue.name);
                delivery::settle_unstarted(
                    delivery,
                    &queue.routes,
                    self.channel,
                    &session.settled,
                    alone_here,
                )
                .await;
            }
            delete_queues(self.link, &alone).await;
        })
        .await;
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
        if self.channel.status().connected() {
            let _ = tokio::time::timeout_at(
                deadline,
                self.channel.close(200, "worker shut down".into()),
            )
            .await;
        }
        self.publisher.close(deadline).await;
        info!("worker stopped");
    }
}

/// How long a shutting-down worker waits for the consumers it cancelled to hand over the
/// deliveries the broker had already pushed.
const UNSTARTED_DRAIN: Duration = Duration::from_secs(2);

/// The RPC-only queues of `served` that this worker is the only consumer of (`ours`: how many
/// consumers of each this worker has now; a redeclaration
/// with the same options reports the consumer count; on a side channel, so that a refusal
/// cannot close the worker's). Queues shared with task or event handlers are never deleted.
///
/// Nor are quorum queues: RabbitMQ cannot delete one `if-unused` (it closes the whole
/// connection, 540 NOT_IMPLEMENTED, under every client sharing it), and an unconditional delete
/// would drop the requests of a worker that began consuming since the count. A quorum queue
/// outlives its last worker (until its `x-expires`, if any); the requests in it wait for the
/// next worker or expire with their caller's deadline.
async fn rpc_queues_served_alone(link: &Link, served: &[ServedQueue], ours: &[u32]) -> Vec<String> {
    let mut alone = Vec::new();
    let candidates: Vec<_> = served
        .iter()
        .zip(ours.iter().copied())
        .filter(|(queue, _)| queue.routes.rpc_only() && !queue.options.is_quorum())
        .collect();
    if candidates.is_empty() {
        return alone;
    }
    let Ok(side) = link.conn.create_channel().await else {
        return alone;
    };
    for (queue, ours) in candidates {
        match side
            .queue_declare(
                queue.name.as_str().into(),
                queue.options.declare_options(),
                queue.options.arguments(),
            )
            .await
        {
            Ok(declared) if declared.consumer_count() <= ours => alone.push(queue.name.clone()),
            Ok(_) => {}
            Err(err) => {
                debug!(queue = %queue.name, cause = %err, "cannot count the consumers of a queue");
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

/// What `inspect` lists as the handlers of `served`.
fn handler_infos(served: &[ServedQueue]) -> Vec<HandlerInfo> {
    let mut infos: Vec<HandlerInfo> = served
        .iter()
        .flat_map(|queue| {
            queue.routes.by_method.values().map(|handler| HandlerInfo {
                queue: queue.name.clone(),
                name: handler.method().to_owned(),
                kind: handler.kind().to_owned(),
            })
        })
        .collect();
    infos.sort_by(|a, b| (&a.queue, &a.name).cmp(&(&b.queue, &b.name)));
    infos
}
