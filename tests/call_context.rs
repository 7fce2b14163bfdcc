//! Issue 16: the call context. A handler's calls, enqueues and publishes inherit what is left of
//! its caller's deadline and carry its trace id onward; a call whose caller's budget is spent
//! is not started downstream (the inner server never sees it) and the outer caller gets a
//! timeout, not a hang. Since issue 23 the worker also stops an RPC handler at its caller's
//! deadline, so what is made after it is spent is work spawned off the handler in its context.
//!
//! Two services on two workers of their own (so the nested call goes through the broker, not
//! in place), on the bundled broker or the one `LEPUS_TEST_AMQP_URL` names.
#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use lepus::testing::Outcome;
use lepus::{CallOptions, Client, Context, Error, State};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

/// What a handler saw of its context.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, lepus::Plain)]
pub struct Observed {
    /// The deadline, Unix ms.
    pub deadline_ms: Option<i64>,
    /// The trace id.
    pub trace_id: Option<String>,
    /// The request's correlation id.
    pub correlation_id: Option<String>,
}

impl Observed {
    fn of(ctx: &Context) -> Observed {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
        Observed {
            deadline_ms: ctx.time_left().map(|left| (now + left).as_millis() as i64),
            trace_id: ctx.trace_id().map(str::to_owned),
            correlation_id: ctx.correlation_id().map(str::to_owned),
        }
    }
}

/// The inner service.
#[lepus::service(queue = "ctx.back")]
pub trait Back {
    /// Works `millis`, then says what it saw.
    async fn work(&self, ctx: Context, millis: u64) -> Observed;
}

/// The outer service: calls `Back`, enqueues, publishes.
#[lepus::service(queue = "ctx.front")]
pub trait Front {
    /// Spends `spend_ms`, then calls `Back::work(work_ms)`; what both saw.
    async fn relay(
        &self,
        ctx: Context,
        spend_ms: u64,
        work_ms: u64,
    ) -> Result<(Observed, Observed), String>;
    /// Spends `spend_ms`, then enqueues `audit_task` and publishes to `audit_event`.
    async fn fan_out(&self, ctx: Context, spend_ms: u64) -> Result<Observed, String>;
    /// Answers at once; work spawned in its context spends `spend_ms`, then calls
    /// `Back::work(0)`, enqueues `audit_task` and publishes to `audit_event`, and sends what
    /// each gave to `Relay::later`.
    async fn relay_later(&self, ctx: Context, spend_ms: u64);
}

/// `Back`'s implementation: counts its calls.
struct Worker {
    calls: Arc<AtomicUsize>,
}

impl Back for Worker {
    async fn work(&self, ctx: Context, millis: u64) -> Observed {
        self.calls.fetch_add(1, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(millis)).await;
        Observed::of(&ctx)
    }
}

/// `Front`'s implementation: its state is the clients it calls through.
struct Relay {
    back: BackClient,
    client: Client,
    later: mpsc::UnboundedSender<Vec<Result<(), String>>>,
}

impl Front for Relay {
    async fn relay(
        &self,
        ctx: Context,
        spend_ms: u64,
        work_ms: u64,
    ) -> Result<(Observed, Observed), String> {
        tokio::time::sleep(Duration::from_millis(spend_ms)).await;
        let inner = self.back.work(work_ms).await.map_err(|e| e.to_string())?;
        Ok((Observed::of(&ctx), inner))
    }

    async fn fan_out(&self, ctx: Context, spend_ms: u64) -> Result<Observed, String> {
        tokio::time::sleep(Duration::from_millis(spend_ms)).await;
        audit_task::enqueue(&self.client, "task".into())
            .await
            .map_err(|e| e.to_string())?;
        audit_event::publish(&self.client, "audit", &"event".to_owned())
            .await
            .map_err(|e| e.to_string())?;
        Ok(Observed::of(&ctx))
    }

    async fn relay_later(&self, ctx: Context, spend_ms: u64) {
        let (back, client, later) = (self.back.clone(), self.client.clone(), self.later.clone());
        tokio::spawn(ctx.scope(async move {
            tokio::time::sleep(Duration::from_millis(spend_ms)).await;
            let called = back.work(0).await.map(drop);
            let enqueued = audit_task::enqueue(&client, "task".into()).await.map(drop);
            let published = audit_event::publish(&client, "audit", &"event".to_owned()).await;
            let results = [called, enqueued, published];
            let _ = later.send(
                results
                    .into_iter()
                    .map(|r| r.map_err(|e| e.to_string()))
                    .collect(),
            );
        }));
    }
}

/// Where the task and the event handler report the trace id they saw.
type Traces = mpsc::UnboundedSender<(String, Option<String>)>;

