//! The worker side of an event handler: declare the exchange and bind the handler's queue,
//! then for each event run the handler (under its limits) and `basic.ack`, or `basic.reject`
//! (no requeue) when it fails, panics or runs past its time limit, so a poison event cannot
//! loop (give the queue a dead-letter exchange to keep them). Events the worker refuses to run
//! (too large, delivered too often) are rejected the same way.

use std::borrow::Cow;
use std::marker::PhantomData;
use std::sync::Arc;

use futures::future::BoxFuture;
use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicRejectOptions, QueueBindOptions};
use lapin::types::{FieldTable, ShortString};
use tracing::{debug, warn};

use crate::context::{Context, ContextKind, Delivered};
use crate::envelope;
use crate::event::publish::{declare_exchange, exchange_name};
use crate::event::{DeliveryKind, Event, ExchangeType};
use crate::observe::{self, metrics::InFlight};
use crate::task::headers::{self, bounded_error};
use crate::task::task_handler::settled;
use crate::task::Outcome;
use crate::worker::handler::missing_state_message;
use crate::worker::limits::{self, HandlerLimits, Ran};
use crate::worker::redelivery::was_redelivered;
use crate::worker::settle::{Refusal, Settle, SettleContext};
use crate::worker::{Handler, QueueOptions, HEADER_EXCHANGE, HEADER_ROUTING_KEY};

/// The handler of event handler `E` for `Worker::serve` (the generated `on_error::handler()`).
/// A broadcast handler gets a queue of its own, `<E::QUEUE>.<uuid>`, at each call.
pub fn handler<E: Event>() -> Handler {
    let queue = match E::DELIVERY {
        DeliveryKind::Pool => E::QUEUE.to_owned(),
        DeliveryKind::Broadcast => format!("{}.{}", E::QUEUE, uuid::Uuid::new_v4().simple()),
    };
    let runner = EventRunner::<E> {
        own_queue: queue.clone(),
        event: PhantomData,
    };
    Handler::settling(
        queue,
        E::NAME,
        Arc::new(runner),
        E::needs,
        HandlerLimits::default(),
    )
}

/// Runs event handler `E` on a worker.
struct EventRunner<E> {
    /// The queue name before the worker's prefix (to recover the prefix in `declare`).
    own_queue: String,
    event: PhantomData<fn() -> E>,
}

clone_for_any!(EventRunner<E> { own_queue }, event);

impl<E: Event> Settle for EventRunner<E> {
    fn queue_options(&self) -> QueueOptions {
        match E::DELIVERY {
            DeliveryKind::Pool => QueueOptions::new().durable(true),
            // Deleted with the worker's connection. Not `auto_delete`: the broker would delete it
            // (and the events in it) whenever the worker cancels its consumer, as a rebuilt
            // channel or the byte budget's pause does.
            DeliveryKind::Broadcast => QueueOptions::new().exclusive(true),
        }
    }

    fn dead_letters(&self) -> bool {
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
            declare_exchange::<E>(channel, &exchange).await?;
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

    fn handle(&self, delivery: Delivery, context: SettleContext) -> BoxFuture<'static, ()> {
        Box::pin(self.clone().run(delivery, context))
    }

    fn refuse(
        &self,
        delivery: Delivery,
        context: SettleContext,
        refusal: Refusal,
    ) -> BoxFuture<'static, ()> {
        Box::pin(async move {
            let outcome = reject::<E>(&delivery, &context, bounded_error(refusal.reason)).await;
            context.report(&delivery, E::NAME.to_owned(), 1, outcome);
        })
    }
}

/// Rejects a failed or refused event (no requeue: dead-lettered if its queue says so).
async fn reject<E: Event>(delivery: &Delivery, context: &SettleContext, error: String) -> Outcome {
    // A decoder's text may quote the message's bytes: not logged.
    let logged = if error.starts_with(UNDECODABLE) {
        UNDECODABLE
    } else {
        error.as_str()
    };
    warn!(event = E::NAME, queue = %context.queue, error = logged, "event handler failed; event rejected");
    let rejected = delivery
        .acker
        .reject(BasicRejectOptions { requeue: false })
        .await;
    match settled(rejected) {
        Ok(()) => {
            observe::metrics::dead_lettered(&context.queue, E::NAME);
            Outcome::Failed { error }
        }
        Err(error) => Outcome::Unsettled { error },
    }
}

