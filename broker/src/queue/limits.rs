//! Trimming the ready list: drop-head to `x-max-length`/`x-max-length-bytes` and dropping
//! expired messages at the head, both dead-lettered (RabbitMQ's `maybe_drop_head`,
//! `drop_expired_msgs`); the limits as a quorum queue's reject-publish reads them.

use super::*;

impl Queue {
    /// Whether the ready messages exceed `x-max-length` or `x-max-length-bytes`.
    pub(super) fn over_limit(&self, st: &QueueState) -> bool {
        self.config
            .max_length
            .is_some_and(|m| st.ready_count as u64 > m)
            || self
                .config
                .max_length_bytes
                .is_some_and(|m| st.ready_bytes as u64 > m)
    }

    /// Whether the ready messages are at most 80% of each limit (rounded down), where a
    /// blocked quorum queue takes publishes again.
    pub(super) fn below_soft_limit(&self, st: &QueueState) -> bool {
        let soft = |m: u64| m * 4 / 5;
        self.config
            .max_length
            .is_none_or(|m| st.ready_count as u64 <= soft(m))
            && self
                .config
                .max_length_bytes
                .is_none_or(|m| st.ready_bytes as u64 <= soft(m))
    }

    /// With `x-overflow` drop-head (the default), drops ready messages from the head
    /// (dead-lettering them, reason `maxlen`) until the queue is within `x-max-length` and
    /// `x-max-length-bytes` (RabbitMQ's `maybe_drop_head`).
    pub(super) fn drop_head_to_limits(&self, st: &mut QueueState, dead: &mut Vec<DeadLetter>) {
        if self.config.overflow != Overflow::DropHead {
            return;
        }
        while self.over_limit(st) {
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
