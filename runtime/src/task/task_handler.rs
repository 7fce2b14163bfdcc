//! The worker side of a task: run one attempt, then settle the delivery.
//!
//! - success: `basic.ack`;
//! - failure (the function's `Err`, a panic, the time limit, undecodable arguments) with
//!   attempts left: publish a copy carrying the failure record (`headers`) to the delay queue
//!   of the next retry (`retry_delay`), wait for its confirm, then `basic.ack` the original;
//! - failure of the last attempt (or arguments that can never decode): the same, to the
//!   dead-letter queue;
//! - the copy could not be published or confirmed: `basic.nack` with requeue, so the broker
//!   delivers the original again (nothing is lost; the attempt may repeat);
//! - a retry copy too large for a frame (the task's own headers plus the failure record): to
//!   the dead-letter queue instead, losing the task's largest headers if it must
//!   (`headers::fit_to_frame`).
//!
//! A worker that dies mid-attempt never acks; the broker redelivers the task to another worker
//! (`redelivered = true`), and the attempt count is unchanged (only failures count): the
//! worker's delivery limit (`worker/redelivery`) counts those, and past it the worker calls
//! [`Settle::refuse`], which dead-letters the task with the reason, as it does for a task too
//! large for its handler or one naming a task this queue does not serve.

use std::borrow::Cow;
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicNackOptions};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Confirmation};
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::Instant;
use tracing::{debug, info, warn, Instrument};

use crate::amqp::{declare_durable, publish_mandatory, returned_no_route};
use crate::context::{Context, ContextKind, Delivered};
use crate::envelope;
use crate::observe::{self, metrics::InFlight};
use crate::properties_size;
use crate::task::completion::Outcome;
use crate::task::declared::Declared;
use crate::task::headers::{self, bounded_error, RETRY_DELAY};
use crate::task::result_wire::{self, ResultMessage, Status};
use crate::task::retry_delay::{self, REDECLARE_AFTER};
use crate::task::workflow::dispatch;
use crate::task::workflow::flow_headers::Flow;
use crate::task::{Task, TaskOptions};
use crate::worker::handler::missing_state_message;
use crate::worker::limits::{self, HandlerLimits, Ran};
use crate::worker::redelivery::was_redelivered;
use crate::worker::settle::{Refusal, Settle, SettleContext};
use crate::worker::{Handler, QueueOptions};

/// The handler of task `T` for `Worker::serve` (the generated `send_email::handler()`).
pub fn handler<T: Task>() -> Handler {
    let options = T::options();
    let limits = HandlerLimits {
        time_limit: options.time_limit_of(),
        ..HandlerLimits::default()
    };
    let runner = TaskRunner::<T> {
        options: options.clone(),
        declared: Arc::new(Declared::default()),
        task: PhantomData,
    };
    let cancellable = options.is_cancellable();
    let rate_limit = options.rate_limit_of();
    let handler = Handler::settling(T::QUEUE, T::NAME, Arc::new(runner), T::needs, limits)
        .cancellable(cancellable);
    match rate_limit {
        Some(limit) => handler.rate_limit(limit),
        None => handler,
    }
}

/// Runs task `T` on a worker. Clones share `declared`.
struct TaskRunner<T> {
    options: TaskOptions,
    /// Delay queues this worker declared recently (shared by every clone of the handler).
    declared: Arc<Declared>,
    task: PhantomData<fn() -> T>,
}

clone_for_any!(TaskRunner<T> { options, declared }, task);

/// Why an attempt failed, and whether trying again can help.
struct Failure {
    error: String,
    /// Arguments that do not decode will not decode next time either.
    permanent: bool,
    /// The function returned `Err` (not a panic, a time limit, a refusal): its result is
    /// `failed`, with the error encoded in `error_body` when its type allows.
    returned_err: bool,
    error_body: Option<Vec<u8>>,
}

impl Failure {
    /// The text to log: the handler's own error, but not a decoder's, which may quote the
    /// message's bytes (serde's "invalid type: string \"..\""); it is in `x-lepus-error`.
    fn logged(&self) -> &str {
        if self.permanent {
            "the arguments do not decode (the decoder's text is in the x-lepus-error header)"
        } else {
            &self.error
        }
    }
}

