//! Rate limits (issue 22, Done means 2): a task limited to 20/s, 400 queued, 3 workers. The
//! limit is per worker (as Celery's `rate_limit`; see `lepus::RateLimit`), so the pool's
//! documented bound is 3 × 20/s: no one-second window holds more than 3 × (20 + 1) starts, and
//! the 400 take at least (400 − 3) / 60 s. Another task served by the same workers is not
//! delayed by the limited backlog.
#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

mod common;

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use futures::stream::{self, StreamExt};

const WORKERS: usize = 3;
const PER_SECOND: usize = 20;
const QUEUED: usize = 400;

/// Start times of the runs, per (test key, task).
type Starts = Mutex<HashMap<(String, &'static str), Vec<Instant>>>;

fn starts() -> &'static Starts {
    static STARTS: OnceLock<Starts> = OnceLock::new();
    STARTS.get_or_init(Default::default)
}

fn runs(key: &str, task: &'static str) -> Vec<Instant> {
    starts()
        .lock()
        .unwrap()
        .get(&(key.to_owned(), task))
        .cloned()
        .unwrap_or_default()
}

/// Records that `task` started a run now for the test `key` (what [`runs`] reads back).
fn record_start(key: String, task: &'static str) {
    starts()
        .lock()
        .unwrap()
        .entry((key, task))
        .or_default()
        .push(Instant::now());
}

#[lepus::task(queue = "rate.limited", rate_limit = "20/s")]
async fn limited(key: String) {
    record_start(key, "limited");
}

#[lepus::task(queue = "rate.other")]
async fn other(key: String) {
    record_start(key, "other");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_limited_task_keeps_to_its_rate_and_does_not_delay_the_others() {
    let mut bed = common::test_bed("rate").await;
    let key = common::unique("rate");
    let client = bed.client().clone();
    let enqueued: Vec<_> = stream::iter(0..QUEUED)
        .map(|_| limited::enqueue(&client, key.clone()))
        .buffer_unordered(32)
        .collect()
        .await;
    assert!(enqueued.iter().all(Result::is_ok));
    for _ in 0..WORKERS {
        bed.worker(|worker| worker.serve(limited::handler()).serve(other::handler()))
            .await
            .unwrap();
    }
    let started = Instant::now();
    // A second in, with most of the backlog still waiting, the other task is enqueued.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut other_latency = Vec::new();
    for _ in 0..20 {
        let sent = Instant::now();
        let before = runs(&key, "other").len();
        other::enqueue(&client, key.clone()).await.unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while runs(&key, "other").len() == before {
            assert!(Instant::now() < deadline, "the other task never ran");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        other_latency.push(sent.elapsed());
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    while runs(&key, "limited").len() < QUEUED {
        assert!(
            Instant::now() < deadline,
            "{} limited runs",
            runs(&key, "limited").len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let limited_runs = runs(&key, "limited");
    let took = started.elapsed();
    // The bound: per worker at most n·t + 1 starts in any window of t seconds.
    let bound = WORKERS * (PER_SECOND + 1);
    let busiest = limited_runs
        .iter()
        .map(|from| {
            limited_runs
                .iter()
                .filter(|at| **at >= *from && at.duration_since(*from) < Duration::from_secs(1))
                .count()
        })
        .max()
        .unwrap();
    assert!(
        busiest <= bound,
        "{busiest} starts in one second (bound {bound})"
    );
    let first = *limited_runs.iter().min().unwrap();
    let last = *limited_runs.iter().max().unwrap();
    let spread = last.duration_since(first);
    let least = Duration::from_secs_f64((QUEUED - WORKERS) as f64 / (WORKERS * PER_SECOND) as f64);
    assert!(
        spread >= least.mul_f64(0.95),
        "400 runs in {spread:?}, under {least:?}"
    );
    // The other task ran while the limited ones waited: each within 2 s of its enqueue (the
    // limited backlog alone takes over 6 s), and all before the backlog was through.
    let slowest = *other_latency.iter().max().unwrap();
    assert!(
        slowest < Duration::from_secs(2),
        "other task latencies {other_latency:?}"
    );
    assert!(runs(&key, "other").iter().all(|at| *at < last));
    println!(
        "{QUEUED} limited runs in {spread:?} (took {took:?}; bound {bound}/s, busiest second \
         {busiest}); other task latency max {slowest:?}"
    );
    bed.stop().await;
}
