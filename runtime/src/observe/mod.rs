//! Observability across hops (issue 17): the spans the runtime opens, the outcome they end
//! with, the W3C trace context they carry between processes (`propagation`), and the metrics
//! of workers and clients (`metrics`, behind the `metrics` feature).
//!
//! # Spans
//! Every span is `INFO`, target `lepus`, so `RUST_LOG=lepus=info` (or an OpenTelemetry layer
//! at that level) sees them all; with no subscriber interested a span is `Span::none()`: no
//! allocation, nothing recorded.
//!
//! | span            | `otel.kind` | opened by                                   | parent                     |
//! |-----------------|-------------|---------------------------------------------|----------------------------|
//! | `lepus.call`    | client      | a call (stub, `Client::call`)               | the caller's current span  |
//! | `lepus.enqueue` | producer    | `task::enqueue` (stubs' `enqueue`)          | the caller's current span  |
//! | `lepus.publish` | producer    | `publish`, an event stub's `publish`        | the caller's current span  |
//! | `lepus.request` | server      | a worker running an RPC request             | the call's span (remote)   |
//! | `lepus.task`    | consumer    | a worker running one task attempt           | the enqueue's span (remote)|
//! | `lepus.event`   | consumer    | a worker running an event handler           | the publish's span (remote)|
//!
//! A retried task is a new `lepus.task` span per attempt, each a child of the same enqueue (a
//! retry copy keeps the task's headers, `traceparent` included); a dead-lettered task keeps
//! them too, so whatever reads the dead-letter queue can continue the trace.
//!
//! # Fields: one vocabulary for spans and logs, runtime and broker
//! | field            | meaning                                                            |
//! |------------------|--------------------------------------------------------------------|
//! | `queue`          | the queue (with the queue prefix) a request goes to / came from    |
//! | `method`         | an RPC method                                                      |
//! | `task`           | a task name                                                        |
//! | `event`          | an event handler name; `exchange`, `routing_key` where it went     |
//! | `correlation_id` | an RPC's `correlation-id`                                          |
//! | `message_id`     | a task's or event's `message-id`                                   |
//! | `attempt`        | a task attempt, 1 for the first                                    |
//! | `redelivered`    | the broker delivered the message before                            |
//! | `outcome`        | how it ended: see [`Outcome`]                                      |
//! | `duration_ms`    | wall time of the span's work, milliseconds (float)                 |
//! | `delivery_tag`, `consumer_tag`, `channel`, `vhost`, `cause` | AMQP's own words, as the broker logs them; `cause` is an error's text |
//!
//! `otel.kind` and `otel.status_code` (`ERROR` when the outcome is a failure) are read by
//! `tracing-opentelemetry`.

pub(crate) mod metrics;
pub(crate) mod propagation;

use std::time::Instant;

use tracing::field::Empty;
use tracing::Span;

use crate::error::{Error, FailureKind};

/// How a call, an enqueue, a publish or a handler run ended: the `outcome` field of the spans
/// and the `outcome` label of the metrics.
// A new variant goes last here and last in `Outcome::ALL`: the metrics count outcomes in arrays
// of `ALL.len()` indexed by declaration order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Outcome {
    /// It succeeded (a handler returned `Ok`, a task or event was acked, a publish confirmed).
    Ok,
    /// An RPC handler returned its application error (`Err`).
    RemoteError,
    /// The deadline passed: the caller stopped waiting, or a handler hit its time limit.
    Timeout,
    /// No queue took the request (nobody serves it) or the publish.
    NoRoute,
    /// The handler panicked.
    Panic,
    /// The worker could not run the request (bad request, unknown method, too large, delivery
    /// limit, not run at shutdown, unencodable reply).
    Failed,
    /// A task attempt failed and the task will run again.
    Retry,
    /// A task failed for the last time (or could never run) and went to its dead-letter queue;
    /// an event handler's failure rejected the event.
    DeadLettered,
    /// The transport failed (connection lost, client closed, broker nack, configuration).
    Error,
}

