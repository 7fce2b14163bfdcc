//! The delivery limit: a message that kills or wedges the workers it is handed to, before any
//! of them settles it, is not handed out forever.
//!
//! A message comes back to a queue unsettled when its worker died, lost its connection, or was
//! stopped while holding it; the broker then delivers it again with `redelivered = true`. To
//! count those returns on any broker and queue type:
//! - a quorum queue counts them itself: RabbitMQ adds [`QUORUM_DELIVERY_COUNT`]
//!   (`x-delivery-count`, the number of earlier returns) to a redelivered message, and that
//!   count is used as is;
//! - elsewhere (classic queues, the bundled broker) the worker counts: a redelivered message
//!   without that header is not run, but *bounced*: republished to its queue with
//!   [`HEADER_DELIVERY_COUNT`] (`x-lepus-delivery-count`, `l`) one higher, confirmed by the
//!   broker, and only then acked. The copy is delivered as a fresh message and runs then. Only
//!   redelivered messages pay for this (one publish and confirm); it moves them to the back of
//!   their queue.
//!
//! A message whose count reaches the worker's delivery limit (default
//! [`DEFAULT_DELIVERY_LIMIT`]) is not run again: a task goes to its dead-letter queue, an RPC
//! request is answered with [`FailureKind::DeliveryLimit`](crate::FailureKind::DeliveryLimit),
//! an event is rejected. Every message in a worker's hands when it dies counts one delivery,
//! whether its handler had started or not (as with RabbitMQ's `delivery-limit`): keep the
//! prefetch small where handlers can crash the process.
//!
//! A bounced copy keeps every property and header of the original, with the count updated; an
//! RPC request's `expiration` is recomputed from its deadline header, and an event's original
//! exchange and routing key are kept in [`HEADER_EXCHANGE`] and [`HEADER_ROUTING_KEY`] (the copy
//! travels through the default exchange), where `lepus::event::current()` still finds them.

use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::BasicProperties;

use crate::envelope;
use crate::task::headers;

/// How many times a message may be delivered and come back unsettled before it is given up on.
pub const DEFAULT_DELIVERY_LIMIT: u32 = 10;

/// The returns a message has had, counted by Lepus workers (`l`; absent = 0).
pub const HEADER_DELIVERY_COUNT: &str = "x-lepus-delivery-count";

/// The returns a message has had, counted by a RabbitMQ quorum queue.
pub(crate) const QUORUM_DELIVERY_COUNT: &str = "x-delivery-count";

/// The exchange an event was first published to, kept on a bounced copy (`S`).
pub const HEADER_EXCHANGE: &str = "x-lepus-exchange";

/// The routing key an event was first published with, kept on a bounced copy (`S`).
pub const HEADER_ROUTING_KEY: &str = "x-lepus-routing-key";

/// What to do with a delivery, by its delivery count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Run it; it came back unsettled `returns` times before.
    Run {
        /// Earlier unsettled deliveries.
        returns: u32,
    },
    /// Republish it with this count, then ack it; run the copy when it comes.
    Bounce {
        /// The count the copy carries.
        returns: u32,
    },
    /// It came back `returns` times, reaching the limit: give up on it.
    Exceeded {
        /// Unsettled deliveries so far.
        returns: u32,
    },
}

/// The verdict for a delivery with `headers`, `redelivered` or not, under `limit`.
pub(crate) fn verdict(redelivered: bool, headers: Option<&FieldTable>, limit: u32) -> Verdict {
    let counted =
        |name| headers::int(headers, name).map(|n| u32::try_from(n.max(0)).unwrap_or(u32::MAX));
    if let Some(returns) = counted(QUORUM_DELIVERY_COUNT) {
        return if returns >= limit {
            Verdict::Exceeded { returns }
        } else {
            Verdict::Run { returns }
        };
    }
    let returns = counted(HEADER_DELIVERY_COUNT).unwrap_or(0);
    if !redelivered {
        return Verdict::Run { returns };
    }
    let returns = returns.saturating_add(1);
    if returns >= limit {
        Verdict::Exceeded { returns }
    } else {
        Verdict::Bounce { returns }
    }
}

/// True when the message was delivered before without being settled: the broker says so, or it
/// is a bounced copy, or a quorum queue counted a return.
pub(crate) fn was_redelivered(delivery: &lapin::message::Delivery) -> bool {
    let h = delivery.properties.headers().as_ref();
    delivery.redelivered
        || [HEADER_DELIVERY_COUNT, QUORUM_DELIVERY_COUNT]
            .iter()
            .any(|name| headers::int(h, name).is_some_and(|n| n > 0))
}

