//! Handling one `basic.deliver` on a served queue, in this order:
//! 1. route it to a handler by method name (the `type` property, else the
//!    [`HEADER_METHOD`](crate::envelope::HEADER_METHOD) header, else the queue's only handler
//!    when the message names none or the handler is an event handler); a message for no handler
//!    is answered (an RPC request with a `reply-to`), dead-lettered (on a task queue) or dropped
//!    with a warning (an RPC request nobody waits for);
//! 2. skip an RPC request past its caller's deadline (ack, no reply);
//! 3. count its deliveries (`redelivery`): bounce a redelivered message, refuse one delivered
//!    as often as the delivery limit allows;
//! 4. refuse a body larger than the handler's maximum message size, before decoding it;
//! 5. run it under its limits: a task or event handler settles the delivery itself
//!    (`settle`); an RPC handler's reply goes to the worker's reply publisher (`replies`), which
//!    publishes it and then sends `basic.ack` (in that order: at-least-once).
//!
//! Every ack of an RPC request goes through the reply publisher, which may ack with `multiple`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicNackOptions};
use lapin::Confirmation;
use tokio::sync::{mpsc, OwnedSemaphorePermit};
use tracing::{debug, warn};

use crate::amqp::publish_mandatory;
use crate::context::{deadline_from_ms, Context, ContextKind, Delivered};
use crate::control::registry::Registry;
use crate::control::RunningTask;
use crate::envelope;
use crate::error::FailureKind;
use crate::observe;
use crate::observe::metrics::InFlight;
use crate::properties_size;
use crate::task::headers;
use crate::task::{Completion, Outcome};
use crate::worker::byte_budget::Held;
use crate::worker::handler::Handler;
use crate::worker::limits::{self, HandlerLimits, Ran};
use crate::worker::publisher::Publisher;
use crate::worker::redelivery::{self, Verdict};
use crate::worker::replies::{Reply, Settled};
use crate::worker::settle::{Refusal, SettleContext};

/// The handlers sharing one queue, by method name.
#[derive(Debug, Default)]
pub(crate) struct Routes {
    pub(crate) by_method: HashMap<Vec<u8>, Handler>,
    /// The queue these routes consume, with the worker's prefix (set when the worker starts).
    pub(crate) queue: Arc<str>,
}

impl Routes {
    /// The handler for a message with `properties` (see the module documentation).
    pub(crate) fn route_message(&self, properties: &lapin::BasicProperties) -> Option<&Handler> {
        let by_type = properties
            .kind()
            .as_ref()
            .and_then(|kind| self.by_method.get(kind.as_str().as_bytes()));
        let by_header = || match properties
            .headers()
            .as_ref()?
            .inner()
            .get(envelope::HEADER_METHOD)?
        {
            lapin::types::AMQPValue::LongString(s) => self.by_method.get(s.as_bytes()),
            lapin::types::AMQPValue::ShortString(s) => self.by_method.get(s.as_str().as_bytes()),
            _ => None,
        };
        by_type.or_else(by_header).or_else(|| {
            let only = self.only()?;
            // A message naming no method goes to the queue's only handler; an event handler
            // takes whatever its queue receives (a foreign publisher's `type` means nothing).
            let names_none = envelope::method_of(properties).is_none();
            (names_none || only.settle().is_some_and(|s| !s.dead_letters())).then_some(only)
        })
    }

    fn only(&self) -> Option<&Handler> {
        match self.by_method.len() {
            1 => self.by_method.values().next(),
            _ => None,
        }
    }

    /// True when an RPC handler (one the worker settles) serves this queue.
    pub(crate) fn serves_rpc(&self) -> bool {
        self.by_method.values().any(|h| h.settle().is_none())
    }

    /// True when a task handler serves this queue.
    pub(crate) fn serves_tasks(&self) -> bool {
        self.by_method
            .values()
            .any(|h| h.settle().is_some_and(|s| s.dead_letters()))
    }