impl Outcome {
    /// The label: `ok`, `remote_error`, `timeout`, `no_route`, `panic`, `failed`, `retry`,
    /// `dead_lettered`, `error`.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::RemoteError => "remote_error",
            Outcome::Timeout => "timeout",
            Outcome::NoRoute => "no_route",
            Outcome::Panic => "panic",
            Outcome::Failed => "failed",
            Outcome::Retry => "retry",
            Outcome::DeadLettered => "dead_lettered",
            Outcome::Error => "error",
        }
    }

    /// Every outcome, in declaration order: `Outcome::ALL[o.index()] == o` (the metrics count
    /// outcomes in arrays indexed so).
    #[cfg_attr(not(feature = "metrics"), allow(dead_code))]
    pub(crate) const ALL: [Outcome; 9] = [
        Outcome::Ok,
        Outcome::RemoteError,
        Outcome::Timeout,
        Outcome::NoRoute,
        Outcome::Panic,
        Outcome::Failed,
        Outcome::Retry,
        Outcome::DeadLettered,
        Outcome::Error,
    ];

    /// This outcome's place in [`Outcome::ALL`].
    #[cfg_attr(not(feature = "metrics"), allow(dead_code))]
    pub(crate) fn index(self) -> usize {
        self as usize
    }

    /// True for the outcomes a span reports as an error.
    pub fn is_error(self) -> bool {
        !matches!(self, Outcome::Ok)
    }

    /// The outcome of a call that returned `result`, as its caller saw it.
    pub(crate) fn of_call<T, E>(result: &Result<T, Error<E>>) -> Outcome {
        match result {
            Ok(_) => Outcome::Ok,
            Err(Error::Remote(_)) => Outcome::RemoteError,
            Err(Error::Timeout(_)) => Outcome::Timeout,
            Err(Error::NoRoute { .. }) => Outcome::NoRoute,
            Err(Error::Failed { kind, .. }) => Outcome::of_failure(*kind),
            Err(_) => Outcome::Error,
        }
    }

    /// The outcome of an enqueue or a publish.
    pub(crate) fn of_publish<T, E>(result: &Result<T, Error<E>>) -> Outcome {
        match result {
            Ok(_) => Outcome::Ok,
            Err(Error::Timeout(_)) => Outcome::Timeout,
            Err(Error::NoRoute { .. } | Error::NotFound { .. }) => Outcome::NoRoute,
            Err(_) => Outcome::Error,
        }
    }

    /// The outcome a worker's failure reply of `kind` stands for.
    pub(crate) fn of_failure(kind: FailureKind) -> Outcome {
        match kind {
            FailureKind::Panicked => Outcome::Panic,
            FailureKind::TimeLimit => Outcome::Timeout,
            _ => Outcome::Failed,
        }
    }
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The span of an outgoing call.
pub(crate) fn call_span(queue: &str, method: &str) -> Span {
    tracing::info_span!(target: "lepus", "lepus.call", otel.kind = "client", queue, method,
        correlation_id = Empty, outcome = Empty, duration_ms = Empty, otel.status_code = Empty)
}

/// The span of an enqueue.
pub(crate) fn enqueue_span(queue: &str, task: &str) -> Span {
    tracing::info_span!(target: "lepus", "lepus.enqueue", otel.kind = "producer", queue, task,
        message_id = Empty, outcome = Empty, duration_ms = Empty, otel.status_code = Empty)
}

/// The span of an event publish.
pub(crate) fn publish_span(exchange: &str, routing_key: &str) -> Span {
    tracing::info_span!(target: "lepus", "lepus.publish", otel.kind = "producer", exchange,
        routing_key, message_id = Empty, outcome = Empty, duration_ms = Empty,
        otel.status_code = Empty)
}

/// The span of an RPC request a worker runs, continuing the caller's trace from `headers`.
pub(crate) fn request_span(
    queue: &str,
    method: &str,
    properties: &lapin::BasicProperties,
    redelivered: bool,
) -> Span {
    let span = tracing::info_span!(target: "lepus", "lepus.request", otel.kind = "server",
        queue, method, correlation_id = Empty, redelivered, outcome = Empty, duration_ms = Empty,
        otel.status_code = Empty);
    continued(
        span,
        "correlation_id",
        properties.correlation_id(),
        properties,
    )
}

/// The span of one task attempt, continuing the enqueue's trace from `headers`.
pub(crate) fn task_span(
    queue: &str,
    task: &str,
    properties: &lapin::BasicProperties,
    attempt: u32,
    redelivered: bool,
) -> Span {
    let span = tracing::info_span!(target: "lepus", "lepus.task", otel.kind = "consumer",
        queue, task, message_id = Empty, attempt, redelivered, outcome = Empty,
        duration_ms = Empty, otel.status_code = Empty);
    continued(span, "message_id", properties.message_id(), properties)
}

