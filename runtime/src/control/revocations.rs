//! The durable record of revocations: the queue `lepus.revoked`, so that a worker that starts
//! (or restarts) after a `revoke` still skips the task.
//!
//! A revocation is one persistent message, its body a [`Revocation`] map, with the AMQP
//! `expiration` property set to the time it is kept: the broker drops it then (RabbitMQ and the
//! bundled broker both expire messages per message; an expired one behind a longer-lived one is
//! dropped when it reaches the head, so readers also check `expires_at_ms`). The queue is
//! bounded (`x-max-length` [`MAX_REVOKED`], oldest dropped first).
//!
//! A worker reads the queue before it consumes ([`load`]): `basic.get` without ack until it is
//! empty, then it closes the channel, which puts every message back in order. The messages a
//! reader holds (a few milliseconds) are invisible to another worker reading at that instant,
//! so a worker reads twice, [`SECOND_READ_AFTER`] apart, and keeps the union: it misses a
//! revocation only if other readers hid it both times. (A lock would serialize readers, but a
//! refused lock is a channel error that brokers log; workers starting together would fill the
//! logs.) Revocations made while a worker runs reach it on the control exchange.

use std::collections::BTreeMap;
use std::time::Duration;

use lapin::options::BasicGetOptions;
use lapin::types::{AMQPValue, FieldTable};

use crate::amqp::declare_durable;
use crate::control::message::{self, Revocation};
use crate::control::registry::{Registry, MAX_REVOKED};
use crate::task::headers::now_ms;

/// The durable queue of revocations.
pub const REVOKED_QUEUE: &str = "lepus.revoked";

/// The pause between a worker's two reads of [`REVOKED_QUEUE`].
pub(crate) const SECOND_READ_AFTER: Duration = Duration::from_millis(30);

/// Declares [`REVOKED_QUEUE`] (the same arguments everywhere, or the broker refuses with 406).
pub(crate) async fn declare(channel: &lapin::Channel) -> lapin::Result<()> {
    let mut arguments = BTreeMap::new();
    arguments.insert(
        "x-max-length".into(),
        AMQPValue::LongLongInt(i64::try_from(MAX_REVOKED).unwrap_or(i64::MAX)),
    );
    declare_durable(channel, REVOKED_QUEUE, FieldTable::from(arguments)).await?;
    Ok(())
}

/// Reads every revocation in [`REVOKED_QUEUE`] into `registry`, twice (see the module
/// documentation); returns how many the first read held.
pub(crate) async fn load(conn: &lapin::Connection, registry: &Registry) -> lapin::Result<usize> {
    let held = read_once(conn, registry).await?;
    tokio::time::sleep(SECOND_READ_AFTER).await;
    read_once(conn, registry).await?;
    Ok(held)
}

/// One read of the whole queue.
async fn read_once(conn: &lapin::Connection, registry: &Registry) -> lapin::Result<usize> {
    let channel = conn.create_channel().await?;
    let read = async {
        declare(&channel).await?;
        let now = now_ms();
        let mut held = 0;
        for _ in 0..MAX_REVOKED {
            let Some(got) = channel
                .basic_get(REVOKED_QUEUE.into(), BasicGetOptions { no_ack: false })
                .await?
            else {
                break;
            };
            match message::decode::<Revocation>(&got.delivery.data) {
                Ok(revocation) if revocation.expires_at_ms > now => {
                    registry.revoke(&revocation);
                    held += 1;
                }
                Ok(_) => {}
                Err(err) => tracing::debug!(cause = %err, "undecodable revocation ignored"),
            }
        }
        Ok::<_, lapin::Error>(held)
    }
    .await;
    // Closing puts every message we got back, in order.
    if channel.status().connected() {
        let _ = channel.close(200, "revocations read".into()).await;
    }
    read
}
