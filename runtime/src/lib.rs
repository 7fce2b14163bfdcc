//! `lepus-runtime`: the runtime behind `#[lepus::rpc]`: a supervised connection, a client that
//! makes typed calls, a worker pool that serves them, and the wire format they share.
//!
//! Users depend on the `lepus` facade, which re-exports this crate and the macros:
//! ```no_run
//! #[lepus::rpc(queue = "rpc_queue")]
//! async fn fib(n: u32) -> u64 {
//!     (0..n).fold((0, 1), |(a, b), _| (b, a + b)).0
//! }
//!
//! # async fn demo() -> lepus::Result<()> {
//! let conn = lepus::connect("amqp://127.0.0.1:5672/%2f").await?;
//! let client = lepus::Client::new(&conn).await?;
//! let v: u64 = fib::call(&client, 30).await?;
//! # let _ = v;
//! lepus::Worker::new(&conn)
//!     .prefetch(1)
//!     .serve(fib::handler())
//!     .run_until(tokio::signal::ctrl_c())
//!     .await?;
//! # Ok(())
//! # }
//! ```
//!
//! # Layout
//! - `connection`: [`connect`], [`ConnectOptions`], [`Connection`]: the supervisor that
//!   reconnects with [`Backoff`] (`backoff`) and announces each new link generation.
//! - `client`: [`Client`], [`CallOptions`], [`call_local`]: the call path; `client/pending` is
//!   the correlation map, `client/reply_consumer` the session channel, its reply consumer and
//!   the bounce queue that turns an unserved request into `NoRoute`.
//! - `worker`: [`Worker`], [`Handler`], [`IntoHandlers`], [`QueueOptions`], [`WorkerHandle`]: consumers,
//!   concurrency, graceful shutdown (deleting the RPC queues nobody else serves);
//!   `worker/delivery` handles one request (route, count, run, reply, ack), `worker/served` runs
//!   a handler's calls to its own worker in place, and `worker/limits`, `worker/redelivery`,
//!   `worker/byte_budget` bound what one message can do.
//! - `method`: [`Method`], the static description of an RPC method the macros implement (all a
//!   caller needs), and `Invoke`, how a worker runs it (a free function or a service method).
//! - `context`: [`Context`], what a handler knows about its request (deadline, ids, attempt,
//!   headers), and what calls, enqueues and publishes made inside it carry onward.
//! - `state`: [`State`], shared state a worker injects into its handlers; `inject`: the
//!   parameters a worker fills in (`State<T>`, `Context`).
//! - `returns`: [`Returns`] and [`Plain`]: a handler's return value as success or failure,
//!   decided by the type system (aliases of `Result` included).
//! - `remote_error`: [`RemoteError`] and the codecs that carry an RPC's application error back
//!   to its caller (typed for serde types, as text for `anyhow::Error` and the like).
//! - `envelope`: the wire format (byte layouts, header names) and the MessagePack codec;
//!   `msgpack_depth` bounds how deeply a body may nest before anything decodes it;
//!   `properties_size` measures a content header against `frame_max`.
//! - `error`: [`Error`] and its classifiers.
//! - `amqp`: the lapin calls made alike from several places (durable and passive
//!   `queue.declare`, the mandatory publish to the default exchange).
//! - `lock`: a lock the broker keeps (an exclusive queue), for electing one process.
//! - `observe`: the spans every call, enqueue, publish and handler run opens, their field
//!   vocabulary and [`Outcome`]; `observe/propagation` the W3C trace context headers
//!   ([`HEADER_TRACEPARENT`], [`HEADER_TRACESTATE`]); `observe/metrics` the Prometheus metrics
//!   (`metrics` feature, [`metrics`]); `otel` the OpenTelemetry setup (`otel` feature).
//! - `task`: `#[lepus::task]`'s runtime: [`task::Task`], [`task::enqueue`], retries through
//!   delay queues, dead letters ([`task::DeadLetters`]), [`task::observe`] for tests.
//! - `control`: the control plane: [`control::Control`] (ping, inspect, revoke, shutdown)
//!   and each worker's listener, registry and durable revocations.
//! - `schedule`: periodic tasks: [`schedule::Schedule`] (cron, time zone, missed-tick
//!   policy) and [`schedule::Scheduler`], which any number of processes run while the broker
//!   lets exactly one fire each schedule.
//! - `event`: `#[lepus::event]`'s runtime: [`event::Event`], [`publish`], pool and broadcast
//!   delivery.
//!
//! Two macros, `clone_for_any!` and `setters!`, defined here before the modules so that all of
//! them can use them.

/// `impl Clone` for a type generic over a task, event or output type `T` that holds `T` only
/// through `PhantomData<fn() -> T>` (or through fields that are `Clone` for every `T`): field
/// by field, without the `T: Clone` bound `#[derive(Clone)]` would add (a task's output need
/// not be `Clone` for its handle to be). `clone_for_any!(Name<T> { a, b }, marker)`, where
/// `marker` names the `PhantomData` field, if any.
macro_rules! clone_for_any {
    ($name:ident<$t:ident> { $($field:ident),* $(,)? } $(, $marker:ident)?) => {
        impl<$t> ::core::clone::Clone for $name<$t> {
            fn clone(&self) -> Self {
                $name {
                    $($field: ::core::clone::Clone::clone(&self.$field),)*
                    $($marker: ::core::marker::PhantomData,)?
                }
            }
        }
    };
}

