//! `x-queue-type`: RabbitMQ's queue types (classic, quorum, stream) as far as a client can see
//! them at `queue.declare`: which arguments each type accepts, which flags it refuses, and which
//! arguments a redeclare must repeat.
//!
//! The bundled broker has one kind of queue underneath; a quorum or stream queue is a plain
//! queue whose declaration was checked as RabbitMQ 3.10 checks it, so that a declaration
//! refused by a RabbitMQ cluster is refused here too (and one accepted there is accepted here).
//! The lists are RabbitMQ 3.10.8's, measured (each queue type's `queue_arguments` capability:
//! the same list serves the declare check and the equivalence check).

use amq_protocol::types::{AMQPValue, FieldTable};

use crate::field_value::as_i64;

/// A queue type, as `x-queue-type` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) enum QueueType {
    /// `classic` (also an absent `x-queue-type`).
    #[default]
    Classic,
    /// `quorum`: durable only, not exclusive, not auto-delete, no server-named ones.
    Quorum,
    /// `stream`: as quorum, with its own arguments.
    Stream,
}

/// The arguments a classic queue takes (and compares on redeclare), in RabbitMQ's order.
const CLASSIC: [&str; 12] = [
    "x-expires",
    "x-message-ttl",
    "x-dead-letter-exchange",
    "x-dead-letter-routing-key",
    "x-max-length",
    "x-max-length-bytes",
    "x-max-priority",
    "x-overflow",
    "x-queue-mode",
    "x-single-active-consumer",
    "x-queue-type",
    "x-queue-master-locator",
];

/// The arguments a quorum queue takes (and compares on redeclare).
const QUORUM: [&str; 15] = [
    "x-expires",
    "x-message-ttl",
    "x-dead-letter-exchange",
    "x-dead-letter-routing-key",
    "x-dead-letter-strategy",
    "x-max-length",
    "x-max-length-bytes",
    "x-max-in-memory-length",
    "x-max-in-memory-bytes",
    "x-overflow",
    "x-single-active-consumer",
    "x-queue-type",
    "x-quorum-initial-group-size",
    "x-delivery-limit",
    "x-queue-leader-locator",
];

/// The arguments a stream takes (and compares on redeclare).
const STREAM: [&str; 6] = [
    "x-max-length-bytes",
    "x-queue-type",
    "x-max-age",
    "x-stream-max-segment-size-bytes",
    "x-initial-cluster-size",
    "x-queue-leader-locator",
];

impl QueueType {
    /// The type `x-queue-type` names: absent is classic; the error is RabbitMQ's detail text
    /// (after `invalid arg 'x-queue-type' for queue '…' in vhost '…': `).
    pub(crate) fn from_arguments(args: &FieldTable) -> Result<Self, String> {
        match args.inner().get("x-queue-type") {
            None => Ok(QueueType::Classic),
            Some(AMQPValue::LongString(s)) => match s.as_bytes() {
                b"classic" => Ok(QueueType::Classic),
                b"quorum" => Ok(QueueType::Quorum),
                b"stream" => Ok(QueueType::Stream),
                other => Err(format!(
                    "\"unsupported queue type '{}'\"",
                    String::from_utf8_lossy(other)
                )),
            },
            Some(other) => Err(format!("{{unacceptable_type,{}}}", type_name(other))),
        }
    }

