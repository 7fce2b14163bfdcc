//! Issue 17, Done means 1: one trace across hops. A caller calls service A; A calls service B,
//! enqueues task C, whose first attempt fails and is retried, and publishes event D. Every span lands in an
//! in-memory OpenTelemetry exporter (installed with `lepus::otel::install_with`): one trace id
//! covers them all, each span's parent is the span that sent its message, and C's two attempts
//! are two `lepus.task` spans, both children of the enqueue.
//!
//! Runs on the bundled broker, or on the one `LEPUS_TEST_AMQP_URL` names (`.ci/run` runs it
//! on RabbitMQ).
#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

mod common;

use std::time::{Duration, Instant};

use lepus::otel::opentelemetry::trace::{SpanId, TraceId};
use lepus::otel::opentelemetry::Value;
use lepus::{Client, Context, State};
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider, SpanData};
use tracing::Instrument;

#[lepus::rpc(queue = "obs.b")]
async fn service_b(n: u32) -> u32 {
    n + 1
}

#[lepus::task(queue = "obs.c", retries = 2, backoff = "10ms..20ms")]
async fn task_c(ctx: Context, n: u32) -> Result<(), String> {
    if ctx.attempt() == 1 {
        return Err(format!("first attempt for {n} fails"));
    }
    Ok(())
}

#[lepus::event(exchange = "obs.d", kind = "fanout", delivery = "pool")]
async fn event_d(_n: u32) {}

#[lepus::rpc(queue = "obs.a")]
async fn service_a(State(client): State<Client>, n: u32) -> Result<u32, String> {
    let m = service_b::call(&client, n)
        .await
        .map_err(|e| e.to_string())?;
    task_c::enqueue(&client, m)
        .await
        .map_err(|e| e.to_string())?;
    event_d::publish(&client, "", &m)
        .await
        .map_err(|e| e.to_string())?;
    Ok(m)
}

/// The value of attribute `key` of `span`, as a string.
fn attr(span: &SpanData, key: &str) -> Option<String> {
    span.attributes
        .iter()
        .find(|kv| kv.key.as_str() == key)
        .map(|kv| match &kv.value {
            Value::String(s) => s.as_str().to_owned(),
            other => other.to_string(),
        })
}

/// The one span named `name` whose `key` attribute is `value`.
fn one<'a>(spans: &'a [SpanData], name: &str, key: &str, value: &str) -> &'a SpanData {
    let found: Vec<_> = spans
        .iter()
        .filter(|s| s.name == name && attr(s, key).as_deref() == Some(value))
        .collect();
    assert_eq!(
        found.len(),
        1,
        "one {name} with {key}={value} in {spans:#?}"
    );
    found[0]
}

#[tokio::test]
async fn one_trace_covers_a_call_its_nested_call_and_a_retried_task() {
    let exporter = InMemorySpanExporter::default();
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(exporter.clone())
        .build();
    let _otel = lepus::otel::install_with(provider.clone()).unwrap();

    let mut bed = common::test_bed("obs").await;
    let client = bed.client().clone();
    // A and B on workers (and connections) of their own: every hop goes through the broker.
    bed.worker(|w| w.state(client).serve(service_a::handler()))
        .await
        .unwrap();
    bed.worker(|w| w.serve(service_b::handler())).await.unwrap();
    let mut attempts = bed.serve(task_c::handler()).await.unwrap();
    let mut events = bed.serve(event_d::handler()).await.unwrap();

    let root = tracing::info_span!("caller");
    let answer = service_a::call(bed.client(), 41)
        .instrument(root.clone())
        .await;
    assert_eq!(answer.unwrap(), 42);
    drop(root);
    let first = attempts.next().await.unwrap();
    assert!(
        matches!(first.outcome, lepus::task::Outcome::Retrying { .. }),
        "{first:?}"
    );
    let second = attempts.next().await.unwrap();
    assert_eq!(second.outcome, lepus::task::Outcome::Succeeded);
    assert_eq!(
        events.next().await.unwrap().outcome,
        lepus::task::Outcome::Succeeded
    );

    // The task's span closes just after its completion is reported: wait for it.
    let deadline = Instant::now() + Duration::from_secs(10);
    let spans = loop {
        provider.force_flush().unwrap();
        let spans = exporter.get_finished_spans().unwrap();
        let tasks = spans.iter().filter(|s| s.name == "lepus.task").count();
        let events = spans.iter().filter(|s| s.name == "lepus.event").count();
        if tasks == 2 && events == 1 && spans.iter().any(|s| s.name == "caller") {
            break spans;
        }
        assert!(Instant::now() < deadline, "spans so far: {spans:#?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };

    let caller = spans.iter().find(|s| s.name == "caller").unwrap();
    let call_a = one(&spans, "lepus.call", "method", "service_a");
    let request_a = one(&spans, "lepus.request", "method", "service_a");
    let call_b = one(&spans, "lepus.call", "method", "service_b");
    let request_b = one(&spans, "lepus.request", "method", "service_b");
    let enqueue_c = one(&spans, "lepus.enqueue", "task", "task_c");
    let attempt_1 = one(&spans, "lepus.task", "attempt", "1");
    let attempt_2 = one(&spans, "lepus.task", "attempt", "2");
    let exchange_d = format!("{}obs.d", bed.prefix());
    let publish_d = one(&spans, "lepus.publish", "exchange", &exchange_d);
    let event_d = one(&spans, "lepus.event", "event", "event_d");

    let trace: TraceId = caller.span_context.trace_id();
    for span in [
        call_a, request_a, call_b, request_b, enqueue_c, attempt_1, attempt_2,
    ] {
        assert_eq!(span.span_context.trace_id(), trace, "{span:#?}");
    }
    let parent = |span: &SpanData| span.parent_span_id;
    let id = |span: &SpanData| -> SpanId { span.span_context.span_id() };
    assert_eq!(parent(caller), SpanId::INVALID);
    assert_eq!(parent(call_a), id(caller));
    assert_eq!(parent(request_a), id(call_a));
    assert!(request_a.parent_span_is_remote);
    assert_eq!(parent(call_b), id(request_a));
    assert_eq!(parent(request_b), id(call_b));
    assert_eq!(parent(enqueue_c), id(request_a));
    assert_eq!(parent(attempt_1), id(enqueue_c));
    assert_eq!(parent(attempt_2), id(enqueue_c));
    assert_ne!(id(attempt_1), id(attempt_2));
    assert_eq!(parent(publish_d), id(request_a));
    assert_eq!(parent(event_d), id(publish_d));

    // The fields an operator filters on.
    assert_eq!(attr(call_a, "outcome").as_deref(), Some("ok"));
    assert_eq!(attr(request_a, "outcome").as_deref(), Some("ok"));
    assert_eq!(attr(attempt_1, "outcome").as_deref(), Some("retry"));
    assert_eq!(attr(attempt_2, "outcome").as_deref(), Some("ok"));
    assert_eq!(
        attr(call_a, "correlation_id"),
        attr(request_a, "correlation_id")
    );
    assert!(attr(call_a, "correlation_id").is_some_and(|id| id.len() == 32));
    assert_eq!(attr(enqueue_c, "message_id"), attr(attempt_1, "message_id"));
    assert_eq!(attr(attempt_1, "message_id"), attr(attempt_2, "message_id"));
    assert_eq!(
        attr(request_b, "queue").as_deref(),
        Some(format!("{}obs.b", bed.prefix()).as_str())
    );
    for span in [call_a, request_a, call_b, request_b, attempt_1, attempt_2] {
        assert!(attr(span, "duration_ms").is_some(), "{span:#?}");
    }
    bed.stop().await;
}
