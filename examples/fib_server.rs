//! The worker half of fib over RPC, as its own process.
//!
//! ```sh
//! cargo run --release --example fib_server -- --url amqp://guest:guest@127.0.0.1:5672/%2f
//! cargo run --release --example fib_client -- --url amqp://guest:guest@127.0.0.1:5672/%2f
//! ```
//! Serves `fib` on `rpc_queue` until Ctrl-C or `--seconds` have passed, then shuts down
//! gracefully: stops consuming, finishes the calls it holds, closes.

mod common;
mod fib_contract;

use std::time::Duration;

use clap::Parser;
use fib_contract::fib;
use lepus::Worker;

#[derive(Parser)]
#[command(about = "Serve fib over RPC on rpc_queue")]
struct Args {
    #[command(flatten)]
    broker: common::BrokerUrl,
    /// Requests the broker may push before they are acked (basic.qos).
    #[arg(long, default_value_t = 16)]
    prefetch: u16,
    /// Handlers running at once.
    #[arg(long, default_value_t = 8)]
    concurrency: usize,
    /// Stop after this many seconds (Ctrl-C stops earlier).
    #[arg(long, default_value_t = 30)]
    seconds: u64,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    common::init_tracing("info");
    let args = Args::parse();
    let conn = lepus::connect(&args.broker.url).await?;
    println!(
        "serving fib on {:?} (prefetch {}, concurrency {}) for {} s; Ctrl-C to stop",
        fib::QUEUE,
        args.prefetch,
        args.concurrency,
        args.seconds
    );
    let stop = async {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => println!("Ctrl-C: shutting down"),
            _ = tokio::time::sleep(Duration::from_secs(args.seconds)) => println!("time is up: shutting down"),
        }
    };
    Worker::new(&conn)
        .prefetch(args.prefetch)
        .concurrency(args.concurrency)
        .serve(fib::handler())
        .run_until(stop)
        .await?;
    conn.close().await;
    println!("stopped cleanly");
    Ok(())
}