    /// True when only RPC handlers serve this queue (no durable task or event queue).
    pub(crate) fn rpc_only(&self) -> bool {
        self.by_method.values().all(|h| h.settle().is_none())
    }

    /// The handler for `method`; a request without a method header goes to the queue's only
    /// handler, if it has exactly one (for foreign clients that skip the header).
    pub(crate) fn route(&self, method: Option<&[u8]>) -> Option<&Handler> {
        match method {
            Some(method) => self.by_method.get(method),
            None if self.by_method.len() == 1 => self.by_method.values().next(),
            None => None,
        }
    }

    /// The task handler that dead-letters messages for no task on this queue (the first by
    /// name, so that the choice is stable).
    fn dead_letter_sink(&self) -> Option<&Handler> {
        let mut tasks: Vec<&Handler> = self
            .by_method
            .values()
            .filter(|h| h.settle().is_some_and(|s| s.dead_letters()))
            .collect();
        tasks.sort_by_key(|h| h.method());
        tasks.first().copied()
    }
}

/// What every delivery of one link generation shares.
#[derive(Debug)]
pub(crate) struct Session {
    /// Hands settled RPC requests to the reply publisher (`replies`), which ends once every
    /// clone is dropped (the worker loop holds this session, each handler task an `Arc` of it).
    pub(crate) settled: mpsc::UnboundedSender<Settled>,
    /// Where replies and copies are published.
    pub(crate) publisher: Publisher,
    /// The worker's defaults for limits a handler does not set.
    pub(crate) defaults: HandlerLimits,
    /// Deliveries after which a message is given up on (`redelivery`).
    pub(crate) delivery_limit: u32,
    /// The worker's control-plane registry: runs are registered there, revoked tasks skipped
    /// (`None`: the worker runs without the control plane).
    pub(crate) control: Option<Arc<Registry>>,
}