    /// The type's name, as `x-queue-type` gives it.
    pub(crate) fn name(self) -> &'static str {
        match self {
            QueueType::Classic => "classic",
            QueueType::Quorum => "quorum",
            QueueType::Stream => "stream",
        }
    }

    /// RabbitMQ's module for the type, as its error texts name it.
    pub(crate) fn module(self) -> &'static str {
        match self {
            QueueType::Classic => "rabbit_classic_queue",
            QueueType::Quorum => "rabbit_quorum_queue",
            QueueType::Stream => "rabbit_stream_queue",
        }
    }

    /// The arguments this type takes, and compares on a redeclare.
    fn arguments(self) -> &'static [&'static str] {
        match self {
            QueueType::Classic => &CLASSIC,
            QueueType::Quorum => &QUORUM,
            QueueType::Stream => &STREAM,
        }
    }

    /// The first known argument of `args` this type does not take (RabbitMQ: 406 `invalid
    /// arg 'K' for queue '…' in vhost '…' of queue type rabbit_quorum_queue`). Known are the
    /// arguments of any type; any other (`x-foo`) is accepted and ignored by every type.
    pub(crate) fn refused_argument(self, args: &FieldTable) -> Option<&'static str> {
        [CLASSIC.as_slice(), &QUORUM, &STREAM]
            .into_iter()
            .flatten()
            .find(|k| args.inner().contains_key(**k) && !self.arguments().contains(k))
            .copied()
    }

    /// The flag of a new queue this type refuses, as RabbitMQ names it (`invalid property
    /// 'auto-delete' for queue '…' in vhost '…'`), checked in RabbitMQ's order.
    pub(crate) fn refused_property(
        self,
        durable: bool,
        exclusive: bool,
        auto_delete: bool,
    ) -> Option<&'static str> {
        if self == QueueType::Classic {
            None
        } else if auto_delete {
            Some("auto-delete")
        } else if exclusive {
            Some("exclusive-owner")
        } else if !durable {
            Some("non-durable")
        } else {
            None
        }
    }

    /// Whether the server may name a queue of this type (RabbitMQ: 406 `Cannot declare a
    /// server-named queue for type rabbit_quorum_queue`).
    pub(crate) fn server_named_allowed(self) -> bool {
        self == QueueType::Classic
    }

    /// The first argument this type compares on which a redeclare's `received` table differs
    /// from the queue's `current` one, with RabbitMQ's text for it (after `inequivalent arg
    /// 'K' for queue '…' in vhost '…': `). Integers of any width are equal when their values
    /// are; an absent `x-queue-type` is equivalent to `classic`.
    pub(crate) fn difference(
        self,
        current: &FieldTable,
        received: &FieldTable,
    ) -> Option<(&'static str, String)> {
        let classic = AMQPValue::LongString("classic".into());
        self.arguments().iter().find_map(|key| {
            let (old, new) = (current.inner().get(*key), received.inner().get(*key));
            if *key == "x-queue-type" && old.or(new) == Some(&classic) && old.and(new).is_none() {
                // An absent type and an explicit `classic` are equivalent (and nothing else).
                return None;
            }
            match (old, new) {
                (None, None) => None,
                (Some(o), Some(n)) if equivalent(o, n) => None,
                (Some(o), Some(n)) if same_class(o, n) => Some((
                    *key,
                    format!("received '{}' but current is '{}'", show(n), show(o)),
                )),
                _ => Some((
                    *key,
                    format!(
                        "received {} but current is {}",
                        describe(new),
                        describe(old)
                    ),
                )),
            }
        })
    }
}

/// RabbitMQ's equality of two argument values: integers by value whatever their width.
fn equivalent(a: &AMQPValue, b: &AMQPValue) -> bool {
    match (as_i64(a), as_i64(b)) {
        (Some(x), Some(y)) => x == y,
        _ => a == b,
    }
}

/// Whether two values are of one type class (every integer width is one class).
fn same_class(a: &AMQPValue, b: &AMQPValue) -> bool {
    (as_i64(a).is_some() && as_i64(b).is_some()) || type_name(a) == type_name(b)
}

/// `none`, or `the value 'V' of type 'T'`, as RabbitMQ writes an argument in its texts.
fn describe(v: Option<&AMQPValue>) -> String {
    match v {
        None => "none".to_owned(),
        Some(v) => format!("the value '{}' of type '{}'", show(v), type_name(v)),
    }
}

/// A value as RabbitMQ prints it in a text.
fn show(v: &AMQPValue) -> String {
    match v {
        AMQPValue::LongString(s) => String::from_utf8_lossy(s.as_bytes()).into_owned(),
        AMQPValue::ShortString(s) => s.as_str().to_owned(),
        AMQPValue::Boolean(b) => b.to_string(),
        other => as_i64(other).map_or_else(|| format!("{other:?}"), |n| n.to_string()),
    }
}

