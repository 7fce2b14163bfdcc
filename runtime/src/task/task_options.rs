//! [`TaskOptions`]: how a task is retried and how its queues are declared, and the names of
//! the queues a task uses besides its own.

use std::borrow::Cow;
use std::time::Duration;

use crate::backoff::Backoff;
use crate::worker::QueueOptions;
use crate::worker::RateLimit;

/// The default number of retries after the first attempt.
pub const DEFAULT_RETRIES: u32 = 3;

/// Retry and queue options of a task (`#[lepus::task(retries = 5, backoff = "1s..5m",
/// time_limit = "30s", max_priority = 9, dead_letter_queue = "...")]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskOptions {
    retries: u32,
    backoff: Backoff,
    time_limit: Option<Duration>,
    max_priority: Option<u8>,
    dead_letter_queue: Option<Cow<'static, str>>,
    quorum: bool,
    cancellable: bool,
    rate_limit: Option<RateLimit>,
    result_ttl: Option<Duration>,
}

/// How long a submitted task's result is kept when its task sets no `result_ttl`: one day
/// (Celery's `result_expires` default).
pub const DEFAULT_RESULT_TTL: Duration = Duration::from_secs(24 * 3600);

impl Default for TaskOptions {
    /// 3 retries, backoff 1 s doubling up to 5 min, no time limit, no priorities,
    /// dead letters in `<queue>.dead`, a classic durable queue.
    fn default() -> Self {
        TaskOptions {
            retries: DEFAULT_RETRIES,
            backoff: Backoff::new(Duration::from_secs(1), Duration::from_secs(300)),
            time_limit: None,
            max_priority: None,
            dead_letter_queue: None,
            quorum: false,
            cancellable: false,
            rate_limit: None,
            result_ttl: None,
        }
    }
}

impl TaskOptions {
    /// The defaults (see [`Default`]).
    pub fn new() -> Self {
        TaskOptions::default()
    }

    /// How long the result of a submitted task (`submit`, see `task_handle`) is kept after its
    /// last use: its result queue's `x-expires`.
    pub fn result_ttl(mut self, ttl: Duration) -> Self {
        self.result_ttl = Some(ttl).filter(|t| !t.is_zero());
        self
    }

    /// The result TTL, [`DEFAULT_RESULT_TTL`] unless set.
    pub fn result_ttl_of(&self) -> Duration {
        self.result_ttl.unwrap_or(DEFAULT_RESULT_TTL)
    }

    /// True for a task on a quorum queue (its result queues are quorum queues too).
    pub fn is_quorum(&self) -> bool {
        self.quorum
    }

    setters! {
        /// Retries after a failed first attempt (0: the first failure dead-letters the task).
        retries(retries: u32) => retries = retries;

        /// The delay before retry `n` (0-based) is jittered in `[c/2, c]`, `c = min(initial·2ⁿ,
        /// max)` (see `retry_delay` for how the jitter stays on a few queues).
        backoff(backoff: Backoff) => backoff = backoff;

        /// An attempt running longer than `limit` is abandoned and counts as failed.
        time_limit(limit: Duration) => time_limit = Some(limit);

        /// Declares the task queue with priorities 0..=`max` (`x-max-priority`), so
        /// [`EnqueueOptions::priority`](crate::task::EnqueueOptions::priority) takes effect.
        max_priority(max: u8) => max_priority = Some(max);

        /// Where failed tasks go after their last attempt (default `<queue>.dead`); the name is
        /// used as given (no queue prefix).
        dead_letter_queue(queue: impl Into<Cow<'static, str>>) =>
            dead_letter_queue = Some(queue.into());
    }

    /// Declares the task queue as a replicated quorum queue (RabbitMQ clusters).
    pub fn quorum(mut self) -> Self {
        self.quorum = true;
        self
    }

    /// Lets a revocation stop a running attempt (see
    /// [`Handler::cancellable`](crate::Handler::cancellable)).
    pub fn cancellable(mut self) -> Self {
        self.cancellable = true;
        self
    }

    /// True when a revocation stops a running attempt.
    pub fn is_cancellable(&self) -> bool {
        self.cancellable
    }

    /// Runs at most `limit` attempts of this task per worker (see [`RateLimit`]).
    pub fn rate_limit(mut self, limit: RateLimit) -> Self {
        self.rate_limit = Some(limit);
        self
    }

    /// The task's rate limit, per worker.
    pub fn rate_limit_of(&self) -> Option<RateLimit> {
        self.rate_limit
    }

    /// The number of retries.
    pub fn retry_count(&self) -> u32 {
        self.retries
    }

    /// The backoff between attempts.
    pub fn backoff_policy(&self) -> Backoff {
        self.backoff
    }

    /// The time limit of one attempt.
    pub fn time_limit_of(&self) -> Option<Duration> {
        self.time_limit
    }

    /// How the task queue is declared: durable, plus priorities / quorum when asked.
    pub fn queue_options(&self) -> QueueOptions {
        let mut options = QueueOptions::new().durable(true);
        if let Some(max) = self.max_priority {
            options = options.max_priority(max);
        }
        if self.quorum {
            options = options.quorum();
        }
        options
    }

    /// How the dead-letter queue is declared: durable, and a quorum queue when the task queue
    /// is one.
    pub(crate) fn dead_letter_queue_options(&self) -> QueueOptions {
        let options = QueueOptions::new().durable(true);
        if self.quorum {
            options.quorum()
        } else {
            options
        }
    }

    /// The dead-letter queue of the task queue `queue` (already prefixed).
    pub fn dead_letter_queue_for(&self, queue: &str) -> String {
        match &self.dead_letter_queue {
            Some(name) => name.to_string(),
            None => dead_letter_queue_name(queue),
        }
    }
}

/// `<queue>.dead`: the default dead-letter queue of a task queue.
pub fn dead_letter_queue_name(queue: &str) -> String {
    format!("{queue}.dead")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dead_letter_queue_defaults_to_dot_dead_and_can_be_set() {
        let options = TaskOptions::new();
        assert_eq!(options.dead_letter_queue_for("emails"), "emails.dead");
        let options = options.dead_letter_queue("failed");
        assert_eq!(options.dead_letter_queue_for("emails"), "failed");
    }

    #[test]
    fn task_queues_are_durable() {
        let declare = TaskOptions::new().max_priority(5).queue_options();
        assert_eq!(declare, QueueOptions::new().durable(true).max_priority(5));
    }
}
