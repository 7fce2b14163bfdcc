//! The seed's work queue (RabbitMQ tutorial 2, `new_task.py` / `worker.py`) as a Lepus task.
//!
//! `#[lepus::task]` gives a durable queue, persistent messages and confirmed enqueues; the
//! workers take one task at a time (`prefetch(1)`: fair dispatch) and ack after the work, so a
//! worker that dies hands its task to another. Each dot in a message is 100 ms of work.
//!
//! ```text
//! cargo run --example task_queue                              # whole flow on an in-process broker
//! cargo run --example task_queue -- --url amqp://guest:guest@127.0.0.1:5672/%2f     # same, on RabbitMQ
//! cargo run --example task_queue -- --url URL worker          # a worker, until Ctrl-C
//! cargo run --example task_queue -- --url URL new-task Hello world....
//! ```

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use clap::Subcommand;
use lepus::task::Outcome;
use lepus::{Connection, Worker};

/// Does the "work": sleeps 100 ms per dot in the message.
#[lepus::task(queue = "task_queue", retries = 2, backoff = "200ms..1s")]
async fn work(message: String) {
    println!(" [x] Received {message:?}");
    let dots = message.chars().filter(|c| *c == '.').count() as u64;
    tokio::time::sleep(Duration::from_millis(100 * dots)).await;
    println!(" [x] Done {message:?}");
}

#[derive(Subcommand)]
enum Command {
    /// Enqueue one task (its words joined by spaces).
    NewTask {
        /// The message; each dot is 100 ms of work.
        words: Vec<String>,
    },
    /// Run a worker until Ctrl-C.
    Worker,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let about = "Work queue: durable queue, persistent tasks, fair dispatch";
    common::seed_main(about, "new-task and worker", demo, run).await
}

/// One command, on the broker at `--url`.
async fn run(conn: &Connection, command: Command) -> Result<(), Box<dyn std::error::Error>> {
    match command {
        Command::NewTask { words } => {
            let message = common::message(&words, "Hello World!");
            let client = lepus::Client::new(conn).await?;
            let id = work::enqueue(&client, message.clone()).await?;
            println!(" [x] Sent {message:?} (task {id}, confirmed by the broker)");
        }
        Command::Worker => {
            let worker = Worker::new(conn).prefetch(1).serve(work::handler());
            common::until_ctrl_c(worker, "tasks").await?;
        }
    }
    Ok(())
}

/// Two workers with prefetch 1, one long task and several short ones: the long one keeps one
/// worker busy while the other takes every short task (fair dispatch, not round-robin).
async fn demo(url: Option<&str>) -> Result<(), Box<dyn std::error::Error>> {
    let mut bed = common::demo_bed(url).await?;
    let mut workers = Vec::new();
    for name in ["worker 1", "worker 2"] {
        workers.push((name, bed.serve(work::handler()).await?));
    }
    let messages = [
        "A long task...................",
        "First message.",
        "Second message..",
        "Third message...",
        "Fourth message....",
        "Fifth message.....",
    ];
    let mut text_of = BTreeMap::new();
    for message in messages {
        let id = work::enqueue(bed.client(), message.to_owned()).await?;
        println!(" [x] Sent {message:?} (confirmed)");
        text_of.insert(id.0, message);
        // Let the first task reach a worker before the others are queued.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut done = 0;
    let mut by_worker: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    while done < messages.len() {
        for (name, completions) in &mut workers {
            for completion in completions.drain() {
                if completion.outcome == Outcome::Succeeded {
                    done += 1;
                    let text = completion
                        .message_id
                        .as_ref()
                        .and_then(|id| text_of.get(id))
                        .copied()
                        .unwrap_or("?");
                    by_worker.entry(name).or_default().push(text);
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    println!("\nfair dispatch (prefetch 1):");
    for (name, texts) in &by_worker {
        println!("  {name}: {texts:?}");
    }
    bed.stop().await;
    Ok(())
}
