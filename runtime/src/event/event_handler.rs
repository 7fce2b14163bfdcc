//! The worker side of an event handler: declare the exchange and bind the handler's queue,
//! then for each event run the handler and `basic.ack`, or `basic.reject` (no requeue) when it
//! fails or panics, so a poison event cannot loop (give the queue a dead-letter exchange
//! to keep them).

use std::borrow::Cow;
use std::marker::PhantomData;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use futures::future::BoxFuture;
use futures::FutureExt;
use lapin::message::Delivery;
use lapin::options::{
    BasicAckOptions, BasicRejectOptions, ExchangeDeclareOptions, QueueBindOptions,
};
use lapin::types::FieldTable;
use tracing::{debug, warn};

use crate::context::{Context, ContextKind, Delivered};
use crate::envelope;
use crate::event::publish::exchange_name;
use crate::event::{DeliveryKind, Event, ExchangeType};
use crate::task::task_handler::settled;
use crate::task::{Completion, Observer, Outcome};
use crate::worker::handler::{missing_state_message, panic_message};
use crate::worker::settle::{Settle, SettleContext};
use crate::worker::{Handler, QueueOptions};

/// The handler of event handler `E` for `Worker::serve` (the generated `on_error::handler()`).
/// A broadcast handler gets a queue of its own, `<E::QUEUE>.<uuid>`, at each call.
pub fn handler<E: Event>() -> Handler {
    let queue = match E::DELIVERY {
        DeliveryKind::Pool => E::QUEUE.to_owned(),
        DeliveryKind::Broadcast => format!("{}.{}", E::QUEUE, uuid::Uuid::new_v4().simple()),
    };
    let runner = EventRunner::<E> {
        own_queue: queue.clone(),
        observer: None,
        event: PhantomData,
    };
    Handler::settling(queue, E::NAME, Arc::new(runner), E::needs)
}

/// Runs event handler `E` on a worker.
struct EventRunner<E> {
    /// The queue name before the worker's prefix (to recover the prefix in `declare`).
    own_queue: String,
    /// Set by `observe`; the receiving half is the test's `Completions`.
    observer: Option<Observer>,
    event: PhantomData<fn() -> E>,
}

impl<E> Clone for EventRunner<E> {
    fn clone(&self) -> Self {
        EventRunner {
            own_queue: self.own_queue.clone(),
            observer: self.observer.clone(),
            event: PhantomData,
        }
    }
}

impl<E: Event> Settle for EventRunner<E> {
    fn queue_options(&self) -> QueueOptions {
        match E::DELIVERY {
            DeliveryKind::Pool => QueueOptions::new().durable(true),
            DeliveryKind::Broadcast => QueueOptions::new().exclusive(true).auto_delete(true),
        }
    }

    fn needs_confirms(&self) -> bool {
        false
    }

    fn declare<'a>(
        &'a self,
        channel: &'a lapin::Channel,
        queue: &'a str,
    ) -> BoxFuture<'a, lapin::Result<()>> {
        Box::pin(async move {
            let prefix = queue.strip_suffix(self.own_queue.as_str()).unwrap_or("");
            let exchange = exchange_name(prefix, E::EXCHANGE);
            channel
                .exchange_declare(
                    exchange.as_str().into(),
                    E::KIND.lapin(),
                    ExchangeDeclareOptions {
                        durable: true,
                        ..ExchangeDeclareOptions::default()
                    },
                    FieldTable::default(),
                )
                .await?;
            let keys: &[&str] = match (E::KIND, E::BINDINGS) {
                (ExchangeType::Fanout, _) | (_, []) => &[""],
                (_, keys) => keys,
            };
            for key in keys {
                channel
                    .queue_bind(
                        queue.into(),
                        exchange.as_str().into(),
                        (*key).into(),
                        QueueBindOptions::default(),
                        FieldTable::default(),
                    )
                    .await?;
            }
            Ok(())
        })
    }

    fn observed(&self, observer: Observer) -> Arc<dyn Settle> {
        let mut runner = self.clone();
        runner.observer = Some(observer);
        Arc::new(runner)
    }

    fn handle(&self, delivery: Delivery, context: SettleContext) -> BoxFuture<'static, ()> {
        Box::pin(self.clone().run(delivery, context))
    }
}

