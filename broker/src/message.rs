//! A published message: routing data, properties, and a body shared by every queue it reaches.

use amq_protocol::protocol::basic::AMQPProperties;
use amq_protocol::types::ShortString;
use bytes::Bytes;

/// One message as published. Immutable once built; queues hold it in an `Arc`, so fan-out to N
/// queues shares one body buffer (dead-lettering builds a new `Message` with new headers but
/// the same body `Bytes`).
#[derive(Debug)]
pub(crate) struct Message {
    /// The exchange it was published to (`""` for the default exchange).
    pub(crate) exchange: ShortString,
    /// The routing key it was published with.
    pub(crate) routing_key: ShortString,
    /// The basic content-header properties, as the publisher sent them.
    pub(crate) properties: AMQPProperties,
    /// The body; a slice of the publisher's read buffer when it arrived in one frame.
    pub(crate) body: Bytes,
}

impl Message {
    /// True when the publisher asked for `delivery_mode = 2` (persistent).
    pub(crate) fn is_persistent(&self) -> bool {
        *self.properties.delivery_mode() == Some(2)
    }

    /// The per-message TTL from the `expiration` property, in milliseconds, if valid.
    pub(crate) fn expiration_ms(&self) -> Option<u64> {
        self.properties
            .expiration()
            .as_ref()
            .and_then(|e| e.as_str().parse::<u64>().ok())
    }

    /// The message priority (0 when absent).
    pub(crate) fn priority(&self) -> u8 {
        self.properties.priority().unwrap_or(0)
    }
}
