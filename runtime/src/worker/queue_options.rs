//! [`QueueOptions`]: how a worker declares a service queue (`queue.declare` arguments).

use std::time::Duration;

use lapin::options::QueueDeclareOptions;
use lapin::types::{AMQPValue, FieldTable, LongString};

use crate::envelope::millis;

/// Declaration options of a service queue. [`QueueOptions::new`] is a transient classic queue
/// that survives its consumers (RabbitMQ tutorial style); an RPC queue a worker declares
/// without options set is [`QueueOptions::rpc`] (the same, deleted after
/// [`RPC_QUEUE_EXPIRES`] without a consumer). Workers sharing a queue must agree on them:
/// RabbitMQ refuses a redeclaration with other options (406 PRECONDITION_FAILED).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QueueOptions {
    durable: bool,
    auto_delete: bool,
    exclusive: bool,
    quorum: bool,
    max_priority: Option<u8>,
    message_ttl: Option<Duration>,
    expires: Option<Duration>,
    delivery_limit: Option<u32>,
}

/// How long an RPC queue declared with [`QueueOptions::rpc`] outlives its last consumer when
/// that consumer did not shut down cleanly (a worker that crashed or lost its connection): long
/// enough for the worker to come back without losing the requests waiting in it; after that the
/// broker deletes it and calls fail at once with `NoRoute`. A worker that shuts down cleanly and
/// is the last to serve the queue deletes it at once.
pub const RPC_QUEUE_EXPIRES: Duration = Duration::from_secs(10);

impl QueueOptions {
    /// The defaults: transient, not auto-delete, classic.
    pub fn new() -> Self {
        QueueOptions::default()
    }

    /// The options of an RPC queue a worker declares without options set: transient, classic,
    /// deleted [`RPC_QUEUE_EXPIRES`] after its last consumer went away (`x-expires`).
    pub fn rpc() -> Self {
        QueueOptions::new().expires(RPC_QUEUE_EXPIRES)
    }

    setters! {
        /// A durable queue survives a broker restart (its persistent messages too).
        durable(durable: bool) => durable = durable;

        /// Deleted by the broker when its last consumer goes away. Then a call to a service whose
        /// workers all stopped fails fast with `NoRoute` instead of waiting in the queue.
        auto_delete(auto_delete: bool) => auto_delete = auto_delete;

        /// Used by one connection only and deleted when it closes (`exclusive`): the queue of a
        /// broadcast event handler, one per running instance.
        exclusive(exclusive: bool) => exclusive = exclusive;
    }

    /// A replicated quorum queue (`x-queue-type: quorum`, RabbitMQ clusters); implies durable
    /// and not auto-delete. An RPC queue of this type outlives its last worker (RabbitMQ cannot
    /// delete a quorum queue only if unused): calls made while no worker runs wait for the next
    /// one or time out, rather than failing at once with `NoRoute`; set
    /// [`expires`](Self::expires) to have the broker remove it once unused.
    pub fn quorum(mut self) -> Self {
        self.quorum = true;
        self.durable = true;
        self.auto_delete = false;
        self
    }

    setters! {
        /// Enables message priorities 0..=`max` (`x-max-priority`).
        max_priority(max: u8) => max_priority = Some(max);

        /// Requests older than `ttl` are dropped by the broker (`x-message-ttl`).
        message_ttl(ttl: Duration) => message_ttl = Some(ttl);

        /// The queue is deleted after being unused for `after` (`x-expires`).
        expires(after: Duration) => expires = Some(after);

        /// Quorum queues: a message redelivered more than `limit` times is dropped
        /// (`x-delivery-limit`), so a request that crashes every worker cannot loop forever.
        delivery_limit(limit: u32) => delivery_limit = Some(limit);
    }

    /// True for a queue the broker deletes with its last consumer.
    pub(crate) fn is_auto_delete(&self) -> bool {
        self.auto_delete
    }

    /// The queue's `x-expires`, if it has one.
    pub(crate) fn expiry(&self) -> Option<Duration> {
        self.expires
    }

    pub(crate) fn declare_options(&self) -> QueueDeclareOptions {
        QueueDeclareOptions {
            durable: self.durable,
            auto_delete: self.auto_delete,
            exclusive: self.exclusive,
            ..QueueDeclareOptions::default()
        }
    }

    /// True for a quorum queue (see [`quorum`](Self::quorum)).
    pub(crate) fn is_quorum(&self) -> bool {
        self.quorum
    }

    pub(crate) fn arguments(&self) -> FieldTable {
        let mut args = FieldTable::default();
        if self.quorum {
            args.insert(
                "x-queue-type".into(),
                AMQPValue::LongString(LongString::from("quorum")),
            );
        }
        if let Some(max) = self.max_priority {
            args.insert("x-max-priority".into(), AMQPValue::ShortShortUInt(max));
        }
        if let Some(ttl) = self.message_ttl {
            args.insert("x-message-ttl".into(), AMQPValue::LongLongInt(millis(ttl)));
        }
        if let Some(expires) = self.expires {
            args.insert("x-expires".into(), AMQPValue::LongLongInt(millis(expires)));
        }
        if let Some(limit) = self.delivery_limit {
            args.insert(
                "x-delivery-limit".into(),
                AMQPValue::LongLongInt(limit.into()),
            );
        }
        args
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // in tests a failed unwrap is a failed test
mod tests {
    use super::*;

    #[test]
    fn quorum_implies_durable_and_sets_the_queue_type() {
        let options = QueueOptions::new().auto_delete(true).quorum();
        assert!(options.declare_options().durable);
        assert!(!options.declare_options().auto_delete);
        let args = options.arguments();
        assert_eq!(
            args.inner().get("x-queue-type"),
            Some(&AMQPValue::LongString("quorum".into()))
        );
    }

    #[test]
    fn priorities_and_ttl_become_arguments() {
        let args = QueueOptions::new()
            .max_priority(10)
            .message_ttl(Duration::from_secs(2))
            .arguments();
        assert_eq!(
            args.inner().get("x-max-priority"),
            Some(&AMQPValue::ShortShortUInt(10))
        );
        assert_eq!(
            args.inner().get("x-message-ttl"),
            Some(&AMQPValue::LongLongInt(2000))
        );
    }
}
