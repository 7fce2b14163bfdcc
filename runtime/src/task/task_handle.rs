//! Task results on the broker alone: [`submit`] enqueues a task and keeps its result,
//! [`TaskHandle`] waits for it (`result`) or asks where the task is (`status`), from any process
//! that knows the task id.
//!
//! # Storage: one small queue per submitted task
//! `submit` declares `lepus.result.<task id>` (durable; a quorum queue when the task is on one;
//! `x-expires` = the task's `result_ttl`, default one day) before it publishes the task with
//! the queue's name in [`RESULT_QUEUE`](crate::task::result_wire::RESULT_QUEUE). The worker
//! publishes a status message there when an attempt starts or fails, and the final result
//! (confirmed, before it acks the task) when the task succeeded or was dead-lettered
//! (`result_wire` has the format). Readers consume the queue without acknowledging and close
//! their channel, so every message stays for the next reader. The broker deletes the queue once
//! nobody used it for `result_ttl` (`x-expires`: no consumer, no `basic.get`, no redeclare);
//! a worker that finds it gone when it publishes the final result declares it again, so a
//! result is kept at least `result_ttl` after the task finished, whatever the task waited.
//!
//! Why a queue per task: a reader finds a result by its task id alone (a shared results queue
//! would have to be scanned), the broker expires it with no sweeper of ours, and it works the
//! same on the bundled broker and on RabbitMQ (classic or quorum: both accept `x-expires`).
//! Its cost: one `queue.declare` at submit, one confirmed publish at the end (plus one
//! unconfirmed status publish per attempt), one queue deletion at expiry. `enqueue` does none of
//! it: a task nobody waits for costs what it did before (`lepus-bench tasks --results` against
//! `lepus-bench tasks` measures the difference).

use std::fmt;
use std::marker::PhantomData;
use std::time::Duration;

use lapin::message::Delivery;
use lapin::options::BasicGetOptions;
use lapin::types::{AMQPValue, FieldTable, LongString};

use crate::amqp::declare_durable;
use crate::client::Client;
use crate::error::{Error, Never};
use crate::task::enqueue::{self, close_side_channel, side_channel, EnqueueOptions, TaskId};
use crate::task::headers;
use crate::task::result_wire::Status;
use crate::task::side_consumer::SideConsumer;
use crate::task::Task;

/// The result queue of task `id` for a client with queue prefix `prefix`.
pub fn result_queue_name(prefix: &str, id: &str) -> String {
    format!(
        "{prefix}{}{id}",
        crate::task::result_wire::RESULT_QUEUE_PART
    )
}

/// Enqueues task `T` with `args` like [`enqueue`](crate::task::enqueue), and keeps its result
/// on the broker for its `result_ttl` (task attribute; [`EnqueueOptions::result_ttl`] for one
/// submit); the generated `send_email::submit(&client, ..)` calls this.
pub async fn submit<T: Task>(
    client: &Client,
    args: T::Args,
    options: EnqueueOptions,
) -> crate::Result<TaskHandle<T>> {
    let mut options = options;
    let id = options.ensure_message_id();
    let queue = result_queue_name(client.queue_prefix(), &id);
    let ttl = options
        .result_ttl_of()
        .unwrap_or_else(|| T::options().result_ttl_of());
    let ttl_ms = crate::envelope::millis(ttl);
    let quorum = T::options().is_quorum();
    let channel = side_channel(client).await?;
    let declared = declare_result_queue(&channel, &queue, ttl_ms, quorum).await;
    close_side_channel(channel).await;
    declared?;
    let id = enqueue::enqueue::<T>(client, args, options.with_result_queue(&queue, ttl_ms)).await?;
    Ok(TaskHandle {
        client: client.clone(),
        id,
        queue,
        known: true,
        task: PhantomData,
    })
}

/// Declares a result queue: durable, `x-expires` = `ttl_ms`, quorum when the task's queue is.
/// The worker declares it with the same arguments (from the task's headers) when it is gone.
pub(crate) async fn declare_result_queue(
    channel: &lapin::Channel,
    queue: &str,
    ttl_ms: i64,
    quorum: bool,
) -> lapin::Result<()> {
    let mut args = FieldTable::default();
    args.insert("x-expires".into(), AMQPValue::LongLongInt(ttl_ms));
    if quorum {
        args.insert(
            "x-queue-type".into(),
            AMQPValue::LongString(LongString::from("quorum")),
        );
    }
    declare_durable(channel, queue, args).await.map(drop)
}

