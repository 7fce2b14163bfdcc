//! The seed's routing (RabbitMQ tutorial 4, `emit_log_direct.py` /
//! `receive_logs_direct.py`): a direct exchange `direct_logs`; a message goes to the handlers
//! bound with its severity. Here one handler keeps errors only, another prints every severity.
//!
//! ```text
//! cargo run --example logs_direct                              # whole flow, in-process broker
//! cargo run --example logs_direct -- --url URL                 # same, on any broker
//! cargo run --example logs_direct -- --url URL receive errors  # or: receive all
//! cargo run --example logs_direct -- --url URL emit error "Run. Run. Or it will explode."
//! ```

mod common;

use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use lepus::{Connection, Worker};

/// Keeps errors only (`binding = "error"`).
#[lepus::event(
    exchange = "direct_logs",
    kind = "direct",
    binding = "error",
    delivery = "broadcast"
)]
async fn save_errors(line: String) {
    println!(" [errors] {line}");
}

/// Prints every severity (three bindings on one queue).
#[lepus::event(
    exchange = "direct_logs",
    kind = "direct",
    binding = ["info", "warning", "error"],
    delivery = "broadcast"
)]
async fn print_all(ctx: lepus::Context, line: String) {
    // The event's context: its routing key is the severity.
    let severity = ctx.routing_key().unwrap_or_default();
    println!(" [all] {severity}: {line}");
}

#[derive(Parser)]
#[command(about = "Direct logs: routing by severity")]
struct Cli {
    #[command(flatten)]
    broker: common::DemoUrl,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Clone, Copy, ValueEnum)]
enum Which {
    /// Errors only.
    Errors,
    /// Info, warning and error.
    All,
}

#[derive(Subcommand)]
enum Command {
    /// Publish one log line with a severity.
    Emit {
        /// info, warning or error.
        severity: String,
        /// The message words.
        words: Vec<String>,
    },
    /// Print log lines until Ctrl-C.
    Receive {
        /// Which handler to run.
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
        Command::Emit { severity, words } => {
            let line = common::message(&words, "Hello World!");
            let client = lepus::Client::new(conn).await?;
            print_all::publish(&client, &severity, &line).await?;
            println!(" [x] Sent {severity}: {line:?}");
        }
        Command::Receive { which } => {
            let handler = match which {
                Which::Errors => save_errors::handler(),
                Which::All => print_all::handler(),
            };
            common::until_ctrl_c(Worker::new(conn).serve(handler), "logs").await?;
        }
    }
    Ok(())
}

/// Four lines of three severities: `save_errors` gets the two errors, `print_all` all four.
async fn demo(url: Option<&str>) -> Result<(), Box<dyn std::error::Error>> {
    let mut bed = common::demo_bed(url).await?;
    let mut errors = bed.serve(save_errors::handler()).await?;
    let mut all = bed.serve(print_all::handler()).await?;
    let lines = [
        ("info", "service started"),
        ("error", "disk full"),
        ("warning", "slow response"),
        ("error", "out of memory"),
    ];
    for (severity, line) in lines {
        lepus::publish(bed.client(), "direct_logs", severity, &line).await?;
        println!(" [x] Sent {severity}: {line:?}");
    }
    all.wait_for(4, Duration::from_secs(10)).await?;
    errors.wait_for(2, Duration::from_secs(10)).await?;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let extra = errors.drain().len();
    println!(
        "print_all got 4 lines; save_errors got {} errors",
        2 + extra
    );
    common::finish(bed, extra == 0, "save_errors received a non-error line").await
}
