//! [`DeadLetters`]: looking at and acting on a dead-letter queue: list, show, requeue.
//!
//! Listing reads messages with `basic.get` without acknowledging them and then closes the
//! channel, which hands every one back to the queue at its place (AMQP 0-9-1 §1.8.3.13 and
//! RabbitMQ's requeue rule); nothing is removed. Requeueing publishes a copy to the task's
//! origin queue with its failure record removed (so it gets its full attempts again), waits for
//! the confirm, then acks the dead letter.

use lapin::options::{BasicAckOptions, BasicGetOptions, ConfirmSelectOptions};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Confirmation};
use serde::de::DeserializeOwned;

use crate::amqp::publish_mandatory;
use crate::connection::Connection;
use crate::envelope::{self, HEADER_METHOD};
use crate::error::{Error, Result};
use crate::task::headers::{
    self, ENQUEUED_AT, ERROR, FIRST_FAILED_AT, LAST_FAILED_AT, ORIGIN_QUEUE,
};

/// One message in a dead-letter queue, with its failure record.
#[derive(Debug, Clone, PartialEq)]
pub struct DeadLetter {
    /// The task's `message_id`.
    pub message_id: Option<String>,
    /// The task name (`x-lepus-method`).
    pub task: Option<String>,
    /// The last attempt's error.
    pub error: Option<String>,
    /// How many attempts were made.
    pub attempts: u32,
    /// When it was enqueued (Unix ms).
    pub enqueued_at_ms: Option<i64>,
    /// When its first attempt failed (Unix ms).
    pub first_failed_at_ms: Option<i64>,
    /// When its last attempt failed (Unix ms).
    pub last_failed_at_ms: Option<i64>,
    /// The task queue it came from (where `requeue` sends it).
    pub origin_queue: Option<String>,
    /// The arguments, MessagePack-encoded (see [`DeadLetter::args`]).
    pub body: Vec<u8>,
    /// Every header, as received.
    pub headers: FieldTable,
}

impl DeadLetter {
    fn from_delivery(properties: &BasicProperties, body: Vec<u8>) -> Self {
        let h = properties.headers().as_ref();
        DeadLetter {
            message_id: properties.message_id().as_ref().map(|id| id.to_string()),
            task: headers::string(h, HEADER_METHOD),
            error: headers::string(h, ERROR),
            attempts: headers::attempts(h),
            enqueued_at_ms: headers::int(h, ENQUEUED_AT),
            first_failed_at_ms: headers::int(h, FIRST_FAILED_AT),
            last_failed_at_ms: headers::int(h, LAST_FAILED_AT),
            origin_queue: headers::string(h, ORIGIN_QUEUE),
            body,
            headers: h.cloned().unwrap_or_default(),
        }
    }

    /// Decodes the arguments as the task's argument tuple (e.g. `(String, u32)`).
    pub fn args<A: DeserializeOwned>(&self) -> Result<A> {
        envelope::decode_request(&self.body).map_err(|e| Error::Decode(e.to_string()))
    }
}

/// A dead-letter queue (`emails.dead`) on a connection.
#[derive(Debug, Clone)]
pub struct DeadLetters {
    conn: Connection,
    queue: String,
}

impl DeadLetters {
    /// The dead-letter queue `queue` (see [`TaskOptions::dead_letter_queue_for`](crate::task::TaskOptions::dead_letter_queue_for)).
    pub fn new(conn: &Connection, queue: impl Into<String>) -> Self {
        DeadLetters {
            conn: conn.clone(),
            queue: queue.into(),
        }
    }

    /// The queue's name.
    pub fn queue(&self) -> &str {
        &self.queue
    }

    /// Up to `limit` dead letters, oldest first, left in the queue.
    pub async fn list(&self, limit: usize) -> Result<Vec<DeadLetter>> {
        let channel = self.channel().await?;
        let mut out = Vec::new();
        while out.len() < limit {
            let Some(got) = self.get(&channel).await? else {
                break;
            };
            out.push(DeadLetter::from_delivery(
                &got.delivery.properties,
                got.delivery.data,
            ));
        }
        // Closing the channel hands every unacked message back to the queue.
        let _ = channel.close(200, "listed".into()).await;
        Ok(out)
    }

    /// The dead letter with `message_id`, if it is in the queue (it stays there).
    pub async fn show(&self, message_id: &str) -> Result<Option<DeadLetter>> {
        Ok(self
            .list(usize::MAX)
            .await?
            .into_iter()
            .find(|d| d.message_id.as_deref() == Some(message_id)))
    }

    /// Sends dead letters back to their task queue with a fresh attempt count: the one with
    /// `message_id`, or all of them for `None`. Returns how many were requeued.
    pub async fn requeue(&self, message_id: Option<&str>) -> Result<usize> {
        let channel = self.channel().await?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        let mut requeued = 0;
        while let Some(got) = self.get(&channel).await? {
            let delivery = got.delivery;
            let id = delivery
                .properties
                .message_id()
                .as_ref()
                .map(|id| id.as_str());
            if message_id.is_some() && id != message_id {
                continue; // left unacked: back in the queue when the channel closes
            }
            let h = delivery.properties.headers().as_ref();
            // A name over 255 bytes is no queue (AMQP short string): left in place like a
            // missing one, rather than a panic in lapin's conversion.
            let Some(origin) = headers::string(h, ORIGIN_QUEUE).filter(|q| q.len() <= 255) else {
                tracing::warn!(
                    message_id = id.unwrap_or(""),
                    "dead letter without an origin queue left in place"
                );
                continue;
            };
            let properties = delivery
                .properties
                .clone()
                .with_headers(headers::for_requeue(h));
            let confirm =
                publish_mandatory(&channel, origin.as_str(), &delivery.data, properties).await?;
            match confirm.await? {
                Confirmation::Ack(None) => {}
                Confirmation::Ack(Some(_)) | Confirmation::Nack(Some(_)) => {
                    return Err(Error::NoRoute {
                        queue: origin,
                        reply_code: crate::error::REPLY_CODE_NO_ROUTE,
                    })
                }
                _ => return Err(Error::Nacked),
            }
            delivery.acker.ack(BasicAckOptions::default()).await?;
            requeued += 1;
            if message_id.is_some() {
                break;
            }
        }
        let _ = channel.close(200, "requeued".into()).await;
        Ok(requeued)
    }

    /// Empties the queue; returns how many messages it held.
    pub async fn purge(&self) -> Result<u32> {
        let channel = self.channel().await?;
        let purged = channel
            .queue_purge(self.queue.as_str().into(), Default::default())
            .await?;
        let _ = channel.close(200, "purged".into()).await;
        Ok(purged)
    }

    async fn channel(&self) -> Result<lapin::Channel> {
        let link = self.conn.link_after(0).await?;
        Ok(link.conn.create_channel().await?)
    }

    async fn get(
        &self,
        channel: &lapin::Channel,
    ) -> Result<Option<lapin::message::BasicGetMessage>> {
        Ok(channel
            .basic_get(
                self.queue.as_str().into(),
                BasicGetOptions { no_ack: false },
            )
            .await?)
    }
}
