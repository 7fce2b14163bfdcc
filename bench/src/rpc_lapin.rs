//! The hand-written lapin RPC pair that the Lepus stub is measured against: what a user would
//! write without Lepus.
//!
//! - Server: one connection, `basic.qos(prefetch)`, one consumer on the request queue; for each
//!   request it publishes the body back to `reply_to` with the same `correlation_id`, then acks
//!   once the reply was written (publish-then-ack, at-least-once, as the Lepus worker does);
//!   requests are settled concurrently.
//! - Caller: one connection and channel; replies come through direct reply-to
//!   (`amq.rabbitmq.reply-to`, consumed no-ack on the publishing channel), or, where the broker
//!   refuses it, an exclusive server-named queue. One reply consumer serves every call in flight
//!   through a map of pending calls keyed by correlation id.
//! - [`Wire`]: `Minimal` sends `reply_to` and `correlation_id` only; `Lepus` sends the message
//!   properties the Lepus stub and worker send (`--impl lapin-wire`), so that the stub's
//!   overhead can be split into what those properties cost and what the framework adds.

use std::sync::Arc;

use futures::future::BoxFuture;
use futures::stream::FuturesUnordered;
use futures::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Connection};
// The Lepus wire format's content type, deadline header (Unix epoch milliseconds, a long-long
// integer) and caller header (32 hex digits), so that `--impl lapin-wire` sends what the stub
// sends. (The stub publishes to the `lepus.rpc` exchange, this pair to the default exchange.)
use lepus::envelope::{CONTENT_TYPE, HEADER_CALLER, HEADER_DEADLINE as DEADLINE_HEADER};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::amqp::connect;
use crate::error::{BenchError, Result};
use crate::rpc::{PendingCalls, RpcCaller};

/// RabbitMQ's direct reply-to pseudo-queue.
const DIRECT_REPLY_TO: &str = "amq.rabbitmq.reply-to";

/// At most this many requests between delivery and ack (a bound on the server's memory).
const MAX_SETTLING: usize = 1024;

/// What the pair puts on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Wire {
    /// `reply_to` and `correlation_id` only (the seed's fib RPC).
    Minimal,
    /// The message properties of the Lepus stub and worker (see `RpcImpl::LapinWire`).
    Lepus,
}

/// Unix epoch milliseconds now.
fn now_ms() -> i64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(now.as_millis()).unwrap_or(i64::MAX)
}

/// The properties of a request with id `id`.
fn request_properties(wire: Wire, reply_to: &str, id: u64) -> BasicProperties {
    match wire {
        Wire::Minimal => BasicProperties::default()
            .with_reply_to(reply_to.into())
            .with_correlation_id(id.to_string().into()),
        Wire::Lepus => {
            let mut headers = FieldTable::default();
            headers.insert(
                DEADLINE_HEADER.into(),
                AMQPValue::LongLongInt(now_ms().saturating_add(30_000)),
            );
            headers.insert(
                HEADER_CALLER.into(),
                AMQPValue::LongString("0123456789abcdef0123456789abcdef".into()),
            );
            BasicProperties::default()
                .with_content_type(CONTENT_TYPE.into())
                // 32 hex digits, as long as the stub's uuid.
                .with_correlation_id(format!("{id:032x}").into())
                .with_reply_to(reply_to.into())
                .with_expiration("30000".into())
                .with_delivery_mode(1)
                .with_type("echo".into())
                .with_headers(headers)
        }
    }
}

/// The request id a reply's correlation id carries.
fn reply_id(wire: Wire, correlation_id: &str) -> Option<u64> {
    match wire {
        Wire::Minimal => correlation_id.parse().ok(),
        Wire::Lepus => u64::from_str_radix(correlation_id, 16).ok(),
    }
}

/// The echo server.
#[derive(Debug)]
pub(crate) struct LapinServer {
    /// The consume loop; it ends when the stop signal passed to [`LapinServer::start`] is set.
    task: JoinHandle<Result<u64>>,
}

