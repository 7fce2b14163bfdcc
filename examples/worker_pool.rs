//! Fair dispatch with prefetch: a fast and a slow worker share one queue.
//!
//! ```sh
//! cargo run --release --example worker_pool                   # bundled broker, in-process
//! cargo run --release --example worker_pool -- --url amqp://guest:guest@127.0.0.1:5672/%2f
//! ```
//! Both workers serve method `job` on queue `jobs` (two functions with `name = "job"`, one per
//! worker, so each reply says who did the work). With `prefetch(1)` the broker gives a worker
//! a new job only when it acked the last one, so the fast worker does most of them. With a large
//! prefetch the broker deals jobs round-robin up front and the slow worker holds half of them.

mod common;

use std::time::{Duration, Instant};

use clap::Parser;
use futures::future::join_all;
use lepus::{Client, Worker};

/// The fast worker's implementation of `job`.
#[lepus::rpc(queue = "jobs", name = "job")]
async fn job_fast(_id: u32) -> String {
    tokio::time::sleep(Duration::from_millis(5)).await;
    "fast".to_owned()
}

/// The slow worker's implementation of `job`.
#[lepus::rpc(queue = "jobs", name = "job")]
async fn job_slow(_id: u32) -> String {
    tokio::time::sleep(Duration::from_millis(100)).await;
    "slow".to_owned()
}

#[derive(Parser)]
#[command(about = "Prefetch fair dispatch between a fast and a slow worker")]
struct Args {
    #[command(flatten)]
    broker: common::DemoUrl,
    /// Jobs per round.
    #[arg(long, default_value_t = 40)]
    jobs: u32,
}

/// One round: both workers with `prefetch`, `jobs` calls at once; returns (fast, slow, secs).
async fn round(url: &str, prefetch: u16, jobs: u32) -> Result<(usize, usize, f64), lepus::Error> {
    let mut workers = Vec::new();
    for handler in [job_fast::handler(), job_slow::handler()] {
        let conn = lepus::connect(url).await?;
        let mut worker = Worker::new(&conn)
            .prefetch(prefetch)
            .concurrency(1)
            .serve(handler)
            .spawn();
        // Both consume before the first job is sent.
        worker.ready(Duration::from_secs(10)).await?;
        workers.push((conn, worker));
    }
    let conn = lepus::connect(url).await?;
    let client = Client::new(&conn).await?;

    let started = Instant::now();
    let answers = join_all((0..jobs).map(|id| job_fast::call(&client, id))).await;
    let secs = started.elapsed().as_secs_f64();
    let mut fast = 0;
    let mut slow = 0;
    for answer in answers {
        match answer?.as_str() {
            "fast" => fast += 1,
            _ => slow += 1,
        }
    }
    for (conn, worker) in workers {
        worker.shutdown().await?;
        conn.close().await;
    }
    client.close().await;
    conn.close().await;
    Ok((fast, slow, secs))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    common::init_tracing("warn");
    let args = Args::parse();
    let broker = common::ExampleBroker::at_or_bundled(args.broker.url).await?;
    println!("a fast worker (5 ms per job) and a slow one (100 ms), one job at a time each");
    for prefetch in [1u16, 20] {
        let (fast, slow, secs) = round(&broker.url, prefetch, args.jobs).await?;
        println!(
            "prefetch {prefetch:>2}: fast did {fast:>2}, slow did {slow:>2} of {} jobs in {secs:.2} s",
            args.jobs
        );
    }
    println!("prefetch 1 sends work to whoever is free; a big prefetch deals it out blindly");
    broker.shutdown().await;
    Ok(())
}
