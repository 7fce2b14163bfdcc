//! [`HandlerLimits`]: what one handler may take (wall time, message bytes) and where it runs
//! (a worker thread, or tokio's blocking pool), and [`run`], which runs a handler's future under
//! them.
//!
//! # What the runtime can and cannot do about a handler
//! A handler's future is polled on a tokio worker thread. The runtime can stop it only at an
//! `.await`: when the time limit passes, the future is dropped at its next await point. Code
//! that blocks the thread (`std::thread::sleep`, blocking I/O, a long computation) holds that
//! worker thread, and every other handler and the worker's own loop queued on it wait; nothing
//! interrupts it. So:
//! - the time limit counts wall time: a handler that blocked past its limit and then returned
//!   is still a failed attempt (a task is retried, a call answered with a time-limit failure),
//!   although its work was done;
//! - a handler marked `blocking` runs on tokio's blocking pool (`spawn_blocking`), one thread
//!   each, so it cannot stall the others; at its limit it is abandoned at once (the attempt
//!   fails on time) and its future is dropped at its next await point, but a thread that is
//!   blocked cannot be stopped: it keeps the handler's concurrency slot until it returns, and
//!   keeps a runtime from shutting down until then (exit the process instead).

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::time::{Duration, Instant};

use futures::FutureExt;
use tokio::sync::{oneshot, OwnedSemaphorePermit};

use crate::worker::handler::panic_message;

/// Limits of one handler, set on the [`Handler`](crate::Handler) (or, for a task, in its
/// [`TaskOptions`](crate::TaskOptions)); the worker fills in its defaults for those left unset.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct HandlerLimits {
    /// The longest one run may take, wall time (`None`: no limit of its own).
    pub(crate) time_limit: Option<Duration>,
    /// Run on tokio's blocking pool.
    pub(crate) blocking: bool,
    /// The largest message body the handler accepts (`None`: the worker's default).
    pub(crate) max_message_size: Option<usize>,
}

impl HandlerLimits {
    /// These limits, with the worker's defaults where none is set.
    pub(crate) fn or(self, defaults: HandlerLimits) -> HandlerLimits {
        HandlerLimits {
            time_limit: self.time_limit.or(defaults.time_limit),
            blocking: self.blocking || defaults.blocking,
            max_message_size: self.max_message_size.or(defaults.max_message_size),
        }
    }
}

/// How a run under limits ended.
#[derive(Debug)]
pub(crate) enum Ran<T> {
    /// The handler returned within its limit.
    Done(T),
    /// The handler ran past `limit` (it was dropped, or, blocking, it returned too late).
    TimedOut {
        /// The limit it exceeded.
        limit: Duration,
        /// How long it had run when it was given up on.
        after: Duration,
    },
    /// The handler panicked; the panic message.
    Panicked(String),
}

impl<T> Ran<T> {
    /// The failure text of a run that did not return in time or panicked.
    pub(crate) fn failure(&self) -> Option<String> {
        match self {
            Ran::Done(_) => None,
            Ran::TimedOut { limit, after } => Some(format!(
                "time limit of {limit:?} exceeded (gave up after {after:.1?})"
            )),
            Ran::Panicked(message) => Some(format!("panicked: {message}")),
        }
    }
}

/// Runs `future` with at most `limit` of wall time, catching a panic; on the blocking pool when
/// `blocking`. A blocking run takes `slot` (the handler's concurrency permit) with it and
/// releases it when its thread is done, even if that is after the limit.
pub(crate) async fn run<F>(
    future: F,
    limit: Option<Duration>,
    blocking: bool,
    slot: &mut Option<OwnedSemaphorePermit>,
) -> Ran<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    let started = Instant::now();
    if blocking {
        return run_blocking(future, limit, slot.take(), started).await;
    }
    let guarded = AssertUnwindSafe(future).catch_unwind();
    let outcome = match limit {
        Some(limit) => match tokio::time::timeout(limit, guarded).await {
            Ok(outcome) => outcome,
            Err(_) => {
                return Ran::TimedOut {
                    limit,
                    after: started.elapsed(),
                }
            }
        },
        None => guarded.await,
    };
    match outcome {
        // A future that blocked its thread past the limit and then returned: the timer could
        // not fire while it held the thread, but the limit is wall time.
        Ok(_) if limit.is_some_and(|limit| started.elapsed() > limit) => Ran::TimedOut {
            limit: limit.unwrap_or_default(),
            after: started.elapsed(),
        },
        Ok(value) => Ran::Done(value),
        Err(payload) => Ran::Panicked(panic_message(payload.as_ref())),
    }
}

