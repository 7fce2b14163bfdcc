//! [`ByteBudget`]: the prefetch-by-bytes guard, how many message bytes a worker holds.
//!
//! The prefetch count bounds how many unacked messages the broker pushes to a consumer, not
//! their size: 16 messages of 100 MB are 1.6 GB in the worker before anything runs. AMQP's
//! answer, `basic.qos prefetch-size`, is implemented by neither RabbitMQ nor the bundled broker,
//! so the worker bounds it itself. It takes every delivery off its consumers as soon as it
//! arrives and counts its body here until the handler settles it. When the bodies it holds
//! reach the budget it *pauses*: it cancels its consumers (`basic.cancel`; unacked deliveries
//! stay valid), so the broker sends nothing more; once the handlers have brought the bytes
//! held under half the budget it consumes again, with a prefetch count sized for the largest
//! message it saw (`budget / largest`, at least 1, at most the configured prefetch), and raises
//! the count back once messages are small again. Bytes held therefore stay under the budget
//! plus what the broker had already sent when the budget was reached (at most the prefetch
//! count of messages; after the first pause, at most `budget / largest` of them).
//!
//! Queues declared `auto_delete` are never paused: cancelling their last consumer would make
//! the broker delete them, with the messages in them.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::sync::Notify;

/// The bytes a worker holds, shared by the worker loop and the handler tasks (each holds a
/// [`Held`] for its delivery).
#[derive(Debug, Default)]
pub(crate) struct ByteBudget {
    /// Bytes of the deliveries taken off the consumers and not yet settled.
    held: AtomicUsize,
    /// Set while the worker is paused: only then does a release wake it.
    paused: AtomicBool,
    /// Woken by a release while paused (the worker loop waits on it).
    released: Notify,
}

impl ByteBudget {
    /// Counts `bytes` as held until the returned guard is dropped.
    pub(crate) fn hold(self: &Arc<Self>, bytes: usize) -> Held {
        self.held.fetch_add(bytes, Ordering::Relaxed);
        Held {
            budget: self.clone(),
            bytes,
        }
    }

    /// The bytes held now.
    pub(crate) fn held(&self) -> usize {
        self.held.load(Ordering::Relaxed)
    }

    /// Marks the worker paused or not (a paused worker is woken by every release).
    pub(crate) fn set_paused(&self, paused: bool) {
        self.paused.store(paused, Ordering::SeqCst);
    }

    /// Waits for a release (call while paused).
    pub(crate) async fn released(&self) {
        self.released.notified().await;
    }
}

/// The bytes of one delivery, released when its handler task drops this.
#[derive(Debug)]
pub(crate) struct Held {
    budget: Arc<ByteBudget>,
    bytes: usize,
}

impl Drop for Held {
    fn drop(&mut self) {
        self.budget.held.fetch_sub(self.bytes, Ordering::Relaxed);
        if self.budget.paused.load(Ordering::SeqCst) {
            self.budget.released.notify_one();
        }
    }
}

/// The prefetch count to consume with after a pause: as many of the largest messages seen as
/// fit the budget, at least 1, at most `configured`.
pub(crate) fn prefetch_for(budget: usize, largest: usize, configured: u16) -> u16 {
    let fitting = budget / largest.max(1);
    u16::try_from(fitting)
        .unwrap_or(u16::MAX)
        .clamp(1, configured.max(1))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // in tests a failed unwrap is a failed test
mod tests {
    use super::*;

    #[test]
    fn held_bytes_are_released_by_the_guard() {
        let budget = Arc::new(ByteBudget::default());
        let a = budget.hold(100);
        let b = budget.hold(50);
        assert_eq!(budget.held(), 150);
        drop(a);
        assert_eq!(budget.held(), 50);
        drop(b);
        assert_eq!(budget.held(), 0);
    }

    #[test]
    fn the_prefetch_after_a_pause_fits_the_largest_message() {
        assert_eq!(prefetch_for(64 << 20, 100 << 20, 16), 1);
        assert_eq!(prefetch_for(64 << 20, 8 << 20, 16), 8);
        assert_eq!(prefetch_for(64 << 20, 1, 16), 16);
        assert_eq!(prefetch_for(64 << 20, 0, 16), 16);
    }

    #[tokio::test]
    async fn a_release_wakes_a_paused_worker() {
        let budget = Arc::new(ByteBudget::default());
        let held = budget.hold(10);
        budget.set_paused(true);
        let waiter = tokio::spawn({
            let budget = budget.clone();
            async move { budget.released().await }
        });
        tokio::task::yield_now().await;
        drop(held);
        tokio::time::timeout(std::time::Duration::from_secs(5), waiter)
            .await
            .expect("woken")
            .expect("no panic");
    }
}
