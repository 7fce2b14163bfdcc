//! What the log examples (`logs_fanout`, `logs_direct`, `logs_topic`: RabbitMQ tutorials 3 to
//! 5) share: a log line is a `String` event; `emit` publishes one, `receive` prints them until
//! Ctrl-C; a demo publishes a few lines and checks that each handler got the ones its binding
//! matches, and no more. The bindings themselves, the heart of each example, stay there.

use std::error::Error;
use std::time::Duration;

use lepus::event::{publish_event, Event};
use lepus::task::Completions;
use lepus::{Client, Connection, Handler, Worker};

/// How long a demo waits for its handlers to get their lines.
const WAIT: Duration = Duration::from_secs(10);

/// The commands of an example that routes log lines by key (`logs_direct`, `logs_topic`); `W`
/// names the example's handlers.
#[derive(clap::Subcommand)]
pub(crate) enum RoutedCommand<W: clap::ValueEnum + Clone + Send + Sync + 'static> {
    /// Publish one log line with a routing key.
    Emit {
        /// The routing key: a severity (`info`, `warning`, `error`) for `logs_direct`,
        /// `<facility>.<severity>` for `logs_topic`.
        routing_key: String,
        /// The message words.
        words: Vec<String>,
    },
    /// Print log lines until Ctrl-C.
    Receive {
        /// Which handler to run.
        which: W,
    },
}

/// The `main` of a routed log example described by `about`: [`super::seed_main`] with the
/// [`RoutedCommand`]s, `emit` publishing as event `E`, `receive` running the handler that
/// `handler` names.
pub(crate) async fn routed_main<E, W>(
    about: &'static str,
    demo: impl AsyncFnOnce(Option<&str>) -> Result<(), Box<dyn Error>>,
    handler: impl FnOnce(W) -> Handler,
) -> Result<(), Box<dyn Error>>
where
    E: Event<Payload = String>,
    W: clap::ValueEnum + Clone + Send + Sync + 'static,
{
    let run = async |conn: &Connection, command| run_routed::<E, W>(conn, command, handler).await;
    super::seed_main::<RoutedCommand<W>>(about, "emit and receive", demo, run).await
}

/// Runs one [`RoutedCommand`]: `emit` publishes as event `E` (the lines are `Hello World!`
/// without words), `receive` runs the handler `handler` names.
async fn run_routed<E, W>(
    conn: &Connection,
    command: RoutedCommand<W>,
    handler: impl FnOnce(W) -> Handler,
) -> Result<(), Box<dyn Error>>
where
    E: Event<Payload = String>,
    W: clap::ValueEnum + Clone + Send + Sync + 'static,
{
    match command {
        RoutedCommand::Emit { routing_key, words } => {
            emit::<E>(conn, &routing_key, &super::message(&words, "Hello World!")).await
        }
        RoutedCommand::Receive { which } => Ok(receive(conn, handler(which)).await?),
    }
}

/// The `emit` command: publishes `line` as event `E` with `routing_key`, on a client of its
/// own.
pub(crate) async fn emit<E: Event<Payload = String>>(
    conn: &Connection,
    routing_key: &str,
    line: &str,
) -> Result<(), Box<dyn Error>> {
    let client = Client::new(conn).await?;
    send_all::<E>(&client, [(routing_key, line)]).await?;
    client.close().await;
    Ok(())
}

/// The `receive` command: serves `handler` until Ctrl-C.
pub(crate) async fn receive(conn: &Connection, handler: Handler) -> lepus::Result<()> {
    super::until_ctrl_c(Worker::new(conn).serve(handler), "logs").await
}

/// Publishes each `(routing key, line)` of `lines` as event `E` (declaring its exchange on first
/// use) and says so.
pub(crate) async fn send_all<'a, E: Event<Payload = String>>(
    client: &Client,
    lines: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> lepus::Result<()> {
    for (routing_key, line) in lines {
        publish_event::<E>(client, routing_key, &line.to_owned()).await?;
        if routing_key.is_empty() {
            println!(" [x] Sent {line:?}");
        } else {
            println!(" [x] Sent {routing_key}: {line:?}");
        }
    }
    Ok(())
}

/// Waits until each handler of `expected` has handled its number of lines, then 100 ms more
/// for any line it should not get: returns how many such lines they got (0 when every binding
/// is right).
pub(crate) async fn lines_beyond(
    expected: &mut [(&mut Completions, usize)],
) -> Result<usize, Box<dyn Error>> {
    for (completions, count) in expected.iter_mut() {
        completions.wait_for(*count, WAIT).await?;
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    Ok(expected
        .iter_mut()
        .map(|(completions, _)| completions.drain().len())
        .sum())
}
