//! [`Context`]: what a handler knows about the request it runs for (deadline, ids, attempt,
//! headers, its states), and what the calls, enqueues and publishes it makes carry onward.
//!
//! The worker builds one per delivery and runs the handler inside it (a tokio task-local), so
//! a handler gets it by asking: a `ctx: Context` (or `&Context`) parameter, or
//! [`Context::current`] anywhere below the handler. Everything the handler does through Lepus
//! from inside it inherits it:
//! - a call ([`Client::call`](crate::Client::call) and the generated stubs) waits at most the
//!   time the handler's own caller has left, and is not started at all once that is spent (it
//!   fails at once with [`Error::Timeout`](crate::Error::Timeout): a call whose caller gave up
//!   does no work downstream); its request carries that deadline, so the next worker skips it
//!   too if it arrives late;
//! - an enqueue or a publish waits for its confirm at most that long (the task itself is not
//!   bound by it: a task is background work);
//! - all three carry the trace id ([`Context::trace_id`]) in [`HEADER_TRACE_ID`], so the
//!   whole chain of work started by one request shares one id in every worker's context.
//!
//! Work spawned into another tokio task leaves the context behind (task-locals do not follow
//! `tokio::spawn`): pass it along with `tokio::spawn(ctx.scope(fut))`. Outside any handler,
//! [`Context::new`] starts a chain of one's own (an HTTP request's budget and id, say):
//! `Context::new().with_timeout(d).with_trace_id(id).scope(fut)`. The same builder makes the
//! fake contexts of local test runs (`lepus::testing`).
//!
//! W3C trace context (`traceparent`, `tracestate`; see the `observe` module): a delivered
//! context holds the worker's span for the run ([`Context::span`]), a child of the sender's
//! span; [`Context::scope`] runs its future in that span, so calls, enqueues and publishes made
//! inside it (spawned work included) are its children and carry its trace context onward,
//! written by one function, [`write_onward`]. Without an OpenTelemetry layer the trace context
//! the request carried is forwarded unchanged.

use std::borrow::Cow;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::BasicProperties;
use tokio::time::Instant;
use tracing::Instrument;

use crate::observe::propagation;
use crate::state::States;
use crate::task::headers;

/// Header carrying the id of a whole chain of work (long string): set on every call, enqueue
/// and publish made inside a [`Context`], to that context's [`Context::trace_id`].
pub const HEADER_TRACE_ID: &str = "x-lepus-trace-id";

tokio::task_local! {
    /// Scoped by the worker around each handler it runs (and by `Context::scope`).
    static CONTEXT: Context;
}

/// What kind of work a [`Context`] belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ContextKind {
    /// An RPC request (a `#[lepus::rpc]` function or a `#[lepus::service]` method).
    Call,
    /// A task attempt (`#[lepus::task]`).
    Task,
    /// An event (`#[lepus::event]`).
    Event,
    /// Made with [`Context::new`]: the start of a chain outside any handler, or a test's fake.
    Root,
}

/// The context of one request (see the module documentation). Cheap to clone (one `Arc`).
#[derive(Clone)]
pub struct Context {
    inner: Arc<Inner>,
}

#[derive(Clone)]
struct Inner {
    kind: ContextKind,
    /// The method, task or handler name (empty for a root).
    name: Cow<'static, str>,
    /// The queue the delivery came from (with the worker's prefix).
    queue: Option<Arc<str>>,
    /// When the caller stops waiting (an RPC's deadline, a task's time limit).
    deadline: Option<Instant>,
    /// The delivery's properties, moved in whole (ids, headers, timestamp, ...).
    properties: BasicProperties,
    redelivered: bool,
    attempt: u32,
    /// The exchange and routing key of an event.
    exchange: Option<ShortString>,
    routing_key: Option<ShortString>,
    /// A trace id of this context's own (roots, runs in place), ahead of the delivery's ids.
    trace_id: Option<String>,
    /// The states of the handler, shared by every request it serves.
    states: Arc<States>,
    /// The worker's span for this run (`Span::none()` for roots and when no subscriber is
    /// interested).
    span: tracing::Span,
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context")
            .field("kind", &self.inner.kind)
            .field("name", &self.inner.name)
            .field("queue", &self.inner.queue)
            .field("time_left", &self.time_left())
            .field("correlation_id", &self.correlation_id())
            .field("message_id", &self.message_id())
            .field("trace_id", &self.trace_id())
            .field("attempt", &self.inner.attempt)
            .field("redelivered", &self.inner.redelivered)
            .field("states", &self.inner.states)
            .finish_non_exhaustive()
    }
}

