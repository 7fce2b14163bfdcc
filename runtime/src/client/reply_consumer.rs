//! The client's session: one channel that publishes requests and consumes every reply (and a
//! second one, in confirm mode, for task enqueues and event publishes).
//!
//! Per link generation the session task opens a channel and starts ONE reply consumer on it in
//! no-ack mode: on direct reply-to (`amq.rabbitmq.reply-to`, no queue at all) when the broker
//! has it, else on an exclusive, auto-delete, server-named queue. Each reply is matched by
//! `correlation-id` to its waiting call in [`Pending`]. When the consumer ends (the connection
//! or channel died) every call published on it fails with
//! [`Error::ConnectionLost`](crate::Error::ConnectionLost) and the task waits for the next link.
//!
//! Requests are published `mandatory`; a request no queue takes comes back as `basic.return`
//! (312 NO_ROUTE) and its call fails with [`Error::NoRoute`]. Outside confirm mode lapin 4
//! hands returned messages out only through `Channel::wait_for_confirms` (which then returns at
//! once), so the session drains them every [`RETURN_POLL`] while calls are in flight. We chose
//! this over confirm mode, which reports returns on each publish's own confirm but costs a
//! `basic.ack` frame from the broker and a task wake-up per call on the hot path.
//!
//! lapin 4 does not expose the `server-properties` of `connection.start`, so the
//! `direct_reply_to` capability cannot be read; in [`ReplyMode::Auto`] the session probes it
//! instead: `basic.consume` on `amq.rabbitmq.reply-to` succeeds on brokers that offer it and
//! closes the channel with 404 NOT_FOUND on the others, after which a reply queue is used.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use lapin::options::{BasicConsumeOptions, QueueDeclareOptions};
use lapin::types::{FieldTable, ShortString};
use tokio::sync::watch;
use tracing::{debug, info, warn};
use uuid::Uuid;

use crate::client::pending::Pending;
use crate::connection::{Connection, Link};
use crate::error::Error;

/// How often returned requests are collected while calls are in flight: the latency of a
/// [`Error::NoRoute`].
pub(crate) const RETURN_POLL: Duration = Duration::from_millis(10);

/// The pseudo-queue of RabbitMQ's direct reply-to.
pub(crate) const DIRECT_REPLY_TO: &str = "amq.rabbitmq.reply-to";

/// Where replies come back.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ReplyMode {
    /// Direct reply-to when the broker offers it, else a reply queue (the default).
    #[default]
    Auto,
    /// Direct reply-to only (`amq.rabbitmq.reply-to`); fails on brokers without it.
    DirectReplyTo,
    /// An exclusive, auto-delete, server-named reply queue per client session.
    Queue,
}

/// A live session: the channels to publish on and the `reply-to` to put in requests.
#[derive(Debug)]
pub(crate) struct Session {
    /// RPC requests are published here, on the channel that consumes the replies (direct
    /// reply-to requires it); not in confirm mode, so the call path waits for no confirm.
    pub(crate) rpc_channel: lapin::Channel,
    /// A channel in confirm mode for publishes that wait for the broker's confirm (task
    /// enqueues and event publishes).
    pub(crate) channel: lapin::Channel,
    pub(crate) reply_to: ShortString,
    pub(crate) generation: u64,
    /// The connection the channel lives on (to tell a lost connection from a channel error).
    pub(crate) conn: Arc<lapin::Connection>,
}

/// The session state published to callers.
#[derive(Debug, Clone)]
pub(crate) enum SessionState {
    /// Not (yet / any more) connected; calls wait for `Ready` until their deadline.
    Connecting,
    /// Calls publish on this session.
    Ready(Arc<Session>),
    /// The connection was closed; calls fail with `Error::Closed`.
    Closed,
}

/// The session task: (re)builds the session on every link generation until the connection
/// closes. Owned by the [`Client`](crate::Client), which aborts it when dropped.
pub(crate) async fn run(
    conn: Connection,
    mode: ReplyMode,
    pending: Pending,
    state: watch::Sender<SessionState>,
) {
    let mut after = 0;
    loop {
        let link = match conn.link_after(after).await {
            Ok(link) => link,
            Err(_) => {
                state.send_replace(SessionState::Closed);
                pending.fail_all(None, || Error::Closed);
                return;
            }
        };
        match open(&link, mode).await {
            Ok((session, consumer)) => {
                debug!(generation = link.generation, reply_to = %session.reply_to, "client session ready");
                let channel = session.rpc_channel.clone();
                state.send_replace(SessionState::Ready(Arc::new(session)));
                dispatch(consumer, &channel, &pending).await;
                state.send_replace(SessionState::Connecting);
                let failed = pending.fail_all(Some(link.generation), || Error::ConnectionLost);
                // A clean close with nothing in flight is routine; losing calls is not.
                if failed > 0 {
                    warn!(
                        generation = link.generation,
                        failed, "client reply consumer ended; calls in flight failed"
                    );
                } else {
                    debug!(generation = link.generation, "client reply consumer ended");
                }
            }
            Err(err) => {
                warn!(generation = link.generation, cause = %err, "client session setup failed");
            }
        }
        if link.conn.status().connected() {
            // Only the channel died: rebuild on the same connection after a pause.
            tokio::time::sleep(Duration::from_millis(100)).await;
            after = link.generation - 1;
        } else {
            after = link.generation;
        }
    }
}

