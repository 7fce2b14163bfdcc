//! The wire format of a task message: what `enqueue` publishes and what the worker adds when
//! it retries or dead-letters a task, so that other languages can enqueue Lepus tasks and read
//! dead letters.
//!
//! # Task message (enqueue -> worker)
//! Published to the default exchange `""`, routing key = the task queue, `mandatory = true`,
//! on a channel in confirm mode (the enqueue returns after `basic.ack`).
//!
//! | property         | value                                                               |
//! |------------------|---------------------------------------------------------------------|
//! | `content-type`   | `application/msgpack`                                               |
//! | `delivery-mode`  | 2 (persistent)                                                      |
//! | `message-id`     | the caller's id, or 32 lowercase hex digits (a v4 UUID)             |
//! | `timestamp`      | enqueue time, Unix seconds                                          |
//! | `priority`       | optional, honoured when the queue has `x-max-priority`             |
//! | headers          | `x-lepus-method` (`S`, the task name), [`ENQUEUED_AT`] (`l`); inside a handler's context also `x-lepus-trace-id` (`S`) |
//!
//! Body: the arguments as one MessagePack array, exactly as an RPC request (see `envelope`).
//!
//! # Headers the worker adds after a failed attempt
//! | header                 | type | meaning                                                  |
//! |------------------------|------|----------------------------------------------------------|
//! | [`ATTEMPTS`]           | `l`  | attempts made so far (absent = 0)                        |
//! | [`ERROR`]              | `S`  | the last attempt's error (`Display` text, panic message) |
//! | [`FIRST_FAILED_AT`]    | `l`  | Unix ms of the first failure                             |
//! | [`LAST_FAILED_AT`]     | `l`  | Unix ms of the last failure                              |
//! | [`ORIGIN_QUEUE`]       | `S`  | the task queue (to requeue a dead letter into)          |
//! | [`RETRY_DELAY`]        | `l`  | ms waited before this retry (retries only)               |
//!
//! A retry copy goes to a delay queue (see `retry_delay`), a dead letter to the dead-letter
//! queue; RabbitMQ's own `x-death` and `x-first-death-*` headers are dropped from the copies.

use std::time::{SystemTime, UNIX_EPOCH};

use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};

/// Attempts made so far (`l`).
pub const ATTEMPTS: &str = "x-lepus-attempts";
/// The last attempt's error text (`S`).
pub const ERROR: &str = "x-lepus-error";
/// Unix milliseconds of the enqueue (`l`).
pub const ENQUEUED_AT: &str = "x-lepus-enqueued-at";
/// Unix milliseconds of the first failure (`l`).
pub const FIRST_FAILED_AT: &str = "x-lepus-first-failed-at";
/// Unix milliseconds of the last failure (`l`).
pub const LAST_FAILED_AT: &str = "x-lepus-last-failed-at";
/// The task queue a retry or dead letter came from (`S`).
pub const ORIGIN_QUEUE: &str = "x-lepus-origin-queue";
/// The delay before this retry, in milliseconds (`l`).
pub const RETRY_DELAY: &str = "x-lepus-retry-delay";

/// Headers the broker adds on dead-lettering that a copy does not carry over.
const BROKER_DEATH_HEADERS: [&str; 4] = [
    "x-death",
    "x-first-death-exchange",
    "x-first-death-queue",
    "x-first-death-reason",
];

/// Milliseconds since the Unix epoch.
pub(crate) fn now_ms() -> i64 {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(now.as_millis()).unwrap_or(i64::MAX)
}

/// Reads an integer header of any AMQP integer type.
pub fn int(headers: Option<&FieldTable>, name: &str) -> Option<i64> {
    match headers?.inner().get(name)? {
        AMQPValue::LongLongInt(v) => Some(*v),
        AMQPValue::LongInt(v) => Some(i64::from(*v)),
        AMQPValue::LongUInt(v) => Some(i64::from(*v)),
        AMQPValue::ShortInt(v) => Some(i64::from(*v)),
        AMQPValue::ShortUInt(v) => Some(i64::from(*v)),
        AMQPValue::ShortShortInt(v) => Some(i64::from(*v)),
        AMQPValue::ShortShortUInt(v) => Some(i64::from(*v)),
        AMQPValue::Timestamp(v) => i64::try_from(*v).ok(),
        _ => None,
    }
}