impl Default for Context {
    fn default() -> Self {
        Context::new()
    }
}

/// The description of a delivery a worker turns into a [`Context`].
pub(crate) struct Delivered {
    pub(crate) kind: ContextKind,
    pub(crate) name: Cow<'static, str>,
    pub(crate) queue: Arc<str>,
    pub(crate) deadline: Option<Instant>,
    pub(crate) properties: BasicProperties,
    pub(crate) redelivered: bool,
    pub(crate) attempt: u32,
    pub(crate) exchange: Option<ShortString>,
    pub(crate) routing_key: Option<ShortString>,
    pub(crate) states: Arc<States>,
    pub(crate) span: tracing::Span,
}

impl Context {
    /// A root context: a fresh trace id, no deadline, no state. Start a chain of work with it
    /// outside any handler (`Context::new().with_timeout(d).scope(fut)`), or fake the context of
    /// a local test run.
    pub fn new() -> Context {
        Context {
            inner: Arc::new(Inner {
                kind: ContextKind::Root,
                name: Cow::Borrowed(""),
                queue: None,
                deadline: None,
                properties: BasicProperties::default(),
                redelivered: false,
                attempt: 1,
                exchange: None,
                routing_key: None,
                trace_id: Some(uuid::Uuid::new_v4().simple().to_string()),
                states: Arc::default(),
                span: tracing::Span::none(),
            }),
        }
    }

    /// The context of a delivery (built by the worker).
    pub(crate) fn delivered(d: Delivered) -> Context {
        Context {
            inner: Arc::new(Inner {
                kind: d.kind,
                name: d.name,
                queue: Some(d.queue),
                deadline: d.deadline,
                properties: d.properties,
                redelivered: d.redelivered,
                attempt: d.attempt,
                exchange: d.exchange,
                routing_key: d.routing_key,
                trace_id: None,
                states: d.states,
                span: d.span,
            }),
        }
    }

    /// The context of a call run in place (a handler calling its own worker, see
    /// `worker/served`): the caller's trace id, the call's deadline, the handler's states.
    pub(crate) fn in_place(
        name: &str,
        queue: &str,
        deadline: Instant,
        trace_id: Option<String>,
        states: Arc<States>,
    ) -> Context {
        Context {
            inner: Arc::new(Inner {
                kind: ContextKind::Call,
                name: Cow::Owned(name.to_owned()),
                queue: Some(Arc::from(queue)),
                deadline: Some(deadline),
                properties: BasicProperties::default(),
                redelivered: false,
                attempt: 1,
                exchange: None,
                routing_key: None,
                trace_id,
                states,
                span: tracing::Span::none(),
            }),
        }
    }

    /// The context of the handler running in this tokio task, if any (`None` outside handlers
    /// and [`Context::scope`]).
    pub fn current() -> Option<Context> {
        CONTEXT.try_with(Clone::clone).ok()
    }

    /// Runs `future` inside this context: what it calls, enqueues and publishes inherits it,
    /// and [`Context::current`] returns it. For work spawned off a handler
    /// (`tokio::spawn(ctx.scope(fut))`), or to start a chain of one's own.
    /// Inside it the context's span ([`Context::span`]) is the current span, or for a context
    /// without one the span current where `scope` is called.
    pub fn scope<F: Future>(self, future: F) -> impl Future<Output = F::Output> {
        let span = if self.inner.span.is_none() {
            tracing::Span::current()
        } else {
            self.inner.span.clone()
        };
        CONTEXT.scope(self, future.instrument(span))
    }

    /// The worker's span of this run (`lepus.request`, `lepus.task` or `lepus.event`, see the
    /// README's "Observability"): a child of the sender's span, the parent of everything done
    /// inside the context. `Span::none()` for a root context, or when no `tracing` subscriber
    /// is interested.
    pub fn span(&self) -> &tracing::Span {
        &self.inner.span
    }

    /// What kind of work this is.
    pub fn kind(&self) -> ContextKind {
        self.inner.kind
    }

