//! [`enqueue`]: puts a task on its durable queue and returns once the broker confirmed it.
//!
//! The task is published persistent and `mandatory` on the client's confirm-mode publishing
//! channel (`publisher`), so concurrent enqueues share one channel and pipeline their confirms
//! (no channel is opened per call). Before the first enqueue to a queue (and again every 30 s)
//! the client declares it (durable, with the task's options, on a short-lived side channel so
//! that a refused declaration cannot close the publishing channel): the task is never returned
//! on a normal path, so lapin never logs it (lapin logs every `basic.return` at WARN, payload
//! included). `mandatory` stays as the safety net of at-least-once: a task whose queue was
//! deleted under the producer comes back as `basic.return` 312 NO_ROUTE, and the queue is
//! declared again and the task published again. A delayed task goes to a delay queue instead
//! (see `retry_delay`), after the task queue and the delay queue have been declared.

use std::time::Duration;

use lapin::types::FieldTable;
use lapin::{BasicProperties, Confirmation};
use tracing::{warn, Instrument};

use crate::amqp::publish_mandatory;
use crate::client::Client;
use crate::context::{write_onward, Onward};
use crate::envelope::{self, CONTENT_TYPE, HEADER_METHOD};
use crate::error::{Error, Result, REPLY_CODE_NO_ROUTE};
use crate::observe::{self, Outcome};
use crate::task::headers::{self, ENQUEUED_AT};
use crate::task::result_wire::{RESULT_QUEUE, RESULT_TTL};
use crate::task::retry_delay::{self, REDECLARE_AFTER};
use crate::task::Task;
use crate::worker::QueueOptions;

/// Per-enqueue options: a delay, a priority, an idempotency id.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EnqueueOptions {
    delay: Option<Duration>,
    priority: Option<u8>,
    message_id: Option<String>,
    queue: Option<String>,
    /// `submit`'s `result_ttl` for this task only.
    result_ttl: Option<Duration>,
    /// Set by `submit`: the result queue and its `x-expires` in ms, sent in the task's headers.
    result_queue: Option<(String, i64)>,
}

impl EnqueueOptions {
    /// No delay, no priority, a fresh `message_id`.
    pub fn new() -> Self {
        EnqueueOptions::default()
    }

    setters! {
        /// The task runs no earlier than `delay` from now (it waits in a delay queue).
        delay(delay: Duration) => delay = Some(delay).filter(|d| !d.is_zero());

        /// The message priority (effective on queues declared with `max_priority`).
        priority(priority: u8) => priority = Some(priority);

        /// The `message_id` of the task (default: a fresh UUID). Enqueue the same work twice with
        /// the same id and a worker can tell (see [`current`](crate::task::current)).
        message_id(id: impl Into<String>) => message_id = Some(id.into());

        /// With `submit`: keep this task's result for `ttl` after its last use instead of the
        /// task's `result_ttl` (no effect on `enqueue`, which keeps no result).
        result_ttl(ttl: Duration) => result_ttl = Some(ttl).filter(|t| !t.is_zero());
    }

    pub(crate) fn result_ttl_of(&self) -> Option<Duration> {
        self.result_ttl
    }

    /// The task's `message_id`, chosen now if the caller gave none.
    pub(crate) fn ensure_message_id(&mut self) -> String {
        self.message_id
            .get_or_insert_with(|| uuid::Uuid::new_v4().simple().to_string())
            .clone()
    }

    pub(crate) fn with_result_queue(mut self, queue: &str, ttl_ms: i64) -> Self {
        self.result_queue = Some((queue.to_owned(), ttl_ms));
        self
    }

    /// Enqueues on `queue` instead of the one its `#[lepus::task(queue = ..)]` names (the
    /// client's queue prefix still applies): a queue chosen at run time, served by a worker
    /// given `send_email::handler().on_queue(..)`.
    pub fn queue(mut self, queue: impl Into<String>) -> Self {
        self.queue = Some(queue.into());
        self
    }
}

/// The `message_id` of an enqueued task.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TaskId(pub String);

impl std::fmt::Display for TaskId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// What became of one publish.
pub(crate) enum Published {
    Confirmed,
    Returned(u16, String),
}

/// How long one publish attempt waits for its confirm before the task is published again (same
/// `message_id`): a confirm from a node that died or hangs never comes.
const CONFIRM_WAIT: Duration = Duration::from_secs(10);

