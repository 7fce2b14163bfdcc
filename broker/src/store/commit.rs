//! `Commit`: the future that resolves when the writer thread has committed a record.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::sync::oneshot;

use super::log_writer::Waiter;
use super::StoreError;

/// Resolves when a record is committed (on disk under [`super::FsyncPolicy::Always`]); the broker
/// sends the publisher confirm after it. Dropping it does not cancel the write.
#[derive(Debug)]
#[must_use = "a record is not durable until its Commit resolves"]
pub struct Commit(pub(crate) oneshot::Receiver<Result<(), StoreError>>);

impl Commit {
    /// A commit, and the waiter through which the writer thread resolves it (handed to the
    /// append or commit point the commit stands for).
    pub(crate) fn pending() -> (Self, Waiter) {
        let (tx, rx) = oneshot::channel();
        (Self(rx), Waiter::Outcome(tx))
    }

    /// A commit that fails (with [`StoreError::Closed`]): for a change the store refused
    /// where the refusal cannot be returned, so that whoever waits for it is not told the
    /// change is durable.
    pub(crate) fn failed() -> Self {
        let (_, rx) = oneshot::channel();
        Self(rx)
    }
}

impl Future for Commit {
    type Output = Result<(), StoreError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.0)
            .poll(cx)
            .map(|result| result.unwrap_or(Err(StoreError::Closed)))
    }
}
