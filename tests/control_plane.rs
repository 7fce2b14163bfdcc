//! The control plane (issue 22, Done means 3): `inspect` lists the running workers with their
//! running task ids; a revoked queued task never runs (on workers running at the revoke, and
//! on workers started after it: the revocation is stored durably); a revoked running task that
//! opted in is cancelled and ends as revoked, not retried; one that did not runs to its end;
//! `shutdown` drains a worker.
//!
//! Runs on the bundled broker, or on RabbitMQ with `LEPUS_TEST_AMQP_URL` (workers of other
//! tests answer there too: each test looks only at the workers serving its own prefixed
//! queues).
#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use lepus::control::{Control, Reply, WorkerInfo};
use lepus::task::Outcome;
use lepus::EnqueueOptions;

const WAIT: Duration = Duration::from_secs(10);

/// What happened, per test key: runs started, runs finished, and the keys released.
#[derive(Default)]
struct Log {
    started: HashMap<String, u32>,
    finished: HashMap<String, u32>,
    released: HashSet<String>,
}

fn log() -> &'static Mutex<Log> {
    static LOG: OnceLock<Mutex<Log>> = OnceLock::new();
    LOG.get_or_init(Default::default)
}

fn started(key: &str) -> u32 {
    log().lock().unwrap().started.get(key).copied().unwrap_or(0)
}

fn finished(key: &str) -> u32 {
    log()
        .lock()
        .unwrap()
        .finished
        .get(key)
        .copied()
        .unwrap_or(0)
}

fn release(key: &str) {
    log().lock().unwrap().released.insert(key.to_owned());
}

/// Runs until `key` is released.
async fn hold_until_released(key: String) {
    *log()
        .lock()
        .unwrap()
        .started
        .entry(key.clone())
        .or_default() += 1;
    while !log().lock().unwrap().released.contains(&key) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    *log().lock().unwrap().finished.entry(key).or_default() += 1;
}

#[lepus::task(queue = "control.hold")]
async fn hold(key: String) {
    hold_until_released(key).await;
}

#[lepus::task(queue = "control.cancellable", cancellable = true, retries = 3)]
async fn cancellable_hold(key: String) {
    hold_until_released(key).await;
}

#[lepus::task(queue = "control.record")]
async fn record(key: String) {
    *log().lock().unwrap().finished.entry(key).or_default() += 1;
}

/// Waits until a run of `key` started.
async fn until_started(key: &str) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while started(key) == 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The workers of this test (those serving one of its prefixed queues).
async fn ours(control: &Control, queue: &str) -> Vec<WorkerInfo> {
    control
        .inspect(None)
        .await
        .unwrap()
        .into_iter()
        .filter(|info| info.handlers.iter().any(|h| h.queue == queue))
        .collect()
}