/// Runs one delivery (see the module documentation). `slot` is a place in the worker's
/// concurrency limit, released when this returns (or, for a blocking handler that ran past its
/// limit, when its thread returns); `held` counts the body in the worker's byte budget.
pub(crate) async fn handle(
    delivery: Delivery,
    routes: Arc<Routes>,
    session: Arc<Session>,
    slot: OwnedSemaphorePermit,
    held: Held,
) {
    // Released when this returns: the body is settled (or was handed back to the broker).
    let _held = held;
    let Some(handler) = routes.route_message(&delivery.properties) else {
        unroutable(delivery, &routes, &session, slot).await;
        return;
    };
    if delivery.redelivered {
        observe::metrics::redelivered(&routes.queue, handler.method());
    }
    let limits = handler.limits().or(session.defaults);
    let rpc = handler.settle().is_none();
    let deadline = envelope::deadline_of(delivery.properties.headers().as_ref());
    if rpc && deadline.is_some_and(envelope::deadline_passed) {
        debug!(
            delivery_tag = delivery.delivery_tag,
            "request past its deadline skipped"
        );
        settle_rpc(&session, delivery.delivery_tag, None);
        return;
    }
    let verdict = redelivery::verdict(
        delivery.redelivered,
        delivery.properties.headers().as_ref(),
        session.delivery_limit,
    );
    let refusal = match verdict {
        Verdict::Run { .. } => None,
        Verdict::Bounce { returns } => match bounce(&delivery, returns, &routes, &session).await {
            Ok(()) => {
                if rpc {
                    settle_rpc(&session, delivery.delivery_tag, None);
                } else {
                    ack(&delivery).await;
                }
                return;
            }
            Err(Unbounced::TooLarge(reason)) => Some((FailureKind::DeliveryLimit, reason)),
            Err(Unbounced::Failed(cause)) => {
                // Counting failed, not the message: run it rather than loop on it.
                warn!(queue = %routes.queue, %cause, "could not count a redelivery; running it uncounted");
                None
            }
        },
        Verdict::Exceeded { returns } => Some((
            FailureKind::DeliveryLimit,
            format!(
                "delivered {returns} times without being settled (a worker crashed, hung or \
                 stopped while it held the message), reaching the worker's delivery limit of \
                 {}; not run again",
                session.delivery_limit
            ),
        )),
    };
    let refusal = refusal.or_else(|| {
        let max = limits.max_message_size?;
        (delivery.data.len() > max).then(|| {
            (
                FailureKind::TooLarge,
                format!(
                    "message of {} bytes is larger than the handler's maximum message size of \
                     {max} bytes; not decoded",
                    delivery.data.len()
                ),
            )
        })
    });
    if let Some((kind, reason)) = refusal {
        warn!(queue = %routes.queue, method = handler.method(), %reason, "delivery refused");
        match handler.settle() {
            Some(settle) => {
                let context = context(&routes, &session, handler, limits, slot);
                let refusal = Refusal {
                    name: handler.method().to_owned(),
                    reason,
                };
                settle.refuse(delivery, context, refusal).await;
            }
            None => {
                let body = envelope::encode_failure(kind, &reason);
                settle_rpc(&session, delivery.delivery_tag, reply(&delivery, body));
            }
        }
        return;
    }
    // Over its rate limit, the delivery waits for its turn without a concurrency slot, so the
    // worker's other handlers run meanwhile (see `rate_limit`).
    let slot = match handler.limiter() {
        Some(limiter) => {
            let slots = slot.semaphore().clone();
            drop(slot);
            limiter.wait().await;
            match slots.acquire_owned().await {
                Ok(slot) => slot,
                // The worker never closes its semaphore; if it did, the delivery stays
                // unacked and goes back to the queue with the channel.
                Err(_) => return,
            }
        }
        None => slot,
    };
    // The control plane: a revoked task is acked unrun; every run is registered for
    // `inspect` (unregistered when `_running` drops), a cancellable task with its cancel signal.
    let mut cancelled = None;
    let _running = match &session.control {
        Some(registry) => {
            let kind = handler.kind();
            let id = match kind {
                "call" => delivery.properties.correlation_id().as_ref(),
                _ => delivery.properties.message_id().as_ref(),
            }
            .map(|id| id.to_string());
            if kind == "task" && id.as_deref().is_some_and(|id| registry.is_revoked(id)) {
                let seen = Seen {
                    acker: &delivery.acker,
                    properties: &delivery.properties,
                    redelivered: redelivery::was_redelivered(&delivery),
                };
                revoked(seen, &routes, handler, registry, "skipped").await;
                return;
            }
            let (running, cancel) = registry.start(RunningTask {
                id,
                name: handler.method().to_owned(),
                queue: routes.queue.to_string(),
                kind: kind.to_owned(),
                started_at_ms: headers::now_ms(),
                cancellable: kind == "task" && handler.is_cancellable(),
            });
            cancelled = cancel;
            Some(running)
        }
        None => None,
    };
    match handler.settle() {
        Some(settle) => {
            let context = context(&routes, &session, handler, limits, slot);
            match (cancelled, &session.control) {
                (Some(cancelled), Some(registry)) => {
                    // Kept to settle the delivery if the run is cancelled (clones share the
                    // delivery's "already settled" flag).
                    let acker = delivery.acker.clone();
                    let properties = delivery.properties.clone();
                    let redelivered = redelivery::was_redelivered(&delivery);
                    tokio::select! {
                        () = settle.handle(delivery, context) => {}
                        Ok(()) = cancelled => {
                            let seen = Seen { acker: &acker, properties: &properties, redelivered };
                            revoked(seen, &routes, handler, registry, "cancelled").await;
                        }
                    }
                }
                _ => settle.handle(delivery, context).await,
            }
        }
        None => {
            run_rpc(
                handler,
                &routes.queue,
                delivery,
                deadline,
                limits,
                &session,
                slot,
            )
            .await
        }
    }
}

/// What settling a revoked task needs of its delivery.
struct Seen<'a> {
    acker: &'a lapin::Acker,
    properties: &'a lapin::BasicProperties,
    redelivered: bool,
}

