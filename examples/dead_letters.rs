//! Dead letters: tasks that failed their last attempt wait in `<queue>.dead` with their error,
//! attempt count and timestamps in headers. This demo fills `emails.dead`, then does what the
//! `lepus` tool's `dead-letters` verbs do (`lepus::task::DeadLetters`): lists them, shows one,
//! requeues one and then the rest to the task queue with a fresh attempt count.
//!
//! ```text
//! cargo run --example dead_letters                    # the demo, in-process broker
//! cargo run --example dead_letters -- --url URL       # same, on any broker
//! lepus --url URL dead-letters list emails.dead       # the operator's tool (cargo install --path cli)
//! lepus --url URL dead-letters show emails.dead <message_id>
//! lepus --url URL dead-letters requeue emails.dead [<message_id>]
//! lepus --url URL dead-letters purge emails.dead
//! ```

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use lepus::task::{DeadLetter, DeadLetters, Outcome};
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
#[command(about = "Dead letters: fill a dead-letter queue, list, show and requeue (demo)")]
struct Cli {
    #[command(flatten)]
    broker: common::DemoUrl,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    common::init_tracing("warn");
    let cli = Cli::parse();
    demo(cli.broker.url.as_deref()).await
}

/// One line per dead letter: what `lepus dead-letters list` prints in a table.
fn print_list(letters: &[DeadLetter]) {
    for letter in letters {
        let id = letter.message_id.as_deref().unwrap_or("-");
        let error = letter.error.as_deref().unwrap_or("-");
        println!("{id}  {} attempts  {error}", letter.attempts);
    }
}

/// The failure record of one dead letter (`lepus dead-letters show` prints all of it).
fn print_one(letter: &DeadLetter) {
    let origin = letter.origin_queue.as_deref().unwrap_or("-");
    let error = letter.error.as_deref().unwrap_or("-");
    println!("from {origin} after {} attempts: {error}", letter.attempts);
}

/// Three emails fail (SMTP down) and end up dead; list them, show one, bring SMTP up, requeue
/// one and then the rest, and watch them succeed.
async fn demo(url: Option<&str>) -> Result<(), Box<dyn std::error::Error>> {
    let mut bed = common::demo_bed(url).await?;
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
    println!("\n$ lepus dead-letters list emails.dead");
    print_list(&dead.list(100).await?);
    println!("\n$ lepus dead-letters show emails.dead {}", ids[0]);
    match dead.show(&ids[0].0).await? {
        Some(letter) => print_one(&letter),
        None => return Err("the dead letter is missing".into()),
    }
    smtp.up.store(true, Ordering::SeqCst);
    println!(
        "\n(the SMTP server is back)\n$ lepus dead-letters requeue emails.dead {}",
        ids[0]
    );
    println!("requeued {}", dead.requeue(Some(&ids[0].0)).await?);
    done.wait_until(Duration::from_secs(10), |c| c.outcome == Outcome::Succeeded)
        .await?;
    println!("\n$ lepus dead-letters requeue emails.dead");
    println!("requeued {}", dead.requeue(None).await?);
    done.wait_for(2, Duration::from_secs(10)).await?;
    let left = dead.list(100).await?.len();
    println!("\n{left} dead letters left");
    common::finish(bed, left == 0, "dead letters left behind").await
}
