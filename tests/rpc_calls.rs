//! RPC calls end to end: typed results and errors, panics and bad requests, timeouts, calls to
//! nobody, many concurrent calls on one client, expired requests skipped by workers.
#![allow(clippy::unwrap_used)] // in tests a failed unwrap is a failed test

mod amqp;
mod common;
mod rpc_util;

// The example's fib contract, for its arithmetic (its own RPC, on another queue, is not served
// here).
#[allow(dead_code)]
#[path = "../examples/fib_contract/mod.rs"]
mod fib_contract;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::served::Served;
use futures::future::join_all;
use lapin::options::BasicPublishOptions;
use lapin::types::{AMQPValue, FieldTable};
use lapin::BasicProperties;
use lepus::{CallOptions, Error, FailureKind, State};
use rpc_util::{client, eventually, routed};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, thiserror::Error)]
enum MathError {
    #[error("fib({0}) overflows u64")]
    Overflow(u32),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, lepus::Plain)]
struct Point {
    x: i32,
    y: i32,
    label: Option<String>,
}

/// fib over RPC, with a typed error past 93.
#[lepus::rpc(queue = "math")]
async fn fib(n: u32) -> Result<u64, MathError> {
    fib_contract::fib_u64(n).ok_or(MathError::Overflow(n))
}

/// A plain return type, a custom method name, two arguments, on the same queue as `fib`.
#[lepus::rpc(queue = "math", name = "add")]
async fn add_numbers(a: i64, b: i64) -> i64 {
    a + b
}

/// Structs travel as MessagePack maps.
#[lepus::rpc(queue = "math")]
async fn mirror(p: Point) -> Point {
    Point {
        x: -p.x,
        y: -p.y,
        label: p.label.map(|l| l.to_uppercase()),
    }
}

/// No arguments, no result.
#[lepus::rpc(queue = "math")]
async fn nothing() {}

/// Panics with the given message.
#[lepus::rpc(queue = "math")]
async fn boom(message: String) -> u32 {
    panic!("{message}")
}

/// Sleeps, then answers.
#[lepus::rpc(queue = "slow")]
async fn nap(ms: u64) -> u64 {
    tokio::time::sleep(Duration::from_millis(ms)).await;
    ms
}

/// Counts its runs in its state (for the expired-request test).
#[lepus::rpc(queue = "counted")]
async fn counted(State(runs): State<Arc<AtomicUsize>>, tag: u32) -> u32 {
    runs.fetch_add(1, Ordering::SeqCst);
    tag
}

/// A worker serving the `math` queue's five methods, and a client that has seen it answer.
async fn math_served() -> Served {
    let served = Served::start("rpc", |w| {
        w.concurrency(64)
            .serve(fib::handler())
            .serve(add_numbers::handler())
            .serve(mirror::handler())
            .serve(nothing::handler())
            .serve(boom::handler())
    })
    .await;
    let answer = routed("the math worker", || fib::call(&served.client, 1)).await;
    answer.expect("fib(1) answers");
    served
}

/// A worker serving the `slow` queue (`nap`), and a client that has seen it answer.
async fn nap_served() -> Served {
    let served = Served::start("rpc", |w| w.serve(nap::handler())).await;
    let answer = routed("the nap worker", || nap::call(&served.client, 0)).await;
    answer.expect("nap(0) answers");
    served
}

#[tokio::test]
async fn typed_results_come_back_and_the_function_stays_local() {
    let served = math_served().await;
    let client = &served.client;

    assert_eq!(fib(30).await, Ok(832_040), "local call");
    assert_eq!(fib::call(client, 30).await.unwrap(), 832_040);
    assert_eq!(fib::call(client, 0).await.unwrap(), 0);
    assert_eq!(add_numbers::call(client, 40, 2).await.unwrap(), 42);
    assert_eq!(add_numbers::METHOD, "add");
    let p = Point {
        x: 3,
        y: -4,
        label: Some("north".into()),
    };
    let mirrored = mirror::call(client, p).await.unwrap();
    assert_eq!(
        mirrored,
        Point {
            x: -3,
            y: 4,
            label: Some("NORTH".into())
        }
    );
    nothing::call(client).await.unwrap();
    let v = fib::call_with(
        client,
        20,
        CallOptions::default().timeout(Duration::from_secs(5)),
    )
    .await
    .unwrap();
    assert_eq!(v, 6765);
    assert_eq!(client.in_flight(), 0);

    served.stop().await;
}

