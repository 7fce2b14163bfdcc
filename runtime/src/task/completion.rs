//! Hearing when task and event handlers finish: [`observe`] wraps a handler so that every
//! settled delivery is reported as a [`Completion`] on a [`Completions`] stream. This is the
//! user-facing test helper (nameko's `entrypoint_waiter`): serve the observed handler, enqueue
//! or publish, then `completions.next().await`.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};

use crate::error::{Error, Result};
use crate::worker::{Handler, IntoHandlers};

/// How one delivery ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The handler succeeded and the delivery was acked.
    Succeeded,
    /// A task attempt failed; the task will run again after `delay`.
    Retrying {
        /// The attempt's error.
        error: String,
        /// The wait before the next attempt.
        delay: Duration,
    },
    /// A task's last attempt failed; it sits in the dead-letter queue.
    DeadLettered {
        /// The last attempt's error.
        error: String,
    },
    /// An event handler failed (the event was rejected: dropped, or dead-lettered when its
    /// queue has a dead-letter exchange), or an RPC handler answered with an error (its `Err`,
    /// a panic, undecodable arguments).
    Failed {
        /// The handler's error.
        error: String,
    },
    /// The delivery could not be settled (the channel or connection broke); the broker will
    /// redeliver it.
    Unsettled {
        /// What went wrong.
        error: String,
    },
    /// The task was revoked ([`Control::revoke`](crate::control::Control::revoke)): acked
    /// without running, or cancelled while it ran (a `cancellable` task); not retried.
    Revoked,
}

impl Outcome {
    /// The outcome's name as the control plane counts it (`succeeded`, `retried`,
    /// `dead_lettered`, `failed`, `unsettled`, `revoked`).
    pub fn name(&self) -> &'static str {
        match self {
            Outcome::Succeeded => "succeeded",
            Outcome::Retrying { .. } => "retried",
            Outcome::DeadLettered { .. } => "dead_lettered",
            Outcome::Failed { .. } => "failed",
            Outcome::Unsettled { .. } => "unsettled",
            Outcome::Revoked => "revoked",
        }
    }
}

/// One settled delivery of an observed handler.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Completion {
    /// The queue the delivery came from.
    pub queue: String,
    /// The task or event handler name.
    pub name: String,
    /// The message's `message_id`, if it had one.
    pub message_id: Option<String>,
    /// The attempt number (1 for a first run; events are always 1).
    pub attempt: u32,
    /// True when the broker had delivered this message before (to a worker that died or lost
    /// its connection before settling it).
    pub redelivered: bool,
    /// How it ended.
    pub outcome: Outcome,
}

impl Completion {
    /// How `delivery`, from `queue`, ended for handler `name`.
    pub(crate) fn of(
        delivery: &lapin::message::Delivery,
        queue: &str,
        name: String,
        attempt: u32,
        outcome: Outcome,
    ) -> Completion {
        Completion {
            queue: queue.to_owned(),
            name,
            message_id: delivery
                .properties
                .message_id()
                .as_ref()
                .map(|id| id.to_string()),
            redelivered: crate::worker::redelivery::was_redelivered(delivery),
            attempt,
            outcome,
        }
    }
}

/// The sending half given to an observed handler; cloned with it. Sends never block and
/// never fail the handler (a dropped [`Completions`] just stops the reports).
#[derive(Debug, Clone)]
pub(crate) struct Observer {
    completions: mpsc::UnboundedSender<Completion>,
    /// Counts the handler's topology declarations (one per worker link generation); the
    /// receiver is in [`Completions`].
    declared: Arc<watch::Sender<u64>>,
}

impl Observer {
    pub(crate) fn report(&self, completion: Completion) {
        let _ = self.completions.send(completion);
    }

    /// A worker consumes for the handler (its queue, exchange and bindings are declared).
    pub(crate) fn declared(&self) {
        self.declared.send_modify(|n| *n += 1);
    }
}

