//! The `lepus` binary, run as an operator would (issue 22, Done means 3 and 4): `--help` for
//! every verb; `workers` and `inspect` list the running workers with their running task ids;
//! `revoke` of a queued task means it never runs, of a running cancellable one stops it as
//! revoked; `shutdown` drains a worker; `dead-letters list|show|requeue|purge`; errors exit
//! non-zero with a message.
//!
//! Workers run in this test process on a bundled broker (or on `LEPUS_TEST_AMQP_URL`'s broker,
//! with prefixed queues); the binary talks to them over the broker.
#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

use std::collections::HashSet;
use std::process::Output;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use lepus::task::{Completions, Outcome};
use lepus::testing::TestBed;
use lepus::TaskId;

const WAIT: Duration = Duration::from_secs(10);

/// Task keys started, finished, and released.
#[derive(Default)]
struct Log {
    started: HashSet<String>,
    finished: HashSet<String>,
    released: HashSet<String>,
}

fn log() -> &'static Mutex<Log> {
    static LOG: OnceLock<Mutex<Log>> = OnceLock::new();
    LOG.get_or_init(Default::default)
}

/// Runs until `key` is released; a revocation stops it (cancellable).
#[lepus::task(queue = "cli.hold", cancellable = true)]
async fn hold(key: String) {
    log().lock().unwrap().started.insert(key.clone());
    while !log().lock().unwrap().released.contains(&key) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    log().lock().unwrap().finished.insert(key);
}

/// Fails at once, no retries: straight to `cli.failing.dead`.
#[lepus::task(queue = "cli.failing", retries = 0)]
async fn failing(key: String) -> Result<(), String> {
    Err(format!("{key}: smtp down"))
}

async fn bed() -> TestBed {
    match std::env::var("LEPUS_TEST_AMQP_URL") {
        Ok(url) => TestBed::external(&url, &format!("{}.", uuid::Uuid::new_v4().simple()))
            .await
            .unwrap(),
        Err(_) => TestBed::start().await.unwrap(),
    }
}

/// Runs `lepus --url <url> args..` and returns its output.
async fn lepus(url: &str, args: &[&str]) -> Output {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_lepus"));
    command.arg("--url").arg(url).args(args);
    command.env_remove("LEPUS_URL");
    tokio::time::timeout(Duration::from_secs(60), command.output())
        .await
        .expect("the tool returns")
        .unwrap()
}

/// Runs `lepus args..` as given (no `--url` added, `LEPUS_URL` unset) and returns its output.
fn lepus_plain(args: &[&str]) -> Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_lepus"))
        .args(args)
        .env_remove("LEPUS_URL")
        .output()
        .unwrap()
}

fn stdout(output: &Output) -> String {
    assert!(
        output.status.success(),
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Serves `hold` on `bed` and enqueues one with a fresh key; returns once it runs: the
/// worker's completions, the key and the task id.
async fn a_running_hold(bed: &mut TestBed) -> (Completions, String, TaskId) {
    let done = bed.serve(hold::handler()).await.unwrap();
    let key = uuid::Uuid::new_v4().simple().to_string();
    let id = hold::enqueue(bed.client(), key.clone()).await.unwrap();
    until_started(&key).await;
    (done, key, id)
}

/// The one worker in `json` (`workers --json` or `inspect --json`) with a handler on `queue`.
fn the_worker_serving(json: &str, queue: &str) -> String {
    let infos: Vec<lepus::control::WorkerInfo> =
        serde_json::from_str(json).unwrap_or_else(|e| panic!("{e}: {json}"));
    let ours: Vec<_> = infos
        .iter()
        .filter(|info| info.handlers.iter().any(|h| h.queue == queue))
        .collect();
    assert_eq!(ours.len(), 1, "one worker serves {queue}: {json}");
    ours[0].worker.clone()
}

/// The line of `worker` in the `workers` table `table`.
fn row_of<'t>(table: &'t str, worker: &str) -> &'t str {
    table
        .lines()
        .find(|line| line.starts_with(worker))
        .unwrap_or_else(|| panic!("{worker} not in\n{table}"))
}

async fn until_started(key: &str) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !log().lock().unwrap().started.contains(key) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{key} never started"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[test]
fn every_verb_has_help() {
    let verbs: &[&[&str]] = &[
        &[],
        &["workers"],
        &["inspect"],
        &["ping"],
        &["revoke"],
        &["shutdown"],
        &["dead-letters"],
        &["dead-letters", "list"],
        &["dead-letters", "show"],
        &["dead-letters", "requeue"],
        &["dead-letters", "purge"],
    ];
    for verb in verbs {
        let text = stdout(&lepus_plain(&[*verb, &["--help"]].concat()));
        assert!(text.contains("Usage: lepus"), "{verb:?}: {text}");
        assert!(text.contains("--url"), "{verb:?} documents --url: {text}");
    }
    // The top-level help names every verb.
    let text = stdout(&lepus_plain(&["--help"]));
    for verb in [
        "workers",
        "inspect",
        "ping",
        "revoke",
        "shutdown",
        "dead-letters",
    ] {
        assert!(text.contains(verb), "{verb} missing from --help: {text}");
    }
}

