//! [`Handler`]: one served method, type-erased so a worker can hold many, with the states it
//! was given and its limits (time, message size, blocking; see `limits`); [`IntoHandlers`]: what `Worker::serve` takes (one handler, or every method of a
//! service).

use std::borrow::Cow;
use std::future::Future;
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use crate::context::Context;
use crate::envelope;
use crate::error::{Error, FailureKind};
use crate::method::{BoxFuture, Invoke};
use crate::state::{Needed, States};
use crate::task::headers::bounded_error;
use crate::task::Observer;
use crate::worker::limits::{self, HandlerLimits, Ran};
use crate::worker::rate_limit::{Limiter, RateLimit};
use crate::worker::settle::Settle;

/// A method a worker can serve: its queue, its name, the states it was given and how to turn a
/// request body into a reply body. Built by the generated `fib::handler()`
/// (= `Handler::new::<fib>()`), or for each method of a service by its generated server.
#[derive(Clone)]
pub struct Handler {
    queue: Cow<'static, str>,
    method: Cow<'static, str>,
    /// Decodes the request, runs the method, encodes the reply (refusing a reply larger than
    /// its `max_reply`); never fails (failures are encoded as failure replies). The worker runs
    /// it under the handler's limits, which catch a panic. Shared by the clones of the handler
    /// (it holds the service implementation, if any).
    run: Arc<dyn Run>,
    /// The states the method's `State<T>` parameters need.
    needs: fn() -> Vec<Needed>,
    /// The states given to this handler (`Handler::state`); once a worker starts, these with
    /// the worker's under them (`Handler::resolve`). Shared with every request's context.
    states: Arc<States>,
    /// Set for task and event handlers, which settle their deliveries themselves (then `run`
    /// is never called); shared by every clone of the handler.
    settle: Option<Arc<dyn Settle>>,
    /// Time limit, message size and blocking, as set on this handler.
    limits: HandlerLimits,
    /// Set by `task::observe`: told when a worker consumes for this handler, and (RPC
    /// handlers; task and event handlers report through their `settle`) of every request run.
    observer: Option<Observer>,
    /// A revocation stops a run of this handler (tasks that opted in: `cancellable`).
    cancellable: bool,
    /// At most this many runs per period on each worker.
    rate_limit: Option<RateLimit>,
    /// The worker's limiter for `rate_limit`: made fresh by `resolve` when a worker starts,
    /// so each worker has its own; shared by the handler's clones in that worker.
    limiter: Option<Arc<Limiter>>,
}

/// What running an RPC handler on one request gave: the reply to send, and the failure it
/// carries, described (`None` for an `Ok` reply).
pub(crate) struct Answer {
    pub(crate) reply: Vec<u8>,
    pub(crate) failure: Option<String>,
}

impl std::fmt::Debug for Handler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Handler")
            .field("queue", &self.queue)
            .field("method", &self.method)
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

impl Handler {
    /// The handler of method `M` (a `#[lepus::rpc]` function), on `M::QUEUE`.
    pub fn new<M: Invoke<()>>() -> Self {
        Handler::with_receiver::<M, ()>(())
    }

    /// The handler of method `M` of a service, run on `receiver` (the implementation, in an
    /// `Arc`), on `M::QUEUE`. The generated `AccountsServer` builds one per method.
    pub fn with_receiver<M, R>(receiver: R) -> Self
    where
        M: Invoke<R>,
        R: Send + Sync + 'static,
    {
        Handler {
            queue: Cow::Borrowed(M::QUEUE),
            method: Cow::Borrowed(M::NAME),
            run: Arc::new(Runner::<M, R> {
                receiver,
                method: PhantomData,
            }),
            needs: M::needs,
            states: Arc::default(),
            settle: None,
            limits: HandlerLimits::default(),
            observer: None,
            cancellable: false,
            rate_limit: None,
            limiter: None,
        }
    }