impl LapinServer {
    /// Connects, starts consuming `queue` (already declared), and serves until `stop` is true.
    pub(crate) async fn start(
        url: &str,
        queue: &str,
        prefetch: u16,
        wire: Wire,
        mut stop: watch::Receiver<bool>,
    ) -> Result<Self> {
        let conn = connect(url, "rpc server").await?;
        let channel = conn.create_channel().await?;
        channel
            .basic_qos(prefetch, BasicQosOptions::default())
            .await?;
        let mut consumer = channel
            .basic_consume(
                queue.into(),
                "lepus-bench-rpc-server".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await?;
        let task = tokio::spawn(async move {
            // Each request's reply-then-ack, in flight at once; polled alongside the consumer so
            // that an ack leaves as soon as its reply was written (with prefetch 1 nothing else
            // would drive it).
            let mut settling: FuturesUnordered<BoxFuture<'_, Result<()>>> = FuturesUnordered::new();
            let mut served = 0u64;
            loop {
                let delivery = tokio::select! {
                    biased;
                    _ = stop.wait_for(|s| *s) => break,
                    Some(done) = settling.next(), if !settling.is_empty() => {
                        done?;
                        continue;
                    }
                    d = consumer.next(), if settling.len() < MAX_SETTLING => d,
                };
                let Some(delivery) = delivery else { break };
                let delivery = delivery?;
                let (Some(reply_to), Some(corr)) = (
                    delivery.properties.reply_to().clone(),
                    delivery.properties.correlation_id().clone(),
                ) else {
                    tracing::warn!(
                        delivery_tag = delivery.delivery_tag,
                        "request without reply_to/correlation_id"
                    );
                    continue;
                };
                let expired = wire == Wire::Lepus
                    && delivery
                        .properties
                        .headers()
                        .as_ref()
                        .and_then(|h| h.inner().get(DEADLINE_HEADER))
                        .and_then(AMQPValue::as_long_long_int)
                        .is_some_and(|deadline| deadline < now_ms());
                let reply_properties = match wire {
                    Wire::Minimal => BasicProperties::default().with_correlation_id(corr),
                    Wire::Lepus => BasicProperties::default()
                        .with_content_type(CONTENT_TYPE.into())
                        .with_correlation_id(corr),
                };
                // Publish, wait until lapin wrote it, then ack: lapin 4 sends method frames
                // (`basic.ack`) ahead of queued content frames (`basic.publish`), so an ack
                // started together with its reply would leave first, and the request could be
                // lost with the reply (the Lepus worker keeps this order too).
                let ch = &channel;
                let body = delivery.data;
                let tag = delivery.delivery_tag;
                settling.push(Box::pin(async move {
                    if !expired {
                        ch.basic_publish(
                            "".into(),
                            reply_to,
                            BasicPublishOptions::default(),
                            &body,
                            reply_properties,
                        )
                        .await?;
                    }
                    ch.basic_ack(tag, BasicAckOptions::default()).await?;
                    Ok(())
                }));
                served += 1;
            }
            while let Some(done) = settling.next().await {
                done?;
            }
            let _ = conn.close(200, "bench done".into()).await;
            Ok(served)
        });
        Ok(LapinServer { task })
    }

    /// Waits for the server to stop; returns the requests it served.
    pub(crate) async fn join(self) -> Result<u64> {
        self.task.await?
    }
}

/// A caller: one connection, one channel, one reply consumer for all its calls.
pub(crate) struct LapinCaller {
    /// Kept open for the caller's life; closing it ends the reply consumer.
    conn: Connection,
    channel: Channel,
    queue: String,
    reply_to: String,
    /// Shared with the reply dispatcher task.
    pending: Arc<PendingCalls>,
    /// What the calls put on the wire.
    wire: Wire,
    /// Routes replies to `pending`; ends when the connection closes.
    dispatcher: JoinHandle<()>,
}

impl std::fmt::Debug for LapinCaller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LapinCaller")
            .field("reply_to", &self.reply_to)
            .finish()
    }
}

impl LapinCaller {
    /// Connects and starts the reply consumer.
    pub(crate) async fn connect(url: &str, id: usize, queue: &str, wire: Wire) -> Result<Self> {
        let conn = connect(url, &format!("rpc caller {id}")).await?;
        let mut channel = conn.create_channel().await?;
        let no_ack = BasicConsumeOptions {
            no_ack: true,
            ..BasicConsumeOptions::default()
        };
        let (consumer, reply_to) = match channel
            .basic_consume(
                DIRECT_REPLY_TO.into(),
                "".into(),
                no_ack,
                FieldTable::default(),
            )
            .await
        {
            Ok(c) => (c, DIRECT_REPLY_TO.to_owned()),
            Err(err) => {
                // The broker closed the channel: no direct reply-to. Use an exclusive queue.
                tracing::info!(cause = %err, "direct reply-to refused; using an exclusive reply queue");
                channel = conn.create_channel().await?;
                let q = channel
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
                let name = q.name().as_str().to_owned();
                let c = channel
                    .basic_consume(
                        name.as_str().into(),
                        "".into(),
                        no_ack,
                        FieldTable::default(),
                    )
                    .await?;
                (c, name)
            }
        };
        let pending = Arc::new(PendingCalls::default());
        let routes = Arc::clone(&pending);
        let mut consumer = consumer;
        let dispatcher = tokio::spawn(async move {
            while let Some(Ok(d)) = consumer.next().await {
                let id = d
                    .properties
                    .correlation_id()
                    .as_ref()
                    .and_then(|c| reply_id(wire, c.as_str()));
                routes.complete(id, d.data);
            }
        });
        Ok(LapinCaller {
            conn,
            channel,
            queue: queue.to_owned(),
            reply_to,
            pending,
            wire,
            dispatcher,
        })
    }

    /// Whether replies come through direct reply-to.
    pub(crate) fn direct_reply_to(&self) -> bool {
        self.reply_to == DIRECT_REPLY_TO
    }

    async fn call_inner(&self, body: Vec<u8>) -> Result<Vec<u8>> {
        let (id, reply) = self.pending.register();
        let props = request_properties(self.wire, &self.reply_to, id);
        let published = self
            .channel
            .basic_publish(
                "".into(),
                self.queue.as_str().into(),
                // Not `mandatory`: the stub learns of unserved requests through `lepus.rpc`'s
                // alternate exchange instead (see `lepus::envelope`).
                BasicPublishOptions::default(),
                &body,
                props,
            )
            .await;
        let sent = published.map(|_| ()).map_err(BenchError::from);
        self.pending
            .wait(id, sent, reply, || {
                BenchError::Timeout("reply consumer ended".into())
            })
            .await
    }
}

impl RpcCaller for LapinCaller {
    fn call(&self, body: Vec<u8>) -> BoxFuture<'_, Result<Vec<u8>>> {
        Box::pin(self.call_inner(body))
    }

    fn close(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            let _ = self.conn.close(200, "bench done".into()).await;
            self.dispatcher.abort();
        })
    }
}