#[tokio::test]
async fn handler_errors_come_back_typed_and_panics_as_remote_failures() {
    let served = math_served().await;
    let client = &served.client;

    match fib::call(client, 100).await {
        Err(Error::Remote(MathError::Overflow(100))) => {}
        other => panic!("expected the typed remote error, got {other:?}"),
    }
    match boom::call(client, "kaboom 7".into()).await {
        Err(Error::Failed { kind, message }) => {
            assert_eq!(kind, FailureKind::Panicked);
            assert!(message.contains("kaboom 7"), "{message}");
        }
        other => panic!("expected a remote panic, got {other:?}"),
    }
    // The pool lives on after a panic.
    assert_eq!(fib::call(client, 10).await.unwrap(), 55);

    served.stop().await;
}

#[tokio::test]
async fn a_slow_call_times_out_and_leaves_nothing_behind() {
    let served = nap_served().await;
    let client = &served.client;

    let timeout = Duration::from_millis(200);
    match nap::call_with(client, 3_000, CallOptions::default().timeout(timeout)).await {
        Err(err @ Error::Timeout(after)) => {
            assert_eq!(after, timeout);
            assert!(err.is_retryable() && err.is_timeout());
        }
        other => panic!("expected a timeout, got {other:?}"),
    }
    assert_eq!(client.in_flight(), 0, "the timed-out call is forgotten");

    // The default timeout applies when the call sets none, and can be changed.
    client.set_default_timeout(Duration::from_millis(150));
    assert!(matches!(
        nap::call(client, 3_000).await,
        Err(Error::Timeout(_))
    ));
    client.set_default_timeout(Duration::from_secs(10));
    assert_eq!(nap::call(client, 1).await.unwrap(), 1);

    // Dropping a call's future forgets it at once.
    {
        let call = nap::call(client, 3_000);
        tokio::pin!(call);
        let polled = tokio::time::timeout(Duration::from_millis(50), &mut call).await;
        assert!(polled.is_err(), "still waiting");
        assert_eq!(client.in_flight(), 1);
    }
    assert_eq!(client.in_flight(), 0);

    served.stop().await;
}

#[tokio::test]
async fn a_call_nobody_serves_fails_fast_with_no_route() {
    let broker = common::broker().await;
    let prefix = common::unique("rpc");
    let client = client(broker.url(), &prefix).await;
    // A long timeout: the error must come from basic.return, not from the clock.
    let options = CallOptions::default().timeout(Duration::from_secs(60));
    let started = std::time::Instant::now();
    match fib::call_with(&client, 3, options).await {
        Err(err @ Error::NoRoute { .. }) => {
            assert_eq!(err.reply_code(), Some(312));
            assert!(err.to_string().contains(&format!("{prefix}math")), "{err}");
        }
        other => panic!("expected NoRoute, got {other:?}"),
    }
    assert!(started.elapsed() < Duration::from_secs(60));
    assert_eq!(client.in_flight(), 0);
    broker.stop().await;
}

#[tokio::test]
async fn a_thousand_concurrent_calls_on_one_client_each_get_their_own_answer() {
    let served = math_served().await;
    let client = &served.client;

    let calls = (0..1_000i64).map(|i| {
        let client = client.clone();
        async move { (i, add_numbers::call(&client, i, 1_000_000 * i).await) }
    });
    let results = join_all(calls).await;
    assert_eq!(results.len(), 1_000);
    for (i, result) in results {
        assert_eq!(result.unwrap(), i + 1_000_000 * i, "caller {i}");
    }
    assert_eq!(client.in_flight(), 0);

    served.stop().await;
}

/// Publishes a hand-written request for `method` of the `math` queue, naming the method in the
/// `type` property (what the stub sends) or, with `in_type` false, in the `x-lepus-method`
/// header (what task enqueues and older clients send); replies go to `reply_to`.
async fn publish_raw_request(
    channel: &lapin::Channel,
    prefix: &str,
    reply_to: &str,
    method: &str,
    body: &[u8],
    in_type: bool,
) {
    let mut properties = BasicProperties::default()
        .with_reply_to(reply_to.into())
        .with_correlation_id(method.into());
    if in_type {
        properties = properties.with_type(method.into());
    } else {
        let mut headers = FieldTable::default();
        headers.insert(
            lepus::envelope::HEADER_METHOD.into(),
            AMQPValue::LongString(method.into()),
        );
        properties = properties.with_headers(headers);
    }
    channel
        .basic_publish(
            "".into(),
            format!("{prefix}math").into(),
            BasicPublishOptions::default(),
            body,
            properties,
        )
        .await
        .unwrap();
}

