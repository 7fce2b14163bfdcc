//! Handling one `basic.deliver` on a service queue: skip if expired, route by method, run, and
//! hand the reply to the worker's reply publisher (`replies`), which publishes it and then
//! sends `basic.ack` (in that order: at-least-once).

use std::collections::HashMap;
use std::sync::Arc;

use lapin::message::Delivery;
use lapin::options::BasicNackOptions;
use tokio::sync::{mpsc, OwnedSemaphorePermit};
use tracing::{debug, warn};

use crate::context::{deadline_from_ms, Context, ContextKind, Delivered};
use crate::envelope;
use crate::error::FailureKind;
use crate::task::{Completion, Outcome};
use crate::worker::handler::Handler;
use crate::worker::replies::{Reply, Settled};
use crate::worker::settle::SettleContext;

/// The handlers sharing one queue, by method name.
#[derive(Debug, Default)]
pub(crate) struct Routes {
    pub(crate) by_method: HashMap<Vec<u8>, Handler>,
    /// The queue these routes consume, with the worker's prefix (set when the worker starts).
    pub(crate) queue: Arc<str>,
}

impl Routes {
    /// True when an RPC handler (one the worker settles) serves this queue.
    pub(crate) fn serves_rpc(&self) -> bool {
        self.by_method.values().any(|h| h.settle().is_none())
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
}

/// Runs one request: the handler's outcome goes to the worker's reply publisher (`replies`),
/// which publishes the reply and then acks the request. `permit` is a slot of the worker's
/// concurrency limit, released when this returns (the reply publisher's own backlog is bounded
/// by the prefetch count; shutdown waits for it separately).
/// `channel` is the worker's channel of this link generation, shared through the `Arc` (cloning
/// a `lapin::Channel` copies a dozen `Arc`s); task and event handlers settle on it themselves.
pub(crate) async fn handle(
    delivery: Delivery,
    routes: Arc<Routes>,
    channel: Arc<lapin::Channel>,
    settled: mpsc::UnboundedSender<Settled>,
    permit: OwnedSemaphorePermit,
) {
    // Task and event handlers settle their deliveries themselves (worker/settle.rs).
    let method = envelope::method_of(&delivery.properties);
    if let Some(handler) = routes.route(method).filter(|h| h.settle().is_some()) {
        if let Some(settle) = handler.settle() {
            let context = SettleContext {
                channel: lapin::Channel::clone(&channel),
                queue: routes.queue.clone(),
                states: handler.states().clone(),
            };
            settle.handle(delivery, context).await;
        }
        drop(permit);
        return;
    }
    let Delivery {
        delivery_tag,
        properties,
        data,
        redelivered,
        ..
    } = delivery;
    let mut observed = None;
    let deadline_ms = envelope::deadline_of(properties.headers().as_ref());
    let expired = deadline_ms.is_some_and(envelope::deadline_passed);
    // The reply's address, taken before the properties move into the handler's context.
    let reply_to = properties.reply_to().clone();
    let correlation_id = properties.correlation_id().clone();
    let message_id = properties.message_id().clone();
    let body = if expired {
        debug!(delivery_tag, "request past its deadline skipped");
        None
    } else {
        let method = envelope::method_of(&properties);
        Some(match routes.route(method) {
            Some(handler) => {
                debug!(
                    delivery_tag,
                    redelivered,
                    method = handler.method(),
                    "request"
                );
                let cx = Context::delivered(Delivered {
                    kind: ContextKind::Call,
                    name: handler.method_name(),
                    queue: routes.queue.clone(),
                    deadline: deadline_ms.map(deadline_from_ms),
                    properties,
                    redelivered,
                    attempt: 1,
                    exchange: None,
                    routing_key: None,
                    states: handler.states().clone(),
                });
                let ran = handler.dispatch(data, cx).await;
                if let Some(observer) = handler.observer() {
                    observed = Some((observer.clone(), handler.method().to_owned(), ran.failure));
                }
                ran.reply
            }
            None => {
                let name = String::from_utf8_lossy(method.unwrap_or(b"<none>")).into_owned();
                warn!(delivery_tag, method = %name, "request for an unknown method");
                envelope::encode_failure(
                    FailureKind::UnknownMethod,
                    &format!("no handler for method {name:?} on this queue"),
                )
            }
        })
    };
    let reply = match (body, reply_to) {
        (Some(body), Some(reply_to)) => Some(Reply {
            reply_to,
            correlation_id,
            body,
        }),
        _ => None,
    };
    if let Some((observer, name, failure)) = observed {
        observer.report(Completion {
            queue: routes.queue.to_string(),
            name,
            message_id: message_id.as_ref().map(|id| id.to_string()),
            redelivered,
            attempt: 1,
            outcome: match failure {
                None => Outcome::Succeeded,
                Some(error) => Outcome::Failed { error },
            },
        });
    }
    // The reply publisher outlives every sender (it ends when the last one is dropped), so this
    // fails only if it panicked; then the request stays unacked and the broker redelivers it
    // once the channel is gone.
    if settled
        .send(Settled {
            delivery_tag,
            reply,
        })
        .is_err()
    {
        warn!(delivery_tag, "reply publisher gone; request left unacked");
    }
    drop(permit);
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
    let method = envelope::method_of(&delivery.properties);
    let rpc = routes
        .route(method)
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
