//! A bounded window of in-flight AMQP operations (publishes, acks, publisher confirms).
//!
//! lapin's `basic_publish` and `basic_ack` futures resolve only once their frames are written
//! (and, with confirms, once the broker confirmed). Awaiting each one in turn would make the
//! bench as slow as one round trip through lapin's I/O loop per message, which measures lapin
//! rather than the broker. A [`Window`] polls each operation once when it is pushed — lapin
//! queues the frames during that first poll, so frames leave in push order — then keeps it until
//! it completes, awaiting the oldest only when more than `cap` are outstanding. This is what
//! PerfTest's confirm window and lavinmqperf's pipelining do.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::task::Poll;

use crate::error::Result;

/// A boxed in-flight operation; it may borrow what outlives the window (e.g. the `Channel`,
/// so no per-message `Channel` clone is needed: lapin's clone costs ~10% of the bench's CPU).
type Op<'a> = Pin<Box<dyn Future<Output = Result<()>> + Send + 'a>>;

/// At most `cap` outstanding operations, completed in push order.
pub(crate) struct Window<'a> {
    /// Operations that were polled once and are not yet known complete, oldest first.
    pending: VecDeque<Op<'a>>,
    cap: usize,
}

impl std::fmt::Debug for Window<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Window")
            .field("pending", &self.pending.len())
            .field("cap", &self.cap)
            .finish()
    }
}

impl<'a> Window<'a> {
    /// A window holding at most `cap` (at least 1) operations.
    pub(crate) fn new(cap: usize) -> Self {
        Window {
            pending: VecDeque::with_capacity(cap.max(1)),
            cap: cap.max(1),
        }
    }

    /// Starts `op` (polls it once, so it queues its frames now), then waits while more than
    /// `cap` operations are outstanding. The first error of any operation is returned.
    pub(crate) async fn push(
        &mut self,
        op: impl Future<Output = Result<()>> + Send + 'a,
    ) -> Result<()> {
        let mut op: Op<'a> = Box::pin(op);
        match futures::poll!(op.as_mut()) {
            Poll::Ready(res) => res?,
            Poll::Pending => self.pending.push_back(op),
        }
        while self.pending.len() > self.cap {
            if let Some(oldest) = self.pending.pop_front() {
                oldest.await?;
            }
        }
        Ok(())
    }

    /// Number of operations not yet known complete.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.pending.len()
    }

    /// Waits for every outstanding operation.
    pub(crate) async fn drain(&mut self) -> Result<()> {
        while let Some(oldest) = self.pending.pop_front() {
            oldest.await?;
        }
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests may panic on failure
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[tokio::test]
    async fn starts_in_push_order_and_bounds_outstanding() {
        let started = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = tokio::sync::watch::channel(false);
        let mut w = Window::new(3);
        for i in 0..3 {
            let started = Arc::clone(&started);
            let mut rx = rx.clone();
            w.push(async move {
                started.lock().unwrap().push(i);
                let _ = rx.wait_for(|v| *v).await;
                Ok(())
            })
            .await
            .unwrap();
        }
        // Each op ran up to its first await during push, in push order, and none completed.
        assert_eq!(*started.lock().unwrap(), vec![0, 1, 2]);
        assert_eq!(w.len(), 3);
        tx.send_replace(true);
        w.drain().await.unwrap();
        assert_eq!(w.len(), 0);
    }

    #[tokio::test]
    async fn reports_the_first_error() {
        let mut w = Window::new(4);
        let res = w
            .push(async { Err(crate::error::BenchError::Nacked) })
            .await;
        assert!(matches!(res, Err(crate::error::BenchError::Nacked)));
    }
}
