//! fib over RPC, all in one process: the README's first command.
//!
//! ```sh
//! cargo run --release --example fib                 # bundled broker, in-process
//! cargo run --release --example fib -- --url amqp://guest:guest@127.0.0.1:5672/%2f
//! ```
//! Starts the bundled broker on 127.0.0.1 (unless `--url` names another), a worker pool serving
//! `fib` on the queue `rpc_queue`, and a client; prints a few results, then makes `--calls`
//! calls with `--in-flight` of them outstanding at a time and prints the calls/s it saw. `fib`
//! itself, an ordinary async fn, is the contract `fib_server` and `fib_client` share
//! (`fib_contract`).

mod common;
mod fib_contract;

use std::time::{Duration, Instant};

use clap::Parser;
use fib_contract::fib;
use futures::stream::{self, StreamExt};
use lepus::{CallOptions, Client, Worker};

#[derive(Parser)]
#[command(about = "fib over RPC: bundled broker, worker pool and client in one process")]
struct Args {
    #[command(flatten)]
    broker: common::DemoUrl,
    /// Calls in the throughput run.
    #[arg(long, default_value_t = 20_000)]
    calls: usize,
    /// Calls outstanding at a time in the throughput run.
    #[arg(long, default_value_t = 64)]
    in_flight: usize,
    /// Requests the broker may push to the worker pool before they are acked.
    #[arg(long, default_value_t = 32)]
    prefetch: u16,
    /// Handlers the worker pool runs at once.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// The argument of fib in the throughput run.
    #[arg(long, default_value_t = 30)]
    n: u32,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    common::init_tracing("warn");
    let args = Args::parse();

    // 1. A broker: the bundled one, in this process, on a free loopback port (unless `--url`).
    let broker = common::ExampleBroker::at_or_bundled(args.broker.url).await?;
    let url = &broker.url;

    // 2. A worker pool, in a task of its own; `ready` returns once it consumes, so the first
    //    call is served (no `NoRoute` to retry).
    let worker_conn = lepus::connect(url).await?;
    let mut worker = Worker::new(&worker_conn)
        .prefetch(args.prefetch)
        .concurrency(args.concurrency)
        .serve(fib::handler())
        .spawn();
    worker.ready(Duration::from_secs(10)).await?;
    println!(
        "worker pool serving fib on {:?} (prefetch {}, concurrency {})",
        fib::QUEUE,
        args.prefetch,
        args.concurrency
    );

    // 3. A client on its own connection.
    let client_conn = lepus::connect(url).await?;
    let client = Client::new(&client_conn).await?;

    // 4. A few calls, typed both ways.
    for n in [0, 1, 10, 30, 50, 90] {
        println!("fib({n}) = {}   (over RPC)", fib::call(&client, n).await?);
    }
    match fib::call(&client, 100).await {
        Err(lepus::Error::Remote(e)) => println!("fib(100) -> remote error, typed: {e}"),
        other => println!("fib(100) -> unexpected {other:?}"),
    }
    let quick = CallOptions::default().timeout(Duration::from_secs(2));
    println!(
        "fib(40) = {}   (call_with a 2 s timeout)",
        fib::call_with(&client, 40, quick).await?
    );
    println!("fib(40) = {}   (local call, same function)", fib(40).await?);

    // 5. Throughput: `calls` calls, `in_flight` outstanding at once, on one client.
    let started = Instant::now();
    let expected = fib(args.n).await?;
    let failures = stream::iter(0..args.calls)
        .map(|_| fib::call(&client, args.n))
        .buffer_unordered(args.in_flight)
        .filter(|r| std::future::ready(r.as_ref().ok() != Some(&expected)))
        .count()
        .await;
    let elapsed = started.elapsed();
    println!(
        "{} calls of fib({}) with {} in flight: {:.2} s, {:.0} calls/s, {} wrong or failed",
        args.calls,
        args.n,
        args.in_flight,
        elapsed.as_secs_f64(),
        args.calls as f64 / elapsed.as_secs_f64(),
        failures
    );

    // 6. Shut down: the worker finishes what it holds, then everything closes.
    worker.shutdown().await?;
    client.close().await;
    client_conn.close().await;
    worker_conn.close().await;
    broker.shutdown().await;
    println!("done");
    if failures > 0 {
        return Err(format!("{failures} calls failed").into());
    }
    Ok(())
}
