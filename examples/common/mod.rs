//! The two things every example starts the same way: logging through `tracing`, and (for the
//! demos) the broker the demo runs on. Kept to a few lines so that each example still reads
//! on its own; everything that differs between examples stays in the example.
#![allow(dead_code)]

use lepus::testing::TestBed;

/// Installs a `tracing` subscriber: Lepus logs through `tracing`, and without a subscriber
/// reconnect failures go unseen. `RUST_LOG` sets the level (default `level`).
pub(crate) fn init_tracing(level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    tracing_subscriber::fmt().with_env_filter(filter).init();
}

/// The `--url` of an example that runs against a broker it does not start (flatten it into the
/// example's arguments with `#[command(flatten)]`).
#[derive(clap::Args)]
pub(crate) struct BrokerUrl {
    /// The AMQP broker.
    #[arg(
        long,
        env = "LEPUS_URL",
        hide_env_values = true,
        default_value = "amqp://guest:guest@127.0.0.1:5672/%2f"
    )]
    pub(crate) url: String,
}

/// The demo's broker: the one at `url` if given, else a bundled broker in this process on a
/// free loopback port. Prints its URL.
pub(crate) async fn demo_bed(url: Option<&str>) -> Result<TestBed, Box<dyn std::error::Error>> {
    let bed = match url {
        Some(url) => TestBed::external(url, "").await?,
        None => TestBed::start().await?,
    };
    println!("broker: {}", bed.url());
    Ok(bed)
}

/// The message an `emit` command sends: its words joined by spaces, or `default` without any.
pub(crate) fn message(words: &[String], default: &str) -> String {
    if words.is_empty() {
        default.to_owned()
    } else {
        words.join(" ")
    }
}