/// `run` on the blocking pool: the future is driven by `Handle::block_on` on a thread of its
/// own; the limit is watched from here, so it fires on time however the thread is blocked.
async fn run_blocking<F>(
    future: F,
    limit: Option<Duration>,
    slot: Option<OwnedSemaphorePermit>,
    started: Instant,
) -> Ran<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    let runtime = tokio::runtime::Handle::current();
    // Dropped when this run gives up (the limit, or the worker aborting it at shutdown): the
    // thread then drops the future at its next await point.
    let (give_up, given_up) = oneshot::channel::<()>();
    let thread = tokio::task::spawn_blocking(move || {
        // The concurrency slot stays taken while this thread is busy.
        let _slot = slot;
        runtime.block_on(async move {
            tokio::select! {
                outcome = AssertUnwindSafe(future).catch_unwind() => Some(outcome),
                _ = given_up => None,
            }
        })
    });
    let joined = match limit {
        Some(limit) => match tokio::time::timeout(limit, thread).await {
            Ok(joined) => joined,
            Err(_) => {
                drop(give_up);
                return Ran::TimedOut {
                    limit,
                    after: started.elapsed(),
                };
            }
        },
        None => thread.await,
    };
    drop(give_up);
    match joined {
        Ok(Some(Ok(value))) => Ran::Done(value),
        Ok(Some(Err(payload))) => Ran::Panicked(panic_message(payload.as_ref())),
        // The runtime is shutting down under the thread.
        Ok(None) => Ran::Panicked("the blocking handler was cancelled".to_owned()),
        Err(err) => Ran::Panicked(format!("the blocking handler's thread failed: {err}")),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // in tests a failed unwrap is a failed test
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_future_past_its_limit_is_dropped_on_time() {
        let ran = run(
            std::future::pending::<()>(),
            Some(Duration::from_millis(50)),
            false,
            &mut None,
        )
        .await;
        assert!(matches!(ran, Ran::TimedOut { .. }), "{ran:?}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn blocking_past_the_limit_is_a_timeout_even_when_it_returns() {
        let ran = run(
            async { std::thread::sleep(Duration::from_millis(300)) },
            Some(Duration::from_millis(50)),
            false,
            &mut None,
        )
        .await;
        match ran {
            Ran::TimedOut { after, .. } => assert!(after >= Duration::from_millis(300)),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_blocking_handler_is_given_up_on_at_its_limit_and_keeps_its_slot() {
        let slots = std::sync::Arc::new(tokio::sync::Semaphore::new(1));
        let mut slot = Some(slots.clone().acquire_owned().await.unwrap());
        let started = Instant::now();
        let ran = run(
            async { std::thread::sleep(Duration::from_millis(2_000)) },
            Some(Duration::from_millis(50)),
            true,
            &mut slot,
        )
        .await;
        assert!(matches!(ran, Ran::TimedOut { .. }), "{ran:?}");
        // Given up on long before the thread returns...
        assert!(started.elapsed() < Duration::from_millis(1_500));
        // ...whose slot comes back only once it does.
        assert_eq!(slots.available_permits(), 0);
        let _again = slots.acquire().await.unwrap();
        assert!(started.elapsed() >= Duration::from_millis(2_000));
    }

    #[tokio::test]
    async fn panics_are_caught_and_values_returned() {
        let ran = run(async { 7 }, Some(Duration::from_secs(5)), false, &mut None).await;
        assert!(matches!(ran, Ran::Done(7)));
        let ran = run(
            async {
                if true {
                    panic!("boom");
                }
                1
            },
            None,
            false,
            &mut None,
        )
        .await;
        assert!(matches!(&ran, Ran::Panicked(m) if m == "boom"), "{ran:?}");
        let ran = run(async { 8 }, None, true, &mut None).await;
        assert!(matches!(ran, Ran::Done(8)));
    }
}