    /// A task or event handler: the worker hands it whole deliveries (see `worker/settle`).
    pub(crate) fn settling(
        queue: impl Into<Cow<'static, str>>,
        method: impl Into<Cow<'static, str>>,
        settle: Arc<dyn Settle>,
        needs: fn() -> Vec<Needed>,
        limits: HandlerLimits,
    ) -> Self {
        Handler {
            queue: queue.into(),
            method: method.into(),
            run: Arc::new(NeverRun),
            needs,
            states: Arc::default(),
            settle: Some(settle),
            limits,
            observer: None,
            cancellable: false,
            rate_limit: None,
            limiter: None,
        }
    }

    /// Lets a revocation ([`Control::revoke`](crate::control::Control::revoke)) stop a running
    /// task of this handler: its future is dropped at its next await point, the delivery acked
    /// and the task reported revoked (not retried). Off by default: a task that must not stop
    /// halfway runs to its end, and only its later deliveries are skipped. The
    /// `cancellable = true` key of `#[lepus::task]` sets this.
    pub fn cancellable(mut self, cancellable: bool) -> Self {
        self.cancellable = cancellable;
        self
    }

    /// True when a revocation stops a running task of this handler.
    pub(crate) fn is_cancellable(&self) -> bool {
        self.cancellable
    }