/// Builder setters that store their argument and hand the builder back. Each entry, after its
/// doc comment, `name(arg: Type) => field = value;` becomes
/// `pub fn name(mut self, arg: Type) -> Self { self.field = value; self }`: `value` is an
/// expression of `arg` (`Some(arg)`, `arg.into()`, `arg.max(1)`), `field` a field or a path
/// into one (`limits.time_limit`). A setter that does more than one assignment is written out.
macro_rules! setters {
    ($(
        $(#[$attr:meta])*
        $name:ident($arg:ident: $ty:ty) => $($field:ident).+ = $value:expr;
    )*) => {
        $(
            $(#[$attr])*
            pub fn $name(mut self, $arg: $ty) -> Self {
                self.$($field).+ = $value;
                self
            }
        )*
    };
}

mod amqp;
mod backoff;
mod client;
mod connection;
mod context;
pub mod control;
pub mod envelope;
mod error;
pub mod event;
mod inject;
mod lock;
mod method;
mod msgpack_depth;
mod observe;
mod properties_size;
mod remote_error;
mod returns;
pub mod schedule;
mod state;
pub mod task;
mod worker;

#[cfg(feature = "otel")]
pub mod otel;

/// Worker and client metrics in the Prometheus text format (the `metrics` feature): serve them
/// with [`metrics::serve`], or render them into an endpoint of your own with
/// [`metrics::render`]. The families are listed in the README's "Observability".
#[cfg(feature = "metrics")]
pub mod metrics {
    pub use crate::observe::metrics::{render, serve, MetricsServer};
}

pub use backoff::Backoff;
pub use client::{
    call_local, call_local_with, CallOptions, Client, ClientBuilder, ReplyMode, DEFAULT_TIMEOUT,
};
pub use connection::{connect, ConnectOptions, Connection, DEFAULT_STARTUP_WAIT};
pub use context::{Context, ContextKind, HEADER_TRACE_ID};
pub use error::{Error, FailureKind, Never, Result, REPLY_CODE_NO_ROUTE};
pub use inject::Inject;
pub use method::{BoxFuture, Invoke, Method};
pub use observe::propagation::{HEADER_TRACEPARENT, HEADER_TRACESTATE};
pub use observe::Outcome;
pub use remote_error::{ErrCodec, RemoteError};
pub use returns::{Plain, Returns};
pub use state::{MissingState, Needed, State};
pub use worker::{
    Handler, IntoHandlers, ParseRateLimitError, QueueOptions, RateLimit, Worker, WorkerHandle,
    DEFAULT_CONCURRENCY, DEFAULT_DELIVERY_LIMIT, DEFAULT_MAX_MESSAGE_SIZE, DEFAULT_PREFETCH_BYTES,
    DEFAULT_SHUTDOWN_TIMEOUT, RPC_QUEUE_EXPIRES,
};

pub use event::publish;
pub use task::workflow::{
    chain, chord, group, Chain, Chord, Group, GroupHandle, MemberFailure, Partial, Signature,
    WorkflowError, WorkflowHandle,
};
pub use task::{EnqueueOptions, TaskHandle, TaskId, TaskOptions, TaskResultError, TaskStatus};

/// Items the code generated by `#[lepus::rpc]`, `#[lepus::service]` and the other macros refers
/// to (`::lepus::__private::...`); not a public API.
#[doc(hidden)]
pub mod __private {
    pub use crate::client::{CallOptions, Client};
    pub use crate::context::Context;
    pub use crate::error::{Error, Never};
    pub use crate::inject::{needs, Inject};
    pub use crate::method::{Invoke, Method};
    pub use crate::remote_error::{
        Describe, DescribeDebug, DescribeDisplay, DescribeName, ErrCodec, ErrWire, SelectNever,
        SelectSerde, SelectText,
    };
    pub use crate::returns::{Plain, Returns};
    pub use crate::state::{MissingState, Needed};
    pub use crate::worker::Handler;
    pub use crate::worker::IntoHandlers;
    pub use ::std::sync::Arc;
    pub use ::std::vec::Vec;

    pub use crate::event::{
        handler as event_handler, publish_event, DeliveryKind, Event, ExchangeType,
    };
    pub use crate::task::handler as task_handler;
    pub use crate::task::result_wire::{
        OutOpaque, OutSerde, OutWire, TaskErrNever, TaskErrOpaque, TaskErrSerde, TaskErrText,
        TaskErrWire,
    };
    pub use crate::task::workflow::{Partial, Signature};
    pub use crate::task::{enqueue, submit, EnqueueOptions, Task, TaskHandle, TaskId, TaskOptions};
    pub use crate::Backoff;
    pub use crate::RateLimit;
    pub use ::core::time::Duration;
    pub use ::serde::de::DeserializeOwned;
    pub use ::serde::Serialize;
}