/// Reads a string header (long or short string).
pub fn string(headers: Option<&FieldTable>, name: &str) -> Option<String> {
    match headers?.inner().get(name)? {
        AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        AMQPValue::ShortString(s) => Some(s.as_str().to_owned()),
        _ => None,
    }
}

/// The attempts a delivery records (0 for a fresh task).
pub fn attempts(headers: Option<&FieldTable>) -> u32 {
    int(headers, ATTEMPTS)
        .and_then(|n| u32::try_from(n).ok())
        .unwrap_or(0)
}

/// The headers of the copy made after failed attempt number `attempts`: the original's
/// headers without the broker's death records, plus the failure record.
pub(crate) fn after_failure(
    original: Option<&FieldTable>,
    attempts: u32,
    error: &str,
    origin_queue: &str,
) -> FieldTable {
    let now = now_ms();
    let mut headers = FieldTable::default();
    if let Some(original) = original {
        for (key, value) in original.inner() {
            if !BROKER_DEATH_HEADERS.contains(&key.as_str()) {
                headers.insert(key.clone(), value.clone());
            }
        }
    }
    let first = int(original, FIRST_FAILED_AT).unwrap_or(now);
    headers.insert(ATTEMPTS.into(), AMQPValue::LongLongInt(attempts.into()));
    headers.insert(ERROR.into(), long_string(error));
    headers.insert(FIRST_FAILED_AT.into(), AMQPValue::LongLongInt(first));
    headers.insert(LAST_FAILED_AT.into(), AMQPValue::LongLongInt(now));
    headers.insert(ORIGIN_QUEUE.into(), long_string(origin_queue));
    headers
}

/// The headers of a dead letter sent back to its queue: the failure record removed, so the
/// task gets its full number of attempts again.
pub(crate) fn for_requeue(original: Option<&FieldTable>) -> FieldTable {
    let mut headers = FieldTable::default();
    if let Some(original) = original {
        for (key, value) in original.inner() {
            let key_str = key.as_str();
            let dropped = BROKER_DEATH_HEADERS.contains(&key_str)
                || [
                    ATTEMPTS,
                    ERROR,
                    FIRST_FAILED_AT,
                    LAST_FAILED_AT,
                    RETRY_DELAY,
                ]
                .contains(&key_str);
            if !dropped {
                headers.insert(key.clone(), value.clone());
            }
        }
    }
    headers
}

/// An AMQP long string value.
pub(crate) fn long_string(value: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(value))
}

/// Inserts `name = value` (`l`).
pub(crate) fn insert_int(headers: &mut FieldTable, name: &str, value: i64) {
    headers.insert(ShortString::from(name), AMQPValue::LongLongInt(value));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failure_record_counts_attempts_and_keeps_the_first_failure_time() {
        let mut original = FieldTable::default();
        original.insert("x-lepus-method".into(), long_string("send_email"));
        original.insert("x-death".into(), AMQPValue::FieldArray(Default::default()));
        let first = after_failure(Some(&original), 1, "smtp down", "emails");
        assert_eq!(attempts(Some(&first)), 1);
        assert_eq!(string(Some(&first), ERROR).as_deref(), Some("smtp down"));
        assert_eq!(
            string(Some(&first), "x-lepus-method").as_deref(),
            Some("send_email")
        );
        assert!(first.inner().get("x-death").is_none());
        let started = int(Some(&first), FIRST_FAILED_AT);
        let second = after_failure(Some(&first), 2, "still down", "emails");
        assert_eq!(attempts(Some(&second)), 2);
        assert_eq!(int(Some(&second), FIRST_FAILED_AT), started);
        let requeued = for_requeue(Some(&second));
        assert_eq!(attempts(Some(&requeued)), 0);
        assert!(string(Some(&requeued), ERROR).is_none());
        assert_eq!(
            string(Some(&requeued), ORIGIN_QUEUE).as_deref(),
            Some("emails")
        );
    }
}
