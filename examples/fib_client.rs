//! The caller half of fib over RPC, as its own process (start `fib_server` first).
//!
//! ```sh
//! cargo run --release --example fib_client -- --url amqp://guest:guest@127.0.0.1:5672/%2f --n 30
//! ```
//! Compiles the same `fib` contract as the server (`fib_contract`; its body only runs where it
//! is served), calls it remotely through the typed stub, and reports the calls/s of a burst.

mod common;
mod fib_contract;

use std::time::{Duration, Instant};

use clap::Parser;
use fib_contract::fib;
use futures::stream::{self, StreamExt};
use lepus::{CallOptions, Client, Error};

#[derive(Parser)]
#[command(about = "Call fib over RPC (start fib_server first)")]
struct Args {
    #[command(flatten)]
    broker: common::BrokerUrl,
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
    common::init_tracing("warn");
    let args = Args::parse();
    let conn = lepus::connect(&args.broker.url).await?;
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
