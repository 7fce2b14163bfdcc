//! Trimming the ready list: drop-head to `x-max-length`/`x-max-length-bytes` and dropping
//! expired messages at the head, both dead-lettered (RabbitMQ's `maybe_drop_head`,
//! `drop_expired_msgs`).

use super::*;

impl Queue {
    /// With `x-overflow` drop-head (the default), drops ready messages from the head
    /// (dead-lettering them, reason `maxlen`) until the queue is within `x-max-length` and
    /// `x-max-length-bytes` (RabbitMQ's `maybe_drop_head`).
    pub(super) fn drop_head_to_limits(&self, st: &mut QueueState, dead: &mut Vec<DeadLetter>) {
        if self.config.overflow != Overflow::DropHead {
            return;
        }
        let over = |st: &QueueState| {
            self.config
                .max_length
                .is_some_and(|m| st.ready_count as u64 > m)
                || self
                    .config
                    .max_length_bytes
                    .is_some_and(|m| st.ready_bytes as u64 > m)
        };
        while over(st) {
            match st.pop_head(&self.memory) {
                Some(rm) => self.drop_ready(rm, "maxlen", dead),
                None => break,
            }
        }
    }

    /// Drops (dead-letters, reason `expired`) the head messages whose expiry is at or before
    /// `now`.
    pub(super) fn drop_expired_heads(
        &self,
        st: &mut QueueState,
        dead: &mut Vec<DeadLetter>,
        now: Instant,
    ) {
        while let Some(level) = st.head_level() {
            let expired = st.ready[level]
                .front()
                .and_then(|m| st.expires_at(m))
                .is_some_and(|at| at <= now);
            if !expired {
                break;
            }
            if let Some(rm) = st.pop_head(&self.memory) {
                self.drop_ready(rm, "expired", dead);
            }
        }
    }
}