impl<T: Task> Settle for TaskRunner<T> {
    fn queue_options(&self) -> QueueOptions {
        self.options.queue_options()
    }

    fn dead_letters(&self) -> bool {
        true
    }

    fn declare<'a>(
        &'a self,
        channel: &'a lapin::Channel,
        queue: &'a str,
    ) -> BoxFuture<'a, lapin::Result<()>> {
        Box::pin(async move {
            let dead = self.options.dead_letter_queue_for(queue);
            // Replicated like the task queue: a classic dead-letter queue on a cluster is
            // unusable (404) while its home node is down, which would stop every worker's setup.
            let dead_options = self.options.dead_letter_queue_options();
            channel
                .queue_declare(
                    dead.as_str().into(),
                    dead_options.declare_options(),
                    dead_options.arguments(),
                )
                .await?;
            Ok(())
        })
    }

    fn handle(&self, delivery: Delivery, context: SettleContext) -> BoxFuture<'static, ()> {
        Box::pin(self.clone().run(delivery, context))
    }

    fn refuse(
        &self,
        delivery: Delivery,
        context: SettleContext,
        refusal: Refusal,
    ) -> BoxFuture<'static, ()> {
        let runner = self.clone();
        Box::pin(async move {
            let attempt = headers::attempts(delivery.properties.headers().as_ref());
            let failure = Failure {
                error: bounded_error(refusal.reason),
                permanent: true,
                returned_err: false,
                error_body: None,
            };
            let outcome = runner
                .settle_failure(&delivery, &context, attempt, failure)
                .await;
            runner.report(&delivery, &context, refusal.name, attempt, outcome);
        })
    }
}

impl<T: Task> TaskRunner<T> {
    /// One attempt, settled.
    async fn run(self, delivery: Delivery, mut context: SettleContext) {
        let headers = delivery.properties.headers().as_ref();
        let attempt = headers::attempts(headers).saturating_add(1);
        let message_id = delivery
            .properties
            .message_id()
            .as_ref()
            .map(|id| id.to_string());
        // The attempt's span: a new one per attempt, each a child of the enqueue's (a retry
        // copy keeps the task's headers); see `observe`.
        let started = std::time::Instant::now();
        let redelivered = was_redelivered(&delivery);
        let span = observe::task_span(
            &context.queue,
            T::NAME,
            &delivery.properties,
            attempt,
            redelivered,
        );
        let in_flight = InFlight::start(&context.queue, T::NAME);
        // The attempt's context: a task has no caller waiting, so its deadline is its time
        // limit (calls it makes inherit what is left of it).
        let cx = Context::delivered(Delivered {
            kind: ContextKind::Task,
            name: Cow::Borrowed(T::NAME),
            queue: context.queue.clone(),
            deadline: context
                .limits
                .time_limit
                .and_then(|limit| Instant::now().checked_add(limit)),
            properties: delivery.properties.clone(),
            redelivered: was_redelivered(&delivery),
            attempt,
            exchange: None,
            routing_key: None,
            states: context.states.clone(),
            span: span.clone(),
        });
        debug!(
            task = T::NAME,
            queue = %context.queue,
            message_id = message_id.as_deref().unwrap_or(""),
            attempt,
            redelivered = was_redelivered(&delivery),
            "task attempt"
        );
        let destination = result_wire::destination(headers);
        // A workflow step: what comes after it (see `workflow`).
        let flow = match Flow::of(headers) {
            Ok(flow) => flow,
            Err(error) => {
                let failure = Failure {
                    error: bounded_error(error),
                    permanent: true,
                    returned_err: false,
                    error_body: None,
                };
                let outcome = self
                    .settle_failure(&delivery, &context, attempt, failure)
                    .instrument(span.clone())
                    .await;
                self.report(&delivery, &context, T::NAME.to_owned(), attempt, outcome);
                return;
            }
        };
        if let Some(destination) = &destination {
            self.publish_status(
                &context,
                destination,
                message_id.as_deref(),
                Status::Running,
                attempt,
                None,
            )
            .await;
        }
        let result = attempt_once::<T>(&delivery.data, cx, context.limits, &mut context.slot).await;
        drop(in_flight);
        let outcome = match result {
            Ok(output) => {
                let stored = match &destination {
                    // The next step, or the chord: the result goes on (see `workflow::dispatch`).
                    _ if flow.is_workflow() => {
                        let body = T::encode_output(&output).unwrap_or_default();
                        dispatch::after_success(
                            &context.publisher,
                            delivery.properties.headers().as_ref(),
                            &flow,
                            T::NAME,
                            &body,
                        )
                        .await
                    }
                    Some(destination) => {
                        let body = T::encode_output(&output).unwrap_or_default();
                        self.publish_result(
                            &context,
                            ResultMessage {
                                destination,
                                task: T::NAME,
                                quorum: self.options.is_quorum(),
                                message_id: message_id.as_deref(),
                                status: Status::Succeeded,
                                attempt,
                                error: None,
                                body: &body,
                            },
                        )
                        .await
                    }
                    None => Ok(()),
                };
                match stored {
                    Ok(()) => match settled(delivery.acker.ack(BasicAckOptions::default()).await) {
                        Ok(()) => Outcome::Succeeded,
                        Err(error) => {
                            warn!(task = T::NAME, cause = %error, "basic.ack failed; the task will run again");
                            Outcome::Unsettled { error }
                        }
                    },
                    Err(error) => {
                        warn!(task = T::NAME, cause = %error, "task result not stored; the task will run again");
                        requeue_after_pause(&delivery).await;
                        Outcome::Unsettled { error }
                    }
                }
            }
            Err(failure) => {
                self.settle_failure(&delivery, &context, attempt, failure)
                    .instrument(span.clone())
                    .await
            }
        };
        let observed = observed_outcome(&outcome);
        observe::finish_run(&span, &context.queue, T::NAME, observed, started);
        self.report(&delivery, &context, T::NAME.to_owned(), attempt, outcome);
    }

