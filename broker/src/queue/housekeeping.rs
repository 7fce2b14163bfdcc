//! The queue's timer: message TTL expiry at the head (even with no consumer) and `x-expires`
//! deletion after disuse.

use super::*;

impl Queue {
    /// The queue's timer: expires messages at the head when their TTL passes (even with no
    /// consumer), and deletes the queue after `x-expires` of disuse. Ends when the queue is
    /// deleted. Holds only weak references between wake-ups' work.
    pub(crate) async fn housekeeping(queue: Weak<Queue>, vhost: Weak<VHost>) {
        loop {
            let (Some(q), Some(vh)) = (queue.upgrade(), vhost.upgrade()) else {
                return;
            };
            let now = Instant::now();
            let mut dead = Vec::new();
            let (deadline, expire_queue) = {
                let mut st = q.lock();
                if st.deleted {
                    return;
                }
                q.drop_expired_heads(&mut st, &mut dead, now);
                let idle_deadline = q
                    .config
                    .expires
                    .filter(|_| st.consumers.is_empty())
                    .and_then(|ms| st.last_used.checked_add(Duration::from_millis(ms)));
                let expire_queue = idle_deadline.is_some_and(|at| at <= now);
                let deadline = match (st.next_expiry(), idle_deadline) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                };
                (deadline, expire_queue)
            };
            vh.dead_letter(&q, dead);
            if expire_queue {
                vh.delete_queue_now(&q.name);
                return;
            }
            let wake = async {
                match deadline {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            // Keep the strong references only while waiting on this queue's own Notify; the
            // vhost reference is dropped so a vhost could go away.
            drop(vh);
            tokio::select! {
                _ = wake => {}
                _ = q.wake.notified() => {}
            }
        }
    }
}
