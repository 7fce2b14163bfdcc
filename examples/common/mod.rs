//! What the examples share: logging through `tracing`; for the seed examples, their command
//! line and `main` (the whole demo, or one command), the broker the demo runs on and its end;
//! for the examples that make their own connections, their broker. Each piece is short, so
//! that an example still reads on its own; everything that differs between examples stays in
//! the example. What the log examples share is in [`logs`].
#![allow(dead_code)]

pub(crate) mod logs;

use std::error::Error;

use clap::{CommandFactory, FromArgMatches};
use lepus::testing::TestBed;
use lepus::{Connection, Worker};

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

/// The `--url` of a demo example (flatten it into the example's arguments with
/// `#[command(flatten)]`): without it the example runs on a broker of its own.
#[derive(clap::Args)]
pub(crate) struct DemoUrl {
    /// Broker URL; without it the demo runs on an in-process bundled broker.
    #[arg(long, env = "LEPUS_URL", hide_env_values = true)]
    pub(crate) url: Option<String>,
}

/// The command line of a seed example: `--url`, and one of its commands `C` (none: the whole
/// demo). Its `about` is the example's, given to [`seed_main`].
#[derive(clap::Parser)]
struct SeedCli<C: clap::Subcommand> {
    #[command(flatten)]
    broker: DemoUrl,
    #[command(subcommand)]
    command: Option<C>,
}

/// The `main` of a seed example described by `about`: without a subcommand, the whole `demo`
/// (on the broker at `--url`, or a bundled one); with one, `run` it on a connection to `--url`,
/// which it then needs (`commands` names the subcommands in that error).
pub(crate) async fn seed_main<C: clap::Subcommand>(
    about: &'static str,
    commands: &str,
    demo: impl AsyncFnOnce(Option<&str>) -> Result<(), Box<dyn Error>>,
    run: impl AsyncFnOnce(&Connection, C) -> Result<(), Box<dyn Error>>,
) -> Result<(), Box<dyn Error>> {
    init_tracing("warn");
    let matches = SeedCli::<C>::command().about(about).get_matches();
    let cli = SeedCli::<C>::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    match (cli.command, cli.broker.url) {
        (None, url) => demo(url.as_deref()).await,
        (Some(command), Some(url)) => {
            let conn = lepus::connect(&url).await?;
            run(&conn, command).await?;
            conn.close().await;
            Ok(())
        }
        (Some(_), None) => Err(format!("{commands} need --url (or LEPUS_URL)").into()),
    }
}

/// Runs `worker` until Ctrl-C (a `receive` or `worker` command), having said so.
pub(crate) async fn until_ctrl_c(worker: Worker, waiting_for: &str) -> lepus::Result<()> {
    println!(" [*] Waiting for {waiting_for}. To exit press CTRL+C");
    worker.run_until(tokio::signal::ctrl_c()).await
}

/// Stops the demo's broker; the demo then fails with `failure` unless it went `right`.
pub(crate) async fn finish(bed: TestBed, right: bool, failure: &str) -> Result<(), Box<dyn Error>> {
    bed.stop().await;
    if right {
        Ok(())
    } else {
        Err(failure.into())
    }
}

/// The demo's broker: the one at `url` if given, else a bundled broker in this process on a
/// free loopback port. Prints its URL.
pub(crate) async fn demo_bed(url: Option<&str>) -> Result<TestBed, Box<dyn Error>> {
    let bed = match url {
        Some(url) => TestBed::external(url, "").await?,
        None => TestBed::start().await?,
    };
    println!("broker: {}", bed.url());
    Ok(bed)
}

/// The broker of an example that makes its own connections: the one at `--url`, or a bundled
/// broker started in this process on a free loopback port. Prints which.
pub(crate) struct ExampleBroker {
    /// The AMQP URL to connect to.
    pub(crate) url: String,
    /// The bundled broker, when this example started one.
    bundled: Option<lepus::broker::BrokerHandle>,
}

impl ExampleBroker {
    /// The broker at `url`, or else a bundled one, started now.
    pub(crate) async fn at_or_bundled(url: Option<String>) -> Result<Self, Box<dyn Error>> {
        if let Some(url) = url {
            println!("using the broker at {url}");
            return Ok(Self { url, bundled: None });
        }
        let broker = lepus::broker::Broker::builder()
            .listen("127.0.0.1:0")
            .start()
            .await?;
        println!("bundled broker listening on {}", broker.local_addr());
        Ok(Self {
            url: broker.amqp_url(),
            bundled: Some(broker),
        })
    }

    /// Shuts the bundled broker down (a broker at `--url` is left running).
    pub(crate) async fn shutdown(self) {
        if let Some(broker) = self.bundled {
            broker.shutdown().await;
        }
    }
}

/// The message an `emit` command sends: its words joined by spaces, or `default` without any.
pub(crate) fn message(words: &[String], default: &str) -> String {
    if words.is_empty() {
        default.to_owned()
    } else {
        words.join(" ")
    }
}