#[test]
fn errors_exit_non_zero_with_a_message() {
    let no_url = lepus_plain(&["workers"]);
    assert!(!no_url.status.success());
    assert!(String::from_utf8_lossy(&no_url.stderr).contains("--url"));
    // Nothing listens on port 1 of the loopback address.
    let refused = lepus_plain(&["--url", "amqp://guest:guest@127.0.0.1:1/%2f", "workers"]);
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).starts_with("lepus: "));
    let bad_verb = lepus_plain(&["frobnicate"]);
    assert!(!bad_verb.status.success());
    let shutdown_nobody = lepus_plain(&["--url", "amqp://127.0.0.1:1/%2f", "shutdown"]);
    assert!(
        !shutdown_nobody.status.success(),
        "shutdown needs ids or --all"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_and_inspect_list_running_task_ids_and_revoke_stops_it() {
    let mut bed = bed().await;
    let queue = format!("{}cli.hold", bed.prefix());
    let (mut done, key, id) = a_running_hold(&mut bed).await;

    let json = stdout(&lepus(bed.url(), &["workers", "--json"]).await);
    let worker = the_worker_serving(&json, &queue);
    let table = stdout(&lepus(bed.url(), &["workers"]).await);
    let line = row_of(&table, &worker);
    let columns: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(columns[1], std::process::id().to_string(), "{line}");
    assert_eq!(columns[5], "1", "one task running: {line}");
    let inspected = stdout(&lepus(bed.url(), &["inspect", &worker]).await);
    assert!(
        inspected.contains(&format!("task {} hold on {queue}", id.0)),
        "{inspected}"
    );
    assert!(inspected.contains("(cancellable)"), "{inspected}");
    let pinged = stdout(&lepus(bed.url(), &["ping"]).await);
    assert!(pinged.contains(&format!("{worker}: pong")), "{pinged}");

    // Revoking it stops it: it ends as revoked, never finished, not retried.
    let revoked = stdout(&lepus(bed.url(), &["revoke", &id.0, "--keep", "10m"]).await);
    assert!(
        revoked.contains(&format!("revoked {} for 10m", id.0)),
        "{revoked}"
    );
    assert!(revoked.contains("cancelled where it ran"), "{revoked}");
    let c = done.next_within(WAIT).await.unwrap();
    assert_eq!(c.outcome, Outcome::Revoked);
    assert!(done.next_within(Duration::from_secs(1)).await.is_err());
    assert!(!log().lock().unwrap().finished.contains(&key));
    log().lock().unwrap().released.insert(key);
    // The table counts it.
    let table = stdout(&lepus(bed.url(), &["workers"]).await);
    let line = row_of(&table, &worker);
    assert_eq!(line.split_whitespace().nth(8), Some("1"), "{table}");
    bed.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_revoked_with_the_tool_while_queued_never_runs() {
    let mut bed = bed().await;
    let key = uuid::Uuid::new_v4().simple().to_string();
    let id = hold::enqueue(bed.client(), key.clone()).await.unwrap();
    stdout(&lepus(bed.url(), &["revoke", &id.0]).await);
    // A worker started after the revoke skips it.
    let mut done = bed.serve(hold::handler()).await.unwrap();
    let c = done.next_within(WAIT).await.unwrap();
    assert_eq!(c.message_id.as_deref(), Some(id.0.as_str()));
    assert_eq!(c.outcome, Outcome::Revoked);
    assert!(!log().lock().unwrap().started.contains(&key));
    bed.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_drains_the_named_worker() {
    let mut bed = bed().await;
    let queue = format!("{}cli.hold", bed.prefix());
    let (mut done, key, _) = a_running_hold(&mut bed).await;
    let json = stdout(&lepus(bed.url(), &["inspect", "--json"]).await);
    let worker = the_worker_serving(&json, &queue);
    let out = stdout(&lepus(bed.url(), &["shutdown", &worker]).await);
    assert!(out.contains(&format!("{worker}: shutting down")), "{out}");
    log().lock().unwrap().released.insert(key.clone());
    assert_eq!(
        done.next_within(WAIT).await.unwrap().outcome,
        Outcome::Succeeded
    );
    assert!(log().lock().unwrap().finished.contains(&key));
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let pinged = stdout(&lepus(bed.url(), &["ping", "--wait", "300ms"]).await);
        if !pinged.contains(&worker) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{worker} still answers"
        );
    }
    bed.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_list_show_requeue_purge() {
    let mut bed = bed().await;
    let dead = format!("{}cli.failing.dead", bed.prefix());
    let mut done = bed.serve(failing::handler()).await.unwrap();
    let mut ids = Vec::new();
    for n in 0..3 {
        ids.push(
            failing::enqueue(bed.client(), format!("mail{n}"))
                .await
                .unwrap()
                .0,
        );
    }
    done.wait_for(3, WAIT).await.unwrap();
    let listed = stdout(&lepus(bed.url(), &["dead-letters", "list", &dead]).await);
    for id in &ids {
        assert!(listed.contains(id.as_str()), "{listed}");
    }
    assert!(listed.contains("(3 dead letters)"), "{listed}");
    let shown = stdout(&lepus(bed.url(), &["dead-letters", "show", &dead, &ids[0]]).await);
    assert!(shown.contains("mail0: smtp down"), "{shown}");
    assert!(shown.contains("attempts:     1"), "{shown}");
    let missing = lepus(bed.url(), &["dead-letters", "show", &dead, "nope"]).await;
    assert!(!missing.status.success());
    // Requeue one: it fails again and comes back; purge empties the queue.
    let requeued = stdout(&lepus(bed.url(), &["dead-letters", "requeue", &dead, &ids[1]]).await);
    assert!(requeued.contains("requeued 1"), "{requeued}");
    let c = done.next_within(WAIT).await.unwrap();
    assert_eq!(c.message_id.as_deref(), Some(ids[1].as_str()));
    let purged = stdout(&lepus(bed.url(), &["dead-letters", "purge", &dead]).await);
    assert!(purged.contains("purged 3"), "{purged}");
    let listed = stdout(&lepus(bed.url(), &["dead-letters", "list", &dead]).await);
    assert!(listed.contains("(0 dead letters)"), "{listed}");
    bed.stop().await;
}
