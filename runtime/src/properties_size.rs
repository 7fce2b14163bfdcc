//! How many bytes a message's content header takes on the wire, so that a copy the worker
//! publishes (a task retry, a dead letter, a redelivery count) is checked against the
//! connection's `frame_max` before it is sent: a content header larger than `frame_max` makes
//! the broker close the whole connection (501 FRAME_ERROR), and every unacked delivery on it
//! would be redelivered and run again.
//!
//! # Content header frame (AMQP 0-9-1 §4.2.6.1, §2.3.5)
//! ```text
//! byte 0    1-2      3-6    7-8       9-10    11-18      19-20    21..       last
//! type=2    channel  size   class-id  weight  body-size  flags    props      0xCE
//! ```
//! Twenty bytes besides the property list; the whole frame must not exceed `frame_max`. The
//! property list holds, for each flag set: a short string (1 length byte + bytes) for the
//! string properties, 1 byte for `delivery-mode` and `priority`, 8 for `timestamp`, and the
//! field table of `headers` (4 length bytes, then per entry a short-string key, a type byte and
//! the value; §4.2.5.5).

use lapin::types::{AMQPValue, FieldTable};
use lapin::BasicProperties;

/// Bytes of a content header frame besides its property list.
pub(crate) const FRAME_OVERHEAD: usize = 20;

/// The bytes of the property list of `properties` (flags included).
pub(crate) fn properties_len(properties: &BasicProperties) -> usize {
    let short = |s: Option<&lapin::types::ShortString>| s.map_or(0, |s| 1 + s.as_str().len());
    2 + short(properties.content_type().as_ref())
        + short(properties.content_encoding().as_ref())
        + properties.headers().as_ref().map_or(0, table_len)
        + properties.delivery_mode().map_or(0, |_| 1)
        + properties.priority().map_or(0, |_| 1)
        + short(properties.correlation_id().as_ref())
        + short(properties.reply_to().as_ref())
        + short(properties.expiration().as_ref())
        + short(properties.message_id().as_ref())
        + properties.timestamp().map_or(0, |_| 8)
        + short(properties.kind().as_ref())
        + short(properties.user_id().as_ref())
        + short(properties.app_id().as_ref())
        + short(properties.cluster_id().as_ref())
}

/// True when a content header with `properties` fits a frame of `frame_max` bytes (0 means
/// no limit was negotiated).
pub(crate) fn fits(properties: &BasicProperties, frame_max: u32) -> bool {
    frame_max == 0
        || usize::try_from(frame_max)
            .is_ok_and(|max| properties_len(properties) + FRAME_OVERHEAD <= max)
}

/// The encoded bytes of a field table, its 4-byte length included. Iterative: header tables
/// nest as deep as the sender made them.
pub(crate) fn table_len(table: &FieldTable) -> usize {
    let mut len = 4;
    // Values whose bytes are still to be counted.
    let mut pending: Vec<&AMQPValue> = Vec::new();
    for (key, value) in table.inner() {
        len += 1 + key.as_str().len();
        pending.push(value);
    }
    while let Some(value) = pending.pop() {
        len += 1 + match value {
            AMQPValue::Boolean(_) | AMQPValue::ShortShortInt(_) | AMQPValue::ShortShortUInt(_) => 1,
            AMQPValue::ShortInt(_) | AMQPValue::ShortUInt(_) => 2,
            AMQPValue::LongInt(_) | AMQPValue::LongUInt(_) | AMQPValue::Float(_) => 4,
            AMQPValue::LongLongInt(_) | AMQPValue::Double(_) | AMQPValue::Timestamp(_) => 8,
            AMQPValue::DecimalValue(_) => 5,
            AMQPValue::ShortString(s) => 1 + s.as_str().len(),
            AMQPValue::LongString(s) => 4 + s.as_bytes().len(),
            AMQPValue::ByteArray(b) => 4 + b.as_slice().len(),
            AMQPValue::Void => 0,
            AMQPValue::FieldArray(array) => {
                pending.extend(array.as_slice());
                4
            }
            AMQPValue::FieldTable(table) => {
                for (key, value) in table.inner() {
                    len += 1 + key.as_str().len();
                    pending.push(value);
                }
                4
            }
        };
    }
    len
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // in tests a failed unwrap is a failed test
mod tests {
    use super::*;
    use lapin::types::{FieldArray, LongString};

    #[test]
    fn sizes_follow_the_spec_layout() {
        assert_eq!(table_len(&FieldTable::default()), 4);
        let mut inner = FieldTable::default();
        inner.insert("n".into(), AMQPValue::LongLongInt(1)); // 1+1 key, 1+8 value
        let mut table = FieldTable::default();
        table.insert("s".into(), AMQPValue::LongString(LongString::from("abc"))); // 2 + 1+4+3
        table.insert(
            "a".into(),
            AMQPValue::FieldArray(FieldArray::from(vec![AMQPValue::Boolean(true)])), // 2 + 1+4 + 2
        );
        table.insert("t".into(), AMQPValue::FieldTable(inner)); // 2 + 1+4 + 11
        assert_eq!(table_len(&table), 4 + 10 + 9 + 18);
        let properties = BasicProperties::default()
            .with_content_type("application/msgpack".into()) // 1+19
            .with_delivery_mode(2) // 1
            .with_timestamp(1) // 8
            .with_headers(table.clone());
        assert_eq!(
            properties_len(&properties),
            2 + 20 + 1 + 8 + table_len(&table)
        );
    }

    #[test]
    fn a_130_kib_header_does_not_fit_the_default_frame() {
        let mut table = FieldTable::default();
        table.insert(
            "big".into(),
            AMQPValue::LongString(LongString::from(vec![b'x'; 130 * 1024])),
        );
        let properties = BasicProperties::default().with_headers(table);
        assert!(!fits(&properties, 131_072));
        assert!(fits(&properties, 0));
        assert!(fits(&BasicProperties::default(), 131_072));
    }
}
