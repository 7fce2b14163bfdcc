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
//! Requests go to the exchange `lepus.rpc`, whose alternate exchange `lepus.rpc.unrouted`
//! routes a request no queue takes to the bounce queue of its caller (bound by the
//! `x-lepus-caller` header, see `envelope`): the session consumes its bounce queue (the reply
//! queue itself in [`ReplyMode::Queue`], an exclusive queue of its own with direct reply-to)
//! and fails such a call with [`Error::NoRoute`] as soon as it comes back. It is not done with
//! `mandatory` and `basic.return`: lapin logs every returned message at WARN with its payload,
//! and an unserved service is a normal condition, not a warning.
//!
//! lapin 4 does not expose the `server-properties` of `connection.start`, so the
//! `direct_reply_to` capability cannot be read; in [`ReplyMode::Auto`] the session probes it
//! instead: `basic.consume` on `amq.rabbitmq.reply-to` succeeds on brokers that offer it and
//! closes the channel with 404 NOT_FOUND on the others, after which a reply queue is used.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use lapin::options::{BasicConsumeOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::ExchangeKind;
use tokio::sync::watch;
use tracing::{debug, info, warn};
use uuid::Uuid;

use crate::amqp;
use crate::client::pending::Pending;
use crate::connection::{Connection, Link};
use crate::envelope::{self, HEADER_CALLER, RPC_EXCHANGE, UNROUTED_EXCHANGE};
use crate::error::{Error, REPLY_CODE_NO_ROUTE};

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
    /// This session's id, in the `x-lepus-caller` header of its requests (where the broker
    /// sends an unserved request back).
    pub(crate) caller: LongString,
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
            Ok((session, consumers)) => {
                debug!(generation = link.generation, reply_to = %session.reply_to, "client session ready");
                state.send_replace(SessionState::Ready(Arc::new(session)));
                dispatch(consumers, &pending).await;
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

/// The consumers of a session: replies, and (with direct reply-to) the bounce queue.
struct Consumers {
    replies: lapin::Consumer,
    /// `None` when bounces come back on the reply queue.
    bounces: Option<lapin::Consumer>,
}

/// Opens the channels, the reply consumer and the bounce queue for one link.
async fn open(link: &Link, mode: ReplyMode) -> Result<(Session, Consumers), lapin::Error> {
    let no_ack = BasicConsumeOptions {
        no_ack: true,
        ..BasicConsumeOptions::default()
    };
    let caller = LongString::from(Uuid::new_v4().simple().to_string());
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
            Ok(replies) => {
                declare_exchanges(&channel).await?;
                let bounce_queue = exclusive_queue(&channel).await?;
                bind_bounces(&channel, &bounce_queue, &caller).await?;
                let bounces = channel
                    .basic_consume(bounce_queue, "".into(), no_ack, FieldTable::default())
                    .await?;
                return Ok((
                    Session {
                        rpc_channel: channel,
                        channel: amqp::confirm_channel(&link.conn).await?,
                        reply_to: DIRECT_REPLY_TO.into(),
                        caller,
                        generation: link.generation,
                        conn: link.conn.clone(),
                    },
                    Consumers {
                        replies,
                        bounces: Some(bounces),
                    },
                ));
            }
            Err(err) if mode == ReplyMode::Auto => {
                info!(cause = %err, "broker has no direct reply-to; using a reply queue");
            }
            Err(err) => return Err(err),
        }
    }
    let channel = link.conn.create_channel().await?;
    declare_exchanges(&channel).await?;
    let reply_to = exclusive_queue(&channel).await?;
    bind_bounces(&channel, &reply_to, &caller).await?;
    let replies = channel
        .basic_consume(reply_to.clone(), "".into(), no_ack, FieldTable::default())
        .await?;
    Ok((
        Session {
            rpc_channel: channel,
            channel: amqp::confirm_channel(&link.conn).await?,
            reply_to,
            caller,
            generation: link.generation,
            conn: link.conn.clone(),
        },
        Consumers {
            replies,
            bounces: None,
        },
    ))
}

/// Declares `lepus.rpc` and its alternate exchange (idempotent; the same arguments everywhere).
pub(crate) async fn declare_exchanges(channel: &lapin::Channel) -> Result<(), lapin::Error> {
    amqp::declare_durable_exchange(
        channel,
        UNROUTED_EXCHANGE,
        ExchangeKind::Headers,
        FieldTable::default(),
    )
    .await?;
    amqp::declare_durable_exchange(
        channel,
        RPC_EXCHANGE,
        ExchangeKind::Direct,
        envelope::rpc_exchange_arguments(),
    )
    .await
}

/// Declares a server-named, exclusive, auto-delete queue and returns its name (a client's
/// reply queue, a worker's control queue).
pub(crate) async fn exclusive_queue(channel: &lapin::Channel) -> Result<ShortString, lapin::Error> {
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
    Ok(queue.name().clone())
}

/// Binds `queue` to `lepus.rpc.unrouted` for the requests of `caller`.
async fn bind_bounces(
    channel: &lapin::Channel,
    queue: &ShortString,
    caller: &LongString,
) -> Result<(), lapin::Error> {
    let mut args = FieldTable::default();
    args.insert("x-match".into(), AMQPValue::LongString("all".into()));
    args.insert(HEADER_CALLER.into(), AMQPValue::LongString(caller.clone()));
    channel
        .queue_bind(
            queue.clone(),
            UNROUTED_EXCHANGE.into(),
            "".into(),
            QueueBindOptions::default(),
            args,
        )
        .await
}

/// Hands every reply to its waiting call, and every request that came back unserved to its
/// call as `NoRoute`, until a consumer ends.
async fn dispatch(consumers: Consumers, pending: &Pending) {
    let Consumers {
        mut replies,
        bounces,
    } = consumers;
    let mut bounces = bounces;
    loop {
        let delivery = match bounces.as_mut() {
            Some(bounces) => tokio::select! {
                delivery = replies.next() => delivery,
                delivery = bounces.next() => delivery,
            },
            None => replies.next().await,
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
        // Workers publish replies to the default exchange; a request that came back unserved
        // carries the exchange it was published to.
        let exchange = delivery.exchange.as_str();
        let outcome = if exchange == RPC_EXCHANGE || exchange == UNROUTED_EXCHANGE {
            debug!(correlation_id = %id, queue = %delivery.routing_key, "request unserved: no queue took it");
            Err(Error::NoRoute {
                queue: delivery.routing_key.to_string(),
                reply_code: REPLY_CODE_NO_ROUTE,
            })
        } else {
            Ok(delivery.data)
        };
        if !pending.complete(&id, outcome) {
            debug!(correlation_id = %id, "late reply for a call that gave up dropped");
        }
    }
}