    /// The method, task or event handler name (empty for a root context).
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// The queue the request was consumed from (with the worker's queue prefix).
    pub fn queue(&self) -> Option<&str> {
        self.inner.queue.as_deref()
    }

    /// When the caller stops waiting: an RPC's deadline (from its `x-lepus-deadline`), a task
    /// attempt's time limit; `None` for events and tasks without a time limit.
    pub fn deadline(&self) -> Option<Instant> {
        self.inner.deadline
    }

    /// The time left until [`Context::deadline`] (zero once it passed; `None` without one).
    pub fn time_left(&self) -> Option<Duration> {
        self.inner
            .deadline
            .map(|d| d.saturating_duration_since(Instant::now()))
    }

    /// True once the deadline passed: the caller no longer waits for the result.
    pub fn is_expired(&self) -> bool {
        self.time_left().is_some_and(|left| left.is_zero())
    }

    /// The request's `correlation-id` (an RPC's: unique per call).
    pub fn correlation_id(&self) -> Option<&str> {
        self.inner
            .properties
            .correlation_id()
            .as_ref()
            .map(ShortString::as_str)
    }

    /// The message's `message-id` (a task's id, given by `enqueue` or its caller; an event's).
    pub fn message_id(&self) -> Option<&str> {
        self.inner
            .properties
            .message_id()
            .as_ref()
            .map(ShortString::as_str)
    }

    /// The id of the whole chain of work this request belongs to: the [`HEADER_TRACE_ID`] it
    /// carries, else this request's own correlation id (or message id), so the first handler
    /// of a chain names it after the request that started it. Calls, enqueues and publishes
    /// made inside this context carry it onward.
    pub fn trace_id(&self) -> Option<&str> {
        if let Some(id) = &self.inner.trace_id {
            return Some(id);
        }
        self.header_str(HEADER_TRACE_ID)
            .or_else(|| self.correlation_id())
            .or_else(|| self.message_id())
    }

    /// True when the broker delivered this message before (to a worker that died or lost its
    /// connection before settling it).
    pub fn redelivered(&self) -> bool {
        self.inner.redelivered
    }

    /// The attempt: 1 for a first run (always, for calls and events), 2 for a task's first
    /// retry, ...
    pub fn attempt(&self) -> u32 {
        self.inner.attempt
    }

    /// The exchange an event was published to.
    pub fn exchange(&self) -> Option<&str> {
        self.inner.exchange.as_ref().map(ShortString::as_str)
    }

    /// The routing key an event was published with.
    pub fn routing_key(&self) -> Option<&str> {
        self.inner.routing_key.as_ref().map(ShortString::as_str)
    }

    /// The request's headers (`x-lepus-*` and any the caller added).
    pub fn headers(&self) -> Option<&FieldTable> {
        self.inner.properties.headers().as_ref()
    }

    /// One header of the request.
    pub fn header(&self, name: &str) -> Option<&AMQPValue> {
        self.headers()?.inner().get(name)
    }

    /// One header of the request, when it is a string.
    pub fn header_str(&self, name: &str) -> Option<&str> {
        match self.header(name)? {
            AMQPValue::LongString(s) => std::str::from_utf8(s.as_bytes()).ok(),
            AMQPValue::ShortString(s) => Some(s.as_str()),
            _ => None,
        }
    }

    /// Every AMQP property of the message (priority, timestamp, app id, ...).
    pub fn properties(&self) -> &BasicProperties {
        &self.inner.properties
    }

