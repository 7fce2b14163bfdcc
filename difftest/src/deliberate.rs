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
//! | D1 | `basic.cancel` of the active consumer of a classic queue with `x-single-active-consumer`: RabbitMQ 3.10 makes the next consumer active without serving it (until a channel close, a requeue or a new consumer runs the queue), and the next publish to the queue crashes its queue process (`{badmatch,false}` in rabbit_amqqueue_process, measured), which restarts and cancels its consumers; the bundled broker serves the next consumer at once, as RabbitMQ's quorum queues do | a crash is not behaviour to copy, and a hot standby must take over when the active consumer cancels | once a program declared a classic queue with `x-single-active-consumer: true`, the generator sends no `basic.cancel` ([`generate`](crate::generate)) |
//! | D2 | on a connection close, the bundled broker detaches the consumers of all its channels before returning their unacked messages; RabbitMQ may hand a returned message to another channel of the closing connection (lost there if that consumer is no-ack) | never losing a message is what users expect; RabbitMQ's outcome is a race (U1) | covered by U1 |
//! | D3 | the `CC` and `BCC` headers (RabbitMQ's sender-selected distribution: extra routing keys; `BCC` removed from the message) are ordinary headers | not implemented yet; to be built on the routing of trust-input's branch (issue 13) | the generator leaves those headers out ([`generate`]) |
//! | D4 | a quorum queue is a plain queue underneath: no `x-delivery-count` header (RabbitMQ adds it to every `basic.get` of a quorum queue and to every redelivery), and `x-delivery-limit` is checked and compared but not enforced | the count needs per-message state on the deliver path, which must not get slower; the declare-time behaviour (what each queue type takes, refuses and compares; global qos; `exclusive` ignored) is RabbitMQ's | `x-delivery-count` is removed from observed headers on both sides ([`normalise_props`]); the generator's delivery limits (50 to 99) are never reached |
//! | D5 | a stream (`x-queue-type: stream`) is declared as RabbitMQ declares one (its arguments and flags) but is a plain queue underneath (RabbitMQ: `basic.get` is 540, consumers need a prefetch and read from an offset) | streams are not implemented | the generator leaves streams out ([`generate`]) |
//! | D6 | a server-named queue (empty name) with an unknown or non-string `x-queue-type`: RabbitMQ fails with an internal error and closes the connection; the bundled broker answers the 406 a named queue gets | a crash is not behaviour to copy | the generator leaves those declares out ([`generate`]) |
//! | D7 | the consumer count of a quorum queue (`queue.declare-ok`) counts only its consumers; RabbitMQ's also counts cancelled consumers still holding unacked messages and channels holding an unacked `basic.get` of it | RabbitMQ's count is its Raft state machine's bookkeeping, not a consumer a client can see | the runner shows a quorum queue's consumer count as `*` (`runner`, `counts`) |
//! | D8 | a message requeued into a quorum queue goes back to its original position; RabbitMQ 3.10 puts one requeued by `basic.nack`/`basic.reject` (requeue) or `basic.recover` at the back of the queue, and the messages a closing channel or connection returns ahead of the others in the order they were returned (two channels closing in turn: the second one's first) | the position is the message's key in the store: re-keying it at requeue needs machinery the queue does not have | once a program declared a quorum queue, the generator sends no requeuing nack, reject or recover, and only programs of one connection with one channel declare quorum queues (one channel returns its messages in the queue's order) ([`generate`](crate::generate)) |
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

use amq_protocol::types::{AMQPValue, FieldTable};

use crate::program::{OpKind, Props, QueueName};

/// False for operations the generator must leave out (see the table above).
pub fn generate(kind: &OpKind) -> bool {
    match kind {
        OpKind::QueueDeclare { q, args, .. } => {
            let queue_type = args.inner().get("x-queue-type");
            let stream = queue_type.is_some_and(|t| is_string(t, "stream"));
            let invalid = queue_type
                .is_some_and(|t| !["classic", "quorum"].iter().any(|name| is_string(t, name)));
            // D5, D6.
            !(stream || (*q == QueueName::Empty && invalid))
        }
        // D3.
        OpKind::Publish { props, .. } => !props
            .headers
            .as_ref()
            .is_some_and(|h| h.contains_key("CC") || h.contains_key("BCC")),
        _ => true,
    }
}

/// Whether `v` is the long string `s`.
fn is_string(v: &AMQPValue, s: &str) -> bool {
    matches!(v, AMQPValue::LongString(t) if t.as_bytes() == s.as_bytes())
}

/// Rewrites properties as observed, on both sides, where a deliberate difference would
/// otherwise show: D4's `x-delivery-count` header is removed (and a headers table left empty
/// by that becomes none, on both sides alike).
pub fn normalise_props(mut props: Props) -> Props {
    if let Some(headers) = props.headers.take() {
        let mut inner = headers.inner().clone();
        inner.remove("x-delivery-count");
        if !inner.is_empty() {
            props.headers = Some(FieldTable::from(inner));
        }
    }
    props
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_active_consumer_queues_are_generated() {
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
        assert!(generate(&declare(args)));
        assert!(generate(&declare(FieldTable::default())));
    }

    #[test]
    fn streams_and_server_named_queues_of_an_invalid_type_are_left_out() {
        let declare = |q: QueueName, t: AMQPValue| {
            let mut args = FieldTable::default();
            args.insert("x-queue-type".into(), t);
            OpKind::QueueDeclare {
                q,
                passive: false,
                durable: true,
                exclusive: false,
                auto_delete: false,
                args,
            }
        };
        let s = |v: &str| AMQPValue::LongString(v.into());
        assert!(!generate(&declare(QueueName::Fixed(0), s("stream"))));
        assert!(generate(&declare(QueueName::Fixed(0), s("bogus"))));
        assert!(!generate(&declare(QueueName::Empty, s("bogus"))));
        assert!(!generate(&declare(QueueName::Empty, AMQPValue::LongInt(1))));
        assert!(generate(&declare(QueueName::Empty, s("quorum"))));
        assert!(generate(&declare(QueueName::Empty, s("classic"))));
    }

    #[test]
    fn the_delivery_count_header_is_not_compared() {
        let mut headers = FieldTable::default();
        headers.insert("x-delivery-count".into(), AMQPValue::LongLongInt(1));
        let only = Props {
            headers: Some(headers.clone()),
            ..Props::default()
        };
        assert_eq!(normalise_props(only), Props::default());
        headers.insert("h1".into(), AMQPValue::Boolean(true));
        let mut kept = FieldTable::default();
        kept.insert("h1".into(), AMQPValue::Boolean(true));
        let both = Props {
            headers: Some(headers),
            ..Props::default()
        };
        assert_eq!(normalise_props(both).headers, Some(kept));
    }
}