#[lepus::task(queue = "ctx.audit")]
async fn audit_task(ctx: Context, State(traces): State<Traces>, what: String) {
    let _ = traces.send((what, ctx.trace_id().map(str::to_owned)));
}

#[lepus::event(exchange = "ctx.audit", kind = "direct", binding = "audit")]
async fn audit_event(what: String, ctx: &Context, State(traces): State<Traces>) {
    let _ = traces.send((what, ctx.trace_id().map(str::to_owned)));
}

/// The two services, each on a worker of its own.
struct Services {
    bed: lepus::testing::TestBed,
    back_calls: Arc<AtomicUsize>,
    back_done: lepus::testing::Completions,
    front_done: lepus::testing::Completions,
    front: FrontClient,
    /// What `relay_later`'s spawned work gave.
    later: mpsc::UnboundedReceiver<Vec<Result<(), String>>>,
}

impl Services {
    /// Serves `audit_task` and `audit_event`, which report (kind, trace id) of what reaches
    /// them on the returned receiver.
    async fn serve_audits(&mut self) -> mpsc::UnboundedReceiver<(String, Option<String>)> {
        let (traces, seen): (Traces, _) = mpsc::unbounded_channel();
        self.bed
            .serve(audit_task::handler().state(traces.clone()))
            .await
            .unwrap();
        self.bed
            .serve(audit_event::handler().state(traces))
            .await
            .unwrap();
        seen
    }

    async fn start(name: &str) -> Services {
        let mut bed = common::test_bed(name).await;
        let back_calls = Arc::new(AtomicUsize::new(0));
        let back_done = bed
            .serve(BackServer::new(Worker {
                calls: back_calls.clone(),
            }))
            .await
            .unwrap();
        let (later_tx, later) = mpsc::unbounded_channel();
        let relay = Relay {
            back: BackClient::new(bed.client()),
            client: bed.client().clone(),
            later: later_tx,
        };
        let front_done = bed.serve(FrontServer::new(relay)).await.unwrap();
        let front = FrontClient::new(bed.client());
        Services {
            bed,
            back_calls,
            back_done,
            front_done,
            front,
            later,
        }
    }

    /// Asserts that no request reached the back service: none settled within 500 ms, and its
    /// handler never ran.
    async fn assert_back_untouched(&mut self) {
        assert!(
            self.back_done
                .next_within(Duration::from_millis(500))
                .await
                .is_err(),
            "a request reached the back service"
        );
        assert_eq!(self.back_calls.load(Ordering::SeqCst), 0);
    }

    fn front_within(&self, timeout: Duration) -> FrontClient {
        self.front
            .with_options(CallOptions::default().timeout(timeout))
    }
}

/// Done means 3: the outer caller's 200 ms are spent before the handler calls on; the inner
/// call is not started (the inner server never sees it) and the outer caller gets a timeout.
#[tokio::test]
async fn a_nested_call_whose_callers_budget_is_spent_is_not_started() {
    let mut s = Services::start("ctxspent").await;
    let started = Instant::now();
    match s
        .front_within(Duration::from_millis(200))
        .relay(400, 0)
        .await
    {
        Err(Error::Timeout(d)) => assert_eq!(d, Duration::from_millis(200)),
        other => panic!("expected the outer call to time out, got {other:?}"),
    }
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "the outer caller waited {:?}",
        started.elapsed()
    );
    // The front handler was stopped at its caller's deadline (issue 23)...
    let front = s
        .front_done
        .next_within(Duration::from_secs(10))
        .await
        .unwrap();
    match front.outcome {
        Outcome::Failed { error } => assert!(error.contains("time limit of"), "{error}"),
        other => panic!("expected the front handler to be stopped, got {other:?}"),
    }
    // ...without a request reaching the back service.
    s.assert_back_untouched().await;
    s.bed.stop().await;
}