    /// A clone of the state of type `T` the handler was given (what a `State<T>` parameter
    /// receives).
    pub fn state<T: Clone + 'static>(&self) -> Option<T> {
        self.inner.states.get::<T>().cloned()
    }

    /// The handler's states.
    pub(crate) fn states(&self) -> &Arc<States> {
        &self.inner.states
    }

    fn edit(mut self, f: impl FnOnce(&mut Inner)) -> Context {
        f(Arc::make_mut(&mut self.inner));
        self
    }

    /// The same context with a deadline `timeout` from now.
    pub fn with_timeout(self, timeout: Duration) -> Context {
        let deadline = Instant::now().checked_add(timeout);
        self.edit(|i| i.deadline = deadline)
    }

    /// The same context with this deadline.
    pub fn with_deadline(self, deadline: Instant) -> Context {
        self.edit(|i| i.deadline = Some(deadline))
    }

    /// The same context without a deadline: work done inside it no longer inherits the
    /// caller's (an enqueue that must happen even if the caller gave up, say).
    pub fn without_deadline(self) -> Context {
        self.edit(|i| i.deadline = None)
    }

    /// The same context with this trace id.
    pub fn with_trace_id(self, trace_id: impl Into<String>) -> Context {
        let trace_id = trace_id.into();
        self.edit(|i| i.trace_id = Some(trace_id))
    }

    /// The same context with a state (a fake one, in a test) for `State<T>` parameters.
    pub fn with_state<T: Clone + Send + Sync + 'static>(self, value: T) -> Context {
        self.edit(|i| Arc::make_mut(&mut i.states).insert(value))
    }

    /// The same context as the given attempt of a task (1 = the first).
    pub fn with_attempt(self, attempt: u32) -> Context {
        self.edit(|i| i.attempt = attempt.max(1))
    }

    /// The same context with this `message-id`.
    pub fn with_message_id(self, id: impl Into<String>) -> Context {
        let id = ShortString::from(id.into());
        self.edit(|i| i.properties = i.properties.clone().with_message_id(id))
    }

    /// The same context with this `correlation-id`.
    pub fn with_correlation_id(self, id: impl Into<String>) -> Context {
        let id = ShortString::from(id.into());
        self.edit(|i| i.properties = i.properties.clone().with_correlation_id(id))
    }

    /// The same context, redelivered or not.
    pub fn with_redelivered(self, redelivered: bool) -> Context {
        self.edit(|i| i.redelivered = redelivered)
    }

    /// The same context with one more request header.
    pub fn with_header(self, name: &str, value: AMQPValue) -> Context {
        let name = ShortString::from(name);
        self.edit(|i| {
            let mut headers = i.properties.headers().clone().unwrap_or_default();
            headers.insert(name, value);
            i.properties = i.properties.clone().with_headers(headers);
        })
    }

    /// The same context as an event published to `exchange` with `routing_key`.
    pub fn with_event(self, exchange: &str, routing_key: &str) -> Context {
        let (exchange, routing_key) = (ShortString::from(exchange), ShortString::from(routing_key));
        self.edit(|i| {
            i.exchange = Some(exchange);
            i.routing_key = Some(routing_key);
        })
    }

    /// The same context as a run of `name` on `queue` (local runs name their handler).
    pub(crate) fn into_run_of(self, kind: ContextKind, name: &str, queue: &str) -> Context {
        let (name, queue) = (name.to_owned(), Arc::from(queue));
        self.edit(|i| {
            i.kind = kind;
            i.name = Cow::Owned(name);
            i.queue = Some(queue);
        })
    }
}

/// What work made inside the current context carries onward: read once per call, enqueue or
/// publish from the task-local (`None` outside any context, the common case of a top-level
/// call, which then costs one failed task-local lookup).
#[derive(Debug, Clone)]
pub(crate) struct Onward {
    deadline: Option<Instant>,
    trace_id: Option<LongString>,
    /// The W3C trace context the request carried (validated), forwarded when no span of this
    /// process writes its own.
    trace_context: Option<(LongString, Option<LongString>)>,
}

impl Onward {
    /// The onward part of the current context, if any.
    pub(crate) fn current() -> Option<Onward> {
        CONTEXT
            .try_with(|cx| Onward {
                deadline: cx.inner.deadline,
                trace_id: cx.trace_id().map(LongString::from),
                trace_context: propagation::received(cx.headers()),
            })
            .ok()
    }

    /// The time left until the inherited deadline (`None`: no deadline to inherit).
    pub(crate) fn time_left(&self) -> Option<Duration> {
        self.deadline
            .map(|d| d.saturating_duration_since(Instant::now()))
    }

    /// `timeout` bounded by the inherited deadline; `None` when that deadline has passed (the
    /// work must not start).
    pub(crate) fn bound(&self, timeout: Duration) -> Option<Duration> {
        match self.time_left() {
            Some(left) if left.is_zero() => None,
            Some(left) => Some(left.min(timeout)),
            None => Some(timeout),
        }
    }