    /// `call`, `task` or `event` (what `inspect` reports).
    pub(crate) fn kind(&self) -> &'static str {
        match &self.settle {
            None => "call",
            Some(settle) if settle.dead_letters() => "task",
            Some(_) => "event",
        }
    }

    /// The same handler with a state for its `State<T>` parameters, given to this handler
    /// only: it wins over a state of the same type given to the worker
    /// ([`Worker::state`](crate::Worker::state)). One value per type; the handler's clones share
    /// it, every request gets a clone of `T`.
    pub fn state<T: Clone + Send + Sync + 'static>(mut self, value: T) -> Self {
        Arc::make_mut(&mut self.states).insert(value);
        self
    }

    /// The states this handler's parameters need.
    pub fn needs(&self) -> Vec<Needed> {
        (self.needs)()
    }

    /// Puts the worker's states under the handler's own and checks that every state the
    /// handler needs is there.
    pub(crate) fn resolve(&mut self, worker: &States) -> Result<(), Error> {
        let states = self.states.over(worker);
        if let Some(missing) = states.first_missing(&self.needs()) {
            return Err(Error::Config(missing_state_message(
                &self.method,
                missing.type_name(),
            )));
        }
        self.states = Arc::new(states);
        self.limiter = self.rate_limit.map(|limit| Arc::new(Limiter::new(limit)));
        Ok(())
    }

    /// Starts at most `limit` runs of this handler per period on each worker; a delivery over
    /// the limit waits for its turn without holding a concurrency slot (see
    /// [`RateLimit`] for why per worker, and how not to delay other handlers). The
    /// `rate_limit = "20/s"` key of `#[lepus::task]` sets this.
    pub fn rate_limit(mut self, limit: RateLimit) -> Self {
        self.rate_limit = Some(limit);
        self
    }

    /// This worker's limiter, if the handler is rate-limited.
    pub(crate) fn limiter(&self) -> Option<&Arc<Limiter>> {
        self.limiter.as_ref()
    }

    /// The states of this handler (with the worker's, once it started).
    pub(crate) fn states(&self) -> &Arc<States> {
        &self.states
    }

    /// The same handler, reporting to `observer` (see `task::observe`).
    pub(crate) fn with_observer(mut self, observer: Observer) -> Self {
        self.observer = Some(observer);
        self
    }

    /// The observer of an observed handler.
    pub(crate) fn observer(&self) -> Option<&Observer> {
        self.observer.as_ref()
    }

    /// The self-settling part of a task or event handler (`None` for an RPC handler).
    pub(crate) fn settle(&self) -> Option<&Arc<dyn Settle>> {
        self.settle.as_ref()
    }

    setters! {
        /// Serves the same method on another queue (e.g. one per tenant or per test).
        on_queue(queue: impl Into<String>) => queue = Cow::Owned(queue.into());

        /// Stops a run of this handler after `limit` of wall time: the call is answered with
        /// [`FailureKind::TimeLimit`], the task attempt fails (and is retried), the event is
        /// rejected. An RPC call also stops at its caller's deadline, whichever comes first. For a
        /// task this replaces its `time_limit`. See the module `limits` for what can be stopped.
        time_limit(limit: Duration) => limits.time_limit = Some(limit);

        /// Runs the handler on tokio's blocking pool (`spawn_blocking`), for handlers that block
        /// their thread (`std::thread::sleep`, blocking I/O, long computations): they then cannot
        /// stall the other handlers and the worker's own loop. The `blocking = true` key of the
        /// attributes sets this.
        blocking(blocking: bool) => limits.blocking = blocking;

        /// Refuses, before decoding, a message body larger than `bytes` (default: the worker's
        /// [`Worker::max_message_size`](crate::Worker::max_message_size)): the call is answered
        /// with [`FailureKind::TooLarge`], the task dead-lettered, the event rejected. An RPC
        /// handler's reply may not be larger either ([`FailureKind::BadReply`]).
        max_message_size(bytes: usize) => limits.max_message_size = Some(bytes);
    }

    /// The limits set on this handler (unset ones take the worker's defaults).
    pub(crate) fn limits(&self) -> HandlerLimits {
        self.limits
    }

    /// The RPC handler's future for one request body, run inside `cx` (decoding, the injection
    /// and the method all happen when it is polled, so under the limits it is run with);
    /// `max_reply`: the largest reply body.
    pub(crate) fn invoke(&self, body: Vec<u8>, cx: Context, max_reply: usize) -> BoxFuture<Answer> {
        let run = Arc::clone(&self.run);
        Box::pin(async move {
            let running = run.run(body, &cx, max_reply);
            cx.scope(running).await
        })
    }

    /// The queue this handler consumes from.
    pub fn queue(&self) -> &str {
        &self.queue
    }

    /// The method name it answers to.
    pub fn method(&self) -> &str {
        &self.method
    }

    /// The method name, without a copy when it is static (as generated handlers' are).
    pub(crate) fn method_name(&self) -> Cow<'static, str> {
        self.method.clone()
    }

    /// Runs the handler on a request body in place (a call from a handler to its own worker,
    /// `call_local`) inside `cx`, under its own time limit and blocking setting, and returns
    /// the reply; a panic or the time limit becomes a failure reply.
    pub(crate) async fn dispatch(&self, body: Vec<u8>, cx: Context) -> Answer {
        let mut no_slot = None;
        let limits = self.limits;
        match limits::run(
            self.invoke(body, cx, usize::MAX),
            limits.time_limit,
            limits.blocking,
            &mut no_slot,
        )
        .await
        {
            Ran::Done(answer) => answer,
            ran @ Ran::TimedOut { .. } => {
                let message = ran.failure().unwrap_or_default();
                failed(FailureKind::TimeLimit, message)
            }
            Ran::Panicked(message) => {
                tracing::warn!(method = %self.method, panic = %message, "handler panicked");
                Answer {
                    reply: envelope::encode_failure(FailureKind::Panicked, &message),
                    failure: Some(format!("panicked: {message}")),
                }
            }
        }
    }
}

/// A failure reply and its description.
fn failed(kind: FailureKind, message: String) -> Answer {
    Answer {
        reply: envelope::encode_failure(kind, &message),
        failure: Some(message),
    }
}

/// The message of a state a handler needs and was not given.
pub(crate) fn missing_state_message(method: &str, type_name: &str) -> String {
    format!(
        "handler {method} takes State<{type_name}>, which was not given: add it with \
         Worker::state(..) or Handler::state(..)"
    )
}