impl<E: Event> EventRunner<E> {
    async fn run(self, delivery: Delivery, context: SettleContext) {
        let message_id = delivery
            .properties
            .message_id()
            .as_ref()
            .map(|id| id.to_string());
        debug!(handler = E::NAME, exchange = %delivery.exchange, routing_key = %delivery.routing_key, "event");
        let cx = Context::delivered(Delivered {
            kind: ContextKind::Event,
            name: Cow::Borrowed(E::NAME),
            queue: context.queue.clone(),
            deadline: None,
            properties: delivery.properties.clone(),
            redelivered: delivery.redelivered,
            attempt: 1,
            exchange: Some(delivery.exchange.clone()),
            routing_key: Some(delivery.routing_key.clone()),
            states: context.states.clone(),
        });
        let result = run_once::<E>(&delivery.data, cx).await;
        let outcome = match result {
            Ok(()) => match settled(delivery.acker.ack(BasicAckOptions::default()).await) {
                Ok(()) => Outcome::Succeeded,
                Err(error) => Outcome::Unsettled { error },
            },
            Err(error) => {
                // A decoder's text may quote the message's bytes: not logged.
                let logged = if error.starts_with(UNDECODABLE) {
                    UNDECODABLE
                } else {
                    error.as_str()
                };
                warn!(handler = E::NAME, queue = %context.queue, error = logged, "event handler failed; event rejected");
                let rejected = delivery
                    .acker
                    .reject(BasicRejectOptions { requeue: false })
                    .await;
                match settled(rejected) {
                    Ok(()) => Outcome::Failed { error },
                    Err(error) => Outcome::Unsettled { error },
                }
            }
        };
        if let Some(observer) = &self.observer {
            observer.report(Completion {
                queue: context.queue.to_string(),
                name: E::NAME.to_owned(),
                message_id,
                redelivered: delivery.redelivered,
                attempt: 1,
                outcome,
            });
        }
    }
}

/// How the error of a payload that does not decode starts.
const UNDECODABLE: &str = "cannot decode the payload";

/// Decodes the payload and runs `E` once inside `cx`, catching a panic.
async fn run_once<E: Event>(body: &[u8], cx: Context) -> Result<(), String> {
    let payload = envelope::decode_request::<E::Payload>(body)
        .map_err(|err| format!("{UNDECODABLE} of {}: {err}", E::NAME))?;
    // Workers check the states before they consume, local runs before they run.
    let running = E::invoke(payload, &cx)
        .map_err(|missing| missing_state_message(E::NAME, missing.type_name))?;
    match AssertUnwindSafe(cx.scope(running)).catch_unwind().await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(err)) => Err(format!("{err:#}")),
        Err(panic) => Err(format!("panicked: {}", panic_message(panic.as_ref()))),
    }
}

/// Runs event handler `E` once in this process, without a broker, as a worker would (the
/// payload through MessagePack, a panic caught) inside the context `cx` fakes (an
/// [`EventInfo`](crate::event::EventInfo): the routing key, ...; or a [`Context`] with states
/// for `State<T>` parameters): [`Outcome::Succeeded`] (acked) or [`Outcome::Failed`]
/// (rejected, also for a state the handler needs and `cx` lacks). See `lepus::testing`.
pub async fn run_local<E: Event>(payload: E::Payload, cx: impl Into<Context>) -> Outcome
where
    E::Payload: serde::Serialize,
{
    let cx: Context = cx.into();
    if let Some(missing) = cx.states().first_missing(&E::needs()) {
        return Outcome::Failed {
            error: missing_state_message(E::NAME, missing.type_name()),
        };
    }
    let cx = cx.into_run_of(ContextKind::Event, E::NAME, E::QUEUE);
    let mut body = Vec::new();
    if let Err(err) = envelope::encode_into(&mut body, &payload) {
        return Outcome::Failed {
            error: format!("cannot encode the payload of {}: {err}", E::NAME),
        };
    }
    match run_once::<E>(&body, cx).await {
        Ok(()) => Outcome::Succeeded,
        Err(error) => Outcome::Failed { error },
    }
}
