//! Issue 14, item 5: a handler that calls a method served by its own worker pool, with every
//! slot taken (`concurrency(1)`), used to wait for itself until the timeouts fired. Such a call
//! now runs in place, in the caller's slot (see `lepus_runtime`'s `worker/served`); one to a
//! method the worker does not serve fails at once with a clear error.
//!
//! Runs on the bundled broker, or on the one `LEPUS_TEST_AMQP_URL` names.
#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

mod common;

use std::time::{Duration, Instant};

use lepus::{CallOptions, Client, Error, FailureKind, State};

#[lepus::rpc(queue = "nested")]
async fn double(n: u32) -> Result<u32, String> {
    if n > 1000 {
        return Err(format!("{n} is too big to double"));
    }
    Ok(n * 2)
}

#[lepus::rpc(queue = "nested.other")]
async fn increment(n: u32) -> u32 {
    n + 1
}

/// Calls two methods of its own worker (one on its queue, one on another) and a method of its
/// queue that the worker does not serve.
#[lepus::rpc(queue = "nested")]
async fn outer(State(client): State<Client>, n: u32) -> Result<u32, String> {
    let doubled = double::call(&client, n).await.map_err(|e| e.to_string())?;
    let incremented = increment::call(&client, doubled)
        .await
        .map_err(|e| e.to_string())?;
    Ok(incremented)
}

/// Passes on an inner call's application error.
#[lepus::rpc(queue = "nested")]
async fn outer_error(State(client): State<Client>, n: u32) -> Result<u32, String> {
    match double::call(&client, n).await {
        Err(Error::Remote(e)) => Err(format!("inner said: {e}")),
        other => other.map_err(|e| e.to_string()),
    }
}

/// A method of the `nested` queue that the test's worker does not serve.
#[lepus::rpc(queue = "nested")]
async fn unserved(n: u32) -> u32 {
    n
}

#[lepus::rpc(queue = "nested")]
async fn outer_unserved(State(client): State<Client>, n: u32) -> Result<u32, String> {
    match unserved::call(&client, n).await {
        Err(Error::Failed {
            kind: FailureKind::UnknownMethod,
            message,
        }) => Err(message),
        other => other.map_err(|e| e.to_string()),
    }
}

#[tokio::test]
async fn nested_calls_into_a_full_pool_neither_deadlock_nor_hang() {
    let mut bed = common::test_bed("nest").await;
    // The client the handlers call through: their state.
    let client = bed.client().clone();
    // One slot and a prefetch of one: a nested request through the broker could only be taken
    // by this worker once the outer one is done, which waits for it.
    bed.worker(|w| {
        w.state(client)
            .concurrency(1)
            .prefetch(1)
            .serve(outer::handler())
            .serve(outer_error::handler())
            .serve(outer_unserved::handler())
            .serve(double::handler())
            .serve(increment::handler())
    })
    .await
    .unwrap();
    // Generous next to the ~ms a nested call takes, small next to a timeout.
    let quick = CallOptions::default().timeout(Duration::from_secs(20));

    let started = Instant::now();
    let answer = outer::call_with(bed.client(), 20, quick.clone()).await;
    assert_eq!(answer.unwrap(), 41);
    let elapsed = started.elapsed();
    assert!(
        elapsed < Duration::from_secs(1),
        "nested calls took {elapsed:?}"
    );

    let started = Instant::now();
    match outer_error::call_with(bed.client(), 5000, quick.clone()).await {
        Err(Error::Remote(e)) => assert_eq!(e, "inner said: 5000 is too big to double"),
        other => panic!("expected the inner error passed on, got {other:?}"),
    }
    assert!(started.elapsed() < Duration::from_secs(1));

    let started = Instant::now();
    match outer_unserved::call_with(bed.client(), 1, quick).await {
        Err(Error::Remote(message)) => {
            assert!(
                message.contains("no handler for method \"unserved\""),
                "{message}"
            );
            assert!(
                message.contains("cannot wait for a slot the caller holds"),
                "{message}"
            );
        }
        other => panic!("expected a clear error, got {other:?}"),
    }
    let elapsed = started.elapsed();
    assert!(
        elapsed < Duration::from_secs(1),
        "the clear error took {elapsed:?}"
    );

    // From outside a handler the same calls go through the broker, as always.
    assert_eq!(double::call(bed.client(), 4).await.unwrap(), 8);
    bed.stop().await;
}
