//! Issue 14, item 6: `lepus::connect` waits for a broker that is not up yet (a service started
//! with, or just before, its broker), within a bound the caller can set; a broker that answers
//! and refuses is not waited for.
//!
//! Bundled broker only: the test starts it itself, late, on a port it picked.
#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

mod common;

use std::time::{Duration, Instant};

use lepus::broker::Broker;
use lepus::ConnectOptions;

/// Connects to `url`, waiting at most `startup_wait` for a broker to come up, and expects the
/// connect to fail: returns its error and how long it took.
async fn failed_connect(url: &str, startup_wait: Duration) -> (lepus::Error, Duration) {
    let started = Instant::now();
    let err = ConnectOptions::new(url)
        .startup_wait(startup_wait)
        .connect()
        .await
        .unwrap_err();
    (err, started.elapsed())
}

#[tokio::test]
async fn connect_waits_for_a_broker_that_starts_three_seconds_later() {
    common::init_tracing();
    let port = common::ports::free_port();
    let url = format!("amqp://guest:guest@127.0.0.1:{port}/%2f");
    let late = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(3)).await;
        Broker::builder()
            .listen(format!("127.0.0.1:{port}"))
            .start()
            .await
            .unwrap()
    });
    let started = Instant::now();
    let conn = lepus::connect(&url)
        .await
        .expect("connect waits for the broker");
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_secs(2),
        "connected after {waited:?}"
    );
    assert!(conn.is_connected());
    // The connection is a working one.
    let client = lepus::Client::new(&conn).await.unwrap();
    client.close().await;
    conn.close().await;
    late.await.unwrap().shutdown().await;
}

#[tokio::test]
async fn the_wait_is_bounded_and_configurable() {
    common::init_tracing();
    let url = format!(
        "amqp://guest:guest@127.0.0.1:{}/%2f",
        common::ports::free_port()
    );
    // Nobody will listen: the connect gives up after the wait it was given.
    let (err, waited) = failed_connect(&url, Duration::from_millis(800)).await;
    assert!(err.is_retryable(), "{err:?}");
    assert!(
        waited >= Duration::from_millis(300) && waited < Duration::from_secs(5),
        "gave up after {waited:?}"
    );
    // Zero: one attempt per URL, as before.
    let (err, waited) = failed_connect(&url, Duration::ZERO).await;
    assert!(
        waited < Duration::from_secs(2),
        "gave up after {waited:?}: {err:?}"
    );
}

#[tokio::test]
async fn a_broker_that_refuses_is_not_waited_for() {
    common::init_tracing();
    let broker = Broker::builder()
        .listen("127.0.0.1:0")
        .start()
        .await
        .unwrap();
    let url = format!("amqp://guest:wrong@{}/%2f", broker.local_addr());
    let (err, waited) = failed_connect(&url, Duration::from_secs(30)).await;
    assert!(
        waited < Duration::from_secs(5),
        "a refusal took {waited:?}: {err:?}"
    );
    broker.shutdown().await;
}