/// Where a task is, as its result queue says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TaskStatus {
    /// Submitted; no attempt has started yet.
    Queued,
    /// Attempt `attempt` is running (or its worker died and the task waits to run again).
    Running {
        /// 1 for the first run.
        attempt: u32,
    },
    /// Attempt `attempt` failed; the task waits for its next attempt.
    Retrying {
        /// The failed attempt.
        attempt: u32,
        /// Its error.
        error: String,
    },
    /// The task returned `Ok`; its result is ready.
    Succeeded,
    /// The task failed for the last time (its `Err` after its retries, or it was
    /// dead-lettered); it sits in its dead-letter queue.
    Failed {
        /// The attempts made.
        attempts: u32,
        /// The last error.
        error: String,
    },
    /// The result queue is gone: its result expired (a handle from [`submit`] says so).
    Expired,
    /// No result queue of this id: never submitted, or its result expired.
    Unknown,
}

/// Why [`TaskHandle::result`] has no output.
#[derive(Debug)]
pub enum TaskResultError<E> {
    /// The task's last attempt returned this error (after its retries); it was dead-lettered.
    Failed {
        /// The task's error, rebuilt.
        error: E,
        /// The attempts made.
        attempts: u32,
    },
    /// The task's last attempt returned an error whose type cannot be rebuilt here (neither a
    /// serde type nor `From<RemoteError>`): its text.
    FailedUntyped {
        /// The error's text.
        message: String,
        /// The attempts made.
        attempts: u32,
    },
    /// The task was dead-lettered without returning an error: a panic, its time limit,
    /// arguments that do not decode, the worker's delivery limit.
    DeadLettered {
        /// Why (the `x-lepus-error` of the dead letter).
        error: String,
        /// The attempts made.
        attempts: u32,
    },
    /// No final result within the timeout (the task may still be queued or running).
    Timeout(Duration),
    /// The result expired (its queue is gone) before it was read.
    Expired,
    /// No result queue of this id: never submitted with a result, or expired.
    Unknown,
    /// The result does not decode as the task's output.
    Decode(String),
    /// The broker could not be asked.
    Client(Error),
}

impl<E: fmt::Display> fmt::Display for TaskResultError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TaskResultError::Failed { error, attempts } => {
                write!(f, "task failed after {attempts} attempts: {error}")
            }
            TaskResultError::FailedUntyped { message, attempts } => {
                write!(f, "task failed after {attempts} attempts: {message}")
            }
            TaskResultError::DeadLettered { error, attempts } => {
                write!(f, "task dead-lettered after {attempts} attempts: {error}")
            }
            TaskResultError::Timeout(t) => write!(f, "no task result within {t:?}"),
            TaskResultError::Expired => f.write_str("the task's result expired"),
            TaskResultError::Unknown => f.write_str("no result is kept for this task id"),
            TaskResultError::Decode(e) => write!(f, "task result does not decode: {e}"),
            TaskResultError::Client(e) => write!(f, "cannot read the task result: {e}"),
        }
    }
}

impl<E: fmt::Debug + fmt::Display> std::error::Error for TaskResultError<E> {}

impl<E> From<Error> for TaskResultError<E> {
    fn from(err: Error) -> Self {
        TaskResultError::Client(err)
    }
}

/// A submitted task: its id, and the way to its result. Cheap to clone; from another process,
/// [`TaskHandle::from_id`].
pub struct TaskHandle<T> {
    client: Client,
    id: TaskId,
    queue: String,
    /// Made by `submit` here: a missing result queue means it expired.
    known: bool,
    task: PhantomData<fn() -> T>,
}

clone_for_any!(TaskHandle<T> { client, id, queue, known }, task);

impl<T> fmt::Debug for TaskHandle<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TaskHandle")
            .field("id", &self.id)
            .field("queue", &self.queue)
            .finish()
    }
}

impl<T> std::ops::Deref for TaskHandle<T> {
    type Target = TaskId;

    fn deref(&self) -> &TaskId {
        &self.id
    }
}

/// One message of a result queue, parsed.
struct Reading {
    status: Status,
    attempt: u32,
    error: Option<String>,
    body: Vec<u8>,
}

impl Reading {
    fn of(properties: &lapin::BasicProperties, body: Vec<u8>) -> Option<Reading> {
        let h = properties.headers().as_ref();
        Some(Reading {
            status: Status::parse(&headers::string(h, crate::task::result_wire::STATUS)?)?,
            attempt: headers::attempts(h),
            error: headers::string(h, headers::ERROR),
            body,
        })
    }

    fn rank(&self) -> (bool, u32, u8) {
        self.status.rank(self.attempt)
    }
}

impl<T: Task> TaskHandle<T> {
    /// The handle of task `id` submitted by any process (the id `submit` returned there; its
    /// result queue is found by name).
    pub fn from_id(client: &Client, id: impl Into<String>) -> Self {
        let id = id.into();
        TaskHandle {
            client: client.clone(),
            queue: result_queue_name(client.queue_prefix(), &id),
            id: TaskId(id),
            known: false,
            task: PhantomData,
        }
    }

