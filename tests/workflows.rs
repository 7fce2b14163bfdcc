//! Workflows (issue 21): `chain`, `group` and `chord` of tasks, moved along by the workers and
//! kept on the broker. Runs on the bundled broker, and on RabbitMQ with `LEPUS_TEST_AMQP_URL`.
//!
//! Covered: a typed chain (each output the next step's first argument); a group's results in
//! order whatever order the members finish in; a chord's callback result; a step retried then
//! succeeding; a step failing for good (the chain fails at that step, the steps after it never
//! run); a chord with a failing member (the callback does not run, the chord's result lists the
//! failed member); a chord of 1,000 members; chains nested in a group and in a chord; a chord
//! whose worker process is SIGKILLed and whose broker is restarted (bundled broker, data
//! directory) half-way, completing with exactly one callback run.
#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

mod common;

use std::collections::HashMap;
use std::io::Write;
use std::process::{Child, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use lepus::task::queue_status;
use lepus::testing::TestBed;
use lepus::{
    chain, chord, group, Client, Group, Handler, MemberFailure, WorkflowError, WorkflowHandle,
};

/// The longest any test waits for a result (the machine may be loaded).
const WAIT: Duration = Duration::from_secs(60);

/// The environment variable that makes `child_worker` run: `<url> <prefix> <runs file>`.
const CHILD_VAR: &str = "LEPUS_WORKFLOW_CHILD";

#[lepus::task(queue = "wf_add", retries = 0)]
async fn add(a: u64, b: u64) -> u64 {
    a + b
}

#[lepus::task(queue = "wf_mul", retries = 0)]
async fn mul(x: u64, k: u64) -> u64 {
    x * k
}

#[lepus::task(queue = "wf_describe", retries = 0)]
async fn describe(n: u64) -> String {
    format!("the answer is {n}")
}

/// Sleeps longer for smaller `n`, so that members finish in reverse order.
#[lepus::task(queue = "wf_square", retries = 0)]
async fn square(n: u64, stagger: bool) -> u64 {
    if stagger {
        tokio::time::sleep(Duration::from_millis(20 * (10u64.saturating_sub(n)))).await;
    }
    n * n
}

/// Runs of each task, per key.
fn runs() -> &'static Mutex<HashMap<String, u32>> {
    static RUNS: OnceLock<Mutex<HashMap<String, u32>>> = OnceLock::new();
    RUNS.get_or_init(Default::default)
}

fn count(key: &str) -> u32 {
    runs().lock().unwrap().get(key).copied().unwrap_or(0)
}

fn bump(key: String) {
    *runs().lock().unwrap().entry(key).or_default() += 1;
}

/// Fails its first `fail_times` attempts (two retries: three attempts in all).
#[lepus::task(queue = "wf_flaky", retries = 2, backoff = "10ms..20ms")]
async fn flaky(ctx: lepus::Context, n: u64, key: String, fail_times: u32) -> Result<u64, String> {
    bump(format!("{key}/flaky"));
    if ctx.attempt() <= fail_times {
        return Err(format!("{key}: attempt {} failed", ctx.attempt()));
    }
    Ok(n + 1)
}

/// Counts its runs under `key`; returns `n`.
#[lepus::task(queue = "wf_after", retries = 0)]
async fn after(n: u64, key: String) -> u64 {
    bump(format!("{key}/after"));
    n
}

/// A chord callback: the sum, counting its runs under `key`.
#[lepus::task(queue = "wf_sum", retries = 0)]
async fn sum(outputs: Vec<u64>, key: String) -> u64 {
    bump(format!("{key}/sum"));
    outputs.iter().sum()
}

/// A test bed named `name` serving each of `handlers` on a worker of its own.
async fn bed_serving(name: &str, handlers: Vec<Handler>) -> TestBed {
    let mut bed = common::test_bed(name).await;
    for handler in handlers {
        bed.serve(handler).await.unwrap();
    }
    bed
}

/// A test bed named `name`: `members` on one worker running `concurrency` at a time (prefetch
/// `prefetch`), and each of `others` on a worker of its own.
async fn bed_with_pool(
    name: &str,
    (concurrency, prefetch): (usize, u16),
    members: Handler,
    others: Vec<Handler>,
) -> TestBed {
    let mut bed = bed_serving(name, others).await;
    bed.worker(|w| w.concurrency(concurrency).prefetch(prefetch).serve(members))
        .await
        .unwrap();
    bed
}

