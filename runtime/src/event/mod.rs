//! Events: `#[lepus::event]` handlers subscribed to an exchange, and [`publish`].
//!
//! An event is a MessagePack-encoded payload published to a named exchange with a routing key.
//! Each handler consumes its own queue bound to the exchange with its binding keys, in one of
//! nameko's two delivery kinds ([`DeliveryKind`]): *pool* (one durable queue per handler name,
//! shared by every running instance: competing consumers, each event handled once per
//! service) or *broadcast* (an exclusive queue per running instance, deleted with its
//! connection: each instance handles every event). Handlers run on the shared worker pool; a
//! handler that returns `Err`, panics or runs past its time limit has its event rejected (not
//! requeued).
//!
//! # Layout
//! - `exchange_type`: [`ExchangeType`] (fanout, direct, topic) and [`DeliveryKind`].
//! - `publish`: [`publish`] (any exchange) and [`publish_event`] (the handler's own exchange,
//!   declared on first use); the wire format of an event.
//! - `event_handler`: the worker side (declare exchange and bindings, run, ack or reject).
//! - `current`: [`EventInfo`], the event being handled (its context's event part), and the
//!   deprecated [`current`].

mod current;
mod event_handler;
mod exchange_type;
mod publish;

use std::fmt::Display;
use std::future::Future;

use serde::de::DeserializeOwned;

use crate::context::Context;
use crate::state::{MissingState, Needed};

#[allow(deprecated)]
pub use current::{current, EventInfo};
pub use event_handler::{handler, run_local};
pub use exchange_type::{DeliveryKind, ExchangeType};
pub use publish::{publish, publish_event};

/// One event handler: the exchange it listens to, how, and what it runs. Implemented by
/// `#[lepus::event]` on a marker type (`on_error::OnErrorEvent`).
pub trait Event: Send + Sync + 'static {
    /// The exchange the handler listens to (declared durable, of kind [`Event::KIND`]).
    const EXCHANGE: &'static str;
    /// The exchange's type.
    const KIND: ExchangeType;
    /// The binding keys of the handler's queue (ignored by fanout exchanges).
    const BINDINGS: &'static [&'static str];
    /// Pool or broadcast delivery.
    const DELIVERY: DeliveryKind;
    /// The pool queue name (for broadcast: the stem of each instance's queue name).
    const QUEUE: &'static str;
    /// The handler name.
    const NAME: &'static str;
    /// The payload type.
    type Payload: DeserializeOwned + Send + 'static;
    /// The handler's error (logged; the event is rejected).
    type Err: Display + Send + 'static;

    /// The states the handler's `State<T>` parameters need (checked when a worker starts).
    fn needs() -> Vec<Needed> {
        Vec::new()
    }

    /// Starts one run of the handler on a decoded payload in the event's context (and the
    /// injected parameters taken from it; a missing state is the only way this fails).
    fn invoke(
        payload: Self::Payload,
        cx: &Context,
    ) -> Result<impl Future<Output = Result<(), Self::Err>> + Send + 'static, MissingState>;
}
