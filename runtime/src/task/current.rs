//! [`TaskInfo`]: what a running task knows about itself (its `message_id`, which attempt this
//! is), now read from its [`Context`] (`ctx.attempt()`, `ctx.message_id()`); kept for the code
//! written before the context, and as the fake delivery state of
//! [`run_local`](crate::task::run_local).

use crate::context::{Context, ContextKind};

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

impl TaskInfo {
    /// The task part of a task's context.
    pub(crate) fn of(cx: &Context) -> TaskInfo {
        TaskInfo {
            message_id: cx.message_id().map(str::to_owned),
            attempt: cx.attempt(),
            redelivered: cx.redelivered(),
            name: cx.name().to_owned(),
            queue: cx.queue().unwrap_or_default().to_owned(),
        }
    }
}

/// A fake task context for a local run: this attempt, `message_id` and redelivered flag.
impl From<TaskInfo> for Context {
    fn from(info: TaskInfo) -> Context {
        let cx = Context::new()
            .with_attempt(info.attempt)
            .with_redelivered(info.redelivered);
        let cx = match info.message_id {
            Some(id) => cx.with_message_id(id),
            None => cx,
        };
        cx.into_run_of(ContextKind::Task, &info.name, &info.queue)
    }
}

/// The task being run, when called from inside a `#[lepus::task]` function run by a worker
/// (`None` elsewhere, e.g. when the function is called locally).
#[deprecated(
    since = "0.1.0",
    note = "use the task's `lepus::Context` (a `ctx: Context` parameter, or `Context::current()`): \
            `ctx.attempt()`, `ctx.message_id()`, `ctx.redelivered()`"
)]
pub fn current() -> Option<TaskInfo> {
    Context::current()
        .filter(|cx| cx.kind() == ContextKind::Task)
        .map(|cx| TaskInfo::of(&cx))
}
