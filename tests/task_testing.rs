//! The user-facing test helper, `lepus::testing::TestBed`: serve a handler, enqueue or publish,
//! and wait for the handler to finish, as the README shows.
#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use lepus::testing::{Outcome, TestBed};

static GREETED: AtomicUsize = AtomicUsize::new(0);

#[lepus::task(queue = "greetings", retries = 1, backoff = "10ms..10ms")]
async fn greet(name: String) -> Result<(), String> {
    if name.is_empty() {
        return Err("no name".into());
    }
    GREETED.fetch_add(1, Ordering::SeqCst);
    Ok(())
}

#[lepus::event(exchange = "greeted", kind = "fanout", delivery = "broadcast")]
async fn on_greeted(name: String) {
    let _ = name;
}

/// The bundled broker, or the external one of `LEPUS_TEST_AMQP_URL` with a unique prefix.
async fn bed() -> TestBed {
    common::init_tracing();
    match std::env::var(common::EXTERNAL_URL_VAR) {
        Ok(url) => TestBed::external(&url, &common::unique("bed"))
            .await
            .unwrap(),
        Err(_) => TestBed::start().await.unwrap(),
    }
}

#[tokio::test]
async fn a_test_bed_runs_a_task_and_reports_its_completion() {
    let mut bed = bed().await;
    let mut done = bed.serve(greet::handler()).await.unwrap();
    let before = GREETED.load(Ordering::SeqCst);
    let id = greet::enqueue(bed.client(), "ann".into()).await.unwrap();
    let completion = done.next_within(Duration::from_secs(10)).await.unwrap();
    assert_eq!(completion.outcome, Outcome::Succeeded);
    assert_eq!(completion.message_id, Some(id.0));
    assert!(GREETED.load(Ordering::SeqCst) > before);
    // A failing task: one retry, then dead-lettered; both reported.
    greet::enqueue(bed.client(), String::new()).await.unwrap();
    let seen = done
        .wait_until(Duration::from_secs(10), |c| {
            matches!(c.outcome, Outcome::DeadLettered { .. })
        })
        .await
        .unwrap();
    assert!(matches!(&seen[0].outcome, Outcome::Retrying { error, .. } if error == "no name"));
    assert_eq!(seen.len(), 2);
    bed.stop().await;
}

#[tokio::test]
async fn a_test_bed_serves_event_handlers_once_they_are_bound() {
    let mut bed = bed().await;
    let mut done = bed.serve(on_greeted::handler()).await.unwrap();
    // `serve` returned after the queue was bound: this event is not lost.
    on_greeted::publish(bed.client(), "", &"ann".to_owned())
        .await
        .unwrap();
    let completion = done.next_within(Duration::from_secs(10)).await.unwrap();
    assert_eq!(completion.outcome, Outcome::Succeeded);
    bed.stop().await;
}

#[lepus::rpc(queue = "not_a_task")]
async fn echo(n: u32) -> u32 {
    n
}

#[tokio::test]
async fn observing_an_rpc_handler_is_refused() {
    let err = lepus::task::observe(echo::handler()).unwrap_err();
    assert!(matches!(err, lepus::Error::Config(_)), "{err:?}");
}
