//! AMQP field tables (declare and bind arguments, message headers) to and from JSON, as
//! RabbitMQ's management API and definitions files write them.
//!
//! To JSON: booleans, numbers and strings as themselves (byte strings as text, invalid UTF-8
//! replaced), decimals as numbers, timestamps as integers, arrays and tables recursively,
//! void as `null`. From JSON: strings become long strings, integers `long` (i64) and other
//! numbers doubles, as RabbitMQ does (`rabbit_mgmt_format:to_amqp_table`). The depth is
//! bounded by the JSON parser (serde_json stops at 128 levels); keys longer than 255 bytes
//! (a short string's limit) are refused.

use amq_protocol::types::{AMQPValue, FieldArray, FieldTable, ShortString};
use serde_json::{Map, Number, Value};

/// One field value as JSON.
pub(crate) fn value_to_json(v: &AMQPValue) -> Value {
    match v {
        AMQPValue::Boolean(b) => Value::Bool(*b),
        AMQPValue::ShortShortInt(n) => Value::from(*n),
        AMQPValue::ShortShortUInt(n) => Value::from(*n),
        AMQPValue::ShortInt(n) => Value::from(*n),
        AMQPValue::ShortUInt(n) => Value::from(*n),
        AMQPValue::LongInt(n) => Value::from(*n),
        AMQPValue::LongUInt(n) => Value::from(*n),
        AMQPValue::LongLongInt(n) => Value::from(*n),
        AMQPValue::Timestamp(n) => Value::from(*n),
        AMQPValue::Float(f) => float(f64::from(*f)),
        AMQPValue::Double(f) => float(*f),
        AMQPValue::DecimalValue(d) => float(f64::from(d.value) / 10f64.powi(i32::from(d.scale))),
        AMQPValue::ShortString(s) => Value::String(s.as_str().to_owned()),
        AMQPValue::LongString(s) => Value::String(String::from_utf8_lossy(s.as_bytes()).into()),
        AMQPValue::ByteArray(b) => Value::String(String::from_utf8_lossy(b.as_slice()).into()),
        AMQPValue::FieldArray(a) => Value::Array(a.as_slice().iter().map(value_to_json).collect()),
        AMQPValue::FieldTable(t) => to_json(t),
        AMQPValue::Void => Value::Null,
    }
}

/// A float as a JSON number (`null` for NaN and infinities, which JSON cannot carry).
fn float(f: f64) -> Value {
    Number::from_f64(f).map_or(Value::Null, Value::Number)
}

/// A field table as a JSON object.
pub(crate) fn to_json(table: &FieldTable) -> Value {
    Value::Object(
        table
            .inner()
            .iter()
            .map(|(k, v)| (k.as_str().to_owned(), value_to_json(v)))
            .collect::<Map<_, _>>(),
    )
}

/// One JSON value as a field value.
pub(crate) fn value_from_json(v: &Value) -> Result<AMQPValue, String> {
    Ok(match v {
        Value::Null => AMQPValue::Void,
        Value::Bool(b) => AMQPValue::Boolean(*b),
        Value::Number(n) => match (n.as_i64(), n.as_f64()) {
            (Some(i), _) => AMQPValue::LongLongInt(i),
            (None, Some(f)) => AMQPValue::Double(f),
            (None, None) => return Err(format!("number {n} out of range")),
        },
        Value::String(s) => AMQPValue::LongString(s.as_str().into()),
        Value::Array(items) => AMQPValue::FieldArray(FieldArray::from(
            items
                .iter()
                .map(value_from_json)
                .collect::<Result<Vec<_>, _>>()?,
        )),
        Value::Object(_) => AMQPValue::FieldTable(from_json(v)?),
    })
}

/// A JSON object (or `null`, an empty table) as a field table.
pub(crate) fn from_json(v: &Value) -> Result<FieldTable, String> {
    let mut table = FieldTable::default();
    match v {
        Value::Null => {}
        Value::Object(map) => {
            for (k, v) in map {
                let key = ShortString::try_new(k.as_str())
                    .map_err(|_| format!("argument name longer than 255 bytes: '{k:.40}...'"))?;
                table.insert(key, value_from_json(v)?);
            }
        }
        other => return Err(format!("arguments must be an object, not {other}")),
    }
    Ok(table)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn json_round_trips_through_a_field_table() {
        let v = json!({
            "x-max-length": 10, "x-message-ttl": -1, "ratio": 0.5, "flag": true,
            "x-dead-letter-exchange": "dlx", "list": [1, "a", null], "nested": {"k": {"j": 2}}
        });
        let table = from_json(&v).unwrap();
        assert_eq!(
            table.inner().get("x-max-length"),
            Some(&AMQPValue::LongLongInt(10))
        );
        assert_eq!(to_json(&table), v);
    }

    #[test]
    fn amqp_widths_and_decimals_come_out_as_numbers() {
        let mut t = FieldTable::default();
        t.insert("a".into(), AMQPValue::ShortInt(-3));
        t.insert("b".into(), AMQPValue::LongUInt(7));
        t.insert(
            "c".into(),
            AMQPValue::DecimalValue(amq_protocol::types::DecimalValue {
                scale: 2,
                value: 150,
            }),
        );
        t.insert("d".into(), AMQPValue::Double(f64::NAN));
        assert_eq!(to_json(&t), json!({"a": -3, "b": 7, "c": 1.5, "d": null}));
    }

    #[test]
    fn bad_input_is_an_error_not_a_panic() {
        assert!(from_json(&json!([1])).is_err());
        assert!(from_json(&json!("x")).is_err());
        let long_key = "k".repeat(256);
        assert!(from_json(&json!({ long_key: 1 })).is_err());
        assert!(from_json(&json!({"x": u64::MAX})).is_ok(), "as a double");
        assert_eq!(from_json(&Value::Null).unwrap(), FieldTable::default());
    }
}