    /// Counts the outcome on the control plane and tells the observer, if any, how a delivery
    /// ended.
    fn report(
        &self,
        delivery: &Delivery,
        context: &SettleContext,
        name: String,
        attempt: u32,
        outcome: Outcome,
    ) {
        if let Some(registry) = &context.control {
            registry.count(outcome.name());
        }
        context.report(delivery, name, attempt, outcome);
    }

    /// Publishes a status of a submitted task without waiting for its confirm.
    async fn publish_status(
        &self,
        context: &SettleContext,
        destination: &(String, i64),
        message_id: Option<&str>,
        status: Status,
        attempt: u32,
        error: Option<&str>,
    ) {
        if let Ok(opened) = context.publisher.confirmed().await {
            ResultMessage {
                destination,
                task: T::NAME,
                quorum: self.options.is_quorum(),
                message_id,
                status,
                attempt,
                error,
                body: &[],
            }
            .publish_unconfirmed(&opened.channel)
            .await;
        }
    }

    /// Publishes the final result of a submitted task and waits for its confirm.
    async fn publish_result(
        &self,
        context: &SettleContext,
        message: ResultMessage<'_>,
    ) -> Result<(), String> {
        let opened = context
            .publisher
            .confirmed()
            .await
            .map_err(|err| format!("no publishing channel: {err}"))?;
        message.publish_confirmed(&opened.channel).await
    }