/// The span of one event handler run, continuing the publish's trace from `headers`.
pub(crate) fn event_span(
    queue: &str,
    event: &str,
    properties: &lapin::BasicProperties,
    redelivered: bool,
) -> Span {
    let span = tracing::info_span!(target: "lepus", "lepus.event", otel.kind = "consumer",
        queue, event, message_id = Empty, redelivered, outcome = Empty, duration_ms = Empty,
        otel.status_code = Empty);
    continued(span, "message_id", properties.message_id(), properties)
}

/// A worker's span, just created: records the message's id in `field` and makes it a child of
/// the sender's span (nothing for a disabled span).
fn continued(
    span: Span,
    field: &str,
    id: &Option<lapin::types::ShortString>,
    properties: &lapin::BasicProperties,
) -> Span {
    if !span.is_disabled() {
        if let Some(id) = id {
            span.record(field, id.as_str());
        }
        propagation::continue_from(&span, properties.headers().as_ref());
    }
    span
}

/// Ends a worker's run of one delivery of `handler` on `queue` (an RPC request, a task
/// attempt, an event): records the outcome on the run's span and counts it in the metrics.
pub(crate) fn finish_run(
    span: &Span,
    queue: &str,
    handler: &str,
    outcome: Outcome,
    started: Instant,
) {
    finish(span, outcome, started);
    metrics::handled(queue, handler, outcome, started.elapsed());
}

/// Records how the span's work ended and how long it took (nothing for a disabled span).
pub(crate) fn finish(span: &Span, outcome: Outcome, started: Instant) {
    if span.is_disabled() {
        return;
    }
    span.record("outcome", outcome.as_str());
    span.record("duration_ms", started.elapsed().as_secs_f64() * 1000.0);
    if outcome.is_error() {
        span.record("otel.status_code", "ERROR");
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::envelope::{encode_failure, encode_reply, outcome_of_reply};

    #[test]
    fn every_outcome_has_its_own_index() {
        for (i, outcome) in Outcome::ALL.into_iter().enumerate() {
            assert_eq!(outcome.index(), i, "{outcome}");
        }
    }

    #[test]
    fn a_reply_body_says_how_its_call_ended() {
        let ok = encode_reply::<u32, String>(&Ok(1)).unwrap_or_default();
        let err = encode_reply::<u32, String>(&Err("no".into())).unwrap_or_default();
        assert_eq!(outcome_of_reply(&ok), Outcome::Ok);
        assert_eq!(outcome_of_reply(&err), Outcome::RemoteError);
        for (kind, outcome) in [
            (FailureKind::Panicked, Outcome::Panic),
            (FailureKind::TimeLimit, Outcome::Timeout),
            (FailureKind::BadRequest, Outcome::Failed),
            (FailureKind::DeliveryLimit, Outcome::Failed),
        ] {
            assert_eq!(outcome_of_reply(&encode_failure(kind, "x")), outcome);
        }
        assert_eq!(outcome_of_reply(&[0xc1]), Outcome::Failed);
    }

    #[test]
    fn a_callers_error_maps_to_one_outcome() {
        let of = |e: Error<String>| Outcome::of_call::<(), String>(&Err(e));
        assert_eq!(Outcome::of_call::<u8, String>(&Ok(1)), Outcome::Ok);
        assert_eq!(of(Error::Remote("x".into())), Outcome::RemoteError);
        assert_eq!(of(Error::Timeout(Duration::ZERO)), Outcome::Timeout);
        assert_eq!(
            of(Error::NoRoute {
                queue: "q".into(),
                reply_code: 312
            }),
            Outcome::NoRoute
        );
        assert_eq!(of(Error::ConnectionLost), Outcome::Error);
        let failed = |kind| Error::Failed {
            kind,
            message: String::new(),
        };
        assert_eq!(of(failed(FailureKind::Panicked)), Outcome::Panic);
        assert_eq!(of(failed(FailureKind::UnknownMethod)), Outcome::Failed);
        let labels: Vec<_> = [Outcome::Ok, Outcome::DeadLettered, Outcome::Retry]
            .iter()
            .map(|o| o.as_str())
            .collect();
        assert_eq!(labels, ["ok", "dead_lettered", "retry"]);
    }
}