/// Submits a chord of `members` calling back `sum`, which counts its runs under `key`.
async fn submit_summed(bed: &TestBed, members: Group<u64>, key: &str) -> WorkflowHandle<u64> {
    chord(members, sum::partial(key.to_owned()))
        .submit(bed.client())
        .await
        .unwrap()
}

#[tokio::test]
async fn a_chain_passes_each_output_on_and_gives_the_last_typed() {
    let handlers = vec![add::handler(), mul::handler(), describe::handler()];
    let bed = bed_serving("wf_chain", handlers).await;

    // describe(mul(add(2, 3), 10))
    let flow = chain(add::signature(2, 3))
        .then(mul::partial(10))
        .then(describe::partial());
    let handle: WorkflowHandle<String> = flow.submit(bed.client()).await.unwrap();
    assert_eq!(handle.result(WAIT).await.unwrap(), "the answer is 50");
    // Read again, and from the id alone (as another process would).
    let again = WorkflowHandle::<String>::from_id(bed.client(), handle.id());
    assert_eq!(again.result(WAIT).await.unwrap(), "the answer is 50");
    // A one-step chain is a submitted task.
    let one = chain(add::signature(4, 5))
        .submit(bed.client())
        .await
        .unwrap();
    assert_eq!(one.result(WAIT).await.unwrap(), 9);
    bed.stop().await;
}

#[tokio::test]
async fn a_group_gives_its_results_in_member_order() {
    let bed = bed_with_pool("wf_group", (10, 10), square::handler(), vec![]).await;
    let members = (0..10).map(|n| square::signature(n, true));
    let handle = group(members).submit(bed.client()).await.unwrap();
    let squares = handle.result(WAIT).await.unwrap();
    assert_eq!(squares, (0..10).map(|n| n * n).collect::<Vec<u64>>());
    assert_eq!(handle.member(3).unwrap().result(WAIT).await.unwrap(), 9);
    bed.stop().await;
}

#[tokio::test]
async fn a_chord_calls_back_once_with_every_output() {
    let others = vec![sum::handler(), after::handler()];
    let bed = bed_with_pool("wf_chord", (4, 4), square::handler(), others).await;
    let key = common::unique("chord");
    let members = group((1..=5).map(|n| square::signature(n, true)));
    let handle = submit_summed(&bed, members, &key).await;
    assert_eq!(handle.result(WAIT).await.unwrap(), 1 + 4 + 9 + 16 + 25);
    assert_eq!(count(&format!("{key}/sum")), 1);

    // A chord's callback may be a chain, and a chord of nothing calls back with [].
    let key2 = common::unique("chord_empty");
    let empty = chord(
        group(Vec::<lepus::Signature<square>>::new()),
        sum::partial(key2.clone()),
    )
    .then(after::partial(key2.clone()));
    assert_eq!(
        empty
            .submit(bed.client())
            .await
            .unwrap()
            .result(WAIT)
            .await
            .unwrap(),
        0
    );
    assert_eq!(count(&format!("{key2}/after")), 1);
    bed.stop().await;
}

#[tokio::test]
async fn a_step_retried_then_succeeding_moves_the_chain_on() {
    let handlers = vec![add::handler(), flaky::handler(), after::handler()];
    let bed = bed_serving("wf_retry", handlers).await;
    let key = common::unique("retry");
    let flow = chain(add::signature(1, 1))
        .then(flaky::partial(key.clone(), 2))
        .then(after::partial(key.clone()));
    let handle = flow.submit(bed.client()).await.unwrap();
    assert_eq!(handle.result(WAIT).await.unwrap(), 3);
    assert_eq!(
        count(&format!("{key}/flaky")),
        3,
        "two failures, one success"
    );
    assert_eq!(count(&format!("{key}/after")), 1);
    bed.stop().await;
}

