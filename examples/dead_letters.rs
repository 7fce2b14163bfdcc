//! Dead letters: tasks that failed their last attempt wait in `<queue>.dead` with their error,
//! attempt count and timestamps in headers. This tool lists them, shows one, requeues one (or
//! all) to its task queue with a fresh attempt count, or purges the queue.
//!
//! ```text
//! cargo run --example dead_letters                                   # whole flow, in-process broker
//! cargo run --example dead_letters -- --url URL                      # same, on any broker
//! cargo run --example dead_letters -- --url URL list emails.dead
//! cargo run --example dead_letters -- --url URL show emails.dead <message_id>
//! cargo run --example dead_letters -- --url URL requeue emails.dead [<message_id>]
//! cargo run --example dead_letters -- --url URL purge emails.dead
//! ```

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, Subcommand};
use lepus::task::{DeadLetter, DeadLetters, Outcome};
use lepus::testing::TestBed;
use lepus::State;

/// The "SMTP server": whether it is up (the demo turns it on before requeueing). The task's
/// state, given to its handler when the worker is built.
#[derive(Clone, Default)]
struct Smtp {
    up: Arc<AtomicBool>,
}

/// Fails while the SMTP server is down: two quick retries, then the dead-letter queue.
#[lepus::task(queue = "emails", retries = 2, backoff = "50ms..100ms")]
async fn send_email(State(smtp): State<Smtp>, to: String, subject: String) -> Result<(), String> {
    if smtp.up.load(Ordering::SeqCst) {
        println!(" [x] sent {subject:?} to {to}");
        Ok(())
    } else {
        Err(format!("smtp: connection refused while sending to {to}"))
    }
}

