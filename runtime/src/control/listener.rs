//! The worker's side of the control plane: an exclusive, server-named queue bound to the
//! fanout exchange `lepus.control`, consumed without acks on a channel of its own, through
//! every reconnection, until the worker stops (dropping [`Listener`] aborts it).
//!
//! Each request ([`Request`]) is answered on the default exchange to its `reply_to`, with its
//! `correlation_id`; a request whose `destination` does not name this worker is ignored.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use lapin::options::{BasicConsumeOptions, BasicPublishOptions, QueueBindOptions};
use lapin::types::FieldTable;
use lapin::{BasicProperties, ExchangeKind};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use crate::amqp;
use crate::connection::Connection;
use crate::control::message::{self, Command, Reply, Request};
use crate::control::registry::Registry;
use crate::control::CONTROL_EXCHANGE;
use crate::envelope::CONTENT_TYPE;

/// The listener task of one worker; stopped when dropped (it closes its channel, so the
/// broker deletes the control queue at once rather than with the connection). A worker that
/// shuts down gracefully waits for that close with [`Listener::stop`]: the owner of the
/// connection may close it as soon as the worker returns, and lapin fails a connection whose
/// `channel.close` and `connection.close` are in flight together (it removes the channel twice
/// and logs ERROR "invalid channel: N").
#[derive(Debug)]
pub(crate) struct Listener {
    /// The stop signal; the receiver is the listener task's, which ends when it fires (or
    /// when this is dropped).
    stop: watch::Sender<bool>,
    /// The listener task; awaited by [`Listener::stop`]. Dropping it detaches the task, which
    /// still ends on the stop signal `Drop` sends.
    task: Option<JoinHandle<()>>,
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.stop.send_replace(true);
    }
}

impl Listener {
    /// Starts listening for `registry`'s worker on `conn`.
    pub(crate) fn start(conn: Connection, registry: Arc<Registry>) -> Listener {
        let (stop, stopped) = watch::channel(false);
        let task = tokio::spawn(listen(conn, registry, stopped));
        Listener {
            stop,
            task: Some(task),
        }
    }

    /// Stops the listener and waits, until `deadline` at most, for its task to end: its
    /// channel is closed (`close-ok` received) when this returns in time.
    pub(crate) async fn stop(mut self, deadline: Instant) {
        self.stop.send_replace(true);
        if let Some(task) = self.task.take() {
            let _ = tokio::time::timeout_at(deadline, task).await;
        }
    }
}

/// Declares the control exchange (the same way everywhere).
pub(crate) async fn declare_exchange(channel: &lapin::Channel) -> lapin::Result<()> {
    amqp::declare_durable_exchange(
        channel,
        CONTROL_EXCHANGE,
        ExchangeKind::Fanout,
        FieldTable::default(),
    )
    .await
}

async fn listen(conn: Connection, registry: Arc<Registry>, mut stop: watch::Receiver<bool>) {
    let mut after = 0;
    loop {
        let Some(link) = conn.link_until(after, &mut stop).await else {
            return;
        };
        if let Err(err) = serve(&link.conn, &registry, &mut stop).await {
            debug!(worker = %registry.id, cause = %err, "control listener lost its channel");
        }
        if *stop.borrow() {
            return;
        }
        after = if link.conn.status().connected() {
            tokio::time::sleep(Duration::from_millis(500)).await;
            link.generation - 1
        } else {
            link.generation
        };
    }
}

/// Declares an exclusive, server-named queue on `channel` and consumes it without acks (the
/// worker's control queue, a client's answer queue); returns the queue's name and consumer.
pub(crate) async fn private_queue(
    channel: &lapin::Channel,
) -> lapin::Result<(lapin::types::ShortString, lapin::Consumer)> {
    let queue = crate::client::exclusive_queue(channel).await?;
    let consumer = channel
        .basic_consume(
            queue.clone(),
            "".into(),
            BasicConsumeOptions {
                no_ack: true,
                exclusive: true,
                ..BasicConsumeOptions::default()
            },
            FieldTable::default(),
        )
        .await?;
    Ok((queue, consumer))
}

/// Listens on one connection until its channel fails or the stop signal.
async fn serve(
    conn: &lapin::Connection,
    registry: &Registry,
    stop: &mut watch::Receiver<bool>,
) -> lapin::Result<()> {
    let channel = conn.create_channel().await?;
    let served = answer_all(&channel, registry, stop).await;
    if channel.status().connected() {
        let _ = channel.close(200, "worker stopped".into()).await;
    }
    served
}

/// Declares the control queue and answers requests until the channel fails or the stop signal.
async fn answer_all(
    channel: &lapin::Channel,
    registry: &Registry,
    stop: &mut watch::Receiver<bool>,
) -> lapin::Result<()> {
    declare_exchange(channel).await?;
    let (queue, mut consumer) = private_queue(channel).await?;
    channel
        .queue_bind(
            queue.clone(),
            CONTROL_EXCHANGE.into(),
            "".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await?;
    debug!(worker = %registry.id, "control listener consuming");
    loop {
        let delivery = tokio::select! {
            next = consumer.next() => match next {
                Some(delivery) => delivery?,
                None => return Ok(()),
            },
            _ = stop.wait_for(|stop| *stop) => return Ok(()),
        };
        let request = match message::decode::<Request>(&delivery.data) {
            Ok(request) => request,
            Err(err) => {
                warn!(worker = %registry.id, cause = %err, "undecodable control request ignored");
                continue;
            }
        };
        if let Some(destination) = &request.destination {
            if !destination.contains(&registry.id) {
                continue;
            }
        }
        let reply = answer(registry, request.command);
        let Some(reply_to) = delivery.properties.reply_to().clone() else {
            continue;
        };
        let body = match message::encode(&reply) {
            Ok(body) => body,
            Err(err) => {
                warn!(cause = %err, "cannot encode a control reply");
                continue;
            }
        };
        let mut properties = BasicProperties::default().with_content_type(CONTENT_TYPE.into());
        if let Some(correlation_id) = delivery.properties.correlation_id().clone() {
            properties = properties.with_correlation_id(correlation_id);
        }
        // No confirm: a client that is gone loses nothing.
        channel
            .basic_publish(
                "".into(),
                reply_to.as_str().into(),
                BasicPublishOptions::default(),
                &body,
                properties,
            )
            .await?;
    }
}

/// Acts on one command and says what to answer.
fn answer(registry: &Registry, command: Command) -> Reply {
    let worker = registry.id.clone();
    match command {
        Command::Ping => Reply::Pong { worker },
        Command::Inspect => Reply::Info(registry.info()),
        Command::Revoke(revocation) => {
            let found = registry.revoke(&revocation);
            info!(worker = %registry.id, task_id = %revocation.task_id, running = found.running, cancelled = found.cancelled, "task revoked");
            Reply::Revoked {
                worker,
                cancelled: found.cancelled,
                running: found.running,
            }
        }
        Command::Shutdown => {
            info!(worker = %registry.id, "shutdown asked over the control plane");
            registry.request_shutdown();
            Reply::ShuttingDown { worker }
        }
    }
}