/// The pause before publishing again after a lost connection or a `basic.nack`.
const RETRY_PAUSE: Duration = Duration::from_millis(100);

/// Enqueues task `T` with `args` and waits for the broker's confirm; the generated
/// `send_email::enqueue(&client, ..)` calls this.
///
/// Inside a handler's [`Context`](crate::Context) it waits at most the time the handler's
/// caller has left, fails at once with [`Error::Timeout`] once that is spent (without
/// publishing), and the task carries the context's trace id; the task itself is not bound by
/// that deadline.
///
/// When the connection breaks before the confirm, the broker nacks, or no confirm comes within
/// 10 s, the task is published again with the same `message_id` (on the next node once the
/// connection failed over), until the client's default timeout: a confirmed task may thus be
/// queued twice, and workers can deduplicate by `message_id`. Fails with [`Error::Timeout`]
/// when the timeout passes first (the task may or may not be queued: enqueue again with the
/// same `message_id` to be safe against duplicates), and with the error itself when it is not
/// worth retrying (a configuration or encoding error, [`Error::Closed`]).
pub async fn enqueue<T: Task>(
    client: &Client,
    args: T::Args,
    options: EnqueueOptions,
) -> Result<TaskId> {
    // The enqueue's span, a child of the caller's; the task's attempts are its children.
    let started = std::time::Instant::now();
    let span = observe::enqueue_span(options.queue.as_deref().unwrap_or(T::QUEUE), T::NAME);
    let result = enqueue_timed::<T>(client, args, options)
        .instrument(span.clone())
        .await;
    observe::finish(&span, Outcome::of_publish(&result), started);
    result
}

/// An enqueue under the client's timeout, published again until confirmed.
async fn enqueue_timed<T: Task>(
    client: &Client,
    args: T::Args,
    mut options: EnqueueOptions,
) -> Result<TaskId> {
    let mut timeout = client.default_timeout();
    // Inside a handler: at most what is left of its deadline, nothing once it is spent; the
    // task carries the trace id (see `context`).
    let onward = Onward::current();
    if let Some(onward) = &onward {
        match onward.bound(timeout) {
            Some(bounded) => timeout = bounded,
            None => return Err(Error::Timeout(Duration::ZERO)),
        }
    }
    let deadline = tokio::time::Instant::now() + timeout;
    // One id for every attempt, so that a retried publish is recognisably the same task.
    let message_id = options
        .message_id
        .get_or_insert_with(|| uuid::Uuid::new_v4().simple().to_string())
        .clone();
    tracing::Span::current().record("message_id", message_id.as_str());
    let body = envelope::encode_request(&args).map_err(Error::Encode)?;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let attempt = tokio::time::timeout(
            left.min(CONFIRM_WAIT),
            enqueue_inner::<T>(client, &body, &options, onward.as_ref()),
        )
        .await;
        let error = match attempt {
            Ok(Ok(id)) => return Ok(id),
            Ok(Err(e @ (Error::ConnectionLost | Error::Nacked | Error::Transport(_)))) => e,
            Ok(Err(e)) => return Err(e),
            Err(_) => Error::Timeout(left.min(CONFIRM_WAIT)),
        };
        if tokio::time::Instant::now() + RETRY_PAUSE >= deadline {
            return Err(match error {
                Error::Timeout(_) => Error::Timeout(timeout),
                other => other,
            });
        }
        warn!(task = T::NAME, %message_id, %error, "enqueue not confirmed; publishing again");
        tokio::time::sleep(RETRY_PAUSE).await;
    }
}