#[derive(Parser)]
#[command(about = "List, show and requeue dead-lettered tasks")]
struct Cli {
    /// Broker URL; without it the demo runs on an in-process bundled broker.
    #[arg(long, env = "LEPUS_URL", hide_env_values = true)]
    url: Option<String>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// List the dead letters in a queue (they stay there).
    List {
        /// The dead-letter queue, e.g. `emails.dead`.
        queue: String,
        /// At most this many.
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// Show one dead letter in full.
    Show {
        /// The dead-letter queue.
        queue: String,
        /// The task's message_id.
        message_id: String,
    },
    /// Send one dead letter (or all) back to its task queue.
    Requeue {
        /// The dead-letter queue.
        queue: String,
        /// The task's message_id; all when omitted.
        message_id: Option<String>,
    },
    /// Delete every dead letter in the queue.
    Purge {
        /// The dead-letter queue.
        queue: String,
    },
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
    let cli = Cli::parse();
    match (cli.command, cli.url) {
        (None, url) => demo(url.as_deref()).await,
        (Some(command), Some(url)) => {
            let conn = lepus::connect(&url).await?;
            let result = run(&conn, command).await;
            conn.close().await;
            result
        }
        (Some(_), None) => Err("list, show, requeue and purge need --url (or LEPUS_URL)".into()),
    }
}

async fn run(conn: &lepus::Connection, command: Command) -> Result<(), Box<dyn std::error::Error>> {
    match command {
        Command::List { queue, limit } => {
            let letters = DeadLetters::new(conn, queue).list(limit).await?;
            print_list(&letters);
        }
        Command::Show { queue, message_id } => {
            match DeadLetters::new(conn, queue).show(&message_id).await? {
                Some(letter) => print_one(&letter),
                None => return Err(format!("no dead letter {message_id}").into()),
            }
        }
        Command::Requeue { queue, message_id } => {
            let n = DeadLetters::new(conn, queue)
                .requeue(message_id.as_deref())
                .await?;
            println!("requeued {n}");
        }
        Command::Purge { queue } => {
            let n = DeadLetters::new(conn, queue).purge().await?;
            println!("purged {n}");
        }
    }
    Ok(())
}

fn print_list(letters: &[DeadLetter]) {
    println!(
        "{:<34} {:<12} {:>8}  error",
        "message_id", "task", "attempts"
    );
    for letter in letters {
        println!(
            "{:<34} {:<12} {:>8}  {}",
            letter.message_id.as_deref().unwrap_or("-"),
            letter.task.as_deref().unwrap_or("-"),
            letter.attempts,
            letter.error.as_deref().unwrap_or("-"),
        );
    }
    println!("({} dead letters)", letters.len());
}

fn print_one(letter: &DeadLetter) {
    println!(
        "message_id:   {}",
        letter.message_id.as_deref().unwrap_or("-")
    );
    println!("task:         {}", letter.task.as_deref().unwrap_or("-"));
    println!(
        "origin queue: {}",
        letter.origin_queue.as_deref().unwrap_or("-")
    );
    println!("attempts:     {}", letter.attempts);
    println!("error:        {}", letter.error.as_deref().unwrap_or("-"));
    println!("enqueued at:  {} (Unix ms)", fmt_ms(letter.enqueued_at_ms));
    println!(
        "first failed: {} (Unix ms)",
        fmt_ms(letter.first_failed_at_ms)
    );
    println!(
        "last failed:  {} (Unix ms)",
        fmt_ms(letter.last_failed_at_ms)
    );
    let hex: String = letter.body.iter().map(|b| format!("{b:02x} ")).collect();
    println!(
        "arguments:    {} bytes of MessagePack: {}",
        letter.body.len(),
        hex.trim_end()
    );
}

fn fmt_ms(ms: Option<i64>) -> String {
    ms.map_or_else(|| "-".to_owned(), |ms| ms.to_string())
}

/// Three emails fail (SMTP down) and end up dead; list them, show one, bring SMTP up, requeue
/// one and then the rest, and watch them succeed.
async fn demo(url: Option<&str>) -> Result<(), Box<dyn std::error::Error>> {
    let mut bed = match url {
        Some(url) => TestBed::external(url, "").await?,
        None => TestBed::start().await?,
    };
    println!("broker: {}", bed.url());
    let dead = DeadLetters::new(bed.conn(), "emails.dead");
    let smtp = Smtp::default();
    let mut done = bed.serve(send_email::handler().state(smtp.clone())).await?;
    dead.purge().await?;
    let mut ids = Vec::new();
    for to in ["ann@example.com", "bob@example.com", "cy@example.com"] {
        ids.push(send_email::enqueue(bed.client(), to.into(), "Welcome".into()).await?);
    }
    println!("enqueued 3 emails; the SMTP server is down, each is tried 3 times");
    let mut dead_count = 0;
    while dead_count < ids.len() {
        let completion = done.next_within(Duration::from_secs(10)).await?;
        match completion.outcome {
            Outcome::Retrying { delay, .. } => println!(
                " [!] attempt {} of {} failed; retry in {delay:?}",
                completion.attempt,
                completion.message_id.as_deref().unwrap_or("-")
            ),
            Outcome::DeadLettered { .. } => dead_count += 1,
            other => return Err(format!("unexpected {other:?}").into()),
        }
    }
    println!("\n$ dead_letters list emails.dead");
    print_list(&dead.list(100).await?);
    println!("\n$ dead_letters show emails.dead {}", ids[0]);
    match dead.show(&ids[0].0).await? {
        Some(letter) => print_one(&letter),
        None => return Err("the dead letter is missing".into()),
    }
    smtp.up.store(true, Ordering::SeqCst);
    println!(
        "\n(the SMTP server is back)\n$ dead_letters requeue emails.dead {}",
        ids[0]
    );
    println!("requeued {}", dead.requeue(Some(&ids[0].0)).await?);
    done.wait_until(Duration::from_secs(10), |c| c.outcome == Outcome::Succeeded)
        .await?;
    println!("\n$ dead_letters requeue emails.dead");
    println!("requeued {}", dead.requeue(None).await?);
    done.wait_for(2, Duration::from_secs(10)).await?;
    let left = dead.list(100).await?.len();
    println!("\n{left} dead letters left");
    bed.stop().await;
    if left == 0 {
        Ok(())
    } else {
        Err("dead letters left behind".into())
    }
}