/// Acks a revoked task (skipped before it ran, or cancelled while running) and reports it.
async fn revoked(
    seen: Seen<'_>,
    routes: &Routes,
    handler: &Handler,
    registry: &Registry,
    how: &str,
) {
    let task_id = seen
        .properties
        .message_id()
        .as_ref()
        .map(|id| id.to_string());
    tracing::info!(queue = %routes.queue, task = handler.method(), task_id = task_id.as_deref().unwrap_or(""), how, "revoked task {how}");
    if let Err(err) = seen.acker.ack(BasicAckOptions::default()).await {
        warn!(cause = %err, "basic.ack of a revoked task failed; the broker will deliver it again (and it is skipped again)");
    }
    registry.count("revoked");
    if let Some(observer) = handler.observer() {
        observer.report(Completion {
            queue: routes.queue.to_string(),
            name: handler.method().to_owned(),
            message_id: task_id,
            redelivered: seen.redelivered,
            attempt: headers::attempts(seen.properties.headers().as_ref()).saturating_add(1),
            outcome: Outcome::Revoked,
        });
    }
}

/// The context a task or event handler settles with.
fn context(
    routes: &Routes,
    session: &Session,
    handler: &Handler,
    limits: HandlerLimits,
    slot: OwnedSemaphorePermit,
) -> SettleContext {
    SettleContext {
        publisher: session.publisher.clone(),
        queue: routes.queue.clone(),
        states: handler.states().clone(),
        limits,
        slot: Some(slot),
        control: session.control.clone(),
        observer: handler.observer().cloned(),
    }
}

/// Runs an RPC handler under its limits and hands the outcome to the reply publisher.
async fn run_rpc(
    handler: &Handler,
    queue: &Arc<str>,
    delivery: Delivery,
    deadline: Option<i64>,
    limits: HandlerLimits,
    session: &Session,
    slot: OwnedSemaphorePermit,
) {
    let redelivered = redelivery::was_redelivered(&delivery);
    let Delivery {
        delivery_tag,
        properties,
        data,
        ..
    } = delivery;
    debug!(
        delivery_tag,
        redelivered,
        method = handler.method(),
        "request"
    );
    // The caller's deadline bounds the run too: past it, nobody waits for the reply.
    let left = deadline.map(|deadline| {
        let ms = deadline.saturating_sub(headers::now_ms()).max(0);
        Duration::from_millis(u64::try_from(ms).unwrap_or(0))
    });
    let (limit, by_deadline) = match (limits.time_limit, left) {
        (Some(own), Some(left)) if left < own => (Some(left), true),
        (Some(own), _) => (Some(own), false),
        (None, left) => (left, left.is_some()),
    };
    // The reply's address and the message id, taken before the properties move into the
    // handler's context.
    let reply_to = properties.reply_to().clone();
    let correlation_id = properties.correlation_id().clone();
    let message_id = properties.message_id().clone();
    // The run's span, a child of the caller's (see `observe`), and its metrics.
    let started = std::time::Instant::now();
    let span = observe::request_span(queue, handler.method(), &properties, redelivered);
    let in_flight = InFlight::start(queue, handler.method());
    let cx = Context::delivered(Delivered {
        kind: ContextKind::Call,
        name: handler.method_name(),
        queue: Arc::clone(queue),
        deadline: deadline.map(deadline_from_ms),
        properties,
        redelivered,
        attempt: 1,
        exchange: None,
        routing_key: None,
        states: handler.states().clone(),
        span: span.clone(),
    });
    let future = handler.invoke(data, cx, limits.max_message_size.unwrap_or(usize::MAX));
    let mut slot = Some(slot);
    let ran = limits::run(future, limit, limits.blocking, &mut slot).await;
    drop(slot);
    drop(in_flight);
    let outcome = match &ran {
        Ran::Done(answer) => envelope::outcome_of_reply(&answer.reply),
        Ran::TimedOut { .. } => observe::Outcome::Timeout,
        Ran::Panicked(_) => observe::Outcome::Panic,
    };
    observe::finish_run(&span, queue, handler.method(), outcome, started);
    let failure = match &ran {
        Ran::Done(answer) => answer.failure.clone(),
        other => other.failure(),
    };
    let body = match ran {
        Ran::Done(answer) => Some(answer.reply),
        Ran::TimedOut { .. } if by_deadline => {
            debug!(
                delivery_tag,
                method = handler.method(),
                "handler stopped at its caller's deadline"
            );
            None
        }
        ran @ Ran::TimedOut { .. } => {
            let message = ran.failure().unwrap_or_default();
            warn!(delivery_tag, method = handler.method(), %message, "handler stopped");
            Some(envelope::encode_failure(FailureKind::TimeLimit, &message))
        }
        Ran::Panicked(message) => {
            warn!(method = handler.method(), panic = %message, "handler panicked");
            Some(envelope::encode_failure(FailureKind::Panicked, &message))
        }
    };
    if let Some(registry) = &session.control {
        registry.count(if failure.is_none() {
            "succeeded"
        } else {
            "failed"
        });
    }
    // Observed handlers (tests) hear of the run before its reply is published.
    if let Some(observer) = handler.observer() {
        observer.report(Completion {
            queue: queue.to_string(),
            name: handler.method().to_owned(),
            message_id: message_id.as_ref().map(|id| id.to_string()),
            redelivered,
            attempt: 1,
            outcome: match failure {
                None => Outcome::Succeeded,
                Some(error) => Outcome::Failed { error },
            },
        });
    }
    let reply = body.and_then(|body| {
        Some(Reply {
            reply_to: reply_to?,
            correlation_id,
            body,
        })
    });
    settle_rpc(session, delivery_tag, reply);
}