async fn enqueue_inner<T: Task>(
    client: &Client,
    body: &[u8],
    options: &EnqueueOptions,
    onward: Option<&Onward>,
) -> Result<TaskId> {
    let queue = format!(
        "{}{}",
        client.queue_prefix(),
        options.queue.as_deref().unwrap_or(T::QUEUE)
    );
    let message_id = options
        .message_id
        .clone()
        .unwrap_or_else(|| uuid::Uuid::new_v4().simple().to_string());
    let now = headers::now_ms();
    let mut task_headers = FieldTable::default();
    task_headers.insert(HEADER_METHOD.into(), headers::long_string(T::NAME));
    headers::insert_int(&mut task_headers, ENQUEUED_AT, now);
    if let Some((result_queue, ttl_ms)) = &options.result_queue {
        task_headers.insert(RESULT_QUEUE.into(), headers::long_string(result_queue));
        headers::insert_int(&mut task_headers, RESULT_TTL, *ttl_ms);
    }
    write_onward(&mut task_headers, onward);
    let mut properties = BasicProperties::default()
        .with_content_type(CONTENT_TYPE.into())
        .with_delivery_mode(2)
        .with_message_id(message_id.as_str().into())
        .with_timestamp(u64::try_from(now / 1000).unwrap_or_default())
        .with_headers(task_headers);
    if let Some(priority) = options.priority {
        properties = properties.with_priority(priority);
    }
    let queue_options = T::options().queue_options();
    // Declared before the publish, so that a first enqueue is not returned (and logged).
    ensure_queue(client, &queue, &queue_options).await?;
    let routing_key = match options.delay {
        Some(delay) => ensure_delay_queue(client, &queue, delay).await?,
        None => queue.clone(),
    };
    for _ in 0..2 {
        match publish_confirmed(client, &routing_key, body, properties.clone()).await? {
            Published::Confirmed => return Ok(TaskId(message_id)),
            Published::Returned(REPLY_CODE_NO_ROUTE, _) => {
                client.declared().forget(&routing_key);
                match options.delay {
                    Some(delay) => {
                        ensure_queue(client, &queue, &queue_options).await?;
                        ensure_delay_queue(client, &queue, delay).await?;
                    }
                    None => ensure_queue(client, &queue, &queue_options).await?,
                }
            }
            Published::Returned(reply_code, text) => {
                return Err(Error::Config(format!(
                    "task returned by the broker: {reply_code} {text}"
                )))
            }
        }
    }
    Err(Error::NoRoute {
        queue: routing_key,
        reply_code: REPLY_CODE_NO_ROUTE,
    })
}

/// Publishes on the client's confirm-mode channel and waits for the confirm.
pub(crate) async fn publish_confirmed(
    client: &Client,
    routing_key: &str,
    body: &[u8],
    properties: BasicProperties,
) -> Result<Published> {
    let open = client.publisher().channel(client).await?;
    let confirm = publish_mandatory(&open.channel, routing_key, body, properties)
        .await
        .map_err(|e| open.error(e))?;
    match confirm.await.map_err(|e| open.error(e))? {
        Confirmation::Ack(None) => Ok(Published::Confirmed),
        Confirmation::Ack(Some(returned)) | Confirmation::Nack(Some(returned)) => Ok(
            Published::Returned(returned.reply_code, returned.reply_text.to_string()),
        ),
        Confirmation::Nack(None) => Err(Error::Nacked),
        Confirmation::NotRequested => Err(Error::Config(
            "the publishing channel is not in confirm mode".into(),
        )),
    }
}

/// Declares the task queue (at most every 30 s per client).
pub(crate) async fn ensure_queue(
    client: &Client,
    queue: &str,
    options: &QueueOptions,
) -> Result<()> {
    if client.declared().is_fresh(queue, REDECLARE_AFTER) {
        return Ok(());
    }
    let channel = side_channel(client).await?;
    let declared = channel
        .queue_declare(queue.into(), options.declare_options(), options.arguments())
        .await;
    close_side_channel(channel).await;
    declared?;
    client.declared().mark(queue);
    Ok(())
}

/// Declares the delay queue for `delay` in front of `queue` (at most every 30 s per client).
async fn ensure_delay_queue(client: &Client, queue: &str, delay: Duration) -> Result<String> {
    let name = retry_delay::delay_queue_name(queue, delay);
    if client.declared().is_fresh(&name, REDECLARE_AFTER) {
        return Ok(name);
    }
    let channel = side_channel(client).await?;
    let declared = retry_delay::declare_delay_queue(&channel, queue, delay).await;
    close_side_channel(channel).await;
    declared?;
    client.declared().mark(&name);
    Ok(name)
}

/// A short-lived channel for declarations: a refused declaration closes it, not the session.
pub(crate) async fn side_channel(client: &Client) -> Result<lapin::Channel> {
    let session = client.session().await?;
    Ok(session.conn.create_channel().await?)
}

/// Closes a side channel if the broker has not already closed it.
pub(crate) async fn close_side_channel(channel: lapin::Channel) {
    if channel.status().connected() {
        let _ = channel.close(200, "declared".into()).await;
    }
}