    /// Retries or dead-letters a failed attempt, then acks the original.
    async fn settle_failure(
        &self,
        delivery: &Delivery,
        context: &SettleContext,
        attempt: u32,
        failure: Failure,
    ) -> Outcome {
        let returned_err = failure.returned_err;
        let error_body = failure.error_body.clone();
        let queue = &*context.queue;
        let mut copy_headers = headers::after_failure(
            delivery.properties.headers().as_ref(),
            attempt,
            &failure.error,
            queue,
        );
        let last = failure.permanent || attempt > self.options.retry_count();
        let (target, mut outcome) = if last {
            // A failing task is the application's business, not the runtime's trouble: INFO.
            info!(task = T::NAME, queue, attempt, error = %failure.logged(), "task failed for the last time; dead-lettered");
            (
                Target::Dead(self.options.dead_letter_queue_for(queue)),
                Outcome::DeadLettered {
                    error: failure.error,
                },
            )
        } else {
            let delay =
                retry_delay::retry_delay(&self.options.backoff_policy(), attempt.saturating_sub(1));
            headers::insert_int(&mut copy_headers, RETRY_DELAY, envelope::millis(delay));
            info!(task = T::NAME, queue, attempt, ?delay, error = %failure.logged(), "task attempt failed; retrying");
            (
                Target::Delay(delay),
                Outcome::Retrying {
                    error: failure.error,
                    delay,
                },
            )
        };
        let properties = delivery.properties.clone().with_headers(copy_headers);
        let published = match context.publisher.confirmed().await {
            Ok(opened) => {
                let (target, properties, outcome_error) =
                    fit(target, properties, opened.frame_max, queue, &self.options);
                if let Some(error) = outcome_error {
                    // Not the error text: it may be a decoder's, quoting the message.
                    warn!(
                        task = T::NAME,
                        queue, "retry copy too large for a frame; dead-lettered"
                    );
                    outcome = Outcome::DeadLettered { error };
                }
                self.publish_copy(&opened.channel, queue, &target, &delivery.data, properties)
                    .await
            }
            Err(err) => Err(format!("no publishing channel: {err}")),
        };
        // A submitted task's result queue hears of the failure: the final result confirmed
        // before the ack, a retry without waiting.
        let published = match (
            published,
            result_wire::destination(delivery.properties.headers().as_ref()),
        ) {
            (Ok(()), Some(destination)) => {
                let message_id = delivery
                    .properties
                    .message_id()
                    .as_ref()
                    .map(|id| id.as_str());
                let error = match &outcome {
                    Outcome::DeadLettered { error } | Outcome::Retrying { error, .. } => {
                        error.as_str()
                    }
                    _ => "",
                };
                if matches!(outcome, Outcome::Retrying { .. }) {
                    self.publish_status(
                        context,
                        &destination,
                        message_id,
                        Status::Retrying,
                        attempt,
                        Some(error),
                    )
                    .await;
                    Ok(())
                } else {
                    let status = if returned_err {
                        Status::Failed
                    } else {
                        Status::DeadLettered
                    };
                    let body = error_body
                        .as_deref()
                        .filter(|_| returned_err)
                        .unwrap_or_default();
                    self.publish_result(
                        context,
                        ResultMessage {
                            destination: &destination,
                            task: T::NAME,
                            quorum: self.options.is_quorum(),
                            message_id,
                            status,
                            attempt,
                            error: Some(error),
                            body,
                        },
                    )
                    .await
                }
            }
            (published, _) => published,
        };
        // A chord member's last failure goes into its chord (a chain's went to its result
        // queue just above).
        let published = match (published, &outcome) {
            (Ok(()), Outcome::DeadLettered { error }) => {
                let flow = Flow::of(delivery.properties.headers().as_ref()).unwrap_or_default();
                let status = if returned_err {
                    Status::Failed
                } else {
                    Status::DeadLettered
                };
                dispatch::after_failure(&context.publisher, &flow, T::NAME, status, attempt, error)
                    .await
            }
            (published, _) => published,
        };
        let settled = match published {
            Ok(()) => settled(delivery.acker.ack(BasicAckOptions::default()).await),
            Err(error) => {
                requeue_after_pause(delivery).await;
                Err(error)
            }
        };
        match settled {
            Ok(()) => {
                match &outcome {
                    Outcome::Retrying { .. } => observe::metrics::retried(queue, T::NAME),
                    Outcome::DeadLettered { .. } => observe::metrics::dead_lettered(queue, T::NAME),
                    _ => {}
                }
                outcome
            }
            Err(error) => {
                warn!(task = T::NAME, queue, cause = %error, "failed task not settled; the broker will deliver it again");
                Outcome::Unsettled { error }
            }
        }
    }