/// A message for no handler on its queue (see the module documentation).
async fn unroutable(
    delivery: Delivery,
    routes: &Routes,
    session: &Session,
    slot: OwnedSemaphorePermit,
) {
    let method = envelope::method_of(&delivery.properties).map_or_else(
        || "<none>".to_owned(),
        |m| String::from_utf8_lossy(m).into_owned(),
    );
    let reason = format!("no handler for {method:?} on queue {}", routes.queue);
    if routes.serves_rpc() && delivery.properties.reply_to().is_some() {
        warn!(delivery_tag = delivery.delivery_tag, method = %method, "request for an unknown method");
        let body = envelope::encode_failure(FailureKind::UnknownMethod, &reason);
        settle_rpc(session, delivery.delivery_tag, reply(&delivery, body));
    } else if let Some(sink) = routes.dead_letter_sink() {
        warn!(queue = %routes.queue, task = %method, "message for no task on this queue; dead-lettered");
        if let Some(settle) = sink.settle() {
            let limits = sink.limits().or(session.defaults);
            let context = context(routes, session, sink, limits, slot);
            let refusal = Refusal {
                name: method,
                reason,
            };
            settle.refuse(delivery, context, refusal).await;
        }
    } else if routes.serves_rpc() {
        warn!(delivery_tag = delivery.delivery_tag, method = %method, "request for an unknown method without reply-to; dropped");
        settle_rpc(session, delivery.delivery_tag, None);
    } else {
        // Only event handlers here, several of them, and the message names none of them.
        warn!(queue = %routes.queue, method = %method, "message for no handler; acked");
        ack(&delivery).await;
    }
}

/// The reply to `delivery` with `body`, if it asked for one.
fn reply(delivery: &Delivery, body: Vec<u8>) -> Option<Reply> {
    Some(Reply {
        reply_to: delivery.properties.reply_to().clone()?,
        correlation_id: delivery.properties.correlation_id().clone(),
        body,
    })
}