#[tokio::test]
async fn a_step_failing_for_good_fails_the_chain_at_that_step() {
    let mut bed = bed_serving("wf_fail", vec![add::handler(), flaky::handler()]).await;
    let mut after_done = bed.serve(after::handler()).await.unwrap();
    let key = common::unique("fail");
    let flow = chain(add::signature(1, 1))
        .then(flaky::partial(key.clone(), 99))
        .then(after::partial(key.clone()));
    let handle = flow.submit(bed.client()).await.unwrap();
    match handle.result(WAIT).await {
        Err(WorkflowError::Failed {
            task,
            attempts,
            error,
            dead_lettered,
        }) => {
            assert_eq!(task, "flaky");
            assert_eq!(attempts, 3);
            assert_eq!(error, format!("{key}: attempt 3 failed"));
            assert!(!dead_lettered);
        }
        other => panic!("expected the failing step's error, got {other:?}"),
    }
    assert_eq!(count(&format!("{key}/flaky")), 3);
    // The step after it was never published: its worker saw nothing.
    assert!(after_done.drain().is_empty());
    assert_eq!(count(&format!("{key}/after")), 0);
    bed.stop().await;
}

/// Runs a chord of `members(key)` calling back `sum` on a bed named `name` (`member` on a pool
/// of `pool`, `sum` on a worker of its own); returns the bed, the unique key `sum` counts its
/// runs under, and the chord's result.
async fn run_summed_chord(
    name: &str,
    pool: (usize, u16),
    member: Handler,
    members: impl FnOnce(&str) -> Group<u64>,
) -> (TestBed, String, Result<u64, WorkflowError>) {
    let bed = bed_with_pool(name, pool, member, vec![sum::handler()]).await;
    let key = common::unique(name);
    let handle = submit_summed(&bed, members(&key), &key).await;
    let result = handle.result(WAIT).await;
    (bed, key, result)
}

#[tokio::test]
async fn a_chord_with_a_failing_member_does_not_call_back_and_lists_it() {
    // Member 1 succeeds at its second attempt, member 2 never does.
    let members = |key: &str| {
        group([
            flaky::signature(10, key.to_owned(), 0),
            flaky::signature(20, key.to_owned(), 1),
            flaky::signature(30, format!("{key}-bad"), 99),
            flaky::signature(40, key.to_owned(), 0),
        ])
    };
    let (bed, key, result) =
        run_summed_chord("wf_chord_fail", (4, 4), flaky::handler(), members).await;
    match result {
        Err(WorkflowError::Members(failed)) => {
            assert_eq!(
                failed,
                vec![MemberFailure {
                    index: 2,
                    task: "flaky".into(),
                    error: format!("{key}-bad: attempt 3 failed"),
                }]
            );
        }
        other => panic!("expected the failed members, got {other:?}"),
    }
    assert_eq!(count(&format!("{key}/sum")), 0, "the callback never ran");
    assert_eq!(count(&format!("{key}-bad/flaky")), 3);
    bed.stop().await;
}

#[tokio::test]
async fn a_chord_of_a_thousand_members_completes() {
    let members = |_: &str| group((0..1000).map(|n| square::signature(n, false)));
    let (bed, key, result) =
        run_summed_chord("wf_chord_1000", (16, 32), square::handler(), members).await;
    let expected: u64 = (0..1000u64).map(|n| n * n).sum();
    assert_eq!(result.unwrap(), expected);
    assert_eq!(count(&format!("{key}/sum")), 1);
    bed.stop().await;
}

#[tokio::test]
async fn chains_nest_in_groups_and_chords() {
    let handlers = vec![
        add::handler(),
        mul::handler(),
        square::handler(),
        sum::handler(),
    ];
    let bed = bed_serving("wf_nested", handlers).await;
    // [(1 + 2) * 3, 4², (5 + 6) * 7]: a chain, a signature, a chain.
    let members = || {
        group([
            chain(add::signature(1, 2)).then(mul::partial(3)),
            chain(square::signature(4, false)),
            chain(add::signature(5, 6)).then(mul::partial(7)),
        ])
    };
    let handle = members().submit(bed.client()).await.unwrap();
    assert_eq!(handle.result(WAIT).await.unwrap(), vec![9, 16, 77]);

    let key = common::unique("nested");
    let handle = chord(members(), sum::partial(key.clone()))
        .then(mul::partial(2))
        .submit(bed.client())
        .await
        .unwrap();
    assert_eq!(handle.result(WAIT).await.unwrap(), 2 * (9 + 16 + 77));
    bed.stop().await;
}

// --- the crash test: a worker process SIGKILLed and the broker restarted mid-chord ---

/// A member of the crash test's chord: takes a while, so the chord is half-way when killed.
#[lepus::task(queue = "wf_slow", retries = 1)]
async fn slow_member(n: u64) -> u64 {
    tokio::time::sleep(Duration::from_millis(40)).await;
    n
}

