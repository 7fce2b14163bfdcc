//! [`Handler`]: one served method, type-erased so a worker can hold many.

use std::borrow::Cow;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use futures::FutureExt;

use crate::envelope;
use crate::error::FailureKind;
use crate::method::{BoxFuture, Method};
use crate::task::Observer;
use crate::worker::settle::Settle;

/// A method a worker can serve: its queue, its name and how to turn a request body into a
/// reply body. Built by the generated `fib::handler()` (= `Handler::new::<fib::FibRpc>()`).
#[derive(Clone)]
pub struct Handler {
    queue: Cow<'static, str>,
    method: Cow<'static, str>,
    /// Decodes the request, runs the function, encodes the reply; never fails (failures are
    /// encoded as failure replies). Panics are caught by [`Handler::dispatch`].
    run: fn(Vec<u8>) -> BoxFuture<Ran>,
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
    /// The handler of method `M`, on `M::QUEUE`.
    pub fn new<M: Method>() -> Self {
        Handler {
            queue: Cow::Borrowed(M::QUEUE),
            method: Cow::Borrowed(M::NAME),
            run: run::<M>,
            settle: None,
            observer: None,
        }
    }

    /// A task or event handler: the worker hands it whole deliveries (see `worker/settle`).
    pub(crate) fn settling(
        queue: impl Into<Cow<'static, str>>,
        method: impl Into<Cow<'static, str>>,
        settle: Arc<dyn Settle>,
    ) -> Self {
        Handler {
            queue: queue.into(),
            method: method.into(),
            run: never_run,
            settle: Some(settle),
            observer: None,
        }
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

    /// Runs the handler on a request body and returns the reply body; a panic in the handler
    /// becomes a failure reply.
    pub(crate) async fn dispatch(&self, body: Vec<u8>) -> Ran {
        let run = self.run;
        match AssertUnwindSafe(async move { run(body).await })
            .catch_unwind()
            .await
        {
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

/// Decode, run, encode for method `M`.
fn run<M: Method>(body: Vec<u8>) -> BoxFuture<Ran> {
    Box::pin(async move {
        let args = match envelope::decode_request::<M::Args>(&body) {
            Ok(args) => args,
            Err(err) => {
                return failed(
                    FailureKind::BadRequest,
                    format!("cannot decode the arguments of {}: {err}", M::NAME),
                )
            }
        };
        let result = M::invoke(args).await;
        let failure = result.as_ref().err().map(M::describe_err);
        match envelope::encode_reply_with(&result, &M::err_codec()) {
            Ok(reply) => Ran { reply, failure },
            Err(err) => failed(
                FailureKind::BadReply,
                format!("cannot encode the result of {}: {err}", M::NAME),
            ),
        }
    })
}

/// The `run` of a self-settling handler: the worker routes its deliveries to `Settle::handle`
/// instead, so this only answers a request that reached it by mistake.
fn never_run(_: Vec<u8>) -> BoxFuture<Ran> {
    Box::pin(async {
        failed(
            FailureKind::UnknownMethod,
            "this method is a task or event handler, not an RPC method".to_owned(),
        )
    })
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
