//! The seed's topics (RabbitMQ tutorial 5, `emit_log_topic.py` / `receive_logs_topic.py`): a
//! topic exchange `topic_logs` with `<facility>.<severity>` routing keys; bindings match words
//! (`*` exactly one, `#` zero or more).
//!
//! ```text
//! cargo run --example logs_topic                                  # whole flow, in-process broker
//! cargo run --example logs_topic -- --url URL                     # same, on any broker
//! cargo run --example logs_topic -- --url URL receive kern        # kern.* ; or critical, all
//! cargo run --example logs_topic -- --url URL emit kern.critical "A critical kernel error"
//! ```

mod common;

use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use lepus::{Connection, Worker};

/// Everything from the kernel: `kern.*`.
#[lepus::event(
    exchange = "topic_logs",
    kind = "topic",
    binding = "kern.*",
    delivery = "broadcast"
)]
async fn kernel(ctx: lepus::Context, line: String) {
    let key = ctx.routing_key().unwrap_or_default();
    println!(" [kern.*] {key}: {line}");
}

/// Critical messages from anywhere: `*.critical`.
#[lepus::event(
    exchange = "topic_logs",
    kind = "topic",
    binding = "*.critical",
    delivery = "broadcast"
)]
async fn critical(ctx: lepus::Context, line: String) {
    let key = ctx.routing_key().unwrap_or_default();
    println!(" [*.critical] {key}: {line}");
}

/// Everything: `#`.
#[lepus::event(
    exchange = "topic_logs",
    kind = "topic",
    binding = "#",
    delivery = "broadcast"
)]
async fn everything(ctx: lepus::Context, line: String) {
    let key = ctx.routing_key().unwrap_or_default();
    println!(" [#] {key}: {line}");
}

#[derive(Parser)]
#[command(about = "Topic logs: routing by pattern")]
struct Cli {
    #[command(flatten)]
    broker: common::DemoUrl,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Clone, Copy, ValueEnum)]
enum Which {
    /// `kern.*`
    Kern,
    /// `*.critical`
    Critical,
    /// `#`
    All,
}

#[derive(Subcommand)]
enum Command {
    /// Publish one log line with a routing key such as `kern.critical`.
    Emit {
        /// `<facility>.<severity>`.
        routing_key: String,
        /// The message words.
        words: Vec<String>,
    },
    /// Print matching log lines until Ctrl-C.
    Receive {
        /// Which binding to listen with.
        which: Which,
    },
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    common::init_tracing("warn");
    let cli = Cli::parse();
    common::demo_or_command(cli.broker.url, cli.command, "emit and receive", demo, run).await
}

/// One command, on the broker at `--url`.
async fn run(conn: &Connection, command: Command) -> Result<(), Box<dyn std::error::Error>> {
    match command {
        Command::Emit { routing_key, words } => {
            let line = common::message(&words, "Hello World!");
            let client = lepus::Client::new(conn).await?;
            everything::publish(&client, &routing_key, &line).await?;
            println!(" [x] Sent {routing_key}: {line:?}");
        }
        Command::Receive { which } => {
            let handler = match which {
                Which::Kern => kernel::handler(),
                Which::Critical => critical::handler(),
                Which::All => everything::handler(),
            };
            common::until_ctrl_c(Worker::new(conn).serve(handler), "logs").await?;
        }
    }
    Ok(())
}

/// Four keys, three bindings: who gets what follows the patterns.
async fn demo(url: Option<&str>) -> Result<(), Box<dyn std::error::Error>> {
    let mut bed = common::demo_bed(url).await?;
    let mut kern = bed.serve(kernel::handler()).await?;
    let mut crit = bed.serve(critical::handler()).await?;
    let mut all = bed.serve(everything::handler()).await?;
    let lines = [
        ("kern.critical", "A critical kernel error"),
        ("kern.info", "kernel booted"),
        ("cron.critical", "cron died"),
        ("app.audit.login", "user logged in"),
    ];
    for (key, line) in lines {
        everything::publish(bed.client(), key, &line.to_owned()).await?;
        println!(" [x] Sent {key}: {line:?}");
    }
    // kern.* matches 2, *.critical 2, # all 4.
    kern.wait_for(2, Duration::from_secs(10)).await?;
    crit.wait_for(2, Duration::from_secs(10)).await?;
    all.wait_for(4, Duration::from_secs(10)).await?;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let extra = kern.drain().len() + crit.drain().len() + all.drain().len();
    println!("kern.* got 2, *.critical got 2, # got 4");
    let failure = "a handler received a line its binding does not match";
    common::finish(bed, extra == 0, failure).await
}
