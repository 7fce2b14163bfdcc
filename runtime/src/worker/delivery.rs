//! Handling one `basic.deliver` on a service queue: skip if expired, route by method, run,
//! publish the reply, then `basic.ack` (in that order: at-least-once).

use std::collections::HashMap;
use std::sync::Arc;

use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicPublishOptions};
use lapin::BasicProperties;
use tokio::sync::OwnedSemaphorePermit;
use tracing::{debug, warn};

use crate::envelope::{self, CONTENT_TYPE};
use crate::error::FailureKind;
use crate::worker::handler::Handler;
use crate::worker::settle::SettleContext;

/// The handlers sharing one queue, by method name.
#[derive(Debug, Default)]
pub(crate) struct Routes {
    pub(crate) by_method: HashMap<Vec<u8>, Handler>,
    /// The queue these routes consume, with the worker's prefix (set when the worker starts).
    pub(crate) queue: Arc<str>,
}

impl Routes {
    /// The handler for `method`; a request without a method header goes to the queue's only
    /// handler, if it has exactly one (for foreign clients that skip the header).
    fn route(&self, method: Option<&[u8]>) -> Option<&Handler> {
        match method {
            Some(method) => self.by_method.get(method),
            None if self.by_method.len() == 1 => self.by_method.values().next(),
            None => None,
        }
    }
}

/// Runs one request to completion. `_permit` is a slot of the worker's concurrency limit,
/// released when this returns. `channel` is the worker's channel of this link generation,
/// shared by every running handler through the `Arc` (cloning a `lapin::Channel` copies a dozen
/// `Arc`s; perf put 0.7 µs per request in it); the worker holds it too and closes it on
/// shutdown.
pub(crate) async fn handle(
    delivery: Delivery,
    routes: Arc<Routes>,
    channel: Arc<lapin::Channel>,
    _permit: OwnedSemaphorePermit,
) {
    // Task and event handlers settle their deliveries themselves (worker/settle.rs).
    let method = envelope::method_of(&delivery.properties);
    if let Some(settle) = routes.route(method).and_then(Handler::settle) {
        let context = SettleContext {
            channel: lapin::Channel::clone(&channel),
            queue: routes.queue.clone(),
        };
        settle.handle(delivery, context).await;
        return;
    }
    // The request is acked with `basic.ack` straight on the channel it came from (delivery tags
    // are per channel), not through `Delivery::acker`: lapin routes an `Acker` through its
    // internal RPC task, which spawns a task per ack before pushing the same frame (perf: 3.2 µs
    // of bench CPU per call, 8% of the stub's cost).
    let Delivery {
        delivery_tag,
        properties,
        data,
        redelivered,
        ..
    } = delivery;
    let headers = properties.headers().as_ref();
    if let Some(deadline) = envelope::deadline_of(headers) {
        if envelope::deadline_passed(deadline) {
            debug!(delivery_tag, "request past its deadline skipped");
            if let Err(err) = channel
                .basic_ack(delivery_tag, BasicAckOptions::default())
                .await
            {
                debug!(delivery_tag, cause = %err, "basic.ack failed");
            }
            return;
        }
    }
    let method = envelope::method_of(&properties);
    let reply = match routes.route(method) {
        Some(handler) => {
            debug!(
                delivery_tag,
                redelivered,
                method = handler.method(),
                "request"
            );
            handler.dispatch(data).await
        }
        None => {
            let name = String::from_utf8_lossy(method.unwrap_or(b"<none>")).into_owned();
            warn!(delivery_tag, method = %name, "request for an unknown method");
            envelope::encode_failure(
                FailureKind::UnknownMethod,
                &format!("no handler for method {name:?} on this queue"),
            )
        }
    };
    if let Some(reply_to) = properties.reply_to() {
        let mut reply_properties =
            BasicProperties::default().with_content_type(CONTENT_TYPE.into());
        if let Some(id) = properties.correlation_id() {
            reply_properties = reply_properties.with_correlation_id(id.clone());
        }
        let published = channel
            .basic_publish(
                "".into(),
                reply_to.clone(),
                BasicPublishOptions::default(),
                &reply,
                reply_properties,
            )
            .await;
        // `basic_publish` resolves once lapin's I/O loop wrote the frames: only then may the
        // ack go (lapin sends method frames ahead of queued content frames, so an ack pushed
        // earlier could overtake the reply).
        match published {
            // The channel is in confirm mode only when the worker also serves task handlers;
            // then the reply is acked only once the broker confirmed it.
            Ok(confirm) if channel.status().confirm() => {
                if let Err(err) = confirm.await {
                    warn!(delivery_tag, cause = %err, "reply not confirmed; request left unacked");
                    return;
                }
            }
            // Otherwise the `PublisherConfirm` is already resolved (`NotRequested`) and is
            // dropped: lapin discards it, whereas awaiting it arms an event listener (two
            // allocations per request).
            Ok(_not_requested) => {}
            Err(err) => {
                // No ack: the broker redelivers the request once this channel is gone.
                warn!(delivery_tag, cause = %err, "reply publish failed; request left unacked");
                return;
            }
        }
    }
    if let Err(err) = channel
        .basic_ack(delivery_tag, BasicAckOptions::default())
        .await
    {
        warn!(delivery_tag, cause = %err, "basic.ack failed; the request will be redelivered");
    }
}