#[tokio::test]
async fn an_undecodable_request_gets_a_bad_request_reply_and_the_pool_lives_on() {
    let served = math_served().await;

    // Hand-written requests: `fib` with a string where a u32 belongs, and an unknown method;
    // each named once in the `type` property and once in the `x-lepus-method` header.
    let raw = amqp::connect_url(served.url()).await;
    let channel = raw.create_channel().await.unwrap();
    let reply_queue = amqp::declare_server_named(&channel).await;
    let mut replies = amqp::consume(&channel, reply_queue.name().as_str(), true).await;
    for (method, body, expected, in_type) in [
        ("fib", vec![0x91, 0xa1, b'x'], FailureKind::BadRequest, true),
        (
            "fib",
            vec![0x91, 0xa1, b'x'],
            FailureKind::BadRequest,
            false,
        ),
        (
            "no_such_method",
            vec![0x90],
            FailureKind::UnknownMethod,
            true,
        ),
        (
            "no_such_method",
            vec![0x90],
            FailureKind::UnknownMethod,
            false,
        ),
    ] {
        let reply_to = reply_queue.name().as_str();
        publish_raw_request(&channel, &served.prefix, reply_to, method, &body, in_type).await;
        let reply = tokio::time::timeout(
            Duration::from_secs(10),
            futures::StreamExt::next(&mut replies),
        )
        .await
        .expect("a reply within 10 s")
        .expect("consumer open")
        .expect("delivery");
        assert_eq!(
            reply
                .properties
                .correlation_id()
                .as_ref()
                .map(|c| c.as_str()),
            Some(method)
        );
        match lepus::envelope::decode_reply::<u64, String>(&reply.data) {
            Err(Error::Failed { kind, .. }) => {
                assert_eq!(kind, expected, "{method} (in type: {in_type})")
            }
            other => {
                panic!("{method} (in type: {in_type}): expected a failure reply, got {other:?}")
            }
        }
    }
    assert_eq!(fib::call(&served.client, 12).await.unwrap(), 144);
    let _ = raw.close(200, "bye".into()).await;

    served.stop().await;
}

#[tokio::test]
async fn a_worker_skips_requests_past_their_deadline() {
    let runs = Arc::new(AtomicUsize::new(0));
    let served = Served::start("rpc", |w| {
        w.prefetch(1)
            .concurrency(1)
            .state(runs.clone())
            .serve(counted::handler())
    })
    .await;
    let client = &served.client;
    let answer = routed("the counted worker", || counted::call(client, 0)).await;
    answer.expect("counted(0) answers");
    let before = runs.load(Ordering::SeqCst);

    // A request whose deadline passed an hour ago (no `expiration`, so only the header says so).
    let raw = amqp::connect_url(served.url()).await;
    let channel = raw.create_channel().await.unwrap();
    let mut headers = FieldTable::default();
    headers.insert(
        lepus::envelope::HEADER_METHOD.into(),
        AMQPValue::LongString("counted".into()),
    );
    let an_hour_ago = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
        - 3_600_000;
    headers.insert(
        lepus::envelope::HEADER_DEADLINE.into(),
        AMQPValue::LongLongInt(an_hour_ago),
    );
    channel
        .basic_publish(
            "".into(),
            format!("{}counted", served.prefix).into(),
            BasicPublishOptions::default(),
            &lepus::envelope::encode_request(&(99u32,)).unwrap(),
            BasicProperties::default().with_headers(headers),
        )
        .await
        .unwrap();
    // FIFO with one slot: the expired request is handled before this call.
    assert_eq!(counted::call(client, 7).await.unwrap(), 7);
    assert_eq!(
        runs.load(Ordering::SeqCst) - before,
        1,
        "only the live call ran"
    );
    let _ = raw.close(200, "bye".into()).await;

    served.stop().await;
}

#[tokio::test]
async fn closing_the_client_fails_calls_in_flight_and_later_calls() {
    let served = nap_served().await;
    let client = &served.client;
    let in_flight = tokio::spawn({
        let client = client.clone();
        async move { nap::call(&client, 5_000).await }
    });
    eventually("the call to be in flight", || async {
        (client.in_flight() == 1).then_some(())
    })
    .await;
    client.close().await;
    assert!(matches!(in_flight.await.unwrap(), Err(Error::Closed)));
    assert!(matches!(nap::call(client, 1).await, Err(Error::Closed)));

    served.stop().await;
}