/// Opens the channel and the reply consumer for one link.
async fn open(link: &Link, mode: ReplyMode) -> Result<(Session, lapin::Consumer), lapin::Error> {
    let no_ack = BasicConsumeOptions {
        no_ack: true,
        ..BasicConsumeOptions::default()
    };
    if mode != ReplyMode::Queue {
        let channel = link.conn.create_channel().await?;
        match channel
            .basic_consume(
                DIRECT_REPLY_TO.into(),
                "".into(),
                no_ack,
                FieldTable::default(),
            )
            .await
        {
            Ok(consumer) => {
                return Ok((
                    Session {
                        rpc_channel: channel,
                        channel: confirm_channel(link).await?,
                        reply_to: DIRECT_REPLY_TO.into(),
                        generation: link.generation,
                        conn: link.conn.clone(),
                    },
                    consumer,
                ))
            }
            Err(err) if mode == ReplyMode::Auto => {
                info!(cause = %err, "broker has no direct reply-to; using a reply queue");
            }
            Err(err) => return Err(err),
        }
    }
    let channel = link.conn.create_channel().await?;
    let queue = channel
        .queue_declare(
            "".into(),
            QueueDeclareOptions {
                exclusive: true,
                auto_delete: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await?;
    let reply_to = queue.name().clone();
    let consumer = channel
        .basic_consume(reply_to.clone(), "".into(), no_ack, FieldTable::default())
        .await?;
    Ok((
        Session {
            rpc_channel: channel,
            channel: confirm_channel(link).await?,
            reply_to,
            generation: link.generation,
            conn: link.conn.clone(),
        },
        consumer,
    ))
}

/// A new channel in confirm mode.
async fn confirm_channel(link: &Link) -> Result<lapin::Channel, lapin::Error> {
    let channel = link.conn.create_channel().await?;
    channel
        .confirm_select(lapin::options::ConfirmSelectOptions::default())
        .await?;
    Ok(channel)
}

/// Hands every reply to its waiting call, and every returned request to its call as
/// `NoRoute`, until the consumer ends.
async fn dispatch(mut consumer: lapin::Consumer, channel: &lapin::Channel, pending: &Pending) {
    let mut returns = tokio::time::interval(RETURN_POLL);
    returns.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let delivery = tokio::select! {
            delivery = consumer.next() => delivery,
            _ = returns.tick() => {
                if pending.len() > 0 {
                    fail_returned(channel, pending).await;
                }
                continue;
            }
        };
        let Some(delivery) = delivery else {
            break;
        };
        let delivery = match delivery {
            Ok(delivery) => delivery,
            Err(err) => {
                debug!(cause = %err, "reply consumer error");
                break;
            }
        };
        let Some(id) = delivery
            .properties
            .correlation_id()
            .as_ref()
            .and_then(|id| Uuid::try_parse(id.as_str()).ok())
        else {
            debug!("reply without a usable correlation-id dropped");
            continue;
        };
        if !pending.complete(&id, Ok(delivery.data)) {
            debug!(correlation_id = %id, "late reply for a call that gave up dropped");
        }
    }
}

/// Fails the calls whose requests the broker returned (`basic.return`).
async fn fail_returned(channel: &lapin::Channel, pending: &Pending) {
    // Not in confirm mode, this waits for nothing: it takes the returned messages.
    let Ok(returned) = channel.wait_for_confirms().await else {
        return;
    };
    for message in returned {
        let properties = &message.delivery.properties;
        let Some(id) = properties
            .correlation_id()
            .as_ref()
            .and_then(|id| Uuid::try_parse(id.as_str()).ok())
        else {
            continue;
        };
        let error = Error::NoRoute {
            queue: message.delivery.routing_key.to_string(),
            reply_code: message.reply_code,
        };
        pending.complete(&id, Err(error));
    }
}