    /// Publishes the copy to its delay or dead-letter queue and waits for the confirm;
    /// declares the queue and tries once more if the broker returned it.
    async fn publish_copy(
        &self,
        channel: &lapin::Channel,
        queue: &str,
        target: &Target,
        body: &[u8],
        properties: BasicProperties,
    ) -> Result<(), String> {
        for round in 0..2 {
            let routing_key = match target {
                Target::Dead(dead) => dead.clone(),
                Target::Delay(delay) => {
                    let name = retry_delay::delay_queue_name(queue, *delay);
                    if round > 0 || !self.declared.is_fresh(&name, REDECLARE_AFTER) {
                        retry_delay::declare_delay_queue(channel, queue, *delay)
                            .await
                            .map_err(|e| format!("declaring {name}: {e}"))?;
                        self.declared.mark(&name);
                    }
                    name
                }
            };
            let confirm =
                publish_mandatory(channel, routing_key.as_str(), body, properties.clone())
                    .await
                    .map_err(|e| format!("publishing to {routing_key}: {e}"))?;
            match confirm.await {
                Ok(Confirmation::Ack(None)) => return Ok(()),
                Ok(confirmation) if returned_no_route(&confirmation) && round == 0 => {
                    self.declared.forget(&routing_key);
                    if let Target::Dead(dead) = target {
                        declare_durable(channel, dead.as_str(), FieldTable::default())
                            .await
                            .map_err(|e| format!("declaring {dead}: {e}"))?;
                    }
                }
                Ok(Confirmation::NotRequested) => {
                    return Err("the worker channel is not in confirm mode".into())
                }
                Ok(other) => return Err(format!("{routing_key} refused the copy: {other:?}")),
                Err(err) => return Err(format!("confirm from {routing_key}: {err}")),
            }
        }
        Err("the copy was returned twice".into())
    }
}

/// The result of `basic.ack` / `basic.nack` / `basic.reject`: lapin answers `Ok(false)` when
/// the channel was already closed, in which case the broker will deliver the message again.
pub(crate) fn settled(result: lapin::Result<bool>) -> Result<(), String> {
    match result {
        Ok(true) => Ok(()),
        Ok(false) => Err("the channel closed before the delivery was settled".to_owned()),
        Err(err) => Err(err.to_string()),
    }
}

/// Hands a delivery back to the broker after a pause (not at once: a broker refusing every
/// copy or result would otherwise have the task run again in a tight loop).
async fn requeue_after_pause(delivery: &Delivery) {
    tokio::time::sleep(crate::worker::RETRY_PAUSE).await;
    let _ = delivery
        .acker
        .nack(BasicNackOptions {
            multiple: false,
            requeue: true,
        })
        .await;
}

/// Where a failed task's copy goes.
enum Target {
    /// The delay queue for this wait, before the next attempt.
    Delay(Duration),
    /// The dead-letter queue.
    Dead(String),
}

/// Makes the copy of a failed task fit a frame of `frame_max` bytes: a retry copy that does not
/// goes to the dead-letter queue instead; a dead letter that does not loses the task's largest
/// headers (`headers::fit_to_frame`). Returns where the copy goes, its properties, and the
/// dead letter's error when the target changed or headers were dropped.
fn fit(
    target: Target,
    mut properties: BasicProperties,
    frame_max: u32,
    queue: &str,
    options: &TaskOptions,
) -> (Target, BasicProperties, Option<String>) {
    if properties_size::fits(&properties, frame_max) {
        return (target, properties, None);
    }
    let original =
        headers::string(properties.headers().as_ref(), headers::ERROR).unwrap_or_default();
    let dropped = headers::fit_to_frame(&mut properties, frame_max);
    let error = bounded_error(format!(
        "{original} [the copy of this task did not fit a frame of {frame_max} bytes; headers \
         dropped: {}]",
        dropped.join(", ")
    ));
    // The failure record, with this error, and without a retry delay (no retry).
    let mut table = FieldTable::default();
    for (key, value) in properties.headers().iter().flat_map(|h| h.inner()) {
        if key.as_str() != RETRY_DELAY {
            table.insert(key.clone(), value.clone());
        }
    }
    table.insert(headers::ERROR.into(), headers::long_string(&error));
    let properties = properties.with_headers(table);
    (
        Target::Dead(options.dead_letter_queue_for(queue)),
        properties,
        Some(error),
    )
}

