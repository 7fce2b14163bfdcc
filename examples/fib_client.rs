//! The caller half of fib over RPC, as its own process (start `fib_server` first).
//!
//! ```sh
//! cargo run --release --example fib_client -- --url amqp://guest:guest@127.0.0.1:5672/%2f --n 30
//! ```
//! Declares the same `fib` signature as the server (its body only runs if called locally),
//! calls it remotely through the typed stub, and reports the calls/s of a short burst.

use std::time::{Duration, Instant};

use clap::Parser;
use futures::stream::{self, StreamExt};
use lepus::{CallOptions, Client, Error};
use serde::{Deserialize, Serialize};

/// The server's error type, decoded on this side.
#[derive(Debug, Serialize, Deserialize, thiserror::Error)]
enum MathError {
    #[error("fib({0}) does not fit in a u64")]
    Overflow(u32),
}

/// The same signature as the server's: this gives `fib::call`.
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
#[command(about = "Call fib over RPC (start fib_server first)")]
struct Args {
    /// The AMQP broker.
    #[arg(
        long,
        env = "LEPUS_URL",
        hide_env_values = true,
        default_value = "amqp://guest:guest@127.0.0.1:5672/%2f"
    )]
    url: String,
    /// The argument of fib.
    #[arg(long, default_value_t = 30)]
    n: u32,
    /// Calls in the burst.
    #[arg(long, default_value_t = 1_000)]
    calls: usize,
    /// Calls outstanding at a time in the burst.
    #[arg(long, default_value_t = 32)]
    in_flight: usize,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Lepus logs through `tracing`: without a subscriber, reconnect failures go unseen.
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    let args = Args::parse();
    let conn = lepus::connect(&args.url).await?;
    let client = Client::new(&conn).await?;

    let options = CallOptions::default().timeout(Duration::from_secs(5));
    match fib::call_with(&client, args.n, options).await {
        Ok(v) => println!(" [.] fib({}) = {v}", args.n),
        Err(Error::NoRoute { queue, .. }) => {
            println!(" [!] nobody serves {queue:?}: start fib_server first");
            return Ok(());
        }
        Err(Error::Remote(e)) => println!(" [!] the server says: {e}"),
        Err(e) => return Err(e.into()),
    }

    let started = Instant::now();
    let failed = stream::iter(0..args.calls)
        .map(|_| fib::call(&client, args.n))
        .buffer_unordered(args.in_flight)
        .filter(|r| std::future::ready(r.is_err()))
        .count()
        .await;
    let secs = started.elapsed().as_secs_f64();
    println!(
        " [.] {} calls, {} in flight: {:.0} calls/s ({} failed)",
        args.calls,
        args.in_flight,
        args.calls as f64 / secs,
        failed
    );
    client.close().await;
    conn.close().await;
    Ok(())
}