/// Polls `inspect` until `check` holds for this test's workers.
async fn inspect_until(
    control: &Control,
    queue: &str,
    check: impl Fn(&[WorkerInfo]) -> bool,
) -> Vec<WorkerInfo> {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let infos = ours(control, queue).await;
        if check(&infos) || tokio::time::Instant::now() > deadline {
            return infos;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inspect_lists_the_running_workers_with_their_running_task_ids() {
    let mut bed = common::test_bed("control.inspect").await;
    let queue = format!("{}control.hold", bed.prefix());
    let mut done_a = bed.serve(hold::handler()).await.unwrap();
    let mut done_b = bed.serve(hold::handler()).await.unwrap();
    let control = Control::new(bed.conn());
    let key = common::unique("inspect");
    let a = hold::enqueue(bed.client(), format!("{key}.a"))
        .await
        .unwrap();
    let b = hold::enqueue(bed.client(), format!("{key}.b"))
        .await
        .unwrap();
    let infos = inspect_until(&control, &queue, |infos| {
        infos.len() == 2 && infos.iter().all(|info| info.running.len() == 1)
    })
    .await;
    assert_eq!(infos.len(), 2, "two workers answer: {infos:#?}");
    let running: HashSet<String> = infos
        .iter()
        .flat_map(|info| info.running.iter().filter_map(|run| run.id.clone()))
        .collect();
    assert_eq!(running, HashSet::from([a.0.clone(), b.0.clone()]));
    let now = i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis(),
    )
    .unwrap();
    for info in &infos {
        assert_eq!(info.pid, std::process::id());
        assert!(!info.host.is_empty());
        assert_eq!(info.prefetch, 1);
        assert_eq!(info.concurrency, lepus::DEFAULT_CONCURRENCY);
        assert_eq!(info.handlers[0].name, "hold");
        assert_eq!(info.handlers[0].kind, "task");
        let run = &info.running[0];
        assert_eq!((run.name.as_str(), run.kind.as_str()), ("hold", "task"));
        assert!(!run.cancellable);
        assert!(run.started_at_ms <= now && run.started_at_ms > now - 60_000);
    }
    assert_ne!(infos[0].worker, infos[1].worker);
    // `ping` names the same workers.
    let pinged = control.ping().await.unwrap();
    assert!(infos.iter().all(|info| pinged.contains(&info.worker)));
    // Once they finish, nothing runs and each worker counts its success.
    release(&format!("{key}.a"));
    release(&format!("{key}.b"));
    done_a.next_within(WAIT).await.unwrap();
    done_b.next_within(WAIT).await.unwrap();
    let infos = inspect_until(&control, &queue, |infos| {
        infos.iter().all(|info| info.running.is_empty())
    })
    .await;
    assert!(infos.iter().all(|info| info.running.is_empty()));
    let succeeded: u64 = infos
        .iter()
        .map(|info| info.counts.get("succeeded").copied().unwrap_or(0))
        .sum();
    assert_eq!(succeeded, 2);
    bed.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_queued_task_never_runs_on_workers_started_before_or_after() {
    let mut bed = common::test_bed("control.revoke_queued").await;
    let control = Control::new(bed.conn());
    let key = common::unique("queued");
    // Queued before any worker runs, revoked, then a worker starts: it read the revocation.
    let revoked = record::enqueue(bed.client(), format!("{key}.revoked"))
        .await
        .unwrap();
    control
        .revoke(&revoked.0, Duration::from_secs(60))
        .await
        .unwrap();
    let kept = record::enqueue(bed.client(), format!("{key}.kept"))
        .await
        .unwrap();
    let mut done = bed.serve(record::handler()).await.unwrap();
    let mut outcomes = HashMap::new();
    for c in done.wait_for(2, WAIT).await.unwrap() {
        outcomes.insert(c.message_id.unwrap(), c.outcome);
    }
    assert_eq!(outcomes[&revoked.0], Outcome::Revoked);
    assert_eq!(outcomes[&kept.0], Outcome::Succeeded);
    assert_eq!(finished(&format!("{key}.revoked")), 0);
    assert_eq!(finished(&format!("{key}.kept")), 1);
    // Revoked while the worker runs (it hears the broadcast), then enqueued under that id.
    let live = common::unique("live");
    let replies = control
        .revoke(&live, Duration::from_secs(60))
        .await
        .unwrap();
    assert!(replies
        .iter()
        .any(|r| matches!(r, Reply::Revoked { running: false, .. })));
    record::enqueue_with(
        bed.client(),
        format!("{key}.live"),
        EnqueueOptions::new().message_id(live.clone()),
    )
    .await
    .unwrap();
    let c = done.next_within(WAIT).await.unwrap();
    assert_eq!(c.message_id.as_deref(), Some(live.as_str()));
    assert_eq!(c.outcome, Outcome::Revoked);
    assert_eq!(finished(&format!("{key}.live")), 0);
    bed.stop().await;
}

/// Revokes `id`, a task that is running, and asserts that a worker answered it was running,
/// with `cancelled` saying whether its handler was stopped.
async fn revoke_running(control: &Control, id: &str, cancelled: bool) {
    let replies = control.revoke(id, Duration::from_secs(60)).await.unwrap();
    assert!(
        replies.iter().any(|r| matches!(
            r,
            Reply::Revoked { running: true, cancelled: c, .. } if *c == cancelled
        )),
        "{replies:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_running_cancellable_task_stops_as_revoked_and_is_not_retried() {
    let mut bed = common::test_bed("control.revoke_running").await;
    let mut done = bed.serve(cancellable_hold::handler()).await.unwrap();
    let control = Control::new(bed.conn());
    let key = common::unique("running");
    let id = cancellable_hold::enqueue(bed.client(), key.clone())
        .await
        .unwrap();
    until_started(&key).await;
    assert_eq!(started(&key), 1);
    revoke_running(&control, &id.0, true).await;
    let c = done.next_within(WAIT).await.unwrap();
    assert_eq!(c.message_id.as_deref(), Some(id.0.as_str()));
    assert_eq!(c.outcome, Outcome::Revoked);
    // Not retried: nothing more comes, and the run never finished.
    assert!(done.next_within(Duration::from_secs(2)).await.is_err());
    assert_eq!((started(&key), finished(&key)), (1, 0));
    release(&key);
    bed.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_running_task_that_did_not_opt_in_runs_to_its_end() {
    let mut bed = common::test_bed("control.revoke_uncancellable").await;
    let mut done = bed.serve(hold::handler()).await.unwrap();
    let control = Control::new(bed.conn());
    let key = common::unique("uncancellable");
    let id = hold::enqueue(bed.client(), key.clone()).await.unwrap();
    until_started(&key).await;
    revoke_running(&control, &id.0, false).await;
    release(&key);
    let c = done.next_within(WAIT).await.unwrap();
    assert_eq!(c.outcome, Outcome::Succeeded);
    assert_eq!(finished(&key), 1);
    bed.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_over_the_control_plane_drains_the_worker() {
    let mut bed = common::test_bed("control.shutdown").await;
    let queue = format!("{}control.hold", bed.prefix());
    let mut done = bed.serve(hold::handler()).await.unwrap();
    let control = Control::new(bed.conn());
    let key = common::unique("drain");
    hold::enqueue(bed.client(), key.clone()).await.unwrap();
    let infos = inspect_until(&control, &queue, |infos| {
        infos.len() == 1 && infos[0].running.len() == 1
    })
    .await;
    assert_eq!(infos.len(), 1);
    let worker = infos[0].worker.clone();
    let acked = control
        .shutdown(Some(std::slice::from_ref(&worker)))
        .await
        .unwrap();
    assert_eq!(acked, vec![worker.clone()]);
    // The running task finishes and is acked (a graceful drain), then the worker is gone.
    release(&key);
    assert_eq!(
        done.next_within(WAIT).await.unwrap().outcome,
        Outcome::Succeeded
    );
    let deadline = tokio::time::Instant::now() + WAIT;
    while control.ping().await.unwrap().contains(&worker) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the worker still answers"
        );
    }
    bed.stop().await;
}

/// Whether a mandatory publish to the control exchange reaches a queue (a worker's control
/// queue), on a confirm channel: the broker returns it otherwise, before the confirm.
async fn control_queue_exists(channel: &lapin::Channel) -> bool {
    let confirm = channel
        .basic_publish(
            lepus::control::CONTROL_EXCHANGE.into(),
            "".into(),
            lapin::options::BasicPublishOptions {
                mandatory: true,
                immediate: false,
            },
            b"probe",
            lapin::BasicProperties::default(),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    match confirm {
        lapin::Confirmation::Ack(None) => true,
        lapin::Confirmation::Ack(Some(_)) => false,
        other => panic!("unexpected confirm {other:?}"),
    }
}

/// A worker's graceful shutdown returns only once its control listener's channel is closed, so
/// that the owner may close the connection at once: lapin fails a connection whose
/// `channel.close` and `connection.close` are in flight together (ERROR "invalid channel: 2",
/// seen in quiet_logs and the dead_letters example under load). Observed on the broker: the
/// listener's auto-delete control queue is gone when `shutdown` returns. Bundled broker only
/// (on a shared RabbitMQ other tests' workers have control queues too).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_shutdown_returns_after_its_control_channel_closed() {
    let broker = common::bundled_broker(|builder| builder).await;
    let probe = lapin::Connection::connect(broker.url(), lapin::ConnectionProperties::default())
        .await
        .unwrap();
    let channel = probe.create_channel().await.unwrap();
    channel
        .confirm_select(lapin::options::ConfirmSelectOptions::default())
        .await
        .unwrap();
    for _ in 0..5 {
        let conn = lepus::connect(broker.url()).await.unwrap();
        let mut worker = lepus::Worker::new(&conn).serve(record::handler()).spawn();
        worker.ready(WAIT).await.unwrap();
        let deadline = tokio::time::Instant::now() + WAIT;
        while !control_queue_exists(&channel).await {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the running worker's control queue never appeared"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        worker.shutdown().await.unwrap();
        assert!(
            !control_queue_exists(&channel).await,
            "the control listener's channel was still open when shutdown returned"
        );
        conn.close().await;
    }
    let _ = probe.close(200, "bye".into()).await;
    broker.stop().await;
}
