//! The queue operations that may drop messages, as the vhost runs them: each hands what the
//! queue returns as dead letters to [`VHost::dead_letter`] once the queue lock is released
//! (queues return their dead letters rather than calling up into the vhost), and the queue's
//! timer task (TTL expiry at the head, `x-expires`).

use std::sync::{Arc, Weak};

use tokio::time::Instant;

use super::VHost;
use crate::message::Message;
use crate::queue::{EnqueueOutcome, Queue, QueuedMessage};

impl VHost {
    /// `Queue::enqueue` on `queue`, its overflow and expiry dead-lettered.
    pub(crate) fn enqueue(&self, queue: &Arc<Queue>, message: Arc<Message>) -> EnqueueOutcome {
        let (outcome, dead) = queue.enqueue(&self.stats, message);
        self.dead_letter(queue, dead);
        outcome
    }

    /// `Queue::dispatch` on `queue`, what expired on the way dead-lettered.
    pub(crate) fn dispatch(&self, queue: &Arc<Queue>) {
        let dead = queue.dispatch(&self.stats);
        self.dead_letter(queue, dead);
    }

    /// `Queue::get` on `queue` (`basic.get`), what expired on the way dead-lettered.
    pub(crate) fn get(&self, queue: &Arc<Queue>) -> Option<(QueuedMessage, u32)> {
        let (got, dead) = queue.get();
        self.dead_letter(queue, dead);
        got
    }

    /// `Queue::requeue` on `queue`, what its limits dropped dead-lettered.
    pub(crate) fn requeue(&self, queue: &Arc<Queue>, messages: Vec<QueuedMessage>) {
        let dead = queue.requeue(&self.stats, messages);
        self.dead_letter(queue, dead);
    }

    /// The queue's timer task: expires messages at the head when their TTL passes (even with
    /// no consumer), and deletes the queue after `x-expires` of disuse. Ends when the queue is
    /// deleted (also when its vhost is dropped, see `Drop for VHost`). Holds only weak
    /// references while it waits.
    pub(crate) async fn housekeeping(queue: Weak<Queue>, vhost: Weak<VHost>) {
        loop {
            let (Some(q), Some(vh)) = (queue.upgrade(), vhost.upgrade()) else {
                return;
            };
            let Some(expired) = q.expire(Instant::now()) else {
                return;
            };
            vh.dead_letter(&q, expired.dead);
            if expired.queue_expired {
                vh.delete_queue_now(&q.name);
                return;
            }
            // Keep the strong reference only to the queue while waiting on its own wake-up;
            // the vhost reference is dropped so a vhost could go away.
            drop(vh);
            q.wait_for_expiry(expired.next_deadline).await;
        }
    }
}