/// Hands an RPC request to the reply publisher: publish `reply` (if any), then ack.
fn settle_rpc(session: &Session, delivery_tag: u64, reply: Option<Reply>) {
    // The reply publisher outlives every sender (it ends when the last one is dropped), so this
    // fails only if it panicked; then the request stays unacked and the broker redelivers it
    // once the channel is gone.
    if session
        .settled
        .send(Settled {
            delivery_tag,
            reply,
        })
        .is_err()
    {
        warn!(delivery_tag, "reply publisher gone; request left unacked");
    }
}

/// Acks a task or event delivery (its handler's own channel).
async fn ack(delivery: &Delivery) {
    if let Err(err) = delivery.acker.ack(BasicAckOptions::default()).await {
        warn!(delivery_tag = delivery.delivery_tag, cause = %err, "basic.ack failed; the broker will deliver it again");
    }
}

/// Why a redelivered message could not be bounced.
enum Unbounced {
    /// Its copy would not fit a frame: it cannot be counted.
    TooLarge(String),
    /// Publishing the copy failed.
    Failed(String),
}

/// Republishes a redelivered message to its queue with its delivery count (see
/// `redelivery`) and waits for the broker's confirm; the caller then acks the original.
async fn bounce(
    delivery: &Delivery,
    returns: u32,
    routes: &Routes,
    session: &Session,
) -> Result<(), Unbounced> {
    let Some(properties) = redelivery::bounced_properties(
        &delivery.properties,
        returns,
        delivery.exchange.as_str(),
        delivery.routing_key.as_str(),
    ) else {
        return Ok(()); // a request past its deadline: nothing to run, just ack
    };
    let opened = session
        .publisher
        .confirmed()
        .await
        .map_err(|e| Unbounced::Failed(e.to_string()))?;
    if !properties_size::fits(&properties, opened.frame_max) {
        return Err(Unbounced::TooLarge(format!(
            "redelivered (a worker crashed, hung or stopped while it held the message), and its \
             headers are too large to count its deliveries in a frame of {} bytes; not run again",
            opened.frame_max
        )));
    }
    debug!(queue = %routes.queue, returns, "redelivered message bounced with its delivery count");
    let confirm = publish_mandatory(
        &opened.channel,
        routes.queue.as_ref(),
        &delivery.data,
        properties,
    )
    .await
    .map_err(|e| Unbounced::Failed(e.to_string()))?;
    match confirm.await {
        Ok(Confirmation::Ack(None)) => Ok(()),
        Ok(other) => Err(Unbounced::Failed(format!(
            "the broker refused the copy: {other:?}"
        ))),
        Err(err) => Err(Unbounced::Failed(err.to_string())),
    }
}

/// Settles a delivery the worker received but never started because it is shutting down: an
/// RPC request on a queue no other worker serves (`alone`, the queue is about to be deleted) is
/// answered [`FailureKind::NotRun`] (its caller may call again at once) and acked; anything
/// else goes back to its queue for the other workers (`basic.nack` with requeue).
pub(crate) async fn settle_unstarted(
    delivery: Delivery,
    routes: &Routes,
    channel: &lapin::Channel,
    settled: &mpsc::UnboundedSender<Settled>,
    alone: bool,
) {
    let rpc = routes
        .route_message(&delivery.properties)
        .is_none_or(|handler| handler.settle().is_none());
    if alone && rpc {
        let reply = delivery
            .properties
            .reply_to()
            .as_ref()
            .map(|reply_to| Reply {
                reply_to: reply_to.clone(),
                correlation_id: delivery.properties.correlation_id().clone(),
                body: envelope::encode_failure(
                    FailureKind::NotRun,
                    "the worker shut down before running the request, and no other worker serves \
                 its queue; it was not run",
                ),
            });
        let _ = settled.send(Settled {
            delivery_tag: delivery.delivery_tag,
            reply,
        });
        return;
    }
    let requeue = BasicNackOptions {
        multiple: false,
        requeue: true,
    };
    if let Err(err) = channel.basic_nack(delivery.delivery_tag, requeue).await {
        debug!(delivery_tag = delivery.delivery_tag, cause = %err, "basic.nack failed; the channel close requeues it");
    }
}