/// Decode, run, encode: the type-erased body of an RPC handler.
pub(crate) trait Run: Send + Sync + 'static {
    /// The future of one request, refusing a reply larger than `max_reply`; it holds no borrow
    /// of `self` or `cx`.
    fn run(&self, body: Vec<u8>, cx: &Context, max_reply: usize) -> BoxFuture<Answer>;
}

/// The [`Run`] of method `M` on `receiver`.
struct Runner<M, R> {
    receiver: R,
    method: PhantomData<fn() -> M>,
}

impl<M: Invoke<R>, R: Send + Sync + 'static> Run for Runner<M, R> {
    fn run(&self, body: Vec<u8>, cx: &Context, max_reply: usize) -> BoxFuture<Answer> {
        let args = match envelope::decode_request::<M::Args>(&body) {
            Ok(args) => args,
            Err(err) => {
                return ready(failed(
                    FailureKind::BadRequest,
                    bounded_error(format!("cannot decode the arguments of {}: {err}", M::NAME)),
                ))
            }
        };
        drop(body);
        let running = match M::invoke(&self.receiver, args, cx) {
            Ok(running) => running,
            // Workers check the states before they consume, and local runs before they run:
            // not reached in practice.
            Err(missing) => {
                return ready(failed(
                    FailureKind::Panicked,
                    missing_state_message(M::NAME, missing.type_name),
                ))
            }
        };
        Box::pin(finish::<M, R>(running, max_reply))
    }
}

/// Awaits a run and encodes its reply.
async fn finish<M: Invoke<R>, R>(
    running: impl Future<Output = Result<M::Ok, M::Err>>,
    max_reply: usize,
) -> Answer {
    let result = running.await;
    let failure = result.as_ref().err().map(M::describe_err);
    match envelope::encode_reply_with(&result, &M::err_codec()) {
        Ok(reply) if reply.len() <= max_reply => Answer { reply, failure },
        Ok(reply) => failed(
            FailureKind::BadReply,
            format!(
                "the result of {} encodes to {} bytes, more than the handler's maximum \
                 message size of {max_reply}",
                M::NAME,
                reply.len()
            ),
        ),
        Err(err) => failed(
            FailureKind::BadReply,
            bounded_error(format!("cannot encode the result of {}: {err}", M::NAME)),
        ),
    }
}

fn ready(ran: Answer) -> BoxFuture<Answer> {
    Box::pin(std::future::ready(ran))
}

/// The `run` of a self-settling handler: the worker routes its deliveries to `Settle::handle`
/// instead, so this only answers a request that reached it by mistake.
struct NeverRun;

impl Run for NeverRun {
    fn run(&self, _: Vec<u8>, _: &Context, _: usize) -> BoxFuture<Answer> {
        ready(failed(
            FailureKind::UnknownMethod,
            "this method is a task or event handler, not an RPC method".to_owned(),
        ))
    }
}

/// What [`Worker::serve`](crate::Worker::serve) takes: one [`Handler`] (`fib::handler()`), a
/// list of them, or a whole service (the generated `AccountsServer::new(implementation)`).
pub trait IntoHandlers {
    /// The handlers, one per method.
    fn into_handlers(self) -> Vec<Handler>;
}

impl IntoHandlers for Handler {
    fn into_handlers(self) -> Vec<Handler> {
        vec![self]
    }
}

impl IntoHandlers for Vec<Handler> {
    fn into_handlers(self) -> Vec<Handler> {
        self
    }
}

impl<const N: usize> IntoHandlers for [Handler; N] {
    fn into_handlers(self) -> Vec<Handler> {
        self.into()
    }
}

/// The text of a panic payload (`&str` or `String`), else a placeholder; at most
/// [`MAX_ERROR_LEN`](crate::task::headers::MAX_ERROR_LEN) bytes.
pub(crate) fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        bounded_error((*s).to_owned())
    } else if let Some(s) = payload.downcast_ref::<String>() {
        bounded_error(s.clone())
    } else {
        "non-string panic payload".to_owned()
    }
}