/// The properties of the bounced copy of a delivery that came from `exchange` with
/// `routing_key`: the original's, with the count set, the expiration of a request recomputed
/// from its deadline (`None` when the deadline has passed: the copy would be worthless), and an
/// event's origin kept.
pub(crate) fn bounced_properties(
    original: &BasicProperties,
    returns: u32,
    exchange: &str,
    routing_key: &str,
) -> Option<BasicProperties> {
    let mut properties = original.clone();
    if original.expiration().is_some() {
        if let Some(deadline) = envelope::deadline_of(original.headers().as_ref()) {
            let left = deadline.saturating_sub(headers::now_ms());
            if left <= 0 {
                return None;
            }
            let left = std::time::Duration::from_millis(u64::try_from(left).unwrap_or(0));
            properties = properties.with_expiration(envelope::expiration(left));
        }
    }
    let mut table = original.headers().clone().unwrap_or_default();
    table.insert(
        ShortString::from(HEADER_DELIVERY_COUNT),
        AMQPValue::LongLongInt(returns.into()),
    );
    if !exchange.is_empty() && !table.contains_key(HEADER_EXCHANGE) {
        table.insert(
            ShortString::from(HEADER_EXCHANGE),
            AMQPValue::LongString(LongString::from(exchange)),
        );
        table.insert(
            ShortString::from(HEADER_ROUTING_KEY),
            AMQPValue::LongString(LongString::from(routing_key)),
        );
    }
    Some(properties.with_headers(table))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // in tests a failed unwrap is a failed test
mod tests {
    use super::*;

    fn with(name: &str, n: i64) -> FieldTable {
        let mut table = FieldTable::default();
        table.insert(name.into(), AMQPValue::LongLongInt(n));
        table
    }

    #[test]
    fn fresh_messages_run_and_redelivered_ones_bounce_until_the_limit() {
        assert_eq!(verdict(false, None, 3), Verdict::Run { returns: 0 });
        assert_eq!(verdict(true, None, 3), Verdict::Bounce { returns: 1 });
        let once = with(HEADER_DELIVERY_COUNT, 1);
        assert_eq!(verdict(false, Some(&once), 3), Verdict::Run { returns: 1 });
        assert_eq!(
            verdict(true, Some(&once), 3),
            Verdict::Bounce { returns: 2 }
        );
        let twice = with(HEADER_DELIVERY_COUNT, 2);
        assert_eq!(
            verdict(true, Some(&twice), 3),
            Verdict::Exceeded { returns: 3 }
        );
        // A limit of 1: the first return gives up.
        assert_eq!(verdict(true, None, 1), Verdict::Exceeded { returns: 1 });
    }

    #[test]
    fn a_quorum_queue_count_is_used_as_is() {
        let quorum = with(QUORUM_DELIVERY_COUNT, 2);
        assert_eq!(verdict(true, Some(&quorum), 3), Verdict::Run { returns: 2 });
        let quorum = with(QUORUM_DELIVERY_COUNT, 3);
        assert_eq!(
            verdict(true, Some(&quorum), 3),
            Verdict::Exceeded { returns: 3 }
        );
    }

    #[test]
    fn a_bounced_copy_keeps_its_origin_and_recomputes_its_expiration() {
        let original = BasicProperties::default()
            .with_message_id("m".into())
            .with_headers(with("x-user", 7));
        let copy = bounced_properties(&original, 2, "logs", "kern.error").unwrap();
        let h = copy.headers().as_ref();
        assert_eq!(headers::int(h, HEADER_DELIVERY_COUNT), Some(2));
        assert_eq!(headers::int(h, "x-user"), Some(7));
        assert_eq!(headers::string(h, HEADER_EXCHANGE).as_deref(), Some("logs"));
        assert_eq!(
            headers::string(h, HEADER_ROUTING_KEY).as_deref(),
            Some("kern.error")
        );
        assert_eq!(copy.message_id(), original.message_id());

        let request = BasicProperties::default()
            .with_expiration("30000".into())
            .with_headers(envelope::request_headers(
                envelope::deadline_after(std::time::Duration::from_secs(5)),
                &"caller".into(),
            ));
        let copy = bounced_properties(&request, 1, "", "q").unwrap();
        let left: u64 = copy
            .expiration()
            .as_ref()
            .unwrap()
            .as_str()
            .parse()
            .unwrap();
        assert!(left <= 5_000 && left > 0, "{left}");
        let expired = BasicProperties::default()
            .with_expiration("30000".into())
            .with_headers(envelope::request_headers(1, &"caller".into()));
        assert!(bounced_properties(&expired, 1, "", "q").is_none());
    }
}
