//! The worker half of fib over RPC, as its own process.
//!
//! ```sh
//! cargo run --release --example fib_server -- --url amqp://guest:guest@127.0.0.1:5672/%2f
//! cargo run --release --example fib_client -- --url amqp://guest:guest@127.0.0.1:5672/%2f
//! ```
//! Serves `fib` on `rpc_queue` until Ctrl-C or `--seconds` have passed, then shuts down
//! gracefully: stops consuming, finishes the calls it holds, closes.

use std::time::Duration;

use clap::Parser;
use lepus::Worker;
use serde::{Deserialize, Serialize};

/// The error `fib` can return; the client declares the same type.
#[derive(Debug, Serialize, Deserialize, thiserror::Error)]
enum MathError {
    #[error("fib({0}) does not fit in a u64")]
    Overflow(u32),
}

/// The served function (the client declares the same signature).
#[lepus::rpc(queue = "rpc_queue")]
async fn fib(n: u32) -> Result<u64, MathError> {
    if n > 93 {
        return Err(MathError::Overflow(n));
    }
    let (mut a, mut b) = (0u64, 1u64);
    for _ in 0..n {
        (a, b) = (b, a + b);
    }
    Ok(a)
}

#[derive(Parser)]
#[command(about = "Serve fib over RPC on rpc_queue")]
struct Args {
    /// The AMQP broker.
    #[arg(
        long,
        env = "LEPUS_URL",
        hide_env_values = true,
        default_value = "amqp://guest:guest@127.0.0.1:5672/%2f"
    )]
    url: String,
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
    // Lepus logs through `tracing`: without a subscriber, reconnect failures go unseen.
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let args = Args::parse();
    let conn = lepus::connect(&args.url).await?;
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