    /// The task's id (its `message_id`).
    pub fn id(&self) -> &TaskId {
        &self.id
    }

    /// The result queue's name.
    pub fn result_queue(&self) -> &str {
        &self.queue
    }

    fn gone<E>(&self) -> TaskResultError<E> {
        if self.known {
            TaskResultError::Expired
        } else {
            TaskResultError::Unknown
        }
    }

    /// Waits up to `timeout` for the task's final result: its output, or why there is none.
    /// The result stays on the broker (any number of readers get it, until it expires).
    ///
    /// Returns by the timeout, whatever the broker does: opening the channel, consuming and
    /// waiting for the channel's close-ok all count against it.
    pub async fn result(&self, timeout: Duration) -> Result<T::Output, TaskResultError<T::Err>> {
        let read = async |reader: &mut SideConsumer| self.final_reading(reader).await;
        match SideConsumer::read_within(&self.client, timeout, read).await {
            None => Err(TaskResultError::Timeout(timeout)),
            Some(Err(e)) => Err(e),
            Some(Ok(reading)) => Self::outcome(reading),
        }
    }

    /// Consumes the result queue (without acking) until a final status arrives.
    async fn final_reading(
        &self,
        reader: &mut SideConsumer,
    ) -> Result<Reading, TaskResultError<T::Err>> {
        if let Err(err) = reader.consume(&self.queue).await {
            return Err(self.classify(err));
        }
        while let Some(delivery) = reader.next().await {
            let delivery: Delivery = delivery.map_err(|e| self.classify(e))?;
            if let Some(reading) = Reading::of(&delivery.properties, delivery.data) {
                if reading.status.is_final() {
                    return Ok(reading);
                }
            }
        }
        // The consumer ended: the queue was deleted (expired) or the channel closed.
        Err(self.gone())
    }

    fn classify<E>(&self, err: lapin::Error) -> TaskResultError<E> {
        let err = Error::<Never>::Transport(err);
        match err.reply_code() {
            Some(404) => self.gone(),
            _ => TaskResultError::Client(err),
        }
    }

    fn outcome(reading: Reading) -> Result<T::Output, TaskResultError<T::Err>> {
        let attempts = reading.attempt;
        let message = reading.error.unwrap_or_default();
        match reading.status {
            Status::Succeeded => T::decode_output(&reading.body).map_err(TaskResultError::Decode),
            Status::Failed => match T::decode_error(&reading.body) {
                Ok(error) if !reading.body.is_empty() => {
                    Err(TaskResultError::Failed { error, attempts })
                }
                _ => Err(TaskResultError::FailedUntyped { message, attempts }),
            },
            _ => Err(TaskResultError::DeadLettered {
                error: message,
                attempts,
            }),
        }
    }

    /// Where the task is now, without waiting.
    pub async fn status(&self) -> crate::Result<TaskStatus> {
        let channel = side_channel(&self.client).await?;
        let read = self.latest(&channel).await;
        close_side_channel(channel).await;
        let latest = match read {
            Ok(latest) => latest,
            Err(err) => {
                return match err.reply_code() {
                    Some(404) if self.known => Ok(TaskStatus::Expired),
                    Some(404) => Ok(TaskStatus::Unknown),
                    _ => Err(err),
                }
            }
        };
        Ok(match latest {
            None => TaskStatus::Queued,
            Some(r) => match r.status {
                Status::Running => TaskStatus::Running { attempt: r.attempt },
                Status::Retrying => TaskStatus::Retrying {
                    attempt: r.attempt,
                    error: r.error.unwrap_or_default(),
                },
                Status::Succeeded => TaskStatus::Succeeded,
                Status::Failed | Status::DeadLettered => TaskStatus::Failed {
                    attempts: r.attempt,
                    error: r.error.unwrap_or_default(),
                },
            },
        })
    }

    /// The highest-ranked message of the result queue (read with `basic.get`, not acked).
    async fn latest(&self, channel: &lapin::Channel) -> crate::Result<Option<Reading>> {
        let mut best: Option<Reading> = None;
        // Bounded: a task publishes at most two statuses per attempt and one final result;
        // stop at a final one.
        for _ in 0..10_000 {
            let got = channel
                .basic_get(
                    self.queue.as_str().into(),
                    BasicGetOptions { no_ack: false },
                )
                .await?;
            let Some(got) = got else { break };
            let delivery = got.delivery;
            if let Some(reading) = Reading::of(&delivery.properties, delivery.data) {
                let is_final = reading.status.is_final();
                if best.as_ref().is_none_or(|b| reading.rank() > b.rank()) {
                    best = Some(reading);
                }
                if is_final {
                    break;
                }
            }
        }
        Ok(best)
    }
}
