//! The deliberate differences between the bundled broker and RabbitMQ 3.10 that a client can
//! observe, and what RabbitMQ itself leaves undefined: the one list of them, and the code that
//! keeps the differential tester from reporting them.
//!
//! A difference that is a bug does not belong here: it is fixed, or it is reported.
//!
//! # Deliberate differences
//!
//! | # | difference | why | how the tester handles it |
//! |---|---|---|---|
//! | D1 | `x-single-active-consumer` is accepted and ignored (every consumer gets messages; RabbitMQ refuses an exclusive consumer on such a queue with 403 and delivers to one consumer at a time) | not implemented yet (broker `lib.rs`, "Not implemented") | the generator leaves the argument out ([`generate`]) |
//! | D2 | on a connection close, the bundled broker detaches the consumers of all its channels before returning their unacked messages; RabbitMQ may hand a returned message to another channel of the closing connection (lost there if that consumer is no-ack) | never losing a message is what users expect; RabbitMQ's outcome is a race (U1) | covered by U1 |
//! | D3 | the `CC` and `BCC` headers (RabbitMQ's sender-selected distribution: extra routing keys; `BCC` removed from the message) are ordinary headers | not implemented yet; to be built on the routing of trust-input's branch (issue 13) | the generator leaves those headers out ([`generate`]) |
//!
//! Departures the lapin and raw-socket suites pin (unknown method ids, channel numbers above
//! channel_max, `max_message_size` checked on the announced size) are listed in
//! `tests/README.md`; the tester's programs are well-formed and never send those.
//!
//! # Undefined in RabbitMQ, not compared
//!
//! | # | situation | why | how |
//! |---|---|---|---|
//! | U1 | a connection goes away while two or more of its channels hold consumers or unacked deliveries (one of them unacked deliveries) | RabbitMQ's channel processes end concurrently: returned messages reach the other channels' consumers, or not, in any order (measured: the message survives 1 run in 6) | a client `connection.close` closes such channels one by one first (`runner`); when the broker closes the connection, the comparison ends at that step (`OpTrace::undefined`) |
//! | U2 | the order of events across channels, connections and consumers, and of delivery tags across consumers of one channel | separate processes in RabbitMQ | events are compared per channel and consumer (`trace`); tags as the set each channel used; acks name deliveries by message, `multiple` only by the latest tag |
//! | U3 | `x-death`'s `time` | a clock | rendered as `T(*)` (`text`) |
//! | U4 | server-generated names (`amq.gen-…`, `amq.ctag-…`) | random | named by order of appearance (`sn0`, `sct0`) |
//! | U5 | the close texts after the code's name (`NOT_FOUND - no queue 'q' in vhost '/'`) | prose | only the code, its name and the class/method ids are compared |
//! | U6 | time: TTLs and expiries other than 0 or an hour, heartbeats | timing | the generator uses only those values, heartbeats off |

use crate::program::{OpKind, Props};

/// False for operations the generator must leave out (see the table above).
pub fn generate(kind: &OpKind) -> bool {
    match kind {
        // D1.
        OpKind::QueueDeclare { args, .. } => !args.contains_key("x-single-active-consumer"),
        // D3.
        OpKind::Publish { props, .. } => !props
            .headers
            .as_ref()
            .is_some_and(|h| h.contains_key("CC") || h.contains_key("BCC")),
        _ => true,
    }
}

/// Rewrites properties as observed, on both sides, where a deliberate difference would
/// otherwise show. None does today.
pub fn normalise_props(props: Props) -> Props {
    props
}

#[cfg(test)]
mod tests {
    use amq_protocol::types::{AMQPValue, FieldTable};

    use super::*;
    use crate::program::QueueName;

    #[test]
    fn single_active_consumer_queues_are_left_out() {
        let mut args = FieldTable::default();
        args.insert("x-single-active-consumer".into(), AMQPValue::Boolean(true));
        let declare = |args: FieldTable| OpKind::QueueDeclare {
            q: QueueName::Fixed(0),
            passive: false,
            durable: false,
            exclusive: false,
            auto_delete: false,
            args,
        };
        assert!(!generate(&declare(args)));
        assert!(generate(&declare(FieldTable::default())));
    }
}
