//! [`current`]: what a running task knows about itself (its `message_id`, which attempt this
//! is), for idempotency checks and logs. Set by the task handler around each attempt.

/// The task being run by the current tokio task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskInfo {
    /// The task's `message_id` (set by `enqueue`: a fresh UUID or the caller's own id). Workers
    /// can deduplicate by it: a task may run more than once (at-least-once delivery).
    pub message_id: Option<String>,
    /// 1 for the first attempt, 2 for the first retry, ...
    pub attempt: u32,
    /// True when the broker delivered this attempt before (a worker died or lost its
    /// connection while running it).
    pub redelivered: bool,
    /// The task name.
    pub name: String,
    /// The queue it was consumed from.
    pub queue: String,
}

impl Default for TaskInfo {
    /// A first attempt with no `message_id`, as a fake for tests (`lepus::testing`).
    fn default() -> Self {
        TaskInfo {
            message_id: None,
            attempt: 1,
            redelivered: false,
            name: String::new(),
            queue: String::new(),
        }
    }
}

tokio::task_local! {
    /// Scoped by the task handler around each attempt.
    pub(crate) static CURRENT: TaskInfo;
}

/// The task being run, when called from inside a `#[lepus::task]` function run by a worker
/// (`None` elsewhere, e.g. when the function is called locally).
pub fn current() -> Option<TaskInfo> {
    CURRENT.try_with(Clone::clone).ok()
}
