//! The seed's publish/subscribe (RabbitMQ tutorial 3, `emit_log.py` / `receive_logs.py`): a
//! fanout exchange `logs`, and receivers that each get every message through a queue of their
//! own (`delivery = "broadcast"`: an exclusive, auto-delete queue per running instance).
//!
//! ```text
//! cargo run --example logs_fanout                      # whole flow on an in-process broker
//! cargo run --example logs_fanout -- --url URL         # same, on any broker
//! cargo run --example logs_fanout -- --url URL receive # a receiver, until Ctrl-C
//! cargo run --example logs_fanout -- --url URL emit info: Hello World!
//! ```

mod common;

use std::time::Duration;

use clap::Subcommand;
use common::logs;
use lepus::Connection;

/// Prints every log line published to `logs`.
#[lepus::event(exchange = "logs", kind = "fanout", delivery = "broadcast")]
async fn receive_log(line: String) {
    println!(" [x] {line}");
}

#[derive(Subcommand)]
enum Command {
    /// Publish one log line.
    Emit {
        /// The message words.
        words: Vec<String>,
    },
    /// Print log lines until Ctrl-C.
    Receive,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let about = "Fanout logs: every receiver gets every message";
    common::seed_main(about, "emit and receive", demo, run).await
}

/// One command, on the broker at `--url`.
async fn run(conn: &Connection, command: Command) -> Result<(), Box<dyn std::error::Error>> {
    match command {
        Command::Emit { words } => {
            let line = common::message(&words, "info: Hello World!");
            logs::emit::<receive_log>(conn, "", &line).await?;
        }
        Command::Receive => logs::receive(conn, receive_log::handler()).await?,
    }
    Ok(())
}

/// Two receivers, three lines: each receiver prints all three.
async fn demo(url: Option<&str>) -> Result<(), Box<dyn std::error::Error>> {
    let mut bed = common::demo_bed(url).await?;
    let mut receivers = vec![
        ("receiver 1", bed.serve(receive_log::handler()).await?),
        ("receiver 2", bed.serve(receive_log::handler()).await?),
    ];
    let lines = [
        "info: service started",
        "warning: disk 80% full",
        "error: disk full",
    ];
    logs::send_all::<receive_log>(bed.client(), lines.map(|line| ("", line))).await?;
    for (name, completions) in &mut receivers {
        completions
            .wait_for(lines.len(), Duration::from_secs(10))
            .await?;
        println!("{name} received all {} lines", lines.len());
    }
    bed.stop().await;
    Ok(())
}