/// RabbitMQ's name of a field value's type.
pub(crate) fn type_name(v: &AMQPValue) -> &'static str {
    match v {
        AMQPValue::Boolean(_) => "bool",
        AMQPValue::ShortShortInt(_) => "byte",
        AMQPValue::ShortShortUInt(_) => "unsignedbyte",
        AMQPValue::ShortInt(_) => "short",
        AMQPValue::ShortUInt(_) => "unsignedshort",
        AMQPValue::LongInt(_) => "signedint",
        AMQPValue::LongUInt(_) => "unsignedint",
        AMQPValue::LongLongInt(_) => "long",
        AMQPValue::Float(_) => "float",
        AMQPValue::Double(_) => "double",
        AMQPValue::DecimalValue(_) => "decimal",
        AMQPValue::ShortString(_) => "shortstr",
        AMQPValue::LongString(_) => "longstr",
        AMQPValue::FieldArray(_) => "array",
        AMQPValue::Timestamp(_) => "timestamp",
        AMQPValue::FieldTable(_) => "table",
        AMQPValue::ByteArray(_) => "binary",
        AMQPValue::Void => "void",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::field_value::table;

    fn s(v: &str) -> AMQPValue {
        AMQPValue::LongString(v.into())
    }

    #[test]
    fn the_type_is_a_known_long_string() {
        assert_eq!(
            QueueType::from_arguments(&table(&[])),
            Ok(QueueType::Classic)
        );
        assert_eq!(
            QueueType::from_arguments(&table(&[("x-queue-type", s("quorum"))])),
            Ok(QueueType::Quorum)
        );
        assert_eq!(
            QueueType::from_arguments(&table(&[("x-queue-type", s("bogus"))])),
            Err("\"unsupported queue type 'bogus'\"".to_owned())
        );
        assert_eq!(
            QueueType::from_arguments(&table(&[("x-queue-type", AMQPValue::LongInt(1))])),
            Err("{unacceptable_type,signedint}".to_owned())
        );
    }

    #[test]
    fn each_type_refuses_the_others_arguments_but_not_unknown_ones() {
        let args = |k: &str| table(&[(k, AMQPValue::LongInt(1))]);
        assert_eq!(
            QueueType::Quorum.refused_argument(&args("x-max-priority")),
            Some("x-max-priority")
        );
        assert_eq!(
            QueueType::Classic.refused_argument(&args("x-delivery-limit")),
            Some("x-delivery-limit")
        );
        assert_eq!(
            QueueType::Stream.refused_argument(&args("x-max-length")),
            Some("x-max-length")
        );
        for t in [QueueType::Classic, QueueType::Quorum, QueueType::Stream] {
            assert_eq!(t.refused_argument(&args("x-foo")), None);
        }
    }

    #[test]
    fn redeclares_compare_the_types_arguments_only() {
        let quorum = table(&[
            ("x-queue-type", s("quorum")),
            ("x-delivery-limit", AMQPValue::LongInt(3)),
        ]);
        let same = table(&[
            ("x-queue-type", s("quorum")),
            ("x-delivery-limit", AMQPValue::LongLongInt(3)),
            ("x-max-priority", AMQPValue::LongInt(300)),
        ]);
        assert_eq!(QueueType::Quorum.difference(&quorum, &same), None);
        let other = table(&[
            ("x-queue-type", s("quorum")),
            ("x-delivery-limit", AMQPValue::LongInt(4)),
        ]);
        assert_eq!(
            QueueType::Quorum.difference(&quorum, &other),
            Some((
                "x-delivery-limit",
                "received '4' but current is '3'".to_owned()
            ))
        );
        let classic = table(&[("x-queue-type", s("classic"))]);
        assert_eq!(QueueType::Classic.difference(&table(&[]), &classic), None);
        assert_eq!(QueueType::Classic.difference(&classic, &table(&[])), None);
        assert_eq!(
            QueueType::Classic.difference(&table(&[]), &table(&[("x-queue-type", s("quorum"))])),
            Some((
                "x-queue-type",
                "received the value 'quorum' of type 'longstr' but current is none".to_owned()
            ))
        );
        assert_eq!(
            QueueType::Quorum.difference(&quorum, &classic),
            Some((
                "x-queue-type",
                "received 'classic' but current is 'quorum'".to_owned()
            ))
        );
        assert_eq!(
            QueueType::Quorum.difference(&quorum, &table(&[("x-queue-type", s("quorum"))])),
            Some((
                "x-delivery-limit",
                "received none but current is the value '3' of type 'signedint'".to_owned()
            ))
        );
    }
}
