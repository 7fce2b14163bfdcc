//! Reading AMQP field values (declare arguments, message headers, login tables) as clients
//! send them: an integer of any width, a string short or long.

use amq_protocol::types::{AMQPValue, FieldTable};

/// An integer field value of any width.
pub(crate) fn as_i64(v: &AMQPValue) -> Option<i64> {
    Some(match v {
        AMQPValue::ShortShortInt(n) => i64::from(*n),
        AMQPValue::ShortShortUInt(n) => i64::from(*n),
        AMQPValue::ShortInt(n) => i64::from(*n),
        AMQPValue::ShortUInt(n) => i64::from(*n),
        AMQPValue::LongInt(n) => i64::from(*n),
        AMQPValue::LongUInt(n) => i64::from(*n),
        AMQPValue::LongLongInt(n) => *n,
        AMQPValue::Timestamp(n) => i64::try_from(*n).ok()?,
        _ => return None,
    })
}

/// A string field value, short or long (invalid UTF-8 in a long string replaced).
pub(crate) fn as_string(v: &AMQPValue) -> Option<String> {
    match v {
        AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        AMQPValue::ShortString(s) => Some(s.as_str().to_owned()),
        _ => None,
    }
}

/// The string under `key` in `table` ([`as_string`]); `None` when absent or not a string.
pub(crate) fn string_field(table: &FieldTable, key: &str) -> Option<String> {
    table.inner().get(key).and_then(as_string)
}

/// A field table of `entries` (unit tests build declare arguments and headers with it).
#[cfg(test)]
pub(crate) fn table(entries: &[(&str, AMQPValue)]) -> FieldTable {
    let mut table = FieldTable::default();
    for (key, value) in entries {
        table.insert((*key).into(), value.clone());
    }
    table
}
