//! The persistent message as the store sees it: handed over borrowed ([`PersistentMessage`]),
//! read back owned ([`StoredMessage`]).

use bytes::Bytes;

use super::QueueId;

/// A persistent message as the broker hands it to [`super::Store::enqueue`]: borrowed, since
/// the store copies it straight into the pending batch.
///
/// The exchange and routing key are kept so that a recovered message is delivered as it was
/// published (`basic.deliver` carries both).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PersistentMessage<'a> {
    /// The exchange it was published to (`""` for the default exchange); an AMQP shortstr, so
    /// at most 255 bytes.
    pub exchange: &'a str,
    /// The routing key it was published with; at most 255 bytes.
    pub routing_key: &'a str,
    /// The AMQP content-header property flags and list (0-9-1 §4.2.6.1), encoded by the
    /// broker; opaque to the store.
    pub properties: &'a [u8],
    /// The body.
    pub body: &'a [u8],
}

/// A persistent message read back from the log by [`super::Store::read`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredMessage {
    /// The queue it was enqueued to.
    pub queue: QueueId,
    /// The exchange it was published to.
    pub exchange: String,
    /// The routing key it was published with.
    pub routing_key: String,
    /// The AMQP content-header properties, as the broker encoded them.
    pub properties: Bytes,
    /// The body.
    pub body: Bytes,
}
