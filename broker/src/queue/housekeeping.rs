//! The queue's side of its timer: message TTL expiry at the head (even with no consumer) and
//! the `x-expires` deadline after disuse. The timer task itself belongs to the vhost
//! (`vhost::housekeeping`), which dead-letters what expires and deletes an expired queue.

use super::*;

/// What one pass of the queue's timer found ([`Queue::expire`]).
#[derive(Debug)]
pub(crate) struct Expired {
    /// Messages whose TTL passed at the head, for `VHost::dead_letter`.
    pub(crate) dead: Vec<DeadLetter>,
    /// When the next message expires or the queue falls idle for `x-expires`, if ever.
    pub(crate) next_deadline: Option<Instant>,
    /// The queue has been unused for `x-expires` and is to be deleted.
    pub(crate) queue_expired: bool,
}

impl Queue {
    /// Drops the messages at the head whose TTL has passed by `now`, and says when to look
    /// again and whether `x-expires` has run out. `None` once the queue is deleted.
    #[must_use = "dead letters must be handed to VHost::dead_letter"]
    pub(crate) fn expire(&self, now: Instant) -> Option<Expired> {
        let mut dead = Vec::new();
        let mut st = self.lock();
        if st.deleted {
            return None;
        }
        self.drop_expired_heads(&mut st, &mut dead, now);
        let idle_deadline = self
            .config
            .expires
            .filter(|_| st.consumers.is_empty())
            .and_then(|ms| st.last_used.checked_add(Duration::from_millis(ms)));
        let next_deadline = match (st.next_expiry(), idle_deadline) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        Some(Expired {
            dead,
            next_deadline,
            queue_expired: idle_deadline.is_some_and(|at| at <= now),
        })
    }

    /// Waits until `deadline` (forever with `None`) or until the queue changes in a way that
    /// moves its deadlines (a new expiring message, a consumer change, deletion).
    pub(crate) async fn wait_for_expiry(&self, deadline: Option<Instant>) {
        let wake = async {
            match deadline {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = wake => {}
            _ = self.wake.notified() => {}
        }
    }
}
