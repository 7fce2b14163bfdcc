//! Task queues: `#[lepus::task]` functions enqueued as persistent messages on durable queues and
//! run at least once by the shared worker pool, with retries, backoff and dead letters.
//!
//! A task is described by [`Task`] (implemented by the macro). [`enqueue`] publishes it with
//! publisher confirms on the client's publishing channel; a worker serving `send_email::handler()`
//! runs it and settles the delivery (`task_handler`): `basic.ack` after success; after a
//! failure (an `Err`, a panic, or running past the time limit) a copy goes to a per-delay TTL
//! queue that dead-letters it back to the task queue (`retry_delay`), or, after the last
//! attempt, to the dead-letter queue; the original is acked only once the broker confirmed the
//! copy. Nothing waits in a consumer's prefetch while it is delayed.
//!
//! # Layout
//! - `task_options`: [`TaskOptions`] (retries, backoff, time limit, priorities, dead-letter
//!   queue) and the names of the queues a task uses.
//! - `enqueue`: [`enqueue`], [`EnqueueOptions`] (delay, priority, `message_id`).
//! - `headers`: the task headers on the wire (attempts, error, timestamps), byte by byte.
//! - `result_wire`: the result message a worker sends for a submitted task (status headers,
//!   output or error body) and how the macro picks the codecs of a task's output and error.
//! - `task_handle`: [`submit`], [`TaskHandle`] (`result`, `status`, from an id),
//!   [`TaskStatus`], [`TaskResultError`]: results kept on the broker in per-task queues.
//! - `side_consumer`: `SideConsumer`, a reader's consumer on a side channel, closed channel
//!   first (a consumer dropped on an open channel races lapin's `basic.cancel` against the
//!   close).
//! - `retry_delay`: the delay queues and how a retry delay is picked.
//! - `task_handler`: the worker side (run, ack, retry, dead-letter).
//! - `dead_letters`: [`DeadLetters`]: list, show and requeue what sits in a dead-letter queue.
//! - `completion`: [`Completion`], [`Completions`], [`observe`]: hearing when handlers finish.
//! - `current`: [`TaskInfo`], what the running task knows about itself (its context's task
//!   part), and the deprecated [`current`].
//! - `queue_status`: [`queue_status`], [`wait_for_consumers`]: a queue's counters.
//! - `publisher`: `Publisher`, the client's confirm-mode channel for enqueues and publishes.
//! - `declared`: `Declared`, what a client already declared.
//! - `workflow`: [`chain`](workflow::chain), [`group`](workflow::group),
//!   [`chord`](workflow::chord): workflows of tasks, moved along by the workers.

pub(crate) mod completion;
mod current;
mod dead_letters;
mod declared;
pub(crate) mod enqueue;
pub mod headers;
mod publisher;
mod queue_status;
pub mod result_wire;
mod retry_delay;
mod side_consumer;
mod task_handle;
pub(crate) mod task_handler;
mod task_options;
pub mod workflow;

use std::fmt::Display;
use std::future::Future;

use serde::{de::DeserializeOwned, Serialize};

use crate::context::Context;
use crate::state::{MissingState, Needed};

pub use completion::{observe, observe_all, Completion, Completions, Outcome};
#[allow(deprecated)]
pub use current::{current, TaskInfo};
pub use dead_letters::{DeadLetter, DeadLetters};
pub(crate) use declared::Declared;
pub use enqueue::{enqueue, EnqueueOptions, TaskId};
pub(crate) use publisher::Publisher;
pub use queue_status::{queue_status, wait_for_consumers, wait_for_queue_consumers, QueueStatus};
pub use task_handle::{result_queue_name, submit, TaskHandle, TaskResultError, TaskStatus};
pub use task_handler::{handler, run_local};
pub use task_options::{dead_letter_queue_name, TaskOptions, DEFAULT_RESULT_TTL, DEFAULT_RETRIES};

pub(crate) use completion::Observer;

/// One task type: where it is queued, what it takes, how it is retried. Implemented by
/// `#[lepus::task]` on a marker type (`send_email::SendEmailTask`).
pub trait Task: Send + Sync + 'static {
    /// The task queue (routing key on the default exchange).
    const QUEUE: &'static str;
    /// The task name, sent in the `x-lepus-method` header (several tasks may share a queue).
    const NAME: &'static str;
    /// The arguments as a tuple, encoded as a MessagePack array (as RPC arguments are).
    type Args: Serialize + DeserializeOwned + Send + 'static;
    /// The error a failed attempt returns; its text goes into the `x-lepus-error` header.
    type Err: Display + Send + 'static;
    /// What a successful run returns (`<R as Returns>::Ok`); sent to the task's result queue
    /// when it was submitted with [`submit`] (see `task_handle`).
    type Output: Send + 'static;

    /// Retries, backoff, time limit and queue options.
    fn options() -> TaskOptions;

    /// The states the function's `State<T>` parameters need (checked when a worker starts).
    fn needs() -> Vec<Needed> {
        Vec::new()
    }

    /// Starts one run of the function with decoded arguments and the attempt's context (and the
    /// injected parameters taken from it; a missing state is the only way this fails).
    fn invoke(
        args: Self::Args,
        cx: &Context,
    ) -> Result<impl Future<Output = Result<Self::Output, Self::Err>> + Send + 'static, MissingState>;

    /// The output as MessagePack, or `None` when its type is not a serde type (the macro picks,
    /// see `result_wire`).
    fn encode_output(output: &Self::Output) -> Option<Vec<u8>>;

    /// The output back from [`Task::encode_output`]'s bytes.
    fn decode_output(body: &[u8]) -> std::result::Result<Self::Output, String>;

    /// The error as MessagePack (typed for a serde error, its text for one rebuilt from a
    /// [`RemoteError`](crate::RemoteError)), or `None` when it can only be described.
    fn encode_error(error: &Self::Err) -> Option<Vec<u8>>;

    /// The error back from [`Task::encode_error`]'s bytes.
    fn decode_error(body: &[u8]) -> std::result::Result<Self::Err, String>;
}
