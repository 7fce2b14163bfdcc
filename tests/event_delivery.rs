//! Events end to end: pool delivery (competing consumers, each event once per service) vs
//! broadcast delivery (each running instance gets every event), fanout/direct/topic routing,
//! a failing handler rejecting its event, and publishing to a missing exchange.
#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

mod common;

use std::time::Duration;

use common::queued::Queued;
use lepus::task::{observe, Completions, Outcome};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct LogLine {
    severity: String,
    text: String,
}

/// Pool delivery: one queue shared by every instance.
#[lepus::event(exchange = "audit", kind = "fanout", delivery = "pool")]
async fn audit_pool(_line: LogLine) {}

/// Broadcast delivery: one queue per instance.
#[lepus::event(exchange = "audit", kind = "fanout", delivery = "broadcast")]
async fn audit_broadcast(_line: LogLine) {}

/// Topic routing: only `*.error` and `kern.#`.
#[lepus::event(exchange = "logs", kind = "topic", binding = ["*.error", "kern.#"])]
async fn errors_and_kernel(ctx: lepus::Context, line: LogLine) -> Result<(), String> {
    let key = ctx.routing_key().unwrap_or_default();
    if line.text == "poison" {
        return Err(format!("cannot handle {key}"));
    }
    Ok(())
}

/// Direct routing: exactly `warning`.
#[lepus::event(exchange = "direct_logs", kind = "direct", binding = "warning")]
async fn warnings(_line: LogLine) {}

fn line(severity: &str, text: &str) -> LogLine {
    LogLine {
        severity: severity.into(),
        text: text.into(),
    }
}

/// Drains each of `pool` (one per instance) every 20 ms until together they have handled
/// `events`, or 30 s have passed; returns how many each instance handled.
async fn handled_per_instance(pool: &mut [Completions], events: usize) -> Vec<usize> {
    let mut counts = vec![0; pool.len()];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while counts.iter().sum::<usize>() < events && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
        for (count, done) in counts.iter_mut().zip(pool.iter_mut()) {
            *count += done.drain().len();
        }
    }
    counts
}

#[tokio::test]
async fn pool_handlers_share_events_and_broadcast_handlers_each_get_all() {
    let fx = Queued::start("ev").await;
    let mut workers = Vec::new();
    let mut pool = Vec::new();
    let mut broadcast = Vec::new();
    for _ in 0..2 {
        let (p, pool_done) = observe(audit_pool::handler());
        let (b, broadcast_done) = observe(audit_broadcast::handler());
        pool.push(pool_done);
        broadcast.push(broadcast_done);
        workers.push(fx.worker(|w| w.prefetch(1).serve(p).serve(b)).await);
    }
    // The workers bind their queues in the background: publish warm-up events until both
    // broadcast queues have received one, then let the stragglers settle and forget them.
    let mut ready = [false; 2];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !ready.iter().all(|r| *r) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "broadcast queues never bound"
        );
        audit_pool::publish(&fx.client, "", &line("info", "warm-up"))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        for (r, done) in ready.iter_mut().zip(&mut broadcast) {
            *r |= !done.drain().is_empty();
        }
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    for done in pool.iter_mut().chain(broadcast.iter_mut()) {
        done.drain();
    }
    const EVENTS: usize = 200;
    for n in 0..EVENTS {
        lepus::publish(&fx.client, "audit", "", &line("info", &n.to_string()))
            .await
            .unwrap();
    }
    // Broadcast: every instance handles every event.
    for done in &mut broadcast {
        let seen = done
            .wait_for(EVENTS, Duration::from_secs(30))
            .await
            .unwrap();
        assert!(seen.iter().all(|c| c.outcome == Outcome::Succeeded));
    }
    // Pool: the two instances together handle each event once.
    let total: usize = handled_per_instance(&mut pool, EVENTS).await.iter().sum();
    assert_eq!(total, EVENTS, "pool: each event handled once");
    tokio::time::sleep(Duration::from_millis(200)).await;
    let late: usize = pool.iter_mut().map(|d| d.drain().len()).sum();
    let late_b: usize = broadcast.iter_mut().map(|d| d.drain().len()).sum();
    assert_eq!((late, late_b), (0, 0), "no duplicates");
    fx.stop(workers).await;
}