/// The crash test's callback: appends a line to the file named by `path` per run.
#[lepus::task(queue = "wf_record", retries = 1)]
async fn record(outputs: Vec<u64>, path: String) -> u64 {
    let total: u64 = outputs.iter().sum();
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .unwrap();
    writeln!(file, "{total}").unwrap();
    total
}

/// The worker process of the crash test: serves the chord's tasks until killed.
#[test]
#[ignore = "run by the tests of this file as a child process"]
fn child_worker() {
    common::run_child(CHILD_VAR, |conn, [prefix]| async move {
        lepus::Worker::new(&conn)
            .queue_prefix(prefix)
            .concurrency(4)
            .prefetch(4)
            .serve(slow_member::handler())
            .serve(record::handler())
            .run()
            .await
            .unwrap();
    });
}

fn spawn_worker(url: &str, prefix: &str) -> Child {
    common::test_child("child_worker")
        .env(CHILD_VAR, format!("{url} {prefix}"))
        .env("RUST_LOG", "error")
        .stdout(Stdio::null())
        .spawn()
        .unwrap()
}

/// Kills `child` with SIGKILL (`Child::kill` on Unix) and reaps it.
fn sigkill(mut child: Child) {
    child.kill().unwrap();
    child.wait().unwrap();
}

#[tokio::test]
async fn a_chord_survives_a_killed_worker_and_a_broker_restart_and_calls_back_once() {
    const MEMBERS: u64 = 120;
    let data = common::DataDir::new("wf_crash");
    let external = std::env::var(common::EXTERNAL_URL_VAR).is_ok();
    let broker = if external {
        common::broker().await
    } else {
        common::bundled_broker(|b| b.data_dir(data.path())).await
    };
    let url = broker.url().to_owned();
    let prefix = common::unique("wf_crash");
    let runs_file = tempfile::NamedTempFile::new().unwrap();
    let runs_path = runs_file.path().to_str().unwrap().to_owned();

    let conn = lepus::connect(&url).await.unwrap();
    let client = Client::builder(&conn)
        .queue_prefix(&prefix)
        .build()
        .await
        .unwrap();
    let members = group((1..=MEMBERS).map(slow_member::signature));
    let handle = chord(members, record::partial(runs_path.clone()))
        .submit(&client)
        .await
        .unwrap();

    // The first worker process runs part of the chord, then dies without a goodbye.
    let worker = spawn_worker(&url, &prefix);
    let members_queue = format!("{prefix}wf_slow");
    loop {
        let left = queue_status(&conn, &members_queue)
            .await
            .unwrap()
            .map_or(0, |s| s.messages);
        if u64::from(left) < MEMBERS * 2 / 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    sigkill(worker);

    // The broker restarts on the same port with the same data directory (bundled broker only:
    // RabbitMQ is not ours to restart; the SIGKILL alone is tested there).
    let restarted = match broker.handle() {
        Some(handle) => {
            let addr = handle.local_addr();
            broker.stop().await;
            Some(
                lepus::broker::Broker::builder()
                    .listen(addr.to_string())
                    .data_dir(data.path())
                    .start()
                    .await
                    .expect("the broker restarts on its port and data directory"),
            )
        }
        None => None,
    };

    // Half-way, and kept: members wait in their queue, member outcomes in the chord's.
    let waiting = queue_status(&conn, &members_queue).await.unwrap().unwrap();
    assert!(waiting.messages > 0, "the kill came before the last member");
    let recorded = queue_status(&conn, &format!("{prefix}lepus.chord.{}", handle.id()))
        .await
        .unwrap()
        .unwrap();
    assert!(
        recorded.messages > 0,
        "member outcomes survived the restart"
    );

    // A second worker process finishes the chord.
    let worker = spawn_worker(&url, &prefix);
    let total = handle.result(WAIT).await.unwrap();
    assert_eq!(total, (1..=MEMBERS).sum::<u64>());
    // The callback ran, and was enqueued, exactly once: one line, and nothing waits in its
    // queue (a second enqueue would be run or waiting by now: the first one's result is in).
    let lines = std::fs::read_to_string(&runs_path).unwrap();
    assert_eq!(lines.lines().collect::<Vec<_>>(), vec![total.to_string()]);
    let callback_queue = queue_status(&conn, &format!("{prefix}wf_record"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(callback_queue.messages, 0);
    sigkill(worker);
    conn.close().await;
    if let Some(again) = restarted {
        again.shutdown().await;
    }
}
