//! [`Handler`]: one served method, type-erased so a worker can hold many, with the states it
//! was given; [`IntoHandlers`]: what `Worker::serve` takes (one handler, or every method of a
//! service).

use std::borrow::Cow;
use std::future::Future;
use std::marker::PhantomData;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use futures::FutureExt;

use crate::context::Context;
use crate::envelope;
use crate::error::{Error, FailureKind};
use crate::method::{BoxFuture, Invoke};
use crate::state::{Needed, States};
use crate::task::Observer;
use crate::worker::settle::Settle;

/// A method a worker can serve: its queue, its name, the states it was given and how to turn a
/// request body into a reply body. Built by the generated `fib::handler()`
/// (= `Handler::new::<fib>()`), or for each method of a service by its generated server.
#[derive(Clone)]
pub struct Handler {
    queue: Cow<'static, str>,
    method: Cow<'static, str>,
    /// Decodes the request, runs the method, encodes the reply; never fails (failures are
    /// encoded as failure replies). Panics are caught by [`Handler::dispatch`]. Shared by the
    /// clones of the handler (it holds the service implementation, if any).
    run: Arc<dyn Run>,
    /// The states the method's `State<T>` parameters need.
    needs: fn() -> Vec<Needed>,
    /// The states given to this handler (`Handler::state`); once a worker starts, these with
    /// the worker's under them (`Handler::resolve`). Shared with every request's context.
    states: Arc<States>,
    /// Set for task and event handlers, which settle their deliveries themselves (then `run`
    /// is never called); shared by every clone of the handler.
    settle: Option<Arc<dyn Settle>>,
    /// Set by `task::observe`: told when a worker consumes for this handler, and (RPC
    /// handlers; task and event handlers report through their `settle`) of every request run.
    observer: Option<Observer>,
}

/// What running an RPC handler on one request gave: the reply to send, and the failure it
/// carries, described (`None` for an `Ok` reply).
pub(crate) struct Ran {
    pub(crate) reply: Vec<u8>,
    pub(crate) failure: Option<String>,
}

impl std::fmt::Debug for Handler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Handler")
            .field("queue", &self.queue)
            .field("method", &self.method)
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
            observer: None,
        }
    }

    /// A task or event handler: the worker hands it whole deliveries (see `worker/settle`).
    pub(crate) fn settling(
        queue: impl Into<Cow<'static, str>>,
        method: impl Into<Cow<'static, str>>,
        settle: Arc<dyn Settle>,
        needs: fn() -> Vec<Needed>,
    ) -> Self {
        Handler {
            queue: queue.into(),
            method: method.into(),
            run: Arc::new(NeverRun),
            needs,
            states: Arc::default(),
            settle: Some(settle),
            observer: None,
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
        Ok(())
    }

    /// The states of this handler (with the worker's, once it started).
    pub(crate) fn states(&self) -> &Arc<States> {
        &self.states
    }

    /// The same handler, reporting to `observer` (see `task::observe`).
    pub(crate) fn with_observer(mut self, observer: Observer) -> Self {
        if let Some(settle) = &self.settle {
            self.settle = Some(settle.observed(observer.clone()));
        }
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

    /// Serves the same method on another queue (e.g. one per tenant or per test).
    pub fn on_queue(mut self, queue: impl Into<String>) -> Self {
        self.queue = Cow::Owned(queue.into());
        self
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

    /// Runs the handler on a request body inside `cx` and returns the reply body; a panic in
    /// the handler becomes a failure reply.
    pub(crate) async fn dispatch(&self, body: Vec<u8>, cx: Context) -> Ran {
        // Decoding (user `Deserialize` impls) and the injection run inside the catch too.
        let running = async {
            let run = self.run.run(body, &cx);
            cx.clone().scope(run).await
        };
        match AssertUnwindSafe(running).catch_unwind().await {
            Ok(ran) => ran,
            Err(payload) => {
                let message = panic_message(payload.as_ref());
                tracing::warn!(method = %self.method, panic = %message, "handler panicked");
                Ran {
                    reply: envelope::encode_failure(FailureKind::Panicked, &message),
                    failure: Some(format!("panicked: {message}")),
                }
            }
        }
    }
}

/// A failure reply and its description.
fn failed(kind: FailureKind, message: String) -> Ran {
    Ran {
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
    /// The future of one request; it holds no borrow of `self` or `cx`.
    fn run(&self, body: Vec<u8>, cx: &Context) -> BoxFuture<Ran>;
}

/// The [`Run`] of method `M` on `receiver`.
struct Runner<M, R> {
    receiver: R,
    method: PhantomData<fn() -> M>,
}

impl<M: Invoke<R>, R: Send + Sync + 'static> Run for Runner<M, R> {
    fn run(&self, body: Vec<u8>, cx: &Context) -> BoxFuture<Ran> {
        let args = match envelope::decode_request::<M::Args>(&body) {
            Ok(args) => args,
            Err(err) => {
                return ready(failed(
                    FailureKind::BadRequest,
                    format!("cannot decode the arguments of {}: {err}", M::NAME),
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
        Box::pin(finish::<M, R>(running))
    }
}

/// Awaits a run and encodes its reply.
async fn finish<M: Invoke<R>, R>(running: impl Future<Output = Result<M::Ok, M::Err>>) -> Ran {
    let result = running.await;
    let failure = result.as_ref().err().map(M::describe_err);
    match envelope::encode_reply_with(&result, &M::err_codec()) {
        Ok(reply) => Ran { reply, failure },
        Err(err) => failed(
            FailureKind::BadReply,
            format!("cannot encode the result of {}: {err}", M::NAME),
        ),
    }
}

fn ready(ran: Ran) -> BoxFuture<Ran> {
    Box::pin(std::future::ready(ran))
}

/// The `run` of a self-settling handler: the worker routes its deliveries to `Settle::handle`
/// instead, so this only answers a request that reached it by mistake.
struct NeverRun;

impl Run for NeverRun {
    fn run(&self, _: Vec<u8>, _: &Context) -> BoxFuture<Ran> {
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

/// The text of a panic payload (`&str` or `String`), else a placeholder.
pub(crate) fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_owned()
    }
}
