//! [`Lock`]: a lock the broker keeps, as an exclusive queue: only one connection may declare a
//! given exclusive queue (another gets 405 RESOURCE_LOCKED, on RabbitMQ and the bundled broker
//! alike), and the broker deletes it when its connection closes, so a holder that dies (its
//! process killed, its connection lost) releases it at once; one that hangs with its
//! connection open releases it when the broker's heartbeat gives up on the connection.
//!
//! Used to elect the one scheduler that fires a schedule (`schedule`).

use lapin::options::{QueueDeclareOptions, QueueDeleteOptions};
use lapin::types::FieldTable;

/// A held lock: the channel its exclusive queue was declared on. Dropping it keeps the queue
/// (and so the lock) until the connection closes; [`Lock::release`] deletes it.
#[derive(Debug)]
pub(crate) struct Lock {
    pub(crate) channel: lapin::Channel,
    name: String,
}

impl Lock {
    /// Takes lock `name` on `conn`, or `Ok(None)` when another connection holds it.
    pub(crate) async fn try_take(
        conn: &lapin::Connection,
        name: &str,
    ) -> lapin::Result<Option<Lock>> {
        let channel = conn.create_channel().await?;
        let declared = channel
            .queue_declare(
                name.into(),
                QueueDeclareOptions {
                    exclusive: true,
                    ..QueueDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await;
        match declared {
            Ok(_) => Ok(Some(Lock {
                channel,
                name: name.to_owned(),
            })),
            Err(err) if matches!(err.kind(), lapin::ErrorKind::ProtocolError(amqp) if amqp.get_id() == 405) => {
                Ok(None)
            }
            Err(err) => Err(err),
        }
    }

    /// Releases the lock (deletes its queue) and closes its channel.
    pub(crate) async fn release(self) {
        if self.channel.status().connected() {
            let _ = self
                .channel
                .queue_delete(self.name.as_str().into(), QueueDeleteOptions::default())
                .await;
            let _ = self.channel.close(200, "lock released".into()).await;
        }
    }
}