/// Decodes the arguments and runs `T` once inside `cx`, under `limits` (taking `slot` along to
/// a blocking thread), catching a panic.
async fn attempt_once<T: Task>(
    body: &[u8],
    cx: Context,
    limits: HandlerLimits,
    slot: &mut Option<OwnedSemaphorePermit>,
) -> Result<T::Output, Failure> {
    let args = envelope::decode_request::<T::Args>(body).map_err(|err| Failure {
        error: bounded_error(format!("cannot decode the arguments of {}: {err}", T::NAME)),
        permanent: true,
        returned_err: false,
        error_body: None,
    })?;
    // Workers check the states before they consume, local runs before they run: a missing one
    // is not reached in practice; it could never succeed, so it is permanent.
    let running = T::invoke(args, &cx).map_err(|missing| Failure {
        error: missing_state_message(T::NAME, missing.type_name),
        permanent: true,
        returned_err: false,
        error_body: None,
    })?;
    match limits::run(cx.scope(running), limits.time_limit, limits.blocking, slot).await {
        Ran::Done(Ok(output)) => Ok(output),
        Ran::Done(Err(err)) => Err(Failure {
            // `{:#}`: anyhow and eyre print the chain of causes, others their usual text.
            error: bounded_error(format!("{err:#}")),
            permanent: false,
            returned_err: true,
            error_body: T::encode_error(&err),
        }),
        ran => Err(Failure {
            error: ran.failure().unwrap_or_default(),
            permanent: false,
            returned_err: false,
            error_body: None,
        }),
    }
}

/// The `observe` outcome of a settled task delivery.
fn observed_outcome(outcome: &Outcome) -> observe::Outcome {
    match outcome {
        Outcome::Succeeded => observe::Outcome::Ok,
        Outcome::Retrying { .. } => observe::Outcome::Retry,
        Outcome::DeadLettered { .. } => observe::Outcome::DeadLettered,
        _ => observe::Outcome::Error,
    }
}

/// Runs task `T` once in this process, without a broker, as a worker would (arguments through
/// MessagePack, the time limit, a panic caught) inside the context `cx` fakes (a [`TaskInfo`](crate::task::TaskInfo):
/// the attempt, `message_id`, redelivered flag; or a [`Context`] with states for `State<T>`
/// parameters), and says what the worker would do next: ack it, retry it (after the delay the
/// task's backoff picks for this attempt) or dead-letter it. A state the task needs and `cx`
/// lacks dead-letters it (a worker would refuse to start). See `lepus::testing`.
pub async fn run_local<T: Task>(args: T::Args, cx: impl Into<Context>) -> Outcome {
    let options = T::options();
    let cx: Context = cx.into();
    let attempt = cx.attempt().max(1);
    if let Some(missing) = cx.states().first_missing(&T::needs()) {
        return Outcome::DeadLettered {
            error: missing_state_message(T::NAME, missing.type_name()),
        };
    }
    let queue = cx
        .queue()
        .filter(|q| !q.is_empty())
        .unwrap_or(T::QUEUE)
        .to_owned();
    let mut cx = cx.into_run_of(ContextKind::Task, T::NAME, &queue);
    if cx.deadline().is_none() {
        if let Some(limit) = options.time_limit_of() {
            cx = cx.with_timeout(limit);
        }
    }
    let body = match envelope::encode_request(&args) {
        Ok(body) => body,
        Err(err) => {
            return Outcome::DeadLettered {
                error: format!("cannot encode the arguments of {}: {err}", T::NAME),
            }
        }
    };
    let limits = HandlerLimits {
        time_limit: options.time_limit_of(),
        ..HandlerLimits::default()
    };
    let result = attempt_once::<T>(&body, cx, limits, &mut None).await;
    match result {
        Ok(_) => Outcome::Succeeded,
        Err(failure) if failure.permanent || attempt > options.retry_count() => {
            Outcome::DeadLettered {
                error: failure.error,
            }
        }
        Err(failure) => Outcome::Retrying {
            error: failure.error,
            delay: retry_delay::retry_delay(&options.backoff_policy(), attempt - 1),
        },
    }
}
