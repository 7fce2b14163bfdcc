//! Every scenario of `lepus-bench`, run as the binary against a real broker: the in-process
//! bundled broker on 127.0.0.1:0, or the broker named by `LEPUS_TEST_AMQP_URL` (e.g. RabbitMQ).
//! Asserts what the bench counts (everything sent arrives, confirms cover every publish, the
//! backlog drains in order, RPC calls all return), never how fast.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on failure

use std::path::PathBuf;

use lepus_broker::{Broker, BrokerHandle};
use serde_json::Value;

/// A broker for one test; stops (and removes its data dir) on [`TestBroker::stop`].
struct TestBroker {
    url: String,
    handle: Option<BrokerHandle>,
    data_dir: Option<PathBuf>,
}

impl TestBroker {
    async fn start() -> TestBroker {
        if let Ok(url) = std::env::var("LEPUS_TEST_AMQP_URL") {
            return TestBroker {
                url,
                handle: None,
                data_dir: None,
            };
        }
        let dir = std::env::temp_dir().join(format!(
            "lepus-bench-test-{}",
            uuid::Uuid::new_v4().simple()
        ));
        let handle = Broker::builder()
            .listen("127.0.0.1:0")
            .data_dir(&dir)
            .start()
            .await
            .expect("the in-process broker starts");
        TestBroker {
            url: handle.amqp_url(),
            handle: Some(handle),
            data_dir: Some(dir),
        }
    }

    async fn stop(self) {
        if let Some(h) = self.handle {
            h.shutdown().await;
        }
        if let Some(d) = self.data_dir {
            let _ = std::fs::remove_dir_all(d);
        }
    }
}

/// Runs `lepus-bench --json -q --url URL ARGS...` (`args` split at white space) and returns its
/// exit status, report and stderr.
async fn bench(url: &str, args: &str) -> (bool, Option<Value>, String) {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_lepus-bench"))
        .args(["--json", "--quiet", "--url", url])
        .args(args.split_whitespace())
        .output()
        .await
        .expect("lepus-bench runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let report = stdout
        .lines()
        .last()
        .and_then(|l| serde_json::from_str(l).ok());
    (
        out.status.success(),
        report,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Runs a scenario that must succeed and returns its report.
async fn report(url: &str, args: &str) -> Value {
    let (ok, report, stderr) = bench(url, args).await;
    assert!(ok, "lepus-bench {args} failed: {stderr}");
    report.expect("a JSON report on stdout")
}

/// Runs a scenario that must succeed against a broker of its own and returns its report.
async fn scenario(args: &str) -> Value {
    let broker = TestBroker::start().await;
    let r = report(&broker.url, args).await;
    broker.stop().await;
    r
}

/// Runs a command line the bench must refuse: it fails, prints no report, and says `why` on
/// stderr.
async fn assert_refused(url: &str, args: &str, why: &str) {
    let (ok, report, stderr) = bench(url, args).await;
    assert!(
        !ok && report.is_none(),
        "lepus-bench {args} was not refused: {stderr}"
    );
    assert!(stderr.contains(why), "{stderr}");
}

fn n(v: &Value, key: &str) -> u64 {
    v[key].as_u64().unwrap_or_else(|| panic!("{key} in {v}"))
}

/// The report's (sent, received, confirmed).
fn counts(r: &Value) -> (u64, u64, u64) {
    (n(r, "sent"), n(r, "received"), n(r, "confirmed"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throughput_raw_client_manual_ack_confirms_persistent() {
    let r = scenario(
        "throughput --count 2000 --size 64 --persistent --confirm 64 --prefetch 50 --multi-ack 10",
    )
    .await;
    assert_eq!(counts(&r), (2000, 2000, 2000));
    assert_eq!(n(&r["extra"], "redelivered"), 0);
    assert_eq!(r["latency"]["count"].as_u64(), Some(2000));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throughput_lapin_client_several_queues() {
    let r = scenario(
        "throughput --client lapin --count 300 --producers 2 --consumers 2 --queues 2 --autoack",
    )
    .await;
    assert_eq!((n(&r, "sent"), n(&r, "received")), (600, 600));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fanout_delivers_a_copy_per_queue() {
    let r = scenario("fanout --queues 3 --count 500 --autoack").await;
    assert_eq!((n(&r, "sent"), n(&r, "received")), (500, 1500));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backlog_drains_in_order() {
    let r = scenario("backlog --count 3000 --size 100").await;
    assert_eq!(counts(&r), (3000, 3000, 3000));
    assert_eq!(r["extra"]["order_ok"], Value::Bool(true));
    assert_eq!(n(&r["extra"], "out_of_order"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rpc_calls_all_return_with_every_impl() {
    let broker = TestBroker::start().await;
    for imp in ["lapin", "lepus", "raw"] {
        let args = format!("rpc --impl {imp} --callers 2 --in-flight 3 --count 40");
        let r = report(&broker.url, &args).await;
        assert_eq!((n(&r, "sent"), n(&r, "received")), (80, 80), "--impl {imp}");
        assert_eq!(r["latency"]["count"].as_u64(), Some(80), "--impl {imp}");
    }
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_all_run_once_after_their_confirms() {
    let r = scenario("tasks --tasks 2000 --producers 2 --window 64").await;
    assert_eq!(counts(&r), (2000, 2000, 2000));
    assert_eq!(n(&r["extra"], "duplicates"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chord_of_members_completes_with_its_wall_time() {
    let r = scenario("tasks --chord 200").await;
    assert_eq!(n(&r["extra"], "chord_members"), 200);
    assert!(r["extra"]["chord_wall_secs"].as_f64().unwrap() > 0.0);
}

#[tokio::test]
async fn refuses_non_loopback_urls() {
    assert_refused(
        "amqp://guest:guest@10.1.2.3:5672/%2f",
        "throughput --count 1",
        "only talks to 127.0.0.1",
    )
    .await;
}

#[tokio::test]
async fn refuses_a_multi_ack_above_the_prefetch() {
    // Validation runs before any connection: no broker needed.
    assert_refused(
        "amqp://guest:guest@127.0.0.1:1/%2f",
        "throughput --count 1 --prefetch 5 --multi-ack 10",
        "--multi-ack 10 above --prefetch 5",
    )
    .await;
}