    /// The trace id to carry onward.
    pub(crate) fn trace_id(&self) -> Option<String> {
        self.trace_id
            .as_ref()
            .and_then(|id| std::str::from_utf8(id.as_bytes()).ok())
            .map(str::to_owned)
    }

    /// Writes the onward trace id.
    fn write_headers(&self, headers: &mut FieldTable) {
        if let Some(id) = &self.trace_id {
            headers.insert(
                ShortString::from(HEADER_TRACE_ID),
                AMQPValue::LongString(id.clone()),
            );
        }
    }
}

/// Writes what a call, enqueue or publish carries onward: the trace id of the context it is
/// made in (`onward`), and the W3C trace context of the current span (else the one the
/// context's request carried; see `observe::propagation`).
pub(crate) fn write_onward(headers: &mut FieldTable, onward: Option<&Onward>) {
    if let Some(onward) = onward {
        onward.write_headers(headers);
    }
    propagation::inject(headers, onward.and_then(|o| o.trace_context.as_ref()));
}

/// The deadline of a request carrying `x-lepus-deadline = deadline_ms` (Unix ms), on the
/// runtime's clock (`tokio::time::Instant`, which tests can pause).
pub(crate) fn deadline_from_ms(deadline_ms: i64) -> Instant {
    let left_ms = deadline_ms.saturating_sub(headers::now_ms());
    let left = Duration::from_millis(u64::try_from(left_ms).unwrap_or(0));
    let now = Instant::now();
    now.checked_add(left).unwrap_or(now)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // in tests a failed unwrap is a failed test
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_context_is_current_inside_its_scope_only() {
        assert!(Context::current().is_none());
        let cx = Context::new().with_trace_id("t-1").with_attempt(3);
        let seen = cx
            .clone()
            .scope(async {
                Context::current().map(|c| (c.trace_id().map(str::to_owned), c.attempt()))
            })
            .await;
        assert_eq!(seen, Some((Some("t-1".to_owned()), 3)));
        assert!(Context::current().is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn onward_work_is_bounded_by_the_time_left_and_refused_after_it() {
        let cx = Context::new().with_timeout(Duration::from_millis(200));
        cx.scope(async {
            let onward = Onward::current().unwrap();
            assert_eq!(
                onward.bound(Duration::from_secs(30)),
                Some(Duration::from_millis(200))
            );
            assert_eq!(
                onward.bound(Duration::from_millis(50)),
                Some(Duration::from_millis(50))
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
            assert_eq!(onward.bound(Duration::from_secs(30)), None);
            assert!(Context::current().unwrap().is_expired());
        })
        .await;
        let unbounded = Context::new()
            .scope(async { Onward::current() })
            .await
            .unwrap();
        assert_eq!(
            unbounded.bound(Duration::from_secs(30)),
            Some(Duration::from_secs(30))
        );
    }

    #[test]
    fn the_trace_id_is_the_header_else_the_requests_own_ids() {
        let mut headers = FieldTable::default();
        headers.insert(
            HEADER_TRACE_ID.into(),
            AMQPValue::LongString("chain".into()),
        );
        let delivered = |properties: BasicProperties| {
            Context::delivered(Delivered {
                kind: ContextKind::Call,
                name: Cow::Borrowed("m"),
                queue: Arc::from("q"),
                deadline: None,
                properties,
                redelivered: false,
                attempt: 1,
                exchange: None,
                routing_key: None,
                states: Arc::default(),
                span: tracing::Span::none(),
            })
        };
        let carried = delivered(
            BasicProperties::default()
                .with_correlation_id("c".into())
                .with_headers(headers),
        );
        assert_eq!(carried.trace_id(), Some("chain"));
        let first = delivered(BasicProperties::default().with_correlation_id("c".into()));
        assert_eq!(first.trace_id(), Some("c"));
        let task = delivered(BasicProperties::default().with_message_id("m-1".into()));
        assert_eq!(task.trace_id(), Some("m-1"));
        let mut onward = FieldTable::default();
        Onward {
            deadline: None,
            trace_id: carried.trace_id().map(LongString::from),
            trace_context: None,
        }
        .write_headers(&mut onward);
        assert_eq!(
            onward.inner().get(HEADER_TRACE_ID),
            Some(&AMQPValue::LongString("chain".into()))
        );
    }
}
