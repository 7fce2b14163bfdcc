//! `lepus`: the operator's command-line tool for a Lepus deployment, on any broker (the bundled
//! one or RabbitMQ).
//!
//! ```text
//! lepus --url amqp://guest:guest@127.0.0.1:5672/%2f workers          # a table of the workers
//! lepus inspect [WORKER..]                                           # what each one runs
//! lepus ping                                                         # who answers
//! lepus revoke TASK_ID.. [--keep 1d]                                  # never run (or stop) a task
//! lepus shutdown WORKER.. | --all                                     # drain workers gracefully
//! lepus dead-letters list|show|requeue|purge QUEUE ..                 # failed tasks
//! ```
//!
//! The broker URL comes from `--url` or `LEPUS_URL`. Workers are reached over the control
//! plane (`lepus::control`): the tool broadcasts a command and gathers the answers for
//! `--wait` (default 1 s). Install with `cargo install --path cli`.

mod duration;
mod output;

use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use lepus::control::{Control, Reply};
use lepus::task::DeadLetters;

#[derive(Parser)]
#[command(
    name = "lepus",
    version,
    about = "Inspect and steer Lepus workers, revoke tasks, manage dead letters",
    long_about = "Inspect and steer Lepus workers, revoke tasks, manage dead letters.\n\n\
                  Workers answer over the broker's control plane (the fanout exchange \
                  lepus.control); the tool gathers their answers for --wait."
)]
struct Cli {
    /// Broker URL, e.g. amqp://guest:guest@127.0.0.1:5672/%2f
    #[arg(long, env = "LEPUS_URL", hide_env_values = true, global = true)]
    url: Option<String>,
    /// How long to gather the workers' answers (e.g. 500ms, 2s).
    #[arg(long, default_value = "1s", value_parser = duration::parse, global = true)]
    wait: Duration,
    /// Print JSON instead of a table (workers, inspect, ping).
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// List the running workers: one line each (id, host, pid, uptime, concurrency, running
    /// tasks, counts by outcome).
    Workers,
    /// Show what each worker serves and runs now (task ids and start times), in full.
    Inspect {
        /// Only these workers (ids as `lepus workers` prints them); all when omitted.
        workers: Vec<String>,
    },
    /// Print the ids of the workers that answer.
    Ping,
    /// Revoke tasks: no worker runs them (workers started later included) until --keep has
    /// passed; a running task that opted in (`cancellable`) is stopped and ends as revoked.
    Revoke {
        /// The task ids (the `message_id` returned by enqueue).
        #[arg(required = true)]
        task_ids: Vec<String>,
        /// How long the revocation is kept (e.g. 30m, 1d).
        #[arg(long, default_value = "1d", value_parser = duration::parse)]
        keep: Duration,
    },
    /// Ask workers to stop taking work and drain gracefully (running tasks finish).
    Shutdown {
        /// The workers to stop (ids as `lepus workers` prints them).
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        workers: Vec<String>,
        /// Stop every worker on the broker.
        #[arg(long)]
        all: bool,
    },
    /// List, show, requeue or purge the dead letters of a task queue (`<queue>.dead`).
    #[command(subcommand)]
    DeadLetters(DeadLettersCommand),
}

#[derive(Subcommand)]
enum DeadLettersCommand {
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
    /// Send one dead letter (or all) back to its task queue, with a fresh attempt count.
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

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("error")),
        )
        .init();
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("lepus: cannot start the runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("lepus: {err}");
            ExitCode::FAILURE
        }
    }
}

type Failed = Box<dyn std::error::Error>;

async fn run(cli: Cli) -> Result<(), Failed> {
    let Some(url) = cli.url else {
        return Err("no broker: give --url or set LEPUS_URL".into());
    };
    // No startup wait: an operator wants to hear at once that the broker is not there.
    let conn = lepus::ConnectOptions::new(url)
        .connection_name("lepus cli")
        .startup_wait(Duration::ZERO)
        .connect()
        .await?;
    let result = command(&conn, cli.command, cli.wait, cli.json).await;
    conn.close().await;
    result
}

async fn command(
    conn: &lepus::Connection,
    command: Command,
    wait: Duration,
    json: bool,
) -> Result<(), Failed> {
    let control = Control::new(conn).wait(wait);
    match command {
        Command::Workers => {
            let infos = control.inspect(None).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&infos)?);
            } else {
                output::workers_table(&infos);
            }
        }
        Command::Inspect { workers } => {
            let named = (!workers.is_empty()).then_some(workers.as_slice());
            let infos = control.inspect(named).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&infos)?);
            } else {
                output::inspect(&infos);
            }
            if let Some(named) = named {
                let missing: Vec<&String> = named
                    .iter()
                    .filter(|id| !infos.iter().any(|info| &info.worker == *id))
                    .collect();
                if !missing.is_empty() {
                    return Err(format!("no answer from {missing:?}").into());
                }
            }
        }
        Command::Ping => {
            let ids = control.ping().await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&ids)?);
            } else {
                for id in &ids {
                    println!("{id}: pong");
                }
                println!("({} workers)", ids.len());
            }
        }
        Command::Revoke { task_ids, keep } => {
            for id in task_ids {
                let replies = control.revoke(&id, keep).await?;
                let cancelled = replies
                    .iter()
                    .filter(|r| {
                        matches!(
                            r,
                            Reply::Revoked {
                                cancelled: true,
                                ..
                            }
                        )
                    })
                    .count();
                let running = replies
                    .iter()
                    .filter(|r| {
                        matches!(
                            r,
                            Reply::Revoked {
                                running: true,
                                cancelled: false,
                                ..
                            }
                        )
                    })
                    .count();
                print!(
                    "revoked {id} for {} ({} workers told",
                    duration::format(keep),
                    replies.len()
                );
                if cancelled > 0 {
                    print!("; cancelled where it ran");
                }
                if running > 0 {
                    print!("; still running on {running} worker(s): not cancellable");
                }
                println!(")");
            }
        }
        Command::Shutdown { workers, all } => {
            let named = (!all).then_some(workers.as_slice());
            let stopped = control.shutdown(named).await?;
            for id in &stopped {
                println!("{id}: shutting down");
            }
            println!("({} workers shutting down)", stopped.len());
            if let Some(named) = named {
                let missing: Vec<&String> =
                    named.iter().filter(|id| !stopped.contains(id)).collect();
                if !missing.is_empty() {
                    return Err(format!("no answer from {missing:?}").into());
                }
            }
        }
        Command::DeadLetters(command) => dead_letters(conn, command).await?,
    }
    Ok(())
}

async fn dead_letters(conn: &lepus::Connection, command: DeadLettersCommand) -> Result<(), Failed> {
    match command {
        DeadLettersCommand::List { queue, limit } => {
            let letters = DeadLetters::new(conn, queue).list(limit).await?;
            output::dead_letter_list(&letters);
        }
        DeadLettersCommand::Show { queue, message_id } => {
            match DeadLetters::new(conn, queue).show(&message_id).await? {
                Some(letter) => output::dead_letter(&letter),
                None => return Err(format!("no dead letter {message_id}").into()),
            }
        }
        DeadLettersCommand::Requeue { queue, message_id } => {
            let n = DeadLetters::new(conn, queue)
                .requeue(message_id.as_deref())
                .await?;
            if n == 0 {
                if let Some(id) = message_id {
                    return Err(format!("no dead letter {id}").into());
                }
            }
            println!("requeued {n}");
        }
        DeadLettersCommand::Purge { queue } => {
            let n = DeadLetters::new(conn, queue).purge().await?;
            println!("purged {n}");
        }
    }
    Ok(())
}