/// The deadline and the trace id travel with the nested call; a nested call that outlives the
/// outer budget times out with it (not after its own 30 s default).
#[tokio::test]
async fn a_nested_call_carries_the_deadline_and_the_trace_id() {
    let mut s = Services::start("ctxcarry").await;
    let sent = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    let (front, back) = s
        .front_within(Duration::from_secs(5))
        .relay(50, 0)
        .await
        .unwrap();
    let expected = (sent + Duration::from_secs(5)).as_millis() as i64;
    let front_deadline = front.deadline_ms.unwrap();
    let back_deadline = back.deadline_ms.unwrap();
    assert!(
        (front_deadline - expected).abs() < 250,
        "front's deadline {front_deadline} vs the caller's {expected}"
    );
    assert!(
        (back_deadline - front_deadline).abs() < 50,
        "back's deadline {back_deadline} vs front's {front_deadline} (not a fresh 30 s)"
    );
    // One chain, one trace id: named after the first request; each call its own correlation id.
    assert_eq!(front.trace_id, front.correlation_id);
    assert_eq!(back.trace_id, front.trace_id);
    assert_ne!(back.correlation_id, front.correlation_id);
    assert_eq!(s.back_calls.load(Ordering::SeqCst), 1);

    // A chain started outside any handler: its budget and its trace id.
    let root = Context::new()
        .with_timeout(Duration::from_secs(5))
        .with_trace_id("request-42");
    let (front, back) = root.scope(s.front.relay(0, 0)).await.unwrap();
    assert_eq!(front.trace_id.as_deref(), Some("request-42"));
    assert_eq!(back.trace_id.as_deref(), Some("request-42"));
    assert!(front.deadline_ms.unwrap() - back.deadline_ms.unwrap() < 50);
    // The inner call runs longer than the outer budget: it ends with that budget (0.8 s), not
    // when the inner handler is done (2.5 s) nor after the client's default 30 s.
    let started = Instant::now();
    let outer = s
        .front_within(Duration::from_millis(800))
        .relay(0, 2_500)
        .await;
    assert!(matches!(outer, Err(Error::Timeout(_))), "{outer:?}");
    let front = s
        .front_done
        .wait_until(Duration::from_secs(10), |c| {
            matches!(&c.outcome, Outcome::Failed { .. })
        })
        .await
        .unwrap();
    let elapsed = started.elapsed();
    assert!(
        elapsed < Duration::from_millis(2_400),
        "the nested call gave up after {elapsed:?}, not with the outer budget"
    );
    // The front handler stops at the outer deadline (issue 23), its nested call with it.
    match &front.last().unwrap().outcome {
        Outcome::Failed { error } => assert!(error.contains("time limit of"), "{error}"),
        other => panic!("{other:?}"),
    }
    let _ = s.back_done.drain();
    s.bed.stop().await;
}

/// Enqueues and publishes from a handler carry the trace id, and are not made once the
/// caller's budget is spent.
#[tokio::test]
async fn enqueues_and_publishes_inherit_the_context() {
    let mut s = Services::start("ctxfan").await;
    let mut seen = s.serve_audits().await;
    let front = s
        .front_within(Duration::from_secs(10))
        .fan_out(0)
        .await
        .unwrap();
    let mut got = Vec::new();
    for _ in 0..2 {
        let next = tokio::time::timeout(Duration::from_secs(10), seen.recv()).await;
        got.push(next.unwrap().unwrap());
    }
    got.sort();
    assert_eq!(
        got,
        vec![
            ("event".to_owned(), front.trace_id.clone()),
            ("task".to_owned(), front.trace_id.clone()),
        ]
    );

    // Spent budget: the enqueue fails at once, nothing is enqueued nor published.
    let outer = s
        .front_within(Duration::from_millis(200))
        .fan_out(400)
        .await;
    assert!(matches!(outer, Err(Error::Timeout(_))), "{outer:?}");
    let done = s
        .front_done
        .wait_for(2, Duration::from_secs(10))
        .await
        .unwrap();
    // Stopped at its caller's deadline (issue 23), before it enqueued.
    match &done[1].outcome {
        Outcome::Failed { error } => assert!(error.contains("time limit of"), "{error}"),
        other => panic!("expected the handler to be stopped, got {other:?}"),
    }
    assert!(
        tokio::time::timeout(Duration::from_millis(500), seen.recv())
            .await
            .is_err()
    );
    s.bed.stop().await;
}

/// Work spawned off a handler in its context (`tokio::spawn(ctx.scope(..))`) outlives the
/// handler but not its caller's budget: once that is spent, its call fails at once without
/// reaching the inner server, and its enqueue and publish are refused, nothing sent.
#[tokio::test]
async fn work_spawned_off_a_handler_keeps_its_callers_spent_budget() {
    let mut s = Services::start("ctxlater").await;
    let mut seen = s.serve_audits().await;
    // The front call must itself answer within its budget (2 s, generous on a loaded
    // machine: at 200 ms it timed out there); the spawned work waits past it (2.5 s).
    s.front_within(Duration::from_secs(2))
        .relay_later(2_500)
        .await
        .unwrap();
    let later = tokio::time::timeout(Duration::from_secs(10), s.later.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(later.len(), 3);
    for result in later {
        match result {
            Err(error) => assert!(error.contains("no reply within 0ns"), "{error}"),
            Ok(()) => panic!("a call, enqueue or publish made past the caller's budget"),
        }
    }
    s.assert_back_untouched().await;
    assert!(
        tokio::time::timeout(Duration::from_millis(500), seen.recv())
            .await
            .is_err()
    );
    s.bed.stop().await;
}