impl<E: Event> EventRunner<E> {
    async fn run(self, delivery: Delivery, mut context: SettleContext) {
        let h = delivery.properties.headers().as_ref();
        // A bounced copy (see `worker/redelivery`) came through the default exchange; its
        // origin is in its headers. Headers are the sender's: a value too long for a short
        // string (which no broker would have routed on) is not an origin, it is ignored.
        let exchange = headers::string(h, HEADER_EXCHANGE)
            .and_then(|s| ShortString::try_new(s).ok())
            .unwrap_or_else(|| delivery.exchange.clone());
        let routing_key = headers::string(h, HEADER_ROUTING_KEY)
            .and_then(|s| ShortString::try_new(s).ok())
            .unwrap_or_else(|| delivery.routing_key.clone());
        debug!(event = E::NAME, exchange = %exchange, routing_key = %routing_key, "event");
        // The run's span, a child of the publish's (see `observe`).
        let started = std::time::Instant::now();
        let span = observe::event_span(
            &context.queue,
            E::NAME,
            &delivery.properties,
            was_redelivered(&delivery),
        );
        let in_flight = InFlight::start(&context.queue, E::NAME);
        let cx = Context::delivered(Delivered {
            kind: ContextKind::Event,
            name: Cow::Borrowed(E::NAME),
            queue: context.queue.clone(),
            deadline: None,
            properties: delivery.properties.clone(),
            redelivered: was_redelivered(&delivery),
            attempt: 1,
            exchange: Some(exchange),
            routing_key: Some(routing_key),
            states: context.states.clone(),
            span: span.clone(),
        });
        let ran = run_once::<E>(&delivery.data, cx, context.limits, &mut context.slot).await;
        drop(in_flight);
        let outcome = match ran {
            Ok(()) => match settled(delivery.acker.ack(BasicAckOptions::default()).await) {
                Ok(()) => Outcome::Succeeded,
                Err(error) => Outcome::Unsettled { error },
            },
            Err(error) => reject::<E>(&delivery, &context, error).await,
        };
        let observed = match &outcome {
            Outcome::Succeeded => observe::Outcome::Ok,
            Outcome::Failed { .. } => observe::Outcome::DeadLettered,
            _ => observe::Outcome::Error,
        };
        observe::finish_run(&span, &context.queue, E::NAME, observed, started);
        context.report(&delivery, E::NAME.to_owned(), 1, outcome);
    }
}

/// How the error of a payload that does not decode starts.
const UNDECODABLE: &str = "cannot decode the payload";

/// Decodes the payload and runs `E` once inside `cx`, under `limits` (taking `slot` along to a
/// blocking thread), catching a panic.
async fn run_once<E: Event>(
    body: &[u8],
    cx: Context,
    limits: HandlerLimits,
    slot: &mut Option<tokio::sync::OwnedSemaphorePermit>,
) -> Result<(), String> {
    let payload = envelope::decode_request::<E::Payload>(body)
        .map_err(|err| bounded_error(format!("{UNDECODABLE} of {}: {err}", E::NAME)))?;
    // Workers check the states before they consume, local runs before they run.
    let running = E::invoke(payload, &cx)
        .map_err(|missing| missing_state_message(E::NAME, missing.type_name))?;
    match limits::run(cx.scope(running), limits.time_limit, limits.blocking, slot).await {
        Ran::Done(Ok(())) => Ok(()),
        // `{:#}`: anyhow and eyre print the chain of causes, others their usual text.
        Ran::Done(Err(err)) => Err(bounded_error(format!("{err:#}"))),
        ran => Err(ran.failure().unwrap_or_default()),
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
    // The handler's own limits are on its `Handler`, not on `E`: none here.
    match run_once::<E>(&body, cx, HandlerLimits::default(), &mut None).await {
        Ok(()) => Outcome::Succeeded,
        Err(error) => Outcome::Failed { error },
    }
}