/// The completions of an observed handler, in the order they happened.
#[derive(Debug)]
pub struct Completions {
    /// The receiving half; the senders live in the observed handler's clones.
    rx: mpsc::UnboundedReceiver<Completion>,
    /// How many times a worker declared the handler's topology.
    declared: watch::Receiver<u64>,
}

impl Completions {
    /// Waits until a worker serving the handler consumes from its queue (declared with its
    /// exchange and bindings: from then on calls, published events and enqueued tasks reach
    /// it), or [`Error::Timeout`].
    pub async fn declared(&mut self, timeout: Duration) -> Result<()> {
        match tokio::time::timeout(timeout, self.declared.wait_for(|n| *n > 0)).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(_)) => Err(Error::Closed),
            Err(_) => Err(Error::Timeout(timeout)),
        }
    }

    /// The next completion (`None` once every clone of the handler is gone).
    pub async fn next(&mut self) -> Option<Completion> {
        self.rx.recv().await
    }

    /// The next completion, or [`Error::Timeout`] after `timeout`.
    pub async fn next_within(&mut self, timeout: Duration) -> Result<Completion> {
        match tokio::time::timeout(timeout, self.rx.recv()).await {
            Ok(Some(completion)) => Ok(completion),
            Ok(None) => Err(Error::Closed),
            Err(_) => Err(Error::Timeout(timeout)),
        }
    }

    /// Waits for completions until `done` returns true for one, and returns every completion
    /// seen (that one last); [`Error::Timeout`] after `timeout`.
    pub async fn wait_until(
        &mut self,
        timeout: Duration,
        mut done: impl FnMut(&Completion) -> bool,
    ) -> Result<Vec<Completion>> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut seen = Vec::new();
        loop {
            match tokio::time::timeout_at(deadline, self.rx.recv()).await {
                Ok(Some(completion)) => {
                    let finished = done(&completion);
                    seen.push(completion);
                    if finished {
                        return Ok(seen);
                    }
                }
                Ok(None) => return Err(Error::Closed),
                Err(_) => return Err(Error::Timeout(timeout)),
            }
        }
    }

    /// Waits for `count` completions (any outcome) within `timeout`.
    pub async fn wait_for(&mut self, count: usize, timeout: Duration) -> Result<Vec<Completion>> {
        if count == 0 {
            return Ok(Vec::new());
        }
        let mut seen = 0;
        self.wait_until(timeout, |_| {
            seen += 1;
            seen >= count
        })
        .await
    }

    /// Completions already reported, without waiting.
    pub fn drain(&mut self) -> Vec<Completion> {
        let mut out = Vec::new();
        while let Ok(completion) = self.rx.try_recv() {
            out.push(completion);
        }
        out
    }
}

/// Wraps a handler (RPC, task or event) so that each delivery it settles is reported on the
/// returned [`Completions`]; serve the returned handler. An RPC request reports
/// [`Outcome::Succeeded`] or [`Outcome::Failed`] once its handler returned (before its reply
/// is published, so a caller that got its reply finds the completion already there).
pub fn observe(handler: Handler) -> (Handler, Completions) {
    let (observer, completions) = observer();
    (handler.with_observer(observer), completions)
}

/// [`observe`] for several handlers at once (every method of a service: `observe_all(server)`),
/// reporting on one [`Completions`].
pub fn observe_all(handlers: impl IntoHandlers) -> (Vec<Handler>, Completions) {
    let (observer, completions) = observer();
    let handlers = handlers
        .into_handlers()
        .into_iter()
        .map(|handler| handler.with_observer(observer.clone()))
        .collect();
    (handlers, completions)
}

/// A new observer and the completions it reports to.
fn observer() -> (Observer, Completions) {
    let (tx, rx) = mpsc::unbounded_channel();
    let (declared_tx, declared) = watch::channel(0);
    let observer = Observer {
        completions: tx,
        declared: Arc::new(declared_tx),
    };
    (observer, Completions { rx, declared })
}