#[tokio::test]
async fn pool_instances_compete_for_events() {
    let fx = Queued::start("ev").await;
    let mut workers = Vec::new();
    let mut pool = Vec::new();
    for _ in 0..2 {
        let (p, done) = observe(audit_pool::handler());
        pool.push(done);
        workers.push(fx.worker(|w| w.prefetch(1).serve(p)).await);
    }
    // Wait for both consumers: then, with prefetch 1, the broker alternates between them.
    let conn = lepus::connect(fx.url()).await.unwrap();
    lepus::task::wait_for_consumers(
        &conn,
        &audit_pool::handler().on_queue(fx.queue(audit_pool::QUEUE)),
        2,
        Duration::from_secs(10),
    )
    .await
    .unwrap();
    const EVENTS: usize = 100;
    for n in 0..EVENTS {
        audit_pool::publish(&fx.client, "", &line("info", &n.to_string()))
            .await
            .unwrap();
    }
    let counts = handled_per_instance(&mut pool, EVENTS).await;
    assert_eq!(counts.iter().sum::<usize>(), EVENTS);
    assert!(
        counts.iter().all(|&n| n > 0),
        "both instances took events: {counts:?}"
    );
    fx.stop(workers).await;
}

#[tokio::test]
async fn topic_and_direct_bindings_route_by_key_and_failures_are_rejected() {
    let fx = Queued::start("ev").await;
    let (topic, mut topic_done) = observe(errors_and_kernel::handler());
    let (direct, mut direct_done) = observe(warnings::handler());
    let worker = fx.worker(|w| w.serve(topic).serve(direct)).await;
    // The worker declares the exchanges and binds the queues; wait until it has.
    topic_done.declared(Duration::from_secs(10)).await.unwrap();
    direct_done.declared(Duration::from_secs(10)).await.unwrap();
    for key in [
        "kern.info",
        "app.error",
        "app.info",
        "kern.disk.full",
        "error",
    ] {
        errors_and_kernel::publish(&fx.client, key, &line(key, "ok"))
            .await
            .unwrap();
    }
    errors_and_kernel::publish(&fx.client, "db.error", &line("error", "poison"))
        .await
        .unwrap();
    for key in ["warning", "info", "error", "warning"] {
        warnings::publish(&fx.client, key, &line(key, "ok"))
            .await
            .unwrap();
    }
    let seen = topic_done
        .wait_for(4, Duration::from_secs(10))
        .await
        .unwrap();
    let ok = seen
        .iter()
        .filter(|c| c.outcome == Outcome::Succeeded)
        .count();
    assert_eq!(ok, 3, "kern.info, app.error, kern.disk.full: {seen:?}");
    assert!(seen.iter().any(
        |c| matches!(&c.outcome, Outcome::Failed { error } if error == "cannot handle db.error")
    ));
    let warned = direct_done
        .wait_for(2, Duration::from_secs(10))
        .await
        .unwrap();
    assert!(warned.iter().all(|c| c.outcome == Outcome::Succeeded));
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        topic_done.drain().is_empty(),
        "app.info and error matched nothing"
    );
    assert!(direct_done.drain().is_empty(), "only the two warnings");
    fx.stop([worker]).await;
}

#[tokio::test]
async fn publishing_to_a_missing_exchange_is_a_not_found_error() {
    let fx = Queued::start("ev").await;
    let err = lepus::publish(&fx.client, "nobody-declared-this", "k", &1u32)
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            lepus::Error::NotFound {
                reply_code: 404,
                ..
            }
        ),
        "{err:?}"
    );
    // The session survived: publishing to an existing exchange still works.
    lepus::publish(&fx.client, "amq.fanout", "", &2u32)
        .await
        .unwrap();
    fx.stop([]).await;
}
